"""The README's commands as a user pastes them: the pipeline example run in a fresh clone, and no luigi
command that silently needs a luigid nobody started."""
from __future__ import annotations

import datetime
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from luigi_pipelines.partitions import date_range
from tests.conftest import ROOT

README = ROOT / "README.md"


def blocks(language: str) -> list[str]:
    """The fenced code blocks of the README in ``language``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), flags=re.DOTALL | re.MULTILINE)


def commands(block: str) -> list[list[str]]:
    """The shell commands of a block, as words, without comments."""
    return [words for line in block.splitlines() if (words := shlex.split(line, comments=True))]


def test_luigi_commands_say_which_scheduler_they_use():
    """Without --local-scheduler luigi asks luigid on 127.0.0.1:8082; with none there it retries for a minute
    and exits 40. Every luigi or backfill command in the README either says --local-scheduler or follows a
    `make scheduler` in the same block."""
    checked = 0
    for block in blocks("sh"):
        if "make scheduler" in block:
            continue
        for words in commands(block):
            program = Path(words[0]).name
            if program == "luigi" or (program == "luigi-pipelines" and words[1] == "backfill"):
                assert "--local-scheduler" in words, shlex.join(words)
                checked += 1
    assert checked >= 3


def _pipeline_example() -> tuple[str, str, str]:
    """The python block declaring LoadOrders, the path its first line names, and the sh block that uses it."""
    python = next(b for b in blocks("python") if "class LoadOrders(" in b)
    first = python.splitlines()[0]
    assert first.startswith("# ") and first.endswith(".py"), first
    shell = next(b for b in blocks("sh") if "my_pipelines.orders" in b)
    return python, first[2:], shell


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("readme_orders", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LoadOrders


def _seed(stack: Any, task: Any, days: list[datetime.date]) -> dict[datetime.date, int]:
    """Objects of each day as the example declares them (its key prefix, delimiter and header); rows per day."""
    expected = {}
    delimiter = task.csv.delimiter
    for day in days:
        rows = [delimiter.join(name for name, _ in task.columns)]
        rows += [delimiter.join((str(day.toordinal() * 100 + n), day.isoformat(), f"c{n}", f"{n}.50"))
                 for n in range(day.day % 5 + 1)]
        stack.put(task.key_prefix.format(date=day) + "part-0.csv", "\n".join(rows) + "\n")
        expected[day] = len(rows) - 1
    return expected


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.slow
def test_pipeline_example_runs_as_pasted_into_a_fresh_clone(stack, tmp_path):
    """The python block saved where its first line says, in a clone (luigi.cfg and a .venv); the sh block run
    in order by bash -e against the test's PostgreSQL and S3. Only the bucket and table names differ."""
    python, module_path, shell = _pipeline_example()
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(ROOT / "luigi.cfg", clone / "luigi.cfg")
    (clone / ".venv").symlink_to(ROOT / ".venv")
    table = f"{stack.schema}.orders"
    source = _replace_once(python, '"acme-exports"', f'"{stack.bucket}"')
    source = _replace_once(source, '"sales.orders"', f'"{table}"')
    module = clone / module_path
    module.parent.mkdir(parents=True)
    module.write_text(source)

    backfill = next(words for words in commands(shell) if "RangeDaily" in words)
    start, stop = (datetime.date.fromisoformat(backfill[backfill.index(f) + 1]) for f in ("--start", "--stop"))
    expected = _seed(stack, _load(module), date_range(start, stop))

    env = stack.env(stack.write_config(tmp_path / "test.cfg"))  # PG*, AWS*, marker schema in LUIGI_CONFIG_PATH
    del env["PYTHONPATH"]
    venv_bin = str(ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)  # not activated
    result = subprocess.run(["bash", "-e", "-x", "-c", shell], cwd=clone, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]

    loaded = dict(stack.query(f'SELECT order_date, count(*) FROM "{stack.schema}".orders GROUP BY 1'))
    assert loaded == expected
    markers = stack.markers(table)
    assert {day: m[0] for day, m in markers.items()} == expected
    reloaded = next(words for words in commands(shell) if "--force" in words)
    forced = datetime.date.fromisoformat(reloaded[reloaded.index("--date") + 1])
    assert max(markers, key=lambda day: markers[day][3]) == forced  # the --force reload came last
    days = len(date_range(start, stop))
    assert f"{days} dates: {days} loaded, 0 failed, 0 missing" in result.stdout  # status, exit 0 (bash -e)


