"""A fake Spotify Web API for the tests: real HTTP on 127.0.0.1, driven by the real spotipy client.

It plays one account: its devices, a player, the tracks in its library, and errors injected
on demand. The player's clock is the tests': every look at the playback (GET /me/player)
advances the current track by `step_ms`, and a track ends when the simulated person skips it
(at `listened` of its length) or it plays out; so a whole playlist plays in a few dozen requests.

    with FakeSpotify(tracks, liked={"id1"}) as fake:
        settings = SpotifySettings(access_token=fake.token, api_base=fake.api_base)
        fake.fail("GET", "/me/player", 429, retry_after=2)   # the next poll is rate limited

Endpoints: GET /me, GET /me/player, GET /me/player/devices, PUT /me/player (transfer),
PUT /me/player/shuffle, PUT /me/player/repeat, PUT /me/player/play, PUT /me/player/pause,
GET /me/library/contains, GET /tracks/{id}, the listening history's GET /me/top/tracks,
GET /me/player/recently-played and GET /me/tracks (`top`, `recent`: track ids, with the time of
each recent play; `liked` are the saved tracks), and the sign-in service's POST /api/token (refresh).

Scenarios: `relinked` plays another id for a requested track (the state's `item.id` is the
played id, `item.linked_from.id` the requested one); with shuffle on when the play request
arrives, the tracks play in a shuffled (seeded) order; `idle_state` answers GET /me/player
with the device's shuffle and repeat settings (and no item) before anything plays; `revoked`
answers every refresh with 400 invalid_grant.
"""
from __future__ import annotations

import _thread
import json
import random
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Literal
from urllib.parse import parse_qs, urlsplit

TRACK_URI_PREFIX = "spotify:track:"


@dataclass(frozen=True)
class FakeTrack:
    """A track of the fake catalogue, and how much of it the simulated person listens to."""

    name: str
    duration_ms: int = 200_000
    listened: float = 1.0


@dataclass
class InjectedError:
    """An error answer for `times` requests to `method path`, after `after` normal answers.

    With `apply=True` the request still takes effect before the error is answered (a 5xx that
    hides a success). `text` sends the message as plain text instead of Spotify's JSON.
    """

    method: str
    path: str
    status: int
    times: int = 1
    reason: str | None = None
    message: str = "injected error"
    retry_after: float | None = None
    apply: bool = False
    text: bool = False
    drop: bool = False  # close the connection without answering (a network error)
    after: int = 0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict | None


@dataclass
class Answer:
    status: int
    body: object = None
    headers: dict[str, str] = field(default_factory=dict)
    text: bool = False


def error_answer(status: int, message: str, reason: str | None = None, text: bool = False) -> Answer:
    if text:
        return Answer(status, message, text=True)
    error = {"status": status, "message": message, **({"reason": reason} if reason else {})}
    return Answer(status, {"error": error})


