"""Run the luigi command line once a start file appears, so that many processes race from one instant.

    python tests/start_together.py GO_FILE [luigi arguments ...]

Everything slow (luigi, boto3, psycopg2 and the ``--module`` pipeline) is imported first; then the
process creates ``GO_FILE.ready.<pid>``, waits (at most 120 s) for ``GO_FILE`` and runs luigi's own
entry point, exiting with its code.
"""
from __future__ import annotations

import importlib
import os
import sys
import time

import luigi.retcodes


def main(go_file: str, argv: list[str]) -> None:
    if "--module" in argv:
        importlib.import_module(argv[argv.index("--module") + 1])
    open(f"{go_file}.ready.{os.getpid()}", "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists(go_file):
        if time.monotonic() > deadline:
            sys.exit(f"{go_file} never appeared")
        time.sleep(0.005)
    luigi.retcodes.run_with_retcodes(argv)


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main(sys.argv[1], sys.argv[2:])
