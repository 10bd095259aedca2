"""The phases of ``bench/phases.py`` as the ``overhead`` section names them, in the order they are shown."""
from __future__ import annotations

LABELS = {
    "scheduling": "scheduling (luigi: tasks, scheduler, worker loop)",
    "luigid_rpc": "luigid RPCs",
    "completeness": "completeness (marker checks)",
    "s3_exists": "S3 existence check (dependency)",
    "connect": "connect",
    "ddl": "DDL checks (prepare)",
    "s3_list": "S3 LIST (load)",
    "transaction": "transaction (lock, marker, delete, COPY, commit)",
}
