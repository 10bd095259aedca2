"""More than one host: luigid, PostgreSQL and S3 in one network namespace, a worker in each of two others,
joined by veth pairs. One worker's link is cut in the middle of a load.

    namespace "server" (luigid :8082, PostgreSQL :5432, moto S3 :9000)
        va 10.77.1.1/24 <-- veth --> eth0 10.77.1.2/24   namespace "a" (worker a)
        vb 10.77.2.1/24 <-- veth --> eth0 10.77.2.2/24   namespace "b" (worker b)

Cutting the link (the server end of the veth goes down) leaves both ends silent, as a pulled cable
or a partition would: no FIN, no RST. PostgreSQL's TCP keepalives (set per session from [database],
shortened here) end the cut-off worker's session, which rolls its transaction back and frees the
partition lock; luigid hands the task to the other worker after worker_disconnect_delay.
Needs root and iproute2 (veth); skips otherwise. Everything is removed in a finally.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from luigi_pipelines.devstack.local import LocalS3, Luigid, netns_prefix, wait_until
from luigi_pipelines.devstack.postgres import LocalPostgres
from tests.conftest import PostgresServer
from tests.scheduling_support import (
    HOOKED_TASK,
    assert_exactly_once,
    backfill_command,
    describe,
    luigid_config,
    read_paused,
    read_runs,
    start,
    wait_all,
    worker_settings,
)

pytestmark = [pytest.mark.netns, pytest.mark.scheduler, pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3]

START = datetime.date(2019, 2, 1)
DAYS = 12
SERVER_IP = {"a": "10.77.1.1", "b": "10.77.2.1"}  # the server as each worker's namespace sees it
PG_PORT, S3_PORT, LUIGID_PORT = 5432, 9000, 8082


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Namespaces:
    """Three network namespaces joined by two veth pairs (see the module docstring)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.server, self.a, self.b = f"lp{tag}s", f"lp{tag}a", f"lp{tag}b"
        self.created: list[str] = []

    def create(self) -> None:
        for ns in (self.server, self.a, self.b):
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for worker, net in ((self.a, 1), (self.b, 2)):
            end = "va" if worker == self.a else "vb"
            _ip("-n", self.server, "link", "add", end, "type", "veth", "peer", "name", "eth0", "netns", worker)
            _ip("-n", self.server, "addr", "add", f"10.77.{net}.1/24", "dev", end)
            _ip("-n", worker, "addr", "add", f"10.77.{net}.2/24", "dev", "eth0")
            _ip("-n", self.server, "link", "set", end, "up")
            _ip("-n", worker, "link", "set", "eth0", "up")

    def cut(self, worker: str) -> None:
        _ip("-n", self.server, "link", "set", "va" if worker == "a" else "vb", "down")

    def heal(self, worker: str) -> None:
        _ip("-n", self.server, "link", "set", "va" if worker == "a" else "vb", "up")

    def delete(self) -> None:
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.created.clear()


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("setpriv") is None:
        return "needs iproute2 (ip) and util-linux (setpriv)"
    probe = Namespaces()
    try:
        probe.create()
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        return f"cannot create network namespaces with veth pairs here: {str(detail).strip()}"
    finally:
        probe.delete()
    return None


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    ns = Namespaces()
    try:
        ns.create()
        yield ns
    finally:
        ns.delete()


