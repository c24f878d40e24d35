"""A TCP proxy in front of a real server (SeaweedFS's S3 here) whose faults a test switches on and off.

Modes: ``up`` forwards bytes both ways; ``down`` refuses connections (the listening socket is closed, so a
client gets ECONNREFUSED, as from a stopped server); ``frozen`` accepts and reads but never answers (a hung
server: only the client's read timeout ends the wait); ``erroring`` answers every request with S3's 503
SlowDown. Switching to ``down`` or ``frozen`` also cuts the connections in flight, so a fault lands in the
middle of an upload. SigV4 signatures stay valid: the proxy forwards the Host header the client signed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

UP, DOWN, FROZEN, ERRORING = "up", "down", "frozen", "erroring"
SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\nContent-Length: 124\r\n\r\n"
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message>'
    b"</Error>"
)


class FaultProxy:
    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.mode = UP
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.connections_seen = 0
        self._listen()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        """Switch fault mode; down/frozen cut the connections in flight."""
        with self._lock:
            self.mode = mode
            if mode in (DOWN, FROZEN):
                self._cut_all()
            if mode == DOWN and self._listener is not None:
                _close(self._listener)  # shutdown first: a bare close leaves a blocked accept() listening
                self._listener = None
        if mode != DOWN and self._listener is None:
            self._listen()

    @contextlib.contextmanager
    def fault(self, mode: str) -> Iterator[None]:
        self.set_mode(mode)
        try:
            yield
        finally:
            self.set_mode(UP)

    def close(self) -> None:
        with self._lock:
            self._cut_all()
            if self._listener is not None:
                _close(self._listener)
                self._listener = None

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by set_mode(DOWN) or close()
                return
            with self._lock:
                self.connections_seen += 1
                self._connections.add(client)
                mode = self.mode
            threading.Thread(target=self._serve, args=(client, mode), daemon=True).start()

    def _serve(self, client: socket.socket, mode: str) -> None:
        try:
            if mode == ERRORING:
                client.recv(65536)
                client.sendall(SLOW_DOWN)
            elif mode == FROZEN:
                while client.recv(65536):
                    pass
            else:
                upstream = socket.create_connection(self.target)
                with self._lock:
                    self._connections.add(upstream)
                threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
                _pipe(client, upstream)
        except OSError:
            pass
        finally:
            _close(client)

    def _cut_all(self) -> None:
        for conn in self._connections:
            _close(conn)
        self._connections.clear()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _close(sink)


def _close(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        conn.close()
