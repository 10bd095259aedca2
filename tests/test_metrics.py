"""Metrics for Prometheus: luigid's own collector (configs/luigid.cfg) counting a backfill's tasks; the per-table
metrics of ``status --prometheus``, ``--textfile`` and ``metrics-serve`` agreeing with ``status --json`` on a range
with loaded, missing, failed and late tables; the example alert rules naming only series that are emitted.

Everything is parsed with ``prometheus_client``'s own parser, as Prometheus would read it."""
from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
import threading
import types
import urllib.error
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from luigi_pipelines import metrics
from luigi_pipelines.devstack.local import Luigid, ManagedProcess, free_port, http_get, wait_until
from luigi_pipelines.freshness import Freshness
from luigi_pipelines.grains import DAILY
from luigi_pipelines.metrics_serve import CachedText, handler_of
from luigi_pipelines.states import FAILED, LOADED, MISSING, STALE, STATES, Calendar, DateState
from tests.conftest import ROOT, run_task
from tests.freshness_tasks import NOW, TASKS, WINDOW, seed_feeds
from tests.scheduling_support import (
    HOOKED_TASK,
    assert_exactly_once,
    backfill_command,
    describe,
    luigid_config,
    seed_days,
    start,
    wait_all,
    worker_settings,
)

UTC = datetime.timezone.utc
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of the text format, by (sample name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def families(text: str) -> set[str]:
    return {s for s, _ in samples(text)}


# -- luigid's own collector ---------------------------------------------------------------------------------------


def _task_counts(luigid: Luigid) -> dict[str, float]:
    """luigid's counters of the hooked task's family, by sample name (``luigi_task_done_total`` ...)."""
    found = samples(http_get(f"{luigid.url}/metrics").decode())
    return {name: value for (name, labels), value in found.items() if dict(labels).get("family") == HOOKED_TASK}


@pytest.mark.scheduler
@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.s3
def test_luigid_counts_a_backfill_s_tasks_at_metrics(stack, tmp_path):
    """luigid runs configs/luigid.cfg (metrics_collector = prometheus). One worker backfills 6 days; the 3rd pauses
    with its transaction open: then luigid counts it started and not done; once released, all 6 started and done."""
    start_day = datetime.date(2019, 2, 1)
    expected = seed_days(stack, start_day, 6)
    worker_settings(stack)
    cfg = stack.write_config(tmp_path / "worker.cfg")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    directory = tmp_path / "luigid"
    directory.mkdir()
    env = {**stack.env(cfg), "LP_HOOK_DIR": str(hooks), "LP_WORKER_NAME": "w1", "LP_HOOK_PAUSE_DATE": "2019-02-03"}
    with Luigid(directory, luigid_config(directory / "luigid.cfg", {"scheduler": {"retry_delay": 0.5}})) as luigid:
        before = _task_counts(luigid)
        worker = start("w1", backfill_command("--start", "2019-02-01", "--stop", "2019-02-07", "--now",
                                              "2019-06-01T12:00:00", *luigid.scheduler_args), env, tmp_path)
        wait_until(lambda: (hooks / "paused").exists() or worker.returncode is not None, 120, "the load of Feb 3 to pause")
        during = _task_counts(luigid)
        (hooks / "release").touch()
        codes = wait_all([worker], 240)
        after = _task_counts(luigid)

    assert codes == {"w1": 0}, describe([worker])
    assert_exactly_once(stack, expected)
    assert before == {}  # nothing of the family yet
    assert during["luigi_task_started_total"] >= 1 and during.get("luigi_task_done_total", 0) < 6
    assert after["luigi_task_started_total"] == 6 and after["luigi_task_done_total"] == 6
    assert after.get("luigi_task_failed_total", 0) == 0 and after["luigi_task_execution_time_seconds"] >= 0


# -- the per-table metrics and status --------------------------------------------------------------------------------


def cli(stack, cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "luigi_pipelines.cli", *args], cwd=ROOT, env=stack.env(cfg),
                          capture_output=True, text=True, timeout=180)


def _labels(pipeline: dict[str, Any], **more: str) -> tuple[tuple[str, str], ...]:
    table, _, scope = pipeline["key"].partition("/")
    return tuple(sorted({"table": table, "scope": scope, "task": pipeline["task"], **more}.items()))