def _seed_in(netns: str, bucket: str) -> dict[datetime.date, int]:
    """Create the bucket and put the objects from inside the server namespace (the test cannot reach it)."""
    code = (
        "import sys, datetime, json, boto3\n"
        "from tests.scheduling_support import seed_days\n"
        f"c = boto3.client('s3', endpoint_url='http://127.0.0.1:{S3_PORT}', region_name='us-east-1',"
        " aws_access_key_id='k', aws_secret_access_key='s')\n"
        f"c.create_bucket(Bucket='{bucket}')\n"
        f"rows = seed_days(None, datetime.date.fromisoformat('{START}'), {DAYS}, parts=3,"
        f" put=lambda k, b: c.put_object(Bucket='{bucket}', Key=k, Body=b))\n"
        "print(json.dumps({str(d): n for d, n in rows.items()}))\n"
    )
    out = subprocess.run([*netns_prefix(netns), sys.executable, "-c", code], cwd=Path(__file__).parents[1],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    import json

    return {datetime.date.fromisoformat(d): n for d, n in json.loads(out).items()}


def test_worker_link_cut_mid_load_across_namespaces(stack, tmp_path, namespaces):
    ns = namespaces
    # reached by the workers over TCP, by the test through the Unix socket (the namespace is not its own)
    pg = LocalPostgres(port=PG_PORT, listen_addresses="*", trust_networks=["10.77.0.0/16"], netns=ns.server)
    moto = LocalS3(S3_PORT, netns=ns.server, log=tmp_path / "moto.log")
    luigid_dir = tmp_path / "luigid"
    luigid_dir.mkdir()
    overrides = {"scheduler": {"worker_disconnect_delay": 2, "retry_delay": 0.5}}
    luigid = Luigid(luigid_dir, luigid_config(luigid_dir / "luigid.cfg", overrides), host="127.0.0.1",
                    port=LUIGID_PORT, netns=ns.server, listen="0.0.0.0")
    workers: dict[str, object] = {}
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    victim_date = (START + datetime.timedelta(days=3)).isoformat()
    try:
        pg.start()
        moto.start()
        luigid.start()
        expected = _seed_in(ns.server, stack.bucket)
        remote = dataclasses.replace(stack, pg=PostgresServer(pg.dsn))  # the test reads the data over the socket

        worker_settings(stack)
        for option, value in (("keepalives_idle", "1"), ("keepalives_interval", "1"), ("keepalives_count", "2"),
                              ("connect_timeout", "5")):
            stack.set_config("database", option, value)  # a cut-off session ends ~3 s after its last packet
        cfg = stack.write_config(tmp_path / "worker.cfg")
        window = ["--start", START.isoformat(), "--stop", (START + datetime.timedelta(days=DAYS)).isoformat(),
                  "--now", "2019-06-01T00:00:00Z"]
        for name, netns in (("a", ns.a), ("b", ns.b)):
            env = {**stack.env(cfg), "PGHOST": SERVER_IP[name], "PGPORT": str(PG_PORT), "PGUSER": "postgres",
                   "PGDATABASE": "postgres", "AWS_ENDPOINT_URL": f"http://{SERVER_IP[name]}:{S3_PORT}",
                   "LP_HOOK_DIR": str(hooks), "LP_WORKER_NAME": name, "LP_HOOK_PAUSE_DATE": victim_date,
                   "LP_HOOK_PAUSE_QUERY_S": "1"}
            env.pop("PGPASSWORD", None)
            cmd = backfill_command(*window, "--scheduler-host", SERVER_IP[name], "--scheduler-port", str(LUIGID_PORT))
            workers[name] = start(name, cmd, env, tmp_path, netns=netns)

        paused = wait_until(lambda: read_paused(hooks), 120, "a worker paused mid-load")
        cut_name = paused["worker"]
        other = "b" if cut_name == "a" else "a"
        ns.cut(cut_name)
        cut_at = time.monotonic()

        assert wait_all([workers[other]], 90) == {other: 0}, describe(list(workers.values()))
        finished_s = time.monotonic() - cut_at
        # the cut-off session was ended by PostgreSQL's keepalives, not by its client
        assert not remote.query("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (paused["backend_pid"],))
        assert_exactly_once(remote, expected)
        done = sorted(t["params"]["date"] for t in luigid.tasks("DONE", HOOKED_TASK).values())
        assert done == sorted(d.isoformat() for d in expected)
        victim_runs = [r for r in read_runs(hooks) if r.date == victim_date]
        assert [r.end for r in victim_runs if r.pid == paused["pid"]] == [None]  # still stuck behind the cut
        assert any(r.end is not None for r in victim_runs)  # ... and the other worker loaded the date

        # The link comes back: the cut-off worker's load fails (its session is gone) and writes nothing.
        ns.heal(cut_name)
        (hooks / "release").touch()
        code = wait_all([workers[cut_name]], 120)[cut_name]
        assert code != 0, workers[cut_name].output()[-3000:]
        assert [r.end for r in read_runs(hooks) if r.pid == paused["pid"] and r.date == victim_date] == [None]
        assert_exactly_once(remote, expected)
        print(f"worker {cut_name} cut mid-load: backfill done by {other} {finished_s:.1f} s after the cut; "
              f"the cut-off worker exited {code} after the link came back")
    finally:
        for w in workers.values():
            w.kill()
        luigid.stop()
        moto.stop()
        pg.destroy()


HOURLY_START = datetime.date(2019, 3, 1)
HOURLY_TASK = "HookedLoadHourlyEvents"


def _seed_hours_in(netns: str, bucket: str, days: int) -> dict[str, int]:
    """``days`` days of hourly objects (2 rows each) put from inside the server namespace; rows per hour."""
    code = (
        "import datetime, boto3\n"
        f"c = boto3.client('s3', endpoint_url='http://127.0.0.1:{S3_PORT}', region_name='us-east-1',"
        " aws_access_key_id='k', aws_secret_access_key='s')\n"
        f"c.create_bucket(Bucket='{bucket}')\n"
        f"start = datetime.datetime.fromisoformat('{HOURLY_START}')\n"
        f"for n in range({days} * 24):\n"
        "    h = start + datetime.timedelta(hours=n)\n"
        "    c.put_object(Bucket=" + repr(bucket) + ", Key=f'events/{h:%Y/%m/%d/%H}/a.csv',"
        " Body=f'id,kind\\n{n},k\\n{100000 + n},k\\n'.encode())\n"
    )
    subprocess.run([*netns_prefix(netns), sys.executable, "-c", code], cwd=Path(__file__).parents[1],
                   capture_output=True, text=True, check=True, timeout=300)
    start = datetime.datetime.combine(HOURLY_START, datetime.time())
    return {f"{start + datetime.timedelta(hours=n):%Y-%m-%dT%H}": 2 for n in range(days * 24)}


def _hour_rows(remote) -> dict[str, int]:
    rows = remote.query(f'SELECT day, hour, count(*) FROM "{remote.schema}".transaction GROUP BY 1, 2')
    return {f"{day:%Y-%m-%d}T{hour:02d}": n for day, hour, n in rows}


def test_hourly_waves_on_two_worker_hosts_one_cut_off_mid_load(stack, tmp_path, namespaces):
    """An hourly range by ``backfill`` in waves on two worker hosts: days 1-2 by host a alone, days 3-4 by both
    (their throughput printed), day 5 by both until one is cut off in the middle of a load: its open partition rolls
    back, the other host loads it after luigid's timeout, and every hour of the five days is written once. The
    cut-off host's backfill cannot ask PostgreSQL how its waves progress: it ends its waves and exits 35."""
    ns = namespaces
    pg = LocalPostgres(port=PG_PORT, listen_addresses="*", trust_networks=["10.77.0.0/16"], netns=ns.server)
    moto = LocalS3(S3_PORT, netns=ns.server, log=tmp_path / "moto.log")
    (tmp_path / "luigid").mkdir()
    overrides = {"scheduler": {"worker_disconnect_delay": 2, "retry_delay": 0.5}}
    luigid = Luigid(tmp_path / "luigid", luigid_config(tmp_path / "luigid" / "luigid.cfg", overrides),
                    host="127.0.0.1", port=LUIGID_PORT, netns=ns.server, listen="0.0.0.0")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    workers: list = []
    victim = f"{HOURLY_START + datetime.timedelta(days=4)}T05"
    try:
        pg.start()
        moto.start()
        luigid.start()
        expected = _seed_hours_in(ns.server, stack.bucket, 5)
        remote = dataclasses.replace(stack, pg=PostgresServer(pg.dsn))
        worker_settings(stack)
        for option, value in (("keepalives_idle", "1"), ("keepalives_interval", "1"), ("keepalives_count", "2"),
                              ("connect_timeout", "5")):
            stack.set_config("database", option, value)
        cfg = stack.write_config(tmp_path / "worker.cfg")

        def host(name: str, netns: str, day: int, run: int, days: int = 1) -> object:
            env = {**stack.env(cfg), "PGHOST": SERVER_IP[name], "PGPORT": str(PG_PORT), "PGUSER": "postgres",
                   "PGDATABASE": "postgres", "AWS_ENDPOINT_URL": f"http://{SERVER_IP[name]}:{S3_PORT}",
                   "LP_HOOK_DIR": str(hooks), "LP_WORKER_NAME": name, "LP_HOOK_PAUSE_DATE": victim,
                   "LP_HOOK_PAUSE_QUERY_S": "1"}
            env.pop("PGPASSWORD", None)
            first = HOURLY_START + datetime.timedelta(days=day)
            cmd = backfill_command("--start", first.isoformat(), "--stop", str(first + datetime.timedelta(days=days)),
                                   "--now", "2019-06-01T00:00:00Z", "--scheduler-host", SERVER_IP[name],
                                   "--scheduler-port", str(LUIGID_PORT), "--wave-size", "16", "--next-wave-at", "4",
                                   module="tests.hourly_tasks", task=HOURLY_TASK)
            proc = start(f"{name}{run}", cmd, env, tmp_path, netns=netns)
            workers.append(proc)
            return proc

        rates = {}
        for hosts, day in ((("a",), 0), (("a", "b"), 2)):
            began = time.monotonic()
            procs = [host(name, getattr(ns, name), day, day, days=2) for name in hosts]
            assert set(wait_all(procs, 240).values()) == {0}, describe(procs)
            rates[len(hosts)] = 48 / (time.monotonic() - began)

        day3 = {name: host(name, getattr(ns, name), 4, 4) for name in ("a", "b")}
        paused = wait_until(lambda: read_paused(hooks), 120, "a worker paused mid-load")
        cut_name = paused["worker"]
        other = "b" if cut_name == "a" else "a"
        ns.cut(cut_name)
        assert wait_all([day3[other]], 120) == {f"{other}4": 0}, describe(list(day3.values()))
        assert not remote.query("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (paused["backend_pid"],))
        assert _hour_rows(remote) == expected
        wrote = Counter(line.split()[2] for line in (hooks / "wrote").read_text().splitlines())
        assert wrote == Counter(dict.fromkeys(expected, 1))  # every hour written once, the victim by the other host
        ns.heal(cut_name)
        (hooks / "release").touch()
        code = wait_all([day3[cut_name]], 120)[f"{cut_name}4"]
        assert code != 0, day3[cut_name].output()[-3000:]
        assert _hour_rows(remote) == expected  # the cut-off load wrote nothing when it came back
        # throughput is printed, never asserted: every host shares this machine's CPUs with the servers
        print(f"hourly waves across hosts: 1 host {rates[1]:.1f} hours/s, 2 hosts {rates[2]:.1f} hours/s (48 hours "
              f"each, waves of 16); {cut_name} cut mid-load at {victim}, {other} finished; {cut_name} exited {code}")
    finally:
        for w in workers:
            w.kill()
        luigid.stop()
        moto.stop()
        pg.destroy()