class FakeSpotify:
    """The fake server and the account it simulates; a context manager that starts and stops it."""

    def __init__(self, tracks: dict[str, FakeTrack], *, liked: set[str] | frozenset[str] = frozenset(),
                 devices: list[dict] | None = None, step_ms: int = 20_000, token: str = "fake-access-token-0123",
                 premium: bool = True, registered: bool = True,
                 end: Literal["stopped", "nothing", "autoplay"] = "stopped",
                 pause_at: tuple[int, int] | None = None, interrupt_at_poll: int | None = None,
                 relinked: dict[str, str] | None = None, idle_state: bool = False, revoked: bool = False,
                 top: dict[str, list[str]] | None = None, recent: list[tuple[str, str]] = ()) -> None:
        self.tracks = dict(tracks)
        self.liked = set(liked)
        self.devices = devices if devices is not None else [
            {"id": "phone-1", "name": "Test Phone", "type": "Smartphone", "is_active": True,
             "is_restricted": False, "volume_percent": 60}]
        self.step_ms = step_ms
        self.token = token
        self.premium = premium
        self.registered = registered
        self.end = end
        self.pause_at = pause_at  # (position, progress_ms): the person pauses there for good
        self.interrupt_at_poll = interrupt_at_poll  # simulates Ctrl-C in the client's main thread
        self.relinked = dict(relinked or {})  # requested id -> the id Spotify plays instead
        self.idle_state = idle_state
        self.revoked = revoked
        self.top = dict(top or {})  # time range -> track ids, most played first
        self.recent = list(recent)  # (track id, played_at) pairs, newest first
        self.unregistered_answer = error_answer(403, "User not registered in the Developer Dashboard")
        self.errors: list[InjectedError] = []
        self.requests: list[Request] = []
        self.plays: list[list[str]] = []  # the track ids of every play request that took effect
        self.polls = 0
        self.reported: list[dict | None] = []  # every playback state answered, in order
        self.queue: list[str] = []
        self.index = 0
        self.progress_ms = 0
        self.is_playing = False
        self.autoplay_item: str | None = None
        self.shuffle_state = True  # as a listener may have left them
        self.repeat_state = "context"
        self._lock = threading.Lock()
        self._server: HTTPServer | None = None

    # -- set-up -------------------------------------------------------------------------------
    def fail(self, method: str, path: str, status: int, **options) -> None:
        """Answer the next request(s) to `method path` with an error (see InjectedError)."""
        self.errors.append(InjectedError(method, path, status, **options))

    @property
    def api_base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1/"

    @property
    def token_url(self) -> str:
        """The sign-in service's token endpoint (spotipy's OAUTH_TOKEN_URL)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api/token"

    def __enter__(self) -> "FakeSpotify":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                answer = fake.handle(self.command, self.path, self.headers.get("Authorization"), raw)
                if answer is None:
                    self.close_connection = True
                    return
                payload = b""
                if answer.body is not None:
                    payload = (answer.body if answer.text else json.dumps(answer.body)).encode()
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if payload:
                    self.send_header("Content-Type", "text/plain" if answer.text else "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- what the tests look at ---------------------------------------------------------------
    def count(self, method: str, path: str) -> int:
        """How many requests reached `method path` (a path prefix ending in '/' matches below it)."""
        return sum(1 for request in self.requests if request.method == method and (
            request.path == path or (path.endswith("/") and request.path.startswith(path))))

    def percentage(self, track_id: str) -> float:
        """The share of the track the simulated person listens to."""
        track = self.tracks[track_id]
        return round(track.listened * track.duration_ms) / track.duration_ms

    # -- the API ------------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, authorization: str | None, raw: bytes) -> Answer | None:
        url = urlsplit(raw_path)
        path = url.path.rstrip("/").removeprefix("/v1")
        if path == "/api/token":
            body = None  # a form, not JSON
        else:
            body = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append(Request(method, path, parse_qs(url.query), body))
            if path == "/api/token" and method == "POST":
                return self.refresh()
            if authorization != f"Bearer {self.token}":
                return error_answer(401, "Invalid access token")
            injected = next((error for error in self.errors
                             if error.method == method and error.path == path and error.times > 0), None)
            if injected is None or injected.after > 0:
                if injected:
                    injected.after -= 1
                return self.route(method, path, parse_qs(url.query), body)
            injected.times -= 1
            if injected.apply:
                self.route(method, path, parse_qs(url.query), body)
            if injected.drop:
                return None
            answer = error_answer(injected.status, injected.message, injected.reason, injected.text)
            if injected.retry_after is not None:
                answer.headers["Retry-After"] = f"{injected.retry_after:g}"
            return answer

    def route(self, method: str, path: str, query: dict[str, list[str]], body: dict | None) -> Answer:
        if not self.registered:
            return self.unregistered_answer
        if path == "/me" and method == "GET":
            return Answer(200, {"id": "listener", "display_name": "Test Listener", "type": "user"})
        if path.startswith("/tracks/") and method == "GET":
            track_id = path.removeprefix("/tracks/")
            if track_id not in self.tracks:
                return error_answer(404, "Resource not found")
            return Answer(200, self.track_object(track_id))
        if path == "/me/library/contains" and method == "GET":
            uris = query.get("uris", [""])[0].split(",")
            if len(uris) > 40:
                return error_answer(400, "Too many ids requested")
            return Answer(200, [uri.removeprefix(TRACK_URI_PREFIX) in self.liked for uri in uris])
        if path in ("/me/top/tracks", "/me/player/recently-played", "/me/tracks") and method == "GET":
            return self.history(path, query)
        if path.startswith("/me/player") and not self.premium:
            return error_answer(403, "Player command failed: Premium required", "PREMIUM_REQUIRED")
        if path == "/me/player/devices" and method == "GET":
            return Answer(200, {"devices": self.devices})
        if path == "/me/player" and method == "GET":
            return self.poll()
        if path == "/me/player" and method == "PUT":
            return self.transfer(body["device_ids"][0])
        if path == "/me/player/play" and method == "PUT":
            return self.play(query.get("device_id", [None])[0], body or {})
        if path == "/me/player/pause" and method == "PUT":
            self.is_playing = False
            return Answer(204)
        if path == "/me/player/shuffle" and method == "PUT":
            self.shuffle_state = query["state"] == ["true"]
            return Answer(204)
        if path == "/me/player/repeat" and method == "PUT":
            self.repeat_state = query["state"][0]
            return Answer(204)
        return error_answer(404, f"Service not found: {method} {path}")

    def history(self, path: str, query: dict[str, list[str]]) -> Answer:
        """The top, recently played and saved tracks, paged by `limit` and `offset` as Spotify does."""
        limit, offset = int(query.get("limit", ["20"])[0]), int(query.get("offset", ["0"])[0])
        if limit > 50:
            return error_answer(400, "Invalid limit")
        if path == "/me/top/tracks":
            items = [self.track_object(track_id) for track_id in self.top.get(query["time_range"][0], [])]
        elif path == "/me/player/recently-played":
            items = [{"track": self.track_object(track_id), "played_at": moment} for track_id, moment in self.recent]
        else:
            items = [{"track": self.track_object(track_id), "added_at": "2025-01-0%dT10:00:00Z" % (1 + index % 9)}
                     for index, track_id in enumerate(sorted(self.liked))]
        page = items[offset:offset + limit]
        more = offset + limit < len(items) and path != "/me/player/recently-played"
        return Answer(200, {"items": page, "limit": limit, "offset": offset, "total": len(items),
                            "next": f"{path}?offset={offset + limit}" if more else None})

    def refresh(self) -> Answer:
        """POST /api/token: a fresh token, or 400 invalid_grant when the refresh token was revoked."""
        if self.revoked:
            return Answer(400, {"error": "invalid_grant", "error_description": "Refresh token revoked"})
        return Answer(200, {"access_token": self.token, "token_type": "Bearer", "expires_in": 3600,
                            "scope": "user-modify-playback-state user-read-playback-state user-library-read"})

    def track_object(self, track_id: str) -> dict:
        track = self.tracks[track_id]
        return {"id": track_id, "name": track.name, "uri": TRACK_URI_PREFIX + track_id, "type": "track",
                "duration_ms": track.duration_ms, "artists": [{"name": "Fake Artist"}]}

    def playing_object(self, track_id: str) -> dict:
        """The state's item for requested `track_id`: relinked to another id when Spotify does so."""
        if track_id not in self.relinked:
            return self.track_object(track_id)
        played = self.relinked[track_id]
        return {**self.track_object(track_id), "id": played, "uri": TRACK_URI_PREFIX + played,
                "linked_from": {"id": track_id, "uri": TRACK_URI_PREFIX + track_id, "type": "track"}}

    def active_device(self) -> dict | None:
        return next((device for device in self.devices if device["is_active"]), None)

    def transfer(self, device_id: str) -> Answer:
        if device_id not in {device["id"] for device in self.devices}:
            return error_answer(404, "Device not found")
        for device in self.devices:
            device["is_active"] = device["id"] == device_id
        return Answer(204)

    def play(self, device_id: str | None, body: dict) -> Answer:
        if device_id is None and self.active_device() is None:
            return error_answer(404, "Player command failed: No active device found", "NO_ACTIVE_DEVICE")
        if device_id is not None:
            answer = self.transfer(device_id)
            if answer.status != 204:
                return answer
        track_ids = [uri.removeprefix(TRACK_URI_PREFIX) for uri in body.get("uris", [])]
        if not track_ids or any(track_id not in self.tracks for track_id in track_ids):
            return error_answer(400, "Invalid track uri")
        self.plays.append(track_ids)
        order = random.Random(0).sample(track_ids, len(track_ids)) if self.shuffle_state else track_ids
        self.queue, self.index, self.progress_ms, self.is_playing = order, 0, 0, True
        return Answer(204)

    def advance(self) -> None:
        """One tick of the clock: the current track plays on, or the person moves to the next."""
        if not self.is_playing:
            return
        track = self.tracks[self.queue[self.index]]
        stop_at = round(track.listened * track.duration_ms)
        if self.progress_ms >= stop_at:
            if self.index + 1 < len(self.queue):
                self.index, self.progress_ms = self.index + 1, 0
            elif self.end == "autoplay":
                self.autoplay_item = next(track_id for track_id in self.tracks if track_id not in self.queue)
            else:
                self.is_playing, self.progress_ms = False, 0
                if self.end == "nothing":
                    self.queue = []
        else:
            self.progress_ms = min(self.progress_ms + self.step_ms, stop_at)
        if self.pause_at and self.index == self.pause_at[0] and self.progress_ms >= self.pause_at[1]:
            self.is_playing = False

    def poll(self) -> Answer:
        self.polls += 1
        if self.interrupt_at_poll == self.polls:
            _thread.interrupt_main()
        self.advance()
        device = self.active_device()
        idle = device is not None and not self.queue and self.idle_state
        if (device is None or not self.queue) and not idle:
            self.reported.append(None)
            return Answer(204)
        if idle:
            item, progress = None, 0
        elif self.autoplay_item:
            item, progress = self.track_object(self.autoplay_item), 0
        else:
            item, progress = self.playing_object(self.queue[self.index]), self.progress_ms
        state = {"device": device, "progress_ms": progress, "is_playing": self.is_playing,
                 "shuffle_state": self.shuffle_state, "repeat_state": self.repeat_state,
                 "currently_playing_type": "track", "item": item}
        self.reported.append(state)
        return Answer(200, state)
