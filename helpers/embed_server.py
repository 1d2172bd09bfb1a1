"""The embed player as a local page: `python -m helpers.play --browser` serves it on 127.0.0.1.

    with EmbedServer() as server:        # binds 127.0.0.1 only, on a free port
        print(server.url)                # http://127.0.0.1:PORT/?token=...
        listener = EmbedListener(server)

The standard library's threading HTTP server is enough for one person's page: the page gets the
player's state as server-sent events (`GET /events`) and posts its events as JSON
(`POST /event`), answered with the state after them (the positions logged so far). Every request
but the player's own script and style must carry the random token of the page's URL; events are
taken only with the page's own `Origin` and a `Host` of 127.0.0.1, so another site open in the
browser can neither post fake plays nor read the state. When the server stops, its event
streams end and the page pauses the player and says so.
"""
from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from helpers.embed import PLAYER_SCRIPT, PLAYER_STYLE, STATIC_DIR, embed_api_url

PAGE = STATIC_DIR / "embed_page.html"
PAGE_SCRIPT = STATIC_DIR / "embed_page.js"
STATIC_FILES = {"/embed_player.js": (PLAYER_SCRIPT, "text/javascript"),
                "/embed_page.js": (PAGE_SCRIPT, "text/javascript"),
                "/embed_player.css": (PLAYER_STYLE, "text/css")}
KEEPALIVE_SECONDS = 1.0  # how often an idle event stream is written to (a closed page shows within it)
MAX_EVENT_BYTES = 64 * 1024


class EmbedServer:
    """The local page of the embed player (a `helpers.embed.PlayerView`), on 127.0.0.1 only."""

    def __init__(self, port: int = 0, api_url: str | None = None) -> None:
        self.api_url = api_url or embed_api_url()
        self.token = secrets.token_urlsafe(24)
        self._handler: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
        self._state: dict[str, Any] = {}
        self._version = 0
        self._changed = threading.Condition()
        self._streams = 0
        self._ever_connected = False
        self._gone_since: float | None = None
        self._stopped = False
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def url(self) -> str:
        """The page's address, with its token (anyone holding it can post events)."""
        return f"{self.origin}/?token={self.token}"

    def start(self) -> "EmbedServer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="embed-server", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: open event streams end, so the page pauses and says that the player stopped."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> "EmbedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # helpers.embed.PlayerView
    def attach(self, handler: Callable[[Mapping[str, Any]], dict[str, Any]]) -> None:
        self._handler = handler

    def publish(self, state: dict[str, Any]) -> None:
        with self._changed:
            self._state = state
            self._version += 1
            self._changed.notify_all()

    def gone_for(self) -> float | None:
        with self._changed:
            return None if self._gone_since is None else time.monotonic() - self._gone_since

    def failure(self) -> str | None:
        return "the player page's server stopped" if self._stopped else None

    # the request handler's side
    def page_state(self) -> dict[str, Any]:
        with self._changed:
            return {"state": self._state, "api_url": self.api_url}

    def take(self, event: Mapping[str, Any]) -> dict[str, Any]:
        if self._handler is None:
            raise ValueError("no player is attached to this page yet")
        return {"state": self._handler(event), "api_url": self.api_url}

    def stream(self, write: Callable[[bytes], None]) -> None:
        """Write the state, then every change of it, as server-sent events until the page or the server goes."""
        with self._changed:
            self._streams += 1
            self._ever_connected = True
            self._gone_since = None
        try:
            seen = -1
            while True:
                with self._changed:
                    if self._version == seen and not self._stopped:
                        self._changed.wait(KEEPALIVE_SECONDS)
                    fresh, stopped = self._version != seen, self._stopped
                    seen, payload = self._version, {"state": self._state, "api_url": self.api_url}
                if fresh:  # the last state goes out before the stream ends
                    write(b"data: " + json.dumps(payload).encode() + b"\n\n")
                if stopped:
                    return
                if not fresh:
                    write(b": keepalive\n\n")
        except OSError:
            return
        finally:
            with self._changed:
                self._streams -= 1
                if self._streams == 0:
                    self._gone_since = time.monotonic()


def _handler_for(server: EmbedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the standard library's name
            pass

        def _query(self) -> dict[str, list[str]]:
            return parse_qs(urlsplit(self.path).query)

        def _allowed(self) -> bool:
            """The server still serves, the right Host (no DNS rebinding) and the page's token."""
            if server.failure():  # a connection kept alive from before the stop
                self.close_connection = True
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"the player's server has stopped", "text/plain")
                return False
            host_ok = self.headers.get("Host") == server.origin.removeprefix("http://")
            token = self._query().get("token", [""])[0]
            if host_ok and secrets.compare_digest(token.encode(), server.token.encode()):
                return True
            self._send(HTTPStatus.FORBIDDEN, b"forbidden: open the address the command printed", "text/plain")
            return False

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Content-Security-Policy", "frame-ancestors 'none'")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: HTTPStatus, payload: object) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            path = urlsplit(self.path).path
            if path == "/favicon.ico":
                self._send(HTTPStatus.NOT_FOUND, b"", "text/plain")
            elif path in STATIC_FILES:
                file, content_type = STATIC_FILES[path]
                self._send(HTTPStatus.OK, file.read_bytes(), content_type)
            elif not self._allowed():
                return
            elif path == "/":
                self._send(HTTPStatus.OK, PAGE.read_bytes(), "text/html")
            elif path == "/state":
                self._json(HTTPStatus.OK, server.page_state())
            elif path == "/events":
                self._events()
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

        def _events(self) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()

            def write(chunk: bytes) -> None:
                self.wfile.write(chunk)
                self.wfile.flush()

            server.stream(write)
            self.close_connection = True

        def do_POST(self) -> None:  # noqa: N802 - the standard library's name
            if urlsplit(self.path).path != "/event":
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
                return
            if not self._allowed():
                return
            if self.headers.get("Origin") != server.origin:
                self._send(HTTPStatus.FORBIDDEN, b"forbidden: events come from the player page only", "text/plain")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_EVENT_BYTES:
                self._send(HTTPStatus.BAD_REQUEST, b"an event is a JSON object of at most 64 KiB", "text/plain")
                return
            try:
                event = json.loads(self.rfile.read(length))
                if not isinstance(event, dict):
                    raise ValueError("an event must be a JSON object")
                answer = server.take(event)
            except ValueError as error:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            except Exception as error:  # noqa: BLE001 - the page shows why the song could not be logged
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(error).__name__}: {error}"})
            else:
                self._json(HTTPStatus.OK, answer)

    return Handler
