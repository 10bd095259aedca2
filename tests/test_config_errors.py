"""Configuration and database errors that used to reach users raw: one line naming the partition and what to do."""
from __future__ import annotations

import datetime
import subprocess
import sys

import psycopg2
import pytest
from luigi.execution_summary import LuigiStatusCode

from luigi_pipelines import ConfigurationError, LoadError
from luigi_pipelines.partitions import TableName, lock_key
from tests.conftest import ROOT, run_task

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

D1 = datetime.date(2019, 2, 1)


def test_check_partition_rows_false_is_refused(stack, make_task):
    """It committed rows of other dates into this partition, which those dates' loads then deleted."""
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n2,2019-02-02,y\n")
    with pytest.raises(ConfigurationError, match="check_partition_rows = False is no longer accepted"):
        make_task(check_partition_rows=False)(date=D1).run()
    assert stack.markers(f"{stack.schema}.t") == {}


def test_lock_timeout_names_the_partition(stack, make_task):
    stack.set_config("load", "lock_timeout_s", "1")
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n")
    task = make_task()(date=D1)
    with psycopg2.connect(stack.pg.dsn) as holder, holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", lock_key(TableName(stack.schema, "t"), D1))
        with pytest.raises(LoadError, match=rf"^{stack.schema}\.t 2019-02-01: another load of this partition holds "
                                            r"its lock, and \[load\] lock_timeout_s = 1 ran out"):
            task.run()
    holder.close()


def test_a_declared_column_missing_from_the_table(stack, make_task):
    stack.execute(f"CREATE SCHEMA {stack.schema}")
    stack.execute(f"CREATE TABLE {stack.schema}.t (id bigint, day date)")
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n")
    with pytest.raises(ConfigurationError, match=rf"^LoadT: table {stack.schema}\.t has no column 'v' \(text\); run "
                                                 rf'once: ALTER TABLE "{stack.schema}"."t" ADD COLUMN "v" text$'):
        make_task(create_table=False)(date=D1).run()


def test_a_generated_column_among_the_declared_columns(stack, make_task):
    stack.execute(f"CREATE SCHEMA {stack.schema}")
    stack.execute(f"CREATE TABLE {stack.schema}.t (id bigint, day date, v text GENERATED ALWAYS AS (id::text) STORED)")
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n")
    with pytest.raises(ConfigurationError, match=rf'^{stack.schema}\.t 2019-02-01: column "v" is a generated column: '
                                                 r"the table does not match the declared columns \(generated"):
        make_task()(date=D1).run()


def test_a_missing_temp_dir(stack, make_task, tmp_path):
    stack.set_config("load", "temp_dir", str(tmp_path / "nowhere"))
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n")
    with pytest.raises(ConfigurationError, match=r"\[load\] temp_dir .*/nowhere does not exist"):
        make_task()(date=D1).run()


def test_a_date_that_does_not_exist_is_one_clear_line(stack):
    out = subprocess.run([sys.executable, "-m", "luigi", "--module", "luigi_pipelines.pipelines.transactions",
                          "LoadTransactions", "--date", "2019-02-30", "--local-scheduler"],
                         cwd=ROOT, env=stack.env(), capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert out.stderr.rstrip().splitlines()[-1] == (
        "ValueError: --date '2019-02-30' is not a date of the calendar (YYYY-MM-DD): day is out of range for month")


def test_a_type_postgresql_does_not_know_is_named_before_anything_is_read(stack, make_task):
    """`bignit` used to reach the user as a raw UndefinedObject from the first load."""
    stack.put("d/2019-02-01/a.csv", "id,day,v\n1,2019-02-01,x\n")
    load = make_task(columns=[("id", "bignit"), ("day", "date"), ("v", "text"), ("w", "int int")])
    with pytest.raises(ConfigurationError, match=r"^LoadT: PostgreSQL knows no type 'id' bignit, 'w' int int "
                                                 r"\(to_regtype\); fix the column's type in `columns`$"):
        load(date=D1).run()
    assert not stack.has_table(stack.schema, "t") and not stack.has_table(stack.marker_schema, "partition_marker")
    assert stack.temp_files() == []


def test_every_difference_of_an_existing_table_is_reported_at_once_with_one_fix(stack, make_task):
    """A column missing, one of another kind of type, a filled column without its default and a NOT NULL column the
    load leaves out: one error names all four (it used to take a fix-and-rerun round each), and its one ALTER TABLE
    makes the load work."""
    stack.execute(f"CREATE SCHEMA {stack.schema}")
    stack.execute(f"CREATE TABLE {stack.schema}.t (id text, day date, region text, note text NOT NULL, "
                  f"n integer, serial_id bigserial, seen timestamptz DEFAULT now())")
    stack.put("d/2019-02-01/a.csv", "id,day,v,n\n1,2019-02-01,x,7\n")
    load = make_task(columns=[("id", "bigint"), ("day", "date"), ("v", "text"), ("n", "bigint")],
                     scope={"region": "eu"}, create_table=False)
    with pytest.raises(ConfigurationError) as caught:
        load(date=D1).run()
    message = str(caught.value)
    table = f"{stack.schema}.t"
    assert message.split("; run once: ")[0] == (
        f"LoadT: {table} does not match the declaration, 4 problems: column 'id' of {table} is text, declared bigint; "
        f"table {table} has no column 'v' (text); column 'region' of {table} is filled by each load through its "
        f"default; column 'note' of {table} (text) is NOT NULL without a default, and no load fills it (not "
        f"declared): every row would fail")
    fix = message.split("; run once: ")[1]
    assert fix.startswith(f'ALTER TABLE "{stack.schema}"."t" ALTER COLUMN "id" TYPE bigint USING "id"::bigint, ADD '
                          f'COLUMN "v" text, ALTER COLUMN "region" SET DEFAULT ')
    assert fix.endswith(', ALTER COLUMN "note" DROP NOT NULL')
    stack.execute(fix)
    assert run_task(load(date=D1)).status == LuigiStatusCode.SUCCESS
    assert stack.query(f"SELECT id, day, v, n, region FROM {table}") == [(1, D1, "x", 7, "eu")]
