"""The package's luigi defaults (``luigi_pipelines/defaults.cfg``) hold wherever a command runs, lowest priority.

The end-to-end tests run a pipeline module of a user's own, written outside the repository, the way cron
runs it: ``env -i`` with only PATH, HOME, PYTHONPATH and the PG*/AWS* variables, from ``/``, where luigi
finds no luigi.cfg of ours.
"""
from __future__ import annotations

import configparser
import datetime
import re
import subprocess
import sys
from pathlib import Path

import luigi.configuration
import pytest
from luigi.configuration import LuigiConfigParser

from luigi_pipelines import defaults
from luigi_pipelines.partitions import date_range
from tests.conftest import ROOT

BIN = Path(sys.executable).parent  # the virtualenv's luigi and luigi-pipelines

PIPELINE = '''\
from luigi.tools.range import RangeDaily  # noqa: F401
import luigi_pipelines as lp


class LoadOrders(lp.LoadPartition):
    bucket = "BUCKET"
    key_prefix = "orders/{date:%Y-%m-%d}/"
    table = "TABLE"
    date_column = "day"
    columns = [("id", "bigint"), ("day", "date")]
'''


def test_defaults_come_first_and_never_replace_a_value_already_set(tmp_path):
    """Read before every other file, and under what the loaded config holds (files or in-process)."""
    assert LuigiConfigParser._config_paths[0] == str(defaults.PATH)
    extra = tmp_path / "extra.cfg"
    extra.write_text("[lp_defaults_test]\nfrom_defaults = 1\nalready_set = 1\n")
    cfg = luigi.configuration.get_config()
    cfg.add_section("lp_defaults_test")
    cfg.set("lp_defaults_test", "already_set", "5")
    try:
        defaults.install(extra)
        assert LuigiConfigParser._config_paths[0] == str(extra)
        assert cfg.get("lp_defaults_test", "from_defaults") == "1"
        assert cfg.get("lp_defaults_test", "already_set") == "5"
    finally:
        LuigiConfigParser._config_paths.remove(str(extra))
        cfg.remove_section("lp_defaults_test")


def test_defaults_cfg_is_shipped_with_the_package():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert "defaults.cfg" in setup.get("options.package_data", "luigi_pipelines")
    shipped = configparser.ConfigParser()
    shipped.read(defaults.PATH)
    assert shipped.getint("retcode", "task_failed") == 30
    assert shipped.getint("RangeDaily", "task_limit") >= 100000


@pytest.fixture
def cron(stack, tmp_path):
    """Run a command like cron does: a user's pipeline module outside the repo, a bare environment, cwd /."""
    modules = tmp_path / "user_pipelines"
    modules.mkdir()
    table = f"{stack.schema}.orders"
    (modules / "orders_pipeline.py").write_text(PIPELINE.replace("BUCKET", stack.bucket).replace("TABLE", table))
    home = tmp_path / "home"
    home.mkdir()
    base = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(modules), **stack.pg.env, **stack.s3.env}

    def run(*command: str, cwd: Path | str = "/", **env: str) -> subprocess.CompletedProcess:
        assignments = [f"{name}={value}" for name, value in {**base, **env}.items()]
        return subprocess.run(["env", "-i", *assignments, *command], cwd=cwd, capture_output=True, text=True,
                              timeout=600)

    try:
        yield run
    finally:  # no LUIGI_CONFIG_PATH, so the markers are in the default schema, shared: remove ours
        if stack.has_table("luigi_pipelines", "partition_marker"):
            stack.execute("DELETE FROM luigi_pipelines.partition_marker WHERE target_table = %s", (table,))


def _loaded(stack) -> dict[datetime.date, int]:
    if not stack.has_table(stack.schema, "orders"):
        return {}
    return dict(stack.query(f'SELECT day, count(*) FROM "{stack.schema}".orders GROUP BY 1'))


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.slow
def test_a_year_from_cron_loads_every_date_and_exits_0(stack, cron):
    """luigi's own RangeDaily defaults would drop every date older than 100 days ("Empty range", exit 0)
    and schedule 50 at most; the package's [RangeDaily] defaults make it all 365."""
    days = date_range(datetime.date(2019, 1, 1), datetime.date(2020, 1, 1))
    for day in days:
        stack.put(f"orders/{day}/part-0.csv", f"id,day\n{day.toordinal()},{day}\n")
    result = cron(str(BIN / "luigi"), "--module", "orders_pipeline", "RangeDaily", "--of", "LoadOrders",
                  "--start", "2019-01-01", "--stop", "2020-01-01", "--local-scheduler")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _loaded(stack) == dict.fromkeys(days, 1)
    assert len(days) == 365


