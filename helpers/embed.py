"""Listen without Premium: Spotify's embed player (its iFrame API) plays the playlist in a web page.

    view = EmbedWidget()                 # in JupyterLab (helpers.embed_widget), or
    view = EmbedServer().start()         # a local page on 127.0.0.1 (helpers.embed_server)
    listener = EmbedListener(view)
    listener.listen(track_ids, on_finished)   # again with the next playlist, on the same page

The page (`helpers/static/embed_player.js`, the same code in the widget and in the local page)
loads the iFrame API script, plays each song with `loadUri` + `play`, follows its
`playback_update` events and sends the listener three kinds of event, each naming its playlist
and position: `progress` (the furthest position heard and the duration, at most once a second),
`like` (the like button), and `finished` (the song ended, or the skip button). Logged-out visitors
hear 30-second previews, logged-in ones full tracks; no secret is needed anywhere.

**What is logged.** `percentage_listened` = furthest position heard / duration (a song that
played to its end counts as heard to its end); `liked` 1 after the like button, 0 for a song
skipped without a like, `null` (unknown) otherwise. A duration of at most `PREVIEW_MAX_MS` is a
preview (Spotify does not say so otherwise): the record says `preview: true` with the preview's
duration, so learning never takes a whole preview for a whole song.

**Exactly once.** This object, not the page, decides what is logged: the first `finished` of a
(playlist, position) goes to `on_finished` at once, later ones are ignored, and every answer to
the page carries the positions logged so far. A page that reloads mid-song asks for that state
and goes on with the first song not logged; what it heard before the reload was kept from its
`progress` events (the furthest one wins). When the session stops for any other reason (the
playlist's end, the stop button, Ctrl-C, the page closed for longer than `close_grace` seconds,
or the page server stopping), each song that started and was not logged goes once to
`on_finished` with what was heard of it, before `listen` returns.
"""
from __future__ import annotations

import math
import os
import signal
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import pandas as pd

from helpers.playback import OnFinished, PlaybackError, StopReason

EMBED_API_URL = "https://open.spotify.com/embed/iframe-api/v1"
EMBED_API_URL_VARIABLE = "SPOTIFY_EMBED_API_URL"  # another script (the tests' stand-in) in its place
PREVIEW_MAX_MS = 31_000  # a reported duration up to this is a 30-second preview
EVENT_TYPES = ("progress", "like", "finished", "stop")  # what the page sends
STATIC_DIR = Path(__file__).parent / "static"
PLAYER_SCRIPT = STATIC_DIR / "embed_player.js"
PLAYER_STYLE = STATIC_DIR / "embed_player.css"


def embed_api_url(environ: Mapping[str, str] | None = None) -> str:
    """The iFrame API script's URL: `SPOTIFY_EMBED_API_URL` when set, else Spotify's."""
    url = (os.environ if environ is None else environ).get(EMBED_API_URL_VARIABLE) or EMBED_API_URL
    if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ValueError(f"{EMBED_API_URL_VARIABLE} must be an https:// URL (or http:// on loopback), got {url!r}")
    return url


