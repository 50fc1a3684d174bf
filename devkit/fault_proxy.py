"""An HTTP proxy on 127.0.0.1 that can make a real service fail: 5xx answers, slowness.

Put in front of Azurite, it lets tests see what the app does when Blob Storage
misbehaves, with the real azure-storage-blob client on one side and the real
emulator on the other. Shared-key signatures cover the path, not the port, so
a connection string that names the proxy's port works unchanged.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
}


@dataclass
class ProxyFaults:
    """What to do to the requests that pass: fail_next answers 503 to the next N, delay waits."""

    fail_next: int = 0
    fail_all: bool = False
    delay_seconds: float = 0.0


class FaultProxy:
    """Forwards every request to 127.0.0.1:`target_port`, with faults applied."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.faults = ProxyFaults()
        self.requests = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        if self._server is None:
            raise RuntimeError("the proxy is not running")
        return self._server.server_address[1]

    def start(self) -> FaultProxy:
        """Listen on a free 127.0.0.1 port, serving in a background thread."""
        proxy = self

        class Handler(_ForwardingHandler):
            owner = proxy

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _take_fault(self) -> tuple[bool, float]:
        with self._lock:
            self.requests += 1
            if self.faults.fail_all:
                return True, self.faults.delay_seconds
            if self.faults.fail_next > 0:
                self.faults.fail_next -= 1
                return True, self.faults.delay_seconds
            return False, self.faults.delay_seconds


class _ForwardingHandler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._forward()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        fail, delay = self.owner._take_fault()
        if delay:
            time.sleep(delay)
        if fail:
            self._answer(503, [("Content-Length", "0")], b"")
            return
        upstream = http.client.HTTPConnection(HOST, self.owner.target_port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            if self.command == "HEAD":  # the length of the blob, not of an empty body
                passed = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            else:
                passed = [
                    (k, v)
                    for k, v in response.getheaders()
                    if k.lower() not in _HOP_BY_HOP | {"content-length"}
                ]
                passed.append(("Content-Length", str(len(payload))))
            self._answer(response.status, passed, payload)
        finally:
            upstream.close()

    def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("proxy: " + format, *args)