def expected_from_json(out: dict[str, Any]) -> Samples:
    """What the metrics must say, from what ``status --json`` says."""
    P = "luigi_pipelines_"
    want: Samples = {(P + "status_exit_code", ()): out["exit_code"]}
    for p in out["pipelines"]:
        labels = _labels(p)
        for state in (s for s in STATES if s != STALE):  # every state status knows (stale: only when checked)
            want[P + "partitions", _labels(p, state=state)] = (
                p["totals"][state] if state in p["totals"] else sum(d["state"] == state for d in p["dates"]))
        fresh = p["freshness"]
        want[P + "newest_partition_timestamp_seconds", labels] = datetime.datetime.fromisoformat(
            fresh["newest_start"]).timestamp()
        want[P + "freshness_allowed_seconds", labels] = fresh["allowed_s"]
        want[P + "late", labels] = int(fresh["late"])
        want[P + "lateness_seconds", labels] = fresh["lateness_s"]
        last = max((d for d in p["dates"] if "finished_at" in d), key=lambda d: d["finished_at"])
        want[P + "last_load_timestamp_seconds", labels] = datetime.datetime.fromisoformat(last["finished_at"]).timestamp()
        for name in ("rows", "bytes", "seconds"):
            want[P + "last_load_" + name, labels] = last[name]
    return want


def _serve(stack, cfg: Path, tmp_path: Path, port: int) -> ManagedProcess:
    argv = [sys.executable, "-m", "luigi_pipelines.cli", "metrics-serve", *TASKS, *WINDOW, "--now", NOW,
            "--port", str(port)]
    server = ManagedProcess(argv, tmp_path / "serve.log", name="metrics-serve", env=stack.env(cfg), cwd=ROOT).start()

    def answers() -> bool:
        if server.returncode is not None:
            raise AssertionError(f"metrics-serve exited {server.returncode}:\n{server.output()}")
        try:
            http_get(f"http://127.0.0.1:{port}/")
            return True
        except OSError:
            return False

    wait_until(answers, 120, "metrics-serve to answer")
    return server


@pytest.mark.postgres
@pytest.mark.s3
def test_status_and_its_metrics_agree_on_loaded_missing_failed_and_late_tables(stack, tmp_path):
    seed_feeds(stack, run_task)
    cfg = stack.write_config(tmp_path / "feeds.cfg")
    said = cli(stack, cfg, "status", *TASKS, *WINDOW, "--now", NOW, "--json")
    out = json.loads(said.stdout)
    assert said.returncode == out["exit_code"] == 30, said.stderr
    assert [(p["task"], p["freshness"]["late"], p["totals"]["failed"], p["totals"]["missing"] > 0)
            for p in out["pipelines"]] == [("DailyFeedA", True, 1, True), ("DailyFeedB", False, 0, False),
                                           ("HourlyFeed", True, 0, True)]

    textfile = tmp_path / "textfile" / "luigi_pipelines.prom"
    textfile.parent.mkdir()
    exported = cli(stack, cfg, "status", *TASKS, *WINDOW, "--now", NOW, "--prometheus", "--textfile", str(textfile))
    assert exported.returncode == 30, exported.stderr
    got = samples(exported.stdout)
    assert got == expected_from_json(out)  # every series, and nothing else (stale: not checked, so not said)
    assert textfile.read_text() == exported.stdout and [p.name for p in textfile.parent.iterdir()] == [textfile.name]
    assert textfile.stat().st_mode & 0o777 == 0o644

    port = free_port()
    server = _serve(stack, cfg, tmp_path, port)
    try:
        served = http_get(f"http://127.0.0.1:{port}/metrics").decode()
        with pytest.raises(urllib.error.HTTPError, match="404"):
            http_get(f"http://127.0.0.1:{port}/other")
    finally:
        stopped = server.stop()
    assert f"serving http://127.0.0.1:{port}/metrics" in server.output()
    assert served == exported.stdout and stopped == 0  # SIGTERM ends it cleanly


# -- pure: the text format, the cache, the alert rules ---------------------------------------------------------------