@pytest.mark.postgres
@pytest.mark.s3
def test_every_luigi_pipelines_command_of_the_readme_runs_as_pasted(stack, tmp_path):
    """Each `luigi-pipelines` command of the README's sh blocks, in a clone with the README's LoadOrders saved where
    it says and PYTHONPATH as the README exports it: `--version`, every `status` against the test's (empty) tables
    (exit 0 or 21, one line at most on stderr), every `backfill` with `--dry-run` appended (its module and task are
    found: exit 0). A command that fails as pasted (an option that does not exist, a task nobody declared) fails."""
    python, module_path, _ = _pipeline_example()
    clone = tmp_path / "clone"
    (clone / module_path).parent.mkdir(parents=True)
    (clone / module_path).write_text(_replace_once(python, '"acme-exports"', f'"{stack.bucket}"'))
    (clone / ".venv").symlink_to(ROOT / ".venv")
    env = {**stack.env(stack.write_config(tmp_path / "test.cfg")), "PYTHONPATH": str(clone)}
    found = []
    for block in blocks("sh"):
        for words in commands(block):
            if Path(words[0]).name != "luigi-pipelines":
                continue
            program = str(clone / words[0]) if "/" in words[0] else str(ROOT / ".venv" / "bin" / words[0])
            if words[1] == "infer":
                found.append(_infer_as_shown(stack, program, words, clone, env))
                continue
            extra = ["--dry-run"] if words[1] == "backfill" else []
            result = subprocess.run([program, *words[1:], *extra], cwd=clone, env=env, capture_output=True,
                                    text=True, timeout=300)
            found.append(words[1])
            assert "Traceback" not in result.stderr, (shlex.join(words), result.stderr[-3000:])
            if words[1] == "status":
                assert result.returncode in (0, 21) and len(result.stderr.splitlines()) <= 1, (
                    shlex.join(words), result.returncode, result.stderr[-3000:])
            else:
                assert result.returncode == 0, (shlex.join(words), result.stderr[-3000:])
    assert "--version" in found and found.count("status") >= 4 and found.count("backfill") >= 2 and "infer" in found


def _infer_as_shown(stack, program: str, words: list[str], clone: Path, env: dict[str, str]) -> str:
    """The README's `infer` command, on the flight records put in the test's bucket, prints the class the README
    shows (but for the bucket's name), and writes it where the command says."""
    from tests.test_layouts import FLIGHT_DAYS, flights_csv

    for day, count in FLIGHT_DAYS.items():
        stack.put(f"flights/{day:%Y/%m/%d}/flights.csv", flights_csv(day, count))
    args = [w.replace("s3://acme-flights/", f"s3://{stack.bucket}/") for w in words[1:words.index(">")]]
    result = subprocess.run([program, *args], cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (shlex.join(words), result.stderr[-3000:])
    shown = next(b for b in blocks("python") if b.startswith("# Drafted by `luigi-pipelines infer`"))
    assert result.stdout.replace(stack.bucket, "acme-flights") == shown
    (clone / words[-1]).write_text(result.stdout)
    return "infer"


@pytest.mark.postgres
@pytest.mark.s3
def test_the_transform_and_grain_examples_run_as_pasted(stack, tmp_path):
    """The README's transforms (a pure function and a query) after its LoadOrders, pasted into one module: both
    give the same totals of a loaded day; its hourly and monthly examples name the prefixes they say."""
    from luigi.execution_summary import LuigiStatusCode

    from tests.conftest import run_task

    python, _, _ = _pipeline_example()
    source = _replace_once(python, '"acme-exports"', f'"{stack.bucket}"')
    source = _replace_once(source, '"sales.orders"', f'"{stack.schema}.orders"')
    for name in ("class SummarizeOrders(", "class SummarizeOrdersInSql(", "class LoadClicks("):
        block = next(b for b in blocks("python") if name in b)
        source += "\n\n" + block.replace('"sales.customer_totals"', f'"{stack.schema}.totals_{len(source)}"')
    path = tmp_path / "readme_all.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("readme_all", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    day = datetime.date(2023, 5, 4)
    _seed(stack, module.LoadOrders, [day])
    for task in (module.SummarizeOrders, module.SummarizeOrdersInSql):
        assert run_task(task(date=day)).status == LuigiStatusCode.SUCCESS
    python_rows, sql_rows = (stack.query(f"SELECT * FROM {task.table} ORDER BY customer")
                             for task in (module.SummarizeOrders, module.SummarizeOrdersInSql))
    assert python_rows == sql_rows and len(python_rows) == day.day % 5 + 1
    assert module.LoadClicks(date_hour=datetime.datetime(2024, 5, 4, 13)).prefix == "clicks/2024/05/04/13/"
    assert module.LoadInvoices(month=datetime.date(2024, 5, 1)).prefix == "invoices/2024-05/"