def song_rows(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """What the song list shows of each track of `helpers.session.playlist_table`: its name,
    artist and the policy's probability of choosing it (None for the start track)."""
    rows = {}
    for record in table.to_dict("records"):
        probability = record.get("probability")
        rows[str(record["track_id"])] = {
            "name": str(record.get("name") or "") or None,
            "artist": None if pd.isna(record.get("artist")) else str(record.get("artist")),
            "probability": None if probability is None or pd.isna(probability) else float(probability)}
    return rows


class PlayerView(Protocol):
    """Where the player page lives (the Jupyter widget, the local page server)."""

    def attach(self, handler: Callable[[Mapping[str, Any]], dict[str, Any]]) -> None:
        """Send every event of the page to `handler`; the page is answered with what it returns."""

    def publish(self, state: dict[str, Any]) -> None:
        """Show `state` (the playlist and what is logged of it) on every open page."""

    def gone_for(self) -> float | None:
        """Seconds since the last page closed; None while one is open, or if none ever opened."""

    def failure(self) -> str | None:
        """Why the view cannot go on (its server stopped), or None."""


@dataclass
class _Song:
    """What is known of one song of the playlist."""

    heard_ms: int = 0
    duration_ms: int = 0
    liked: bool = False
    started: bool = False
    logged: dict[str, Any] | None = None

    def outcome(self, skipped: bool) -> tuple[float, int | None, int | None]:
        """percentage_listened, liked (1, 0 after a skip, else None) and the preview's duration (or None)."""
        duration = self.duration_ms
        share = min(max(self.heard_ms / duration, 0.0), 1.0) if duration > 0 else 0.0
        liked = 1 if self.liked else 0 if skipped else None
        return share, liked, duration if 0 < duration <= PREVIEW_MAX_MS else None


@dataclass
class _Playlist:
    playlist_id: str
    track_ids: list[str]
    on_finished: OnFinished
    songs: list[_Song] = field(default_factory=list)
    stop_reason: str | None = None
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.songs = [_Song() for _ in self.track_ids]


def _milliseconds(event: Mapping[str, Any], key: str) -> int:
    value = event.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{key} must be a number of milliseconds >= 0, got {value!r}")
    return int(value)


class EmbedListener:
    """A person listening in Spotify's embed player, in a Jupyter widget or a local page.

    `listen` shows the playlist on `view` and returns when every song is logged ("finished"),
    on the stop button or Ctrl-C ("interrupted"), when the page has been closed for
    `close_grace` seconds ("closed": a reload comes back well within it), or when the view
    fails (its server stopped: PlaybackError). Call it again for the next playlist on the same
    page. `labels` (track id -> name, artist, probability; see `song_rows` and `label`) fill the
    song list. Events are taken in the view's threads; `listen` only waits, so in Jupyter it
    runs in a thread of its own (`helpers.embed_widget.in_background`) while the kernel takes
    the widget's messages.
    """

    source = "embed"

    def __init__(self, view: PlayerView, *, close_grace: float = 5.0, poll_interval: float = 0.2) -> None:
        if not (math.isfinite(close_grace) and close_grace > 0 and math.isfinite(poll_interval) and poll_interval > 0):
            raise ValueError(f"close_grace and poll_interval must be finite numbers of seconds > 0, got "
                             f"{close_grace}, {poll_interval}")
        self.view = view
        self.close_grace = close_grace
        self.poll_interval = poll_interval
        self.labels: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._playlist: _Playlist | None = None
        self._over = threading.Event()
        self._version = 0  # counts the changes, so that a page keeps the newest state it was sent
        self._status = "waiting"
        self._message = "waiting for a playlist"
        self._note = ""  # what comes after the playlist that ended (the live loop's next one)
        view.attach(self.receive)
        self._publish()

    def label(self, table: pd.DataFrame) -> None:
        """Show the names, artists and probabilities of `helpers.session.playlist_table(...)`."""
        self.labels.update(song_rows(table))

    def state(self) -> dict[str, Any]:
        """What the page shows: the playlist, each song's label and what was logged of it."""
        with self._lock:
            playlist = self._playlist
            songs = [] if playlist is None else [
                {"id": track_id, "uri": f"spotify:track:{track_id}", **self.labels.get(track_id, {}),
                 "heard_ms": song.heard_ms, "duration_ms": song.duration_ms, "liked": song.liked, "logged": song.logged}
                for track_id, song in zip(playlist.track_ids, playlist.songs)]
            return {"version": self._version, "playlist_id": None if playlist is None else playlist.playlist_id,
                    "songs": songs, "status": self._status, "message": self._message, "note": self._note}

    def listen(self, track_ids: Sequence[str], on_finished: OnFinished) -> StopReason:
        """Play `track_ids` in the page, report each song heard once, and say why it stopped."""
        if not track_ids:
            raise ValueError("the playlist is empty")
        playlist = _Playlist(uuid.uuid4().hex, [str(track_id) for track_id in track_ids], on_finished)
        with self._lock:
            self._playlist = playlist
            self._over.clear()
            self._note = ""
            self._set_status("playing", "press play" if self.view.gone_for() is None else "open the player page")
        try:
            reason = self._wait(playlist)
        except KeyboardInterrupt:
            reason = "interrupted"
        with _sigint_deferred(), self._lock:
            playlist.stop_reason = playlist.stop_reason or reason
            self._report_started(playlist)
            self._set_status("stopped" if playlist.stop_reason != "finished" else "finished",
                             _STATUS_MESSAGES[playlist.stop_reason])
        if playlist.error is not None:
            raise playlist.error
        failure = self.view.failure()
        if failure and playlist.stop_reason != "finished":
            raise PlaybackError(failure)
        return playlist.stop_reason

    def note(self, text: str) -> None:
        """Say on the page, after the playlist that ended, what comes next (until the next `listen`)."""
        with self._lock:
            self._note = text
            self._publish()

    def stop(self) -> None:
        """End the current `listen` as the stop button does ("interrupted")."""
        with self._lock:
            if self._playlist is not None and not self._over.is_set():
                self._playlist.stop_reason = "interrupted"
                self._over.set()

    def receive(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Take one event of the page; answer with the state after it (what is logged so far).

        An event of another playlist than the current one, or of a song already logged,
        changes nothing: a page that reloaded, or sent twice, cannot log a song twice.
        """
        with self._lock:
            playlist = self._playlist
            kind = event.get("type")
            if kind not in EVENT_TYPES:
                raise ValueError(f"unknown event type {kind!r}: expected one of {EVENT_TYPES}")
            if kind == "stop":
                self.stop()
            elif playlist is not None and not self._over.is_set() \
                    and event.get("playlist_id") == playlist.playlist_id:
                position = event.get("position")
                if isinstance(position, bool) or not isinstance(position, int) \
                        or not 0 <= position < len(playlist.songs):
                    raise ValueError(f"position must be an integer in [0, {len(playlist.songs)}), got {position!r}")
                self._take(playlist, position, kind, event)
            return self.state()

    def _take(self, playlist: _Playlist, position: int, kind: str, event: Mapping[str, Any]) -> None:
        song = playlist.songs[position]
        if song.logged is not None:
            return
        if kind == "like" or "liked" in event:  # a like and the song's end may cross: each says it
            song.liked = bool(event.get("liked", True))
        if kind != "like":
            heard, duration = _milliseconds(event, "heard_ms"), _milliseconds(event, "duration_ms")
            song.started = True
            song.duration_ms = duration or song.duration_ms
            song.heard_ms = max(song.heard_ms, heard)
            if kind == "finished":
                if event.get("ended") and song.duration_ms:
                    song.heard_ms = song.duration_ms
                self._log(playlist, position, skipped=bool(event.get("skipped")))
                if all(song.logged is not None for song in playlist.songs):
                    playlist.stop_reason = "finished"
                    self._over.set()
        self._publish()

    def _log(self, playlist: _Playlist, position: int, skipped: bool) -> None:
        """Hand the song to `on_finished` (once: it is marked logged first); a failure stops the session."""
        song = playlist.songs[position]
        share, liked, preview_ms = song.outcome(skipped)
        song.logged = {"percentage_listened": share, "liked": liked, "preview_duration_ms": preview_ms}
        try:
            playlist.on_finished(position, share, liked, preview_duration_ms=preview_ms)
        except Exception as error:  # noqa: BLE001 - listen() raises it in its own thread
            song.logged = None
            playlist.error = playlist.error or error
            playlist.stop_reason = "interrupted"
            self._over.set()
            raise

    def _report_started(self, playlist: _Playlist) -> None:
        for position, song in enumerate(playlist.songs):
            if song.started and song.logged is None and playlist.error is None:
                try:
                    self._log(playlist, position, skipped=False)
                except Exception:  # noqa: BLE001 - kept in playlist.error, raised by listen()
                    return

    def _wait(self, playlist: _Playlist) -> str:
        while not self._over.wait(self.poll_interval):
            if self.view.failure():
                return "interrupted"
            gone = self.view.gone_for()
            if gone is not None and gone >= self.close_grace:
                return "closed"
        return playlist.stop_reason or "interrupted"

    def _set_status(self, status: str, message: str) -> None:
        self._status, self._message = status, message
        self._publish()

    def _publish(self) -> None:
        with self._lock:
            self._version += 1
            self.view.publish(self.state())


_STATUS_MESSAGES = {
    "finished": "played to the end: every song is logged",
    "interrupted": "stopped: what you heard is logged",
    "closed": "stopped: the page was closed; what you heard is logged",
}


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Ctrl-C waits until the block has ended (the last songs are being logged); main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt
