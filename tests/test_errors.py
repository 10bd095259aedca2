"""The pure parsing of PostgreSQL's COPY errors into a line, a column and a bounded message."""
import pytest

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