def _late_and_failed() -> Calendar:
    days = tuple(DateState(datetime.date(2019, 2, n), state, **({"rows": 5, "bytes": 70, "seconds": 0.25,
                 "finished_at": datetime.datetime(2019, 2, 2, 3, n, tzinfo=UTC)} if state == LOADED else {}))
                 for n, state in ((1, LOADED), (2, LOADED), (3, FAILED), (4, MISSING)))
    fresh = Freshness.of(DAILY, datetime.date(2019, 2, 2), datetime.datetime(2019, 2, 5, tzinfo=UTC),
                         datetime.timedelta(hours=26))
    return Calendar("LoadT", 's.t/region=e"u\\', datetime.date(2019, 2, 1), datetime.date(2019, 2, 5), days,
                    freshness=fresh)


def test_the_text_format_escapes_labels_and_says_each_family_once():
    text = metrics.exposition([_late_and_failed()], 30)
    got = samples(text)
    labels = (("scope", 'region=e"u\\'), ("table", "s.t"), ("task", "LoadT"))
    assert got["luigi_pipelines_late", labels] == 1
    assert got["luigi_pipelines_lateness_seconds", labels] == 2 * 86400 - 26 * 3600
    assert got["luigi_pipelines_last_load_timestamp_seconds", labels] == datetime.datetime(
        2019, 2, 2, 3, 2, tzinfo=UTC).timestamp()
    assert got["luigi_pipelines_partitions", (labels[0], ("state", "failed"), *labels[1:])] == 1
    assert ("luigi_pipelines_partitions", (labels[0], ("state", "stale"), *labels[1:])) not in got  # not checked
    assert [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")] == [
        n for n in metrics.FAMILIES]  # every family, once, in order


def test_metrics_serve_computes_again_only_after_its_cache_time():
    clock = types.SimpleNamespace(now=0.0)
    source = CachedText(lambda: f"n {source.computed}\n", 10.0, clock=lambda: clock.now)
    assert [source.text(), source.text()] == ["n 0\n", "n 0\n"]
    clock.now = 9.9
    assert source.text() == "n 0\n" and source.computed == 1
    clock.now = 10.0
    assert source.text() == "n 1\n" and source.computed == 2


def test_metrics_serve_answers_500_when_the_metrics_cannot_be_computed():
    """A scrape that cannot be answered fails (Prometheus' ``up`` is 0), with the reason on one line; the next
    scrape computes again (nothing failed is cached)."""
    calls = []

    def compute() -> str:
        calls.append(1)
        raise OSError("could not connect to server: Connection refused\n\tIs the server running?")

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_of(CachedText(compute, 10.0)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for _ in range(2):
            with pytest.raises(urllib.error.HTTPError) as failed:
                http_get(f"{url}/metrics")
            assert failed.value.code == 500
            assert failed.value.read().decode() == ("computing the metrics failed: OSError: could not connect to "
                                                    "server: Connection refused Is the server running?\n")
        assert http_get(f"{url}/").decode().endswith("the metrics are at /metrics\n")
    finally:
        server.shutdown()
        server.server_close()
    assert len(calls) == 2


def _luigid_collector_names() -> set[str]:
    """What luigi's own collector emits once a task started, failed and was done (in-process, as luigid runs it)."""
    from luigi.contrib.prometheus_metric import PrometheusMetricsCollector

    collector = PrometheusMetricsCollector()
    task = types.SimpleNamespace(family="LoadT", params={}, updated=2.0, time_running=1.0)
    for handle in (collector.handle_task_started, collector.handle_task_failed, collector.handle_task_done):
        handle(task)
    collector.handle_task_disabled(task, None)
    return families(collector.generate_latest().decode())


def test_the_example_alert_rules_parse_and_name_only_series_that_are_emitted():
    rules = yaml.safe_load((ROOT / "configs" / "alerts.yml").read_text())
    exprs = {r["alert"]: r["expr"] for group in rules["groups"] for r in group["rules"]}
    assert {"LuigiPipelinesTableLate", "LuigiPipelinesPartitionFailed"} <= set(exprs)
    emitted = families(metrics.exposition([_late_and_failed()], 30)) | _luigid_collector_names()
    selectors = [re.sub(r"\{[^}]*\}|\[[^]]*\]", "", expr) for expr in exprs.values()]  # no label matchers, ranges
    named = {n for text in selectors for n in re.findall(r"\b(luigi_\w+|up)\b", text)}
    assert named - {"up"} <= emitted, named - emitted  # `up`: Prometheus' own series of a scrape
    assert 'state="failed"' in exprs["LuigiPipelinesPartitionFailed"]
    assert "luigi_pipelines_late" in exprs["LuigiPipelinesTableLate"]
