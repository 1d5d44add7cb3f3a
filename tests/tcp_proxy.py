"""A TCP proxy in front of a real server that a test can cut, as a network failure or a broker restart would.

Clients connect to :attr:`TcpProxy.port`; each connection is relayed to the server. :meth:`TcpProxy.cut` closes
every relayed connection at once (both sides, with a reset), new connections are relayed again. With
``cut_every_bytes`` the proxy cuts by itself each time that many bytes went from clients to the server, up to
``cuts`` times: mid-stream, wherever the bytes fall.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType


class TcpProxy:
    def __init__(self, host: str, port: int, *, cut_every_bytes: int | None = None, cuts: int = 0) -> None:
        self.upstream = (host, port)
        self.cut_every_bytes = cut_every_bytes
        self.cuts_left = cuts
        self.cuts_done = 0
        self._sent = 0
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, amqp_url: str) -> str:
        """``amqp_url`` pointed at the proxy instead of the server."""
        scheme, rest = amqp_url.split("://", 1)
        credentials, _, location = rest.rpartition("@")
        path = location.split("/", 1)[1] if "/" in location else ""
        return f"{scheme}://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}/{path}"

    def cut(self) -> None:
        """Reset every relayed connection now."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            self.cuts_done += 1
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, upstream: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
            except OSError:
                break
            if upstream and self._count(len(data)):
                self.cut()
                return
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.close()

    def _count(self, sent: int) -> bool:
        """Whether the bytes just sent to the server call for a cut."""
        if self.cut_every_bytes is None:
            return False
        with self._lock:
            self._sent += sent
            if self.cuts_left <= 0 or self._sent < self.cut_every_bytes:
                return False
            self._sent = 0
            self.cuts_left -= 1
            return True
