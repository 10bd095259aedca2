"""A TCP proxy on 127.0.0.1 that cuts chosen HTTP responses after a number of bytes: a body stream that really breaks.

Everything else is forwarded unchanged. Each connection is pumped by two threads; all of them stop when
the proxy is stopped, or by themselves ``lifetime`` seconds after it started.
"""
from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_METHODS = (b"GET ", b"PUT ", b"HEAD ", b"POST ", b"DELETE ")


@dataclass
class _Exchange:
    """The request a connection is serving now, and how much of its response went back."""

    request: bytes = b""
    returned: int = 0
    cut: bool = False


@dataclass
class CuttingProxy:
    """Forwards 127.0.0.1:<port> to ``upstream``; the responses to the first ``cuts`` requests whose head
    ``matches`` end after ``cut_after`` bytes (headers included) with the connection closed."""

    upstream: str
    matches: Callable[[bytes], bool]
    cut_after: int
    cuts: int
    lifetime: float = 120
    heads: list[bytes] = field(default_factory=list)  # the head of every request seen, in order
    done_cuts: int = 0

    def __post_init__(self) -> None:
        target = urlsplit(self.upstream)
        self._target = (target.hostname or "127.0.0.1", target.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + self.lifetime
        self._threads = [threading.Thread(target=self._accept, daemon=True)]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def __enter__(self) -> CuttingProxy:
        self._threads[0].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while self._running():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            server = socket.create_connection(self._target, timeout=5)
            for sock in (client, server):
                sock.settimeout(60)  # for sendall to a reader that pauses; recv only follows select
            exchange = _Exchange()
            for target in (self._requests, self._responses):
                thread = threading.Thread(target=target, args=(client, server, exchange), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _requests(self, client: socket.socket, server: socket.socket, exchange: _Exchange) -> None:
        def passing(data: bytes) -> bytes:
            if data.startswith(_METHODS):  # a new request's head: decide now whether its response is cut
                with self._lock:
                    self.heads.append(data)
                    cut = self.done_cuts < self.cuts and self.matches(data)
                    self.done_cuts += cut
                exchange.request, exchange.returned, exchange.cut = data, 0, cut
            return data

        self._pump(client, server, passing, lambda: False)

    def _responses(self, client: socket.socket, server: socket.socket, exchange: _Exchange) -> None:
        def passing(data: bytes) -> bytes:
            if not exchange.cut:
                return data
            room = max(0, self.cut_after - exchange.returned)
            exchange.returned += len(data)
            return data[:room]

        self._pump(server, client, passing, lambda: exchange.cut and exchange.returned >= self.cut_after)

    def _pump(self, source: socket.socket, sink: socket.socket, passing: Callable[[bytes], bytes],
              cut: Callable[[], bool]) -> None:
        """Forward ``source`` to ``sink`` through ``passing`` until either side closes or ``cut()``, then
        close both (the client sees its response end early)."""
        try:
            while self._running():
                if not select.select([source], [], [], 0.2)[0]:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(passing(data))
                if cut():
                    break
        except (OSError, ValueError):
            pass  # the other direction closed the connection (select on a closed socket: ValueError)
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
