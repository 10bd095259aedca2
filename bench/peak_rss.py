"""A tiny wrapper that runs one command and reports its wall time, CPU time and true peak RSS to a JSON file.

Usage: ``python -I -S bench/peak_rss.py REPORT -- COMMAND...``; exits with the command's code.

Why a wrapper: Linux carries a process's peak RSS across ``exec``, so a child spawned straight from
the (large) benchmark process reports the benchmark's own peak. A child of this small interpreter
inherits only this interpreter's ~11 MB, which is therefore the floor of what can be measured.
Only the standard library is imported, so ``-I -S`` keeps that floor low.
"""
import json
import resource
import subprocess
import sys
import time


def main(argv: list) -> int:
    report, separator, command = argv[0], argv[1], argv[2:]
    if separator != "--" or not command:
        print(__doc__, file=sys.stderr)
        return 2
    started = time.monotonic()
    returncode = subprocess.call(command)
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(report, "w") as f:
        json.dump({"wall_s": wall, "max_rss_kib": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime,
                   "returncode": returncode}, f)
    return returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
