"""A tiny local HTTP server in a thread, for endpoint tests: ``with serve(handler) as url: ...``.

``handler(request, body)`` gets the ``BaseHTTPRequestHandler`` and the request body and answers through
``request`` (``send_response``/``wfile``). Binds 127.0.0.1 on a free port; the server and every handler
thread stop when the block ends, so a misbehaving handler cannot outlive its test by more than ``grace``.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handler = Callable[[BaseHTTPRequestHandler, bytes], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextlib.contextmanager
def serve(handler: Handler, *, grace: float = 2.0) -> Iterator[str]:
    stop = threading.Event()
    calls: list[bytes] = []

    class _Request(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            calls.append(body)
            self.stop = stop
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                handler(self, body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = _Server(("127.0.0.1", 0), _Request)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/predict"
    serve.calls = calls  # type: ignore[attr-defined]
    try:
        yield url
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(grace)


def reply(request: BaseHTTPRequestHandler, payload: Any, *, status: int = 200, raw: bytes | None = None) -> None:
    """Answer ``payload`` as JSON (or ``raw`` bytes) with a correct Content-Length."""
    data = raw if raw is not None else json.dumps(payload).encode()
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(data)))
    request.end_headers()
    request.wfile.write(data)


def image_count(body: bytes) -> int:
    data = json.loads(body)
    return len(data.get("images", data.get("inputs", [])))
