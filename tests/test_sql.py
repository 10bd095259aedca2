"""The psycopg2.sql builders: identifiers quoted, values as literals, column types checked."""
import contextlib
import datetime
import re
import string

import psycopg2
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from psycopg2 import sql

from luigi_pipelines import sql as q
from luigi_pipelines.partitions import TableName


def test_column_types_are_checked():
    assert q.Column("amount", "numeric(12,2)").type == "numeric(12,2)"
    assert q.Column("ts", "timestamp with time zone")
    for bad in ("text); DROP TABLE x; --", "int --", "text'"):
        with pytest.raises(ValueError, match="not an accepted SQL type"):
            q.Column("c", bad)


def test_copy_statement_quotes_identifiers_and_literals():
    stmt = q.copy_from_stdin(TableName("s", "t"), [q.Column("id", "int"), q.Column("Day", "date")],
                             q.CsvFormat(delimiter=";", null="\\N"))
    parts = _flatten(stmt)
    assert sql.Identifier("s", "t") in parts and sql.Identifier("Day") in parts
    assert sql.Literal(";") in parts and sql.Literal("\\N") in parts


def test_copy_header_modes():
    t, cols = TableName("s", "t"), [q.Column("id", "int")]
    assert sql.SQL("MATCH") in _flatten(q.copy_from_stdin(t, cols, q.CsvFormat()))
    assert sql.SQL("true") in _flatten(q.copy_from_stdin(t, cols, q.CsvFormat(check_header=False)))
    assert sql.SQL("false") in _flatten(q.copy_from_stdin(t, cols, q.CsvFormat(header=False)))


def _flatten(composable):
    if isinstance(composable, sql.Composed):
        return [p for part in composable.seq for p in _flatten(part)]
    return [composable]


# -- properties ------------------------------------------------------------------------------------
# (deadline=None throughout: on a shared machine a slow example is not a failure)

_FIRST = string.ascii_letters + "_"
identifiers = st.builds(str.__add__, st.sampled_from(_FIRST), st.text(_FIRST + string.digits + "$", max_size=62))
schemas = identifiers.filter(lambda s: not s.startswith("pg_"))  # PostgreSQL reserves pg_* schema names
tables = st.builds(TableName, schemas, identifiers)
real_types = st.sampled_from(["bigint", "text", "date", "numeric(12,2)", "timestamp with time zone", "char(3)", "text[]"])
columns = st.lists(st.builds(q.Column, identifiers, real_types), min_size=1, max_size=4, unique_by=lambda c: c.name)
# Column types as the pattern means them: a name of words, an optional (p) or (p, s), time zone, an array mark.
type_names = st.text(string.ascii_letters + string.digits + "_ ", max_size=20).map(lambda s: "t" + s)


def column_types(spaces: st.SearchStrategy[str], digits: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    precision = st.one_of(
        st.just(""),
        st.tuples(spaces, digits, spaces).map(lambda p: f"({p[0]}{p[1]}{p[2]})"),
        st.tuples(digits, spaces, digits).map(lambda p: f"({p[0]},{p[1]}{p[2]})"),
    )
    return st.builds("".join, st.tuples(type_names, precision, st.sampled_from(["", " with time zone", " without time zone"]),
                                        st.sampled_from(["", "[]"])))


types = column_types(st.sampled_from(["", " ", "  "]), st.integers(0, 99).map(str))
suffixes = st.one_of(st.sampled_from(["\n", ";", "--", "'", '"', ")", "/*"]), st.text(max_size=3))
near_types = st.one_of(
    st.tuples(types, suffixes).map("".join),
    column_types(st.sampled_from(["\t", "\n", "\u2003"]), st.integers(0, 99).map(str)),  # other white space
    column_types(st.just(""), st.text(st.characters(whitelist_categories=["Nd"]), min_size=1, max_size=2)),  # other digits
)
SAFE_TYPE = re.compile(r"[A-Za-z0-9_ ,()\[\]]+")  # nothing that ends a statement, quotes or comments
# Often a character that matters in SQL; never NUL, which a SQL string cannot hold.
sql_characters = st.one_of(st.sampled_from("'\\\";-\n"), st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))
literal_text = st.lists(sql_characters, max_size=8).map("".join)