@pytest.mark.postgres
@pytest.mark.s3
def test_a_failed_load_from_cron_exits_nonzero_unless_the_users_config_says_otherwise(stack, cron, tmp_path):
    """The package's [retcode]: a bad object exits 30 from cwd /, through luigi and through backfill. A user's
    ./luigi.cfg overrides it, and LUIGI_CONFIG_PATH overrides that."""
    stack.put("orders/2020-01-01/part-0.csv", "id,day\nnot-a-number,2020-01-01\n")
    load = [str(BIN / "luigi"), "--module", "orders_pipeline", "LoadOrders", "--date", "2020-01-01",
            "--local-scheduler"]

    failed = cron(*load)
    assert failed.returncode == 30, failed.stderr[-3000:]
    assert 'invalid input syntax for type bigint: "not-a-number"' in failed.stderr

    backfill = cron(str(BIN / "luigi-pipelines"), "backfill", "--module", "orders_pipeline", "--task", "LoadOrders",
                    "--start", "2020-01-01", "--stop", "2020-01-02", "--local-scheduler")
    assert backfill.returncode == 30, backfill.stderr[-3000:]
    assert "1 (2020-01-01)" in backfill.stderr

    project = tmp_path / "project"
    project.mkdir()
    (project / "luigi.cfg").write_text("[retcode]\ntask_failed = 3\n")
    assert cron(*load, cwd=project).returncode == 3
    env_file = tmp_path / "env.cfg"
    env_file.write_text("[retcode]\ntask_failed = 4\n")
    assert cron(*load, cwd=project, LUIGI_CONFIG_PATH=str(env_file)).returncode == 4
    assert _loaded(stack) == {}


def _crontab() -> tuple[dict[str, str], str]:
    """configs/crontab.example: its variables, and the daily job's command without luigid (the line for a host
    with no luigid, uncommented), up to the `|| echo` that reports a failure."""
    text = (ROOT / "configs" / "crontab.example").read_text()
    variables = dict(line.split("=", 1) for line in text.splitlines() if re.match(r"^[A-Z_]+=", line))
    job = next(line for line in text.splitlines() if "--local-scheduler" in line and "--days-back 7" in line)
    command = job.lstrip("# ").split(None, 5)[5]
    return variables, command.split(" || ")[0]


@pytest.mark.postgres
@pytest.mark.s3
def test_the_crontab_example_loads_a_users_module_under_a_bare_environment(stack, tmp_path):
    """The crontab's own lines, with its paths moved into a temp directory outside the repository: the user's
    package mypipes (not installed, found through the crontab's PYTHONPATH), run by /bin/sh under env -i from /,
    PATH only the virtualenv's bin, HOME a temp dir. The example used to run the bundled pipeline only (no
    --module): a user's module under cron failed with `No module named 'mypipes'`."""
    variables, command = _crontab()
    assert "--module mypipes.orders --task LoadOrders" in command and variables["PYTHONPATH"] == "/srv/pipelines"
    project = tmp_path / "srv" / "pipelines"
    (project / "mypipes").mkdir(parents=True)
    (project / "mypipes" / "__init__.py").write_text("")
    table = f"{stack.schema}.orders"
    (project / "mypipes" / "orders.py").write_text(PIPELINE.replace("BUCKET", stack.bucket).replace("TABLE", table))
    (project / ".venv").symlink_to(BIN.parent)
    (project / "configs").mkdir()
    stack.write_config(project / "configs" / "production.cfg")  # the test's marker schema and temp dir
    logs = tmp_path / "log"
    logs.mkdir()
    home = tmp_path / "home"
    home.mkdir()

    def moved(text: str) -> str:
        return text.replace("/srv/pipelines", str(project)).replace("/var/log/luigi_pipelines", str(logs))

    today = datetime.datetime.now(datetime.timezone.utc).date()
    days = [today - datetime.timedelta(days=n) for n in range(1, 8)]
    for day in days:
        stack.put(f"orders/{day}/part-0.csv", f"id,day\n{day.toordinal()},{day}\n")
    env = {**{name: moved(value) for name, value in variables.items() if name != "MAILTO"},
           "PATH": str(BIN), "HOME": str(home), **stack.pg.env, **stack.s3.env}
    result = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "/bin/sh", "-c", moved(command)],
                            cwd="/", capture_output=True, text=True, timeout=600)
    log = (logs / "cron.log").read_text()
    assert result.returncode == 0, log[-3000:]
    assert _loaded(stack) == dict.fromkeys(days, 1)
    assert log.splitlines()[-1].startswith("luigi-pipelines backfill: every date asked for is loaded, 7 (")
    assert "Warning" not in log and "Traceback" not in log
