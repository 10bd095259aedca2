"""The ``luigi-pipelines metrics-serve`` command: ``status``'s per-table metrics (``luigi_pipelines.metrics``) over
HTTP for Prometheus to scrape, computed on a scrape and kept for a few seconds.

A small stdlib server (``http.server``), on the loopback address unless told otherwise (it has no authentication):
``GET /metrics`` answers the text format; a failed computation answers 500 with one line, so the scrape fails
(``up == 0``) rather than showing old numbers. The first computation happens before it serves, so a wrong
``--module``/``--task`` or a database that cannot be reached ends it at once with the usual exit code.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import metrics, status
from .reporting import one_line
from .states import exit_code

UTC = datetime.timezone.utc
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
logger = logging.getLogger("luigi_pipelines.metrics_serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    status.add_selection(parser)
    serve = parser.add_argument_group("serving")
    serve.add_argument("--address", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 for a Prometheus on another host)")
    serve.add_argument("--port", type=int, default=9469, help="port (default 9469; 0: any free one, printed)")
    serve.add_argument("--cache-s", type=float, default=10.0,
                       help="answer scrapes within this many seconds of the last computation from it (default 10)")


class CachedText:
    """``compute()``'s text, computed again only when the last one is older than ``cache_s`` (one at a time)."""

    def __init__(self, compute: Callable[[], str], cache_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._compute, self._cache_s, self._clock = compute, cache_s, clock
        self._lock = threading.Lock()
        self._text: str | None = None
        self._at = 0.0
        self.computed = 0  # how many times it was computed

    def text(self) -> str:
        with self._lock:
            if self._text is None or self._clock() - self._at >= self._cache_s:
                self._text = self._compute()
                self._at = self._clock()
                self.computed += 1
            return self._text


def render(args: argparse.Namespace) -> str:
    """The metrics of the arguments' pipelines and window, now (or at ``--now``)."""
    now = args.now or datetime.datetime.now(UTC)
    calendars = status.gather(args, now) or []
    return metrics.exposition(calendars, exit_code(calendars))


def handler_of(source: CachedText) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0]
            if path not in ("/metrics", "/"):
                return self._answer(404, "not found: the metrics are at /metrics\n")
            if path == "/":
                return self._answer(200, "luigi-pipelines metrics-serve: the metrics are at /metrics\n")
            try:
                text = source.text()
            except Exception as exc:
                logger.error("computing the metrics failed: %s: %s", type(exc).__name__, one_line(str(exc)))
                return self._answer(500, f"computing the metrics failed: {type(exc).__name__}: {one_line(str(exc))}\n")
            self._answer(200, text, CONTENT_TYPE)

        def _answer(self, code: int, text: str, content_type: str = "text/plain; charset=utf-8") -> None:
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            logger.debug(format, *args)

    return MetricsHandler


def main(args: argparse.Namespace) -> int:
    source = CachedText(lambda: render(args), args.cache_s)
    source.text()  # a wrong task or an unreachable database ends the command now, not on the first scrape
    server = ThreadingHTTPServer((args.address, args.port), handler_of(source))
    host, port = str(server.server_address[0]), server.server_address[1]
    print(f"luigi-pipelines metrics-serve: serving http://{host}:{port}/metrics", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