@pytest.fixture(scope="module")
def conn(pg_server):
    with contextlib.closing(psycopg2.connect(pg_server.dsn)) as connection:
        yield connection


def quoted(*names: str) -> str:
    """How PostgreSQL quotes a valid identifier (which holds no double quote)."""
    return ".".join(f'"{n}"' for n in names)


def literal(value: str) -> str:
    """A standard-conforming SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


@settings(deadline=None)
@given(types)
def test_accepted_column_types_pass(type_):
    assert q.Column("c", type_).type == type_


@settings(max_examples=300, deadline=None)
@example("int\n")  # found by this test: re's $ also matches before a final newline
@example("numeric(\u0661\u0662)")  # Arabic-Indic digits: re's \d is Unicode
@given(st.one_of(near_types, st.text()))
def test_only_safe_column_types_are_accepted(type_):
    try:
        q.Column("c", type_)
    except ValueError as exc:
        assert "not an accepted SQL type" in str(exc)
        return
    assert SAFE_TYPE.fullmatch(type_), repr(type_)


@pytest.mark.postgres
@settings(deadline=None)
@given(tables, identifiers, columns)
def test_builders_render_every_identifier_quoted(conn, table, date_column, cols):
    t, dc, names = quoted(table.schema, table.name), quoted(date_column), ", ".join(quoted(c.name) for c in cols)
    assert q.create_schema(table.schema).as_string(conn) == f"CREATE SCHEMA IF NOT EXISTS {quoted(table.schema)}"
    assert q.create_table(table, cols).as_string(conn) == (
        f"CREATE TABLE IF NOT EXISTS {t} ({', '.join(f'{quoted(c.name)} {c.type}' for c in cols)})")
    assert q.create_date_index(table, date_column).as_string(conn) == (
        f"CREATE INDEX IF NOT EXISTS {quoted(f'{table.name}_{date_column}_idx'[:63])} ON {t} ({dc})")
    assert q.delete_partition(table, date_column).as_string(conn) == f"DELETE FROM {t} WHERE {dc} = %s"
    assert q.select_partition(table, date_column, [c.name for c in cols]).as_string(conn) == (
        f"SELECT {names} FROM {t} WHERE {dc} = %s ORDER BY {names}")
    assert q.count_by_date(table, date_column).as_string(conn) == f"SELECT {dc}, count(*) FROM {t} GROUP BY {dc}"
    assert q.count_partition(table, date_column).as_string(conn) == f"SELECT count(*) FROM {t} WHERE {dc} = %s"
    assert q.copy_from_stdin(table, cols, q.CsvFormat()).as_string(conn).startswith(
        f"COPY {t} ({names}) FROM STDIN WITH (")


MARKER_BUILDERS = [q.create_marker_table, q.upsert_marker, q.create_rejects_table, q.delete_rejects, q.insert_reject,
                   q.select_marker, q.select_completed_dates, q.select_marker_summary]


@pytest.mark.postgres
@settings(deadline=None)
@given(tables)
def test_marker_builders_take_the_table_only_as_a_quoted_identifier(conn, table):
    """Apart from the quoted name, the statement is the same for every table."""
    reference = TableName("s", "t")
    for builder in MARKER_BUILDERS:
        rendered = builder(table).as_string(conn)
        assert rendered.count(quoted(table.schema, table.name)) == 1, builder.__name__
        assert rendered.replace(quoted(table.schema, table.name), "{}") == (
            builder(reference).as_string(conn).replace(quoted("s", "t"), "{}")), builder.__name__


@pytest.mark.postgres
@settings(deadline=None)
@given(literal_text, literal_text, literal_text, literal_text, literal_text, st.booleans(), st.booleans())
def test_copy_options_are_literals_in_order(conn, delimiter, quote, escape, null, encoding, header, check_header):
    fmt = q.CsvFormat(delimiter=delimiter, header=header, check_header=check_header, quote=quote, escape=escape,
                      null=null, encoding=encoding)
    rendered = q.copy_from_stdin(TableName("s", "t"), [q.Column("c", "text")], fmt).as_string(conn)
    mode = ("MATCH" if check_header else "true") if header else "false"
    assert rendered == (
        f'COPY "s"."t" ("c") FROM STDIN WITH (FORMAT csv, DELIMITER {literal(delimiter)}, HEADER {mode}, '
        f"QUOTE {literal(quote)}, ESCAPE {literal(escape)}, NULL {literal(null)}, ENCODING {literal(encoding)})")


@pytest.mark.postgres
@settings(max_examples=30, deadline=None)
@given(tables, identifiers, columns)
def test_tables_are_created_under_exactly_their_names(conn, table, date_column, cols):
    """Mixed case, $ and keywords survive: PostgreSQL creates the schema, table and index with these
    exact names (an unquoted name would be folded to lower case or be a syntax error)."""
    cols = [*cols, q.Column(date_column, "date")] if date_column not in {c.name for c in cols} else cols
    try:
        with conn.cursor() as cur:
            cur.execute(q.create_schema(table.schema))
            cur.execute(q.create_table(table, cols))
            cur.execute(q.create_date_index(table, date_column))
            cur.execute(q.table_exists(), (table.schema, table.name))
            assert cur.fetchone()[0]
            cur.execute(q.count_partition(table, date_column), (datetime.date(2019, 2, 1),))
            assert cur.fetchone()[0] == 0
    finally:
        conn.rollback()


def test_set_based_transform_statement_quotes_names_and_binds_values():
    query = sql.SQL("SELECT {}, a FROM upstream").format(sql.Placeholder("date"))
    stmt = q.insert_from_query(TableName("s", "out"), [q.Column("day", "date"), q.Column("a", "text")],
                               TableName("s", "in"), "day", ["a"], ["region"], query)
    parts = _flatten(stmt)
    assert parts[:2] == [sql.SQL("WITH "), sql.Identifier("upstream")]
    assert sql.Identifier("s", "in") in parts and sql.Identifier("s", "out") in parts
    assert sql.Placeholder("date") in parts and sql.Placeholder("upstream_region") in parts
    assert parts[-3:] == _flatten(query)  # the declared query comes last, as declared
    assert not any(isinstance(p, sql.Literal) for p in parts)  # values only ever as parameters


@pytest.mark.postgres
@settings(deadline=None)
@given(tables, identifiers, st.lists(st.tuples(identifiers, st.text(max_size=8).filter(lambda s: "\x00" not in s)),
                                     max_size=2, unique_by=lambda c: c[0]), st.booleans())
def test_the_partition_guard_holds_the_counts_condition_with_its_values_inlined(conn, table, date_column, scope, span):
    """The guard accepts the rows the count after a COPY would count: its condition is the count's, as psycopg2
    renders it with the same values."""
    scope = [(c, v) for c, v in scope if c != date_column]
    day, stop = datetime.date(2019, 2, 1), datetime.date(2019, 3, 1)
    count = q.count_partition(table, date_column, [c for c, _ in scope], span)
    with conn.cursor() as cur:
        rendered = cur.mogrify(count, (day, *((stop,) if span else ()), *(v for _, v in scope))).decode()
    prefix = f"SELECT count(*) FROM {q.table_ident(table).as_string(conn)} WHERE "
    assert rendered.startswith(prefix)
    guard = q.partition_guard(date_column, scope, day, stop if span else None)
    assert guard.where.as_string(conn).startswith(f"CASE WHEN {rendered[len(prefix):]} THEN true ELSE (")
    assert guard.columns == {date_column, *(c for c, _ in scope)}
