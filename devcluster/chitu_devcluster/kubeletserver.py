"""The node agent's kubelet API, the part `kubectl logs` needs: GET /containerLogs/<namespace>/<pod>/<container>.

`kubectl logs` asks the apiserver, which proxies to the kubelet of the pod's node: to the Node's InternalIP at
`status.daemonEndpoints.kubeletEndpoint.Port`, over TLS, presenting its kubelet client certificate. This server
plays that endpoint as a kubelet does: HTTPS with a certificate of the cluster CA, and only clients holding a
certificate of the same CA (the apiserver) may read. A pod's log is the file its runner writes
(`<state>/pods/<namespace>/<pod>/<uid>/log`, the newest run); `follow=true` streams it until the pod's process
ends, `tailLines=N` starts N lines from the end, `limitBytes` caps the answer.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

log = logging.getLogger(__name__)

FOLLOW_POLL_SECONDS = 0.2
CHUNK = 64 * 1024


def newest_log(pods_dir: Path, namespace: str, pod: str) -> Path | None:
    """The log file of the newest run of `pod` (a recreated pod with the same name gets a new uid folder)."""
    runs = sorted((pods_dir / namespace / pod).glob("*/log"), key=lambda path: path.stat().st_mtime)
    return runs[-1] if runs else None


def tail_offset(data: bytes, lines: int) -> int:
    """Where the last `lines` lines of `data` start (a final line without a newline counts)."""
    if lines <= 0:
        return len(data)
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    start = end
    for _ in range(lines):
        start = data.rfind(b"\n", 0, start)
        if start < 0:
            return 0
    return start + 1


class KubeletServer:
    """Serves pod logs on 127.0.0.1:`port` (0 = a free port) until `close()`."""

    def __init__(
        self, pods_dir: Path, cert: Path, key: Path, ca: Path, is_running: Callable[[Path], bool], port: int = 0
    ):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED  # the apiserver's kubelet client certificate
        handler = type("Handler", (_LogHandler,), {"pods_dir": pods_dir, "is_running": staticmethod(is_running)})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="kubelet-api", daemon=True)

    def start(self) -> KubeletServer:
        self._thread.start()
        log.info("kubelet API (container logs) on https://127.0.0.1:%d", self.port)
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _LogHandler(BaseHTTPRequestHandler):
    pods_dir: Path
    is_running: Callable[[Path], bool]  # whether the run that writes this log file still runs

    def do_GET(self) -> None:
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            self.send_error(HTTPStatus.NOT_FOUND, "only /containerLogs/<namespace>/<pod>/<container> is served")
            return
        _, namespace, pod, _container = parts  # one container per pod runs on this node
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        path = newest_log(self.pods_dir, namespace, pod)
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND, f"no log of pod {namespace}/{pod} on this node")
            return
        follow = query.get("follow") == "true"
        limit = int(query["limitBytes"]) if "limitBytes" in query else None
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/plain")
        if not follow:
            data = self._initial(path, query)[0][:limit]
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._stream(path, query, limit)

    def _initial(self, path: Path, query: dict[str, str]) -> tuple[bytes, int]:
        """What is there now (or its last tailLines lines), and where following it goes on from."""
        data = path.read_bytes()
        start = tail_offset(data, int(query["tailLines"])) if "tailLines" in query else 0
        return data[start:], len(data)

    def _stream(self, path: Path, query: dict[str, str], limit: int | None) -> None:
        """Send what is there, then what is appended, until the pod's process has ended and all is sent."""
        sent = 0
        data, position = self._initial(path, query)
        try:
            while True:
                if data:
                    data = data[: None if limit is None else limit - sent]
                    self._chunk(data)
                    sent += len(data)
                if limit is not None and sent >= limit:
                    break
                running = self.is_running(path)
                with open(path, "rb") as log_file:
                    log_file.seek(position)
                    data = log_file.read(CHUNK)
                position += len(data)
                if not data and not running:
                    break
                if not data:
                    time.sleep(FOLLOW_POLL_SECONDS)
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped following

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:  # the base class names it `format`
        log.debug("kubelet API: " + format, *args)
