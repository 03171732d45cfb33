"""A threaded HTTP server on 127.0.0.1 with a route table and call counting."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class Reply(Exception):
    """Raise to answer with ``status``, a JSON ``body`` and ``headers``."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


Handler = Callable[..., Any]


class StandIn:
    """Subclasses add routes with :meth:`route`; ``start()`` serves them on 127.0.0.1."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], str, Handler]] = []
        self.calls: Counter[str] = Counter()
        self.lock = threading.RLock()
        self.server: ThreadingHTTPServer | None = None
        self.log: list[str] = []

    def route(self, method: str, pattern: str, name: str, handler: Handler) -> None:
        rx = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        self.routes.append((method, rx, name, handler))

    def before(self, method: str, name: str, headers: Any) -> None:
        """Hook for failure knobs and auth; raise :class:`Reply` to answer early."""

    @property
    def address(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def total_calls(self) -> int:
        return sum(self.calls.values())

    def start(self) -> StandIn:
        standin = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body, headers = standin.dispatch(self.command, parts.path, parse_qs(parts.query), raw,
                                                         self.headers)
                data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
                self.send_response(status)
                if body is not None and not isinstance(body, bytes):
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def dispatch(self, method: str, path: str, query: dict[str, list[str]], raw: bytes, headers: Any
                 ) -> tuple[int, Any, dict[str, str]]:
        for m, rx, name, handler in self.routes:
            match = rx.match(path)
            if m == method and match:
                with self.lock:
                    self.calls[name] += 1
                try:
                    self.before(method, name, headers)
                    body = json.loads(raw) if raw.strip() else None
                    q = {k: v[-1] for k, v in query.items()}
                    result = handler(body=body, query=q, headers=headers, **match.groupdict())
                except Reply as r:
                    return r.status, r.body, r.headers
                except json.JSONDecodeError as e:
                    return 400, {"error": {"code": 400, "message": f"bad JSON: {e}"}}, {}
                if isinstance(result, tuple):
                    return result[0], result[1], result[2] if len(result) > 2 else {}
                return 200, result, {}
        self.calls[f"unknown {method} {path}"] += 1
        return 404, {"error": {"code": 404, "message": f"no route {method} {path}"}}, {}
