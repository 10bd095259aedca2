"""The pure parsing of PostgreSQL's COPY errors into a line, a column and a bounded message."""
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from luigi_pipelines import errors


@pytest.mark.parametrize(
    "context, line, column",
    [
        ('COPY t, line 3, column amount: "abc"', 3, "amount"),
        ("COPY t, line 7", 7, None),
        ("COPY transaction, line 12: \"1,2\"", 12, None),
        (None, None, None),
    ],
)
def test_copy_error_position(context, line, column):
    pos = errors.copy_error_position(context)
    assert (pos.line, pos.column) == (line, column)


def test_describe_bad_input():
    msg = errors.describe_bad_input("s3://b/k.csv", errors.CopyErrorPosition(3, "amount"), "invalid input")
    assert msg == "s3://b/k.csv line 3 column amount: invalid input"


# -- properties ------------------------------------------------------------------------------------
# (deadline=None throughout: on a shared machine a slow example is not a failure)

_FIRST = string.ascii_letters + "_"
identifiers = st.builds(str.__add__, st.sampled_from(_FIRST), st.text(_FIRST + string.digits + "$", max_size=62))
# Long reasons too: PostgreSQL quotes a bad value in full, and a field can be megabytes.
reasons = st.one_of(st.text(max_size=400), st.sampled_from([299, 300, 301]).map("r".__mul__),
                    st.builds(str.__mul__, st.text(min_size=1, max_size=10), st.integers(1, 200_000)))


@settings(deadline=None)
@given(identifiers, st.integers(0, 2**63 - 1), st.none() | identifiers, st.none() | st.text())
def test_copy_error_position_reads_any_line_and_column(table, line, column, detail):
    """PostgreSQL's CONTEXT: ``COPY <table>, line <n>[, column <name>][: <the bad data>]``."""
    context = f"COPY {table}, line {line}" + (f", column {column}" if column else "")
    context += f": {detail}" if detail is not None else ""
    assert errors.copy_error_position(context) == errors.CopyErrorPosition(line, column)


near_contexts = st.builds(
    str.format,
    st.sampled_from(["copy {0}, line {1}", "COPY {0} line {1}", "COPY {0}, {1}", "{0}, line {1}", "line {1}, column {0}",
                     "COPY {0}, line x{1}", "COPY , line {1}"]),
    identifiers, st.integers(0, 10**6))


@settings(deadline=None)
@given(st.one_of(near_contexts, st.text().filter(lambda t: "COPY " not in t)))
def test_copy_error_position_of_other_text_is_unknown(context):
    assert errors.copy_error_position(context) == errors.CopyErrorPosition(None, None)


@settings(deadline=None)
@given(st.text(max_size=200), st.none() | st.integers(1, 10**12), st.none() | identifiers, reasons)
def test_describe_bad_input_is_bounded_and_keeps_short_reasons_whole(source, line, column, reason):
    message = errors.describe_bad_input(source, errors.CopyErrorPosition(line, column), reason)
    where = source + (f" line {line}" if line is not None else "") + (f" column {column}" if column else "")
    assert message.startswith(f"{where}: ")
    told = message[len(where) + 2:]
    if len(reason) <= 300:
        assert told == reason
    else:
        assert told == f"{reason[:300]}... ({len(reason) - 300} more characters)"
        assert len(told) < 350  # however long the reason (here up to 2 million characters)
