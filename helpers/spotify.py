"""Spotify Web API: sign in, find a device, play a playlist and follow how it is heard.

    settings = SpotifySettings.from_environment()        # SPOTIPY_* and SPOTIFY_* variables
    player = SpotifyPlayer.connect(settings)              # signs in, checks the account
    listener = SpotifyListener(player, device_name=None, poll_interval=2.0)
    listener.listen(track_ids, on_finished)               # one play call, then follows playback

**Requests that never freeze.** Every request has a timeout. Spotify answers 429 when the app
goes over its rate limit (a rolling 30-second window) and says in `Retry-After` how many seconds
to wait: every call waits and tries again while the total wait stays under a cap (30 s by
default), and beyond it raises `RateLimited`. A 5xx answer or a network error is retried a
bounded number of times with exponential back-off, but only for calls that are safe to repeat.
The one call that starts the playlist is never re-sent after such an error, because Spotify may
have started playing anyway: no track ever plays twice. (spotipy's built-in urllib3 retry would
re-send any method and obey any `Retry-After`, even an hour: it is replaced.)

**Following playback.** Spotify's playback state says which track plays (`item.id`), how far
it is (`progress_ms`) and how long it lasts (`item.duration_ms`). Polled every `poll_interval`
seconds, a track is finished when the playback moves on, and

    percentage_listened = clip(last seen progress_ms / duration_ms, 0, 1)

(progress, not wall-clock time: pauses and buffering do not count as listening).
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests
import spotipy
from requests.adapters import HTTPAdapter
from spotipy.cache_handler import CacheFileHandler
from spotipy.oauth2 import SpotifyOAuth, SpotifyOauthError, SpotifyPKCE
from urllib3.util.retry import Retry

from helpers.paths import REPO_ROOT
from helpers.session import PlaybackError, StopReason

SCOPES = ("user-modify-playback-state", "user-read-playback-state", "user-library-read")
DEFAULT_REDIRECT_URI = "http://127.0.0.1:8888/callback"
DEFAULT_API_BASE = "https://api.spotify.com/v1/"
DEFAULT_TOKEN_CACHE = REPO_ROOT / ".spotify_cache"  # git-ignored (.spotify_cache*)
LIBRARY_CHECK_LIMIT = 40  # track URIs per GET /me/library/contains
SERVER_ERRORS = frozenset({500, 502, 503, 504})
ENVIRONMENT_VARIABLES = {
    "client_id": "SPOTIPY_CLIENT_ID",
    "client_secret": "SPOTIPY_CLIENT_SECRET",
    "redirect_uri": "SPOTIPY_REDIRECT_URI",
    "access_token": "SPOTIFY_ACCESS_TOKEN",
    "api_base": "SPOTIFY_API_BASE",
}
SECRET_FIELDS = ("client_secret", "access_token")

PREMIUM_MESSAGE = (
    "Spotify refused to control playback (403 PREMIUM_REQUIRED): playing music through the Web API "
    "needs a Spotify Premium account. Sign in with a Premium account, or play offline with the "
    "simulated listener (--offline, or offline=True in notebook 07)."
)
NOT_REGISTERED_MESSAGE = (
    "Spotify refused this account (403: user not registered for the app). An app in development "
    "mode only serves the accounts listed in its dashboard: open the app at "
    "https://developer.spotify.com/dashboard, go to User Management and add the name and e-mail of "
    "the Spotify account you sign in with (at most 5 users)."
)
NO_DEVICE_MESSAGE = (
    "No Spotify device is available: open Spotify on your phone or computer, signed in with the same "
    "account, play any song for a moment so that the device shows up, then run again."
)
NO_CREDENTIALS_MESSAGE = (
    "No Spotify credentials: set SPOTIPY_CLIENT_ID (and SPOTIPY_CLIENT_SECRET, or use PKCE), or "
    "SPOTIFY_ACCESS_TOKEN; or play offline with the simulated listener."
)
CANNOT_PROMPT_MESSAGE = (
    "Signing in to Spotify needs you to paste the URL Spotify redirects to, but this process cannot "
    "read input (a papermill run, or no terminal). Sign in once from a terminal with "
    "`python -m helpers.play` (the token is then cached), or open the notebook in JupyterLab, or "
    "set SPOTIFY_ACCESS_TOKEN."
)


class SpotifyError(PlaybackError):
    """Spotify could not do what was asked; the message says why and what to do."""


class SignInError(SpotifyError):
    """Credentials are missing or refused, or signing in needs input nobody can give."""


class PremiumRequired(SpotifyError):
    """403 PREMIUM_REQUIRED: playback control needs a Premium account."""


class UserNotRegistered(SpotifyError):
    """403: the account is not in the app's User Management list (development mode)."""


class NoDevice(SpotifyError):
    """No device to play on (none open, or the named one is missing)."""


class RateLimited(SpotifyError):
    """429 for longer than the wait cap."""


class SpotifyUnavailable(SpotifyError):
    """Server errors or network failures outlasted the retries, or left an outcome unknown."""


class SpotifyRefused(SpotifyError):
    """Any other refusal (4xx): the message is Spotify's."""


@dataclass(frozen=True)
class SpotifySettings:
    """How to reach Spotify and sign in. `repr` and `str` mask the secret and the token.

    Sign-in, in order of precedence: a ready `access_token` (no OAuth at all); else the
    authorization-code flow with `client_id` and `client_secret`; else, with a `client_id` and
    no secret, PKCE (`use_pkce=None` chooses so; True or False forces it).
    """

    client_id: str | None = None
    client_secret: str | None = None
    redirect_uri: str = DEFAULT_REDIRECT_URI
    use_pkce: bool | None = None
    access_token: str | None = None
    api_base: str = DEFAULT_API_BASE
    cache_path: Path = DEFAULT_TOKEN_CACHE
    open_browser: bool = False
    requests_timeout: float = 10.0
    max_retries: int = 3
    backoff_seconds: float = 0.5
    max_retry_after: float = 30.0

    def __post_init__(self) -> None:
        if not re.match(r"https?://[^/]+", self.api_base or ""):
            raise ValueError(f"api_base must be an http(s) URL like {DEFAULT_API_BASE}, got {self.api_base!r}")
        object.__setattr__(self, "api_base", self.api_base.rstrip("/") + "/")
        object.__setattr__(self, "cache_path", Path(self.cache_path))
        redirect = urlparse(self.redirect_uri)
        if redirect.hostname == "localhost":
            raise ValueError(f"Spotify rejects 'localhost' in redirect URIs: use {DEFAULT_REDIRECT_URI} "
                             f"(and register that in the app's settings), not {self.redirect_uri!r}")
        loopback = redirect.scheme == "http" and redirect.hostname in ("127.0.0.1", "::1")
        if not (redirect.scheme == "https" or loopback):
            raise ValueError("redirect_uri must be https, or http on 127.0.0.1 or [::1] "
                             f"(e.g. {DEFAULT_REDIRECT_URI}), got {self.redirect_uri!r}")
        if self.requests_timeout <= 0 or self.max_retries < 0 or self.backoff_seconds < 0 \
                or self.max_retry_after < 0:
            raise ValueError("requests_timeout must be > 0; max_retries, backoff_seconds and "
                             "max_retry_after must be >= 0")

    def __repr__(self) -> str:
        shown = {item.name: getattr(self, item.name) for item in fields(self)}
        for name in SECRET_FIELDS:
            if shown[name]:
                shown[name] = "***"
        return f"SpotifySettings({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **given: Any) -> "SpotifySettings":
        """Settings from explicit values; those left None come from the environment, then defaults."""
        environ = os.environ if environ is None else environ
        values = {name: environ.get(variable) or None for name, variable in ENVIRONMENT_VARIABLES.items()}
        values.update({name: value for name, value in given.items() if value is not None})
        return cls(**{name: value for name, value in values.items() if value is not None})

    @property
    def has_credentials(self) -> bool:
        """Whether anything to sign in with is set (else the session plays offline)."""
        return bool(self.access_token or self.client_id)

    @property
    def pkce(self) -> bool:
        """Whether sign-in uses PKCE (no client secret)."""
        return self.use_pkce if self.use_pkce is not None else not self.client_secret


class _RedactSecrets(logging.Filter):
    """Mask tokens and secrets in spotipy's log messages (its DEBUG lines print request headers)."""

    PATTERNS = (
        (re.compile(r"\b(Bearer|Basic)\s+[^\s'\"]+"), r"\1 ***"),
        (re.compile(r"('(?:access_token|refresh_token|code|code_verifier|client_secret)'\s*:\s*')[^']*'"),
         r"\1***'"),
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for pattern, replacement in self.PATTERNS:
            message = pattern.sub(replacement, message)
        record.msg, record.args = message, None
        return True


def _guard_spotipy_logs() -> None:
    """Redact spotipy's log records, and keep them out of stderr unless logging is configured.

    spotipy logs every HTTP error at ERROR level; we turn each into one clear message, so
    without a NullHandler Python's last-resort handler would print a second, raw one.
    """
    for name in ("spotipy.client", "spotipy.oauth2"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _RedactSecrets) for existing in logger.filters):
            logger.addFilter(_RedactSecrets())
    package = logging.getLogger("spotipy")
    if not any(isinstance(handler, logging.NullHandler) for handler in package.handlers):
        package.addHandler(logging.NullHandler())


_guard_spotipy_logs()


class PrivateTokenCache(CacheFileHandler):
    """spotipy's token cache file, readable and writable by its owner only (mode 0600)."""

    def get_cached_token(self) -> dict | None:
        path = Path(self.cache_path)
        if path.exists() and path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return super().get_cached_token()

    def save_token_to_cache(self, token_info: dict) -> None:
        path = Path(self.cache_path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # mkstemp creates the file with mode 0600, so the token is never readable by others;
            # the rename replaces the old cache in one step.
            descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.")
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8") as cache:
                    json.dump(token_info, cache)
                os.replace(temporary, path)
            finally:
                Path(temporary).unlink(missing_ok=True)
        except OSError as error:
            warnings.warn(f"could not save the Spotify token to {path} ({error.strerror}): "
                          "you will be asked to sign in again next time", stacklevel=2)


def create_client(settings: SpotifySettings) -> spotipy.Spotify:
    """A spotipy client for `settings`: its base URL, sign-in, a timeout and only safe retries.

    urllib3 re-tries a request only when no connection could be made (nothing reached Spotify,
    so that is safe for every method); status codes and read errors go back to `SpotifyPlayer`,
    which knows which calls may be repeated.
    """
    retry = Retry(total=settings.max_retries, connect=settings.max_retries, read=False, status=0,
                  other=0, backoff_factor=settings.backoff_seconds, raise_on_status=False,
                  respect_retry_after_header=False)
    session = requests.Session()
    session.mount("https://", HTTPAdapter(max_retries=retry))
    session.mount("http://", HTTPAdapter(max_retries=retry))
    common = dict(requests_session=session, requests_timeout=settings.requests_timeout)
    if settings.access_token:
        client = spotipy.Spotify(auth=settings.access_token, **common)
    elif settings.client_id:
        cache = PrivateTokenCache(cache_path=str(settings.cache_path))
        sign_in = dict(client_id=settings.client_id, redirect_uri=settings.redirect_uri, scope=list(SCOPES),
                       cache_handler=cache, open_browser=settings.open_browser,
                       requests_timeout=settings.requests_timeout)
        if settings.pkce:
            auth_manager = SpotifyPKCE(**sign_in)
        else:
            auth_manager = SpotifyOAuth(client_secret=settings.client_secret, **sign_in)
        client = spotipy.Spotify(auth_manager=auth_manager, **common)
    else:
        raise SignInError(NO_CREDENTIALS_MESSAGE)
    client.prefix = settings.api_base
    return client


def _spotify_message(error: spotipy.SpotifyException) -> str:
    """The message Spotify sent (spotipy prefixes it with the URL and a newline)."""
    return str(error.msg).split("\n", 1)[-1].strip()


def _retry_after_seconds(error: spotipy.SpotifyException) -> float:
    try:
        return max(0.0, float((error.headers or {}).get("Retry-After", 1)))
    except (TypeError, ValueError):
        return 1.0


def _translate(error: spotipy.SpotifyException, what: str, attempts: int) -> SpotifyError:
    """One clear SpotifyError for an HTTP error answer."""
    status, message = error.http_status, _spotify_message(error)
    if status == 401:
        return SignInError(f"Spotify rejected the access token for {what} (401: {message}): sign in again "
                           "(delete the token cache, or set a fresh SPOTIFY_ACCESS_TOKEN).")
    if status == 403 and error.reason == "PREMIUM_REQUIRED":
        return PremiumRequired(PREMIUM_MESSAGE)
    if status == 403 and re.search(r"registered|not approved", message, re.IGNORECASE):
        return UserNotRegistered(NOT_REGISTERED_MESSAGE)
    if status == 404 and error.reason == "NO_ACTIVE_DEVICE":
        return NoDevice(NO_DEVICE_MESSAGE)
    if status in SERVER_ERRORS:
        return SpotifyUnavailable(f"Spotify answered {status} to {what} ({attempts} attempt(s)): its "
                                  "service is having trouble; try again in a few minutes.")
    return SpotifyRefused(f"Spotify answered {status} to {what}: {message}")


class SpotifyPlayer:
    """The Spotify calls the recommender needs, each turning failures into a clear SpotifyError."""

    def __init__(self, client: spotipy.Spotify, settings: SpotifySettings, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.settings = settings
        self._sleep = sleep
        self.user: dict = {}

    @classmethod
    def connect(cls, settings: SpotifySettings, *,
                sleep: Callable[[float], None] = time.sleep) -> "SpotifyPlayer":
        """Sign in (a cached token, else paste the URL Spotify redirects to) and check the account."""
        player = cls(create_client(settings), settings, sleep=sleep)
        try:
            player.user = player.current_user()
        except (EOFError, NotImplementedError):  # input() without a terminal, or in papermill
            raise SignInError(CANNOT_PROMPT_MESSAGE) from None
        except OSError as error:  # open_browser: spotipy's one-shot server could not take the port
            raise SignInError(
                f"could not listen for Spotify's redirect to {settings.redirect_uri} ({error.strerror}): "
                "another program holds the port (JupyterLab uses 8888). Sign in without open_browser, "
                "pasting the URL you are redirected to.") from None
        return player

    @property
    def user_name(self) -> str:
        """The signed-in account's display name (its id when it has none)."""
        return self.user.get("display_name") or self.user.get("id", "")

    def _call(self, what: str, request: Callable[[], Any], *, repeatable: bool = True) -> Any:
        """Run `request`, waiting out 429s (under the cap) and, if `repeatable`, retrying 5xx and
        network errors with exponential back-off; anything else becomes a SpotifyError."""
        waited, failures = 0.0, 0
        while True:
            try:
                return request()
            except spotipy.SpotifyException as error:
                if error.http_status == 429:
                    delay = _retry_after_seconds(error)
                    if waited + delay > self.settings.max_retry_after:
                        raise RateLimited(
                            f"Spotify's rate limit: {what} was refused (429) and Spotify asks to wait "
                            f"{delay:.0f} s more, beyond the {self.settings.max_retry_after:.0f} s this "
                            "program waits. Spotify counts requests over a rolling 30 s window: wait a "
                            "few minutes and run again.") from None
                    waited += delay
                    self._sleep(delay)
                    continue
                if error.http_status in SERVER_ERRORS and repeatable and failures < self.settings.max_retries:
                    self._sleep(self.settings.backoff_seconds * 2 ** failures)
                    failures += 1
                    continue
                raise _translate(error, what, failures + 1) from None
            except requests.RequestException as error:  # no connection, a timeout, a cut answer
                if repeatable and failures < self.settings.max_retries:
                    self._sleep(self.settings.backoff_seconds * 2 ** failures)
                    failures += 1
                    continue
                raise SpotifyUnavailable(
                    f"could not reach Spotify for {what} ({type(error).__name__}, {failures + 1} "
                    "attempt(s)): check the internet connection and try again.") from None
            except SpotifyOauthError as error:
                raise SignInError(
                    f"Spotify sign-in failed ({error}). Check the client id (and secret), and that "
                    f"{self.settings.redirect_uri} is listed under Redirect URIs in the app's "
                    "settings.") from None

    def current_user(self) -> dict:
        """The signed-in account (GET /me): also how a missing registration shows up first."""
        return self._call("GET /me", self.client.me)

    def track_names(self, track_ids: Sequence[str]) -> dict[str, str]:
        """Names by id, one GET /tracks/{id} each (Spotify removed the batch endpoint)."""
        return {track_id: self._call(f"GET /tracks/{track_id}", lambda: self.client.track(track_id))["name"]
                for track_id in track_ids}

    def devices(self) -> list[dict]:
        """The account's devices (GET /me/player/devices)."""
        return self._call("GET /me/player/devices", self.client.devices)["devices"]

    def choose_device(self, name: str | None = None) -> dict:
        """The device to play on: the one named (case-insensitive), else the active one, else the
        first available. Playback is transferred to it (without starting) if it is not active."""
        devices = [device for device in self.devices() if device.get("id") and not device.get("is_restricted")]
        if not devices:
            raise NoDevice(NO_DEVICE_MESSAGE)
        if name:
            named = [device for device in devices if device["name"].casefold() == name.casefold()]
            if not named:
                available = ", ".join(repr(device["name"]) for device in devices)
                raise NoDevice(f"No Spotify device named {name!r}; available: {available}.")
            device = named[0]
        else:
            device = next((device for device in devices if device.get("is_active")), devices[0])
        if not device.get("is_active"):
            self._call("PUT /me/player (transfer)",
                       lambda: self.client.transfer_playback(device["id"], force_play=False))
        return device

    def playback(self) -> dict | None:
        """The playback state (GET /me/player); None when nothing plays (204)."""
        return self._call("GET /me/player", self.client.current_playback)

    def liked(self, track_ids: Sequence[str]) -> list[int]:
        """1 for each track in the user's library, else 0 (GET /me/library/contains, 40 per call)."""
        flags: list[int] = []
        for start in range(0, len(track_ids), LIBRARY_CHECK_LIMIT):
            chunk = list(track_ids[start:start + LIBRARY_CHECK_LIMIT])
            answer = self._call("GET /me/library/contains",
                                lambda: self.client.current_user_saved_tracks_contains(chunk))
            if not isinstance(answer, list) or len(answer) != len(chunk):
                raise SpotifyError(f"GET /me/library/contains answered {answer!r} for {len(chunk)} track(s)")
            flags += [int(bool(flag)) for flag in answer]
        return flags

    def play_in_order(self, device_id: str) -> None:
        """Turn shuffle and repeat off, so that each track plays once, in the playlist's order.

        Should Spotify refuse (some devices do), a warning says so and playback goes on.
        """
        for what, request in (
            ("PUT /me/player/shuffle", lambda: self.client.shuffle(False, device_id=device_id)),
            ("PUT /me/player/repeat", lambda: self.client.repeat("off", device_id=device_id)),
        ):
            try:
                self._call(what, request)
            except SpotifyRefused as error:
                warnings.warn(f"{error}. If shuffle or repeat stays on, tracks may play out of order or "
                              "again; tracks jumped over are logged as 0 listened.", stacklevel=2)

    def start(self, track_ids: Sequence[str], device_id: str) -> None:
        """Play the tracks in order with one PUT /me/player/play, sent at most once.

        A 429 means Spotify did nothing, so the call is repeated after the wait. After a 5xx or
        a network error the outcome is unknown: the playback state decides. If one of the tracks
        plays, the call worked; otherwise it is not re-sent (it might still take effect) and
        SpotifyUnavailable says to run again.
        """
        uris = [f"spotify:track:{track_id}" for track_id in track_ids]
        self.play_in_order(device_id)
        try:
            self._call("PUT /me/player/play", lambda: self.client.start_playback(device_id=device_id, uris=uris),
                       repeatable=False)
        except SpotifyUnavailable as error:
            self._sleep(self.settings.backoff_seconds)
            item = (self.playback() or {}).get("item") or {}
            if item.get("id") not in set(track_ids):
                raise SpotifyUnavailable(f"{error} The play request was not re-sent, so that nothing "
                                         "plays twice.") from None


class PlaybackFollower:
    """Turns successive playback states into finished tracks of one playlist.

    `observe(state)` returns the positions the state shows to be finished, with their
    percentage listened; `over` turns True once the playlist has ended or playback has left it.
    Each position is reported at most once and in order: a track that started and ended between
    two polls counts as 0 listened (none of it was seen), and going back to an earlier track
    reports nothing again.
    """

    def __init__(self, track_ids: Sequence[str], end_margin_ms: int = 5_000,
                 aliases: Mapping[str, str] | None = None) -> None:
        if len(set(track_ids)) != len(track_ids) or not track_ids:
            raise ValueError("a playlist to follow needs at least one track and no track twice")
        self.track_ids = list(track_ids)
        self.end_margin_ms = end_margin_ms
        self.aliases = dict(aliases or {})  # another id of a playlist's song -> the song's id
        self._position_of = {track_id: position for position, track_id in enumerate(track_ids)}
        self._progress_ms = [0] * len(track_ids)
        self._duration_ms = [0] * len(track_ids)
        self.current: int | None = None
        self.next_to_report = 0
        self.over = False
        self.left_playlist = False

    def _percentage(self, position: int) -> float:
        duration = self._duration_ms[position]
        return min(max(self._progress_ms[position] / duration, 0.0), 1.0) if duration > 0 else 0.0

    def _report_until(self, end: int) -> list[tuple[int, float]]:
        """Report the positions from the next unreported one up to `end` (excluded)."""
        finished = [(position, self._percentage(position)) for position in range(self.next_to_report, end)]
        self.next_to_report = max(self.next_to_report, end)
        return finished

    def position_of(self, item: dict) -> int | None:
        """The playlist position of a playback item, or None when it is not the playlist's.

        Spotify may play another id than the one asked for: a copy of the track for the
        listener's market (the asked id is then the item's `linked_from`), or another release
        of the same song (mapped back by `aliases`)."""
        for track_id in (item.get("id"), (item.get("linked_from") or {}).get("id")):
            position = self._position_of.get(self.aliases.get(track_id, track_id))
            if position is not None:
                return position
        return None

    def is_playing(self, state: dict | None) -> bool:
        """Whether `state` shows one of the playlist's tracks playing."""
        item = (state or {}).get("item") or {}
        return bool(state and state.get("is_playing") and self.position_of(item) is not None)

    def observe(self, state: dict | None) -> list[tuple[int, float]]:
        """The positions this state shows to be finished, as (position, percentage_listened)."""
        if self.over:
            return []
        item = (state or {}).get("item") or {}
        position = self.position_of(item)
        if position is None:
            return self._observe_elsewhere(item)
        finished: list[tuple[int, float]] = []
        if self.current is None or position > self.current:
            finished = self._report_until(position)
            self.current = position
        last = len(self.track_ids) - 1
        if position < self.current and self.current == last and not state.get("is_playing"):
            # A player may also end a playlist by going back to its first track, stopped.
            self.over = True
            return self._report_until(last + 1)
        if position != self.current:
            return finished
        progress, duration = int(state.get("progress_ms") or 0), int(item.get("duration_ms") or 0)
        rewound = progress < self._progress_ms[position]
        if state.get("is_playing") or not rewound:
            self._progress_ms[position], self._duration_ms[position] = progress, duration
        if position == last and not state.get("is_playing") and (rewound or self._near_end()):
            # Once the playlist has ended the player stops on its last track, rewound or at its end.
            self.over = True
            finished += self._report_until(position + 1)
        return finished

    def _near_end(self) -> bool:
        """Whether the last track was last seen within `end_margin_ms` of its end."""
        duration = self._duration_ms[-1]
        return duration > 0 and self._progress_ms[-1] + self.end_margin_ms >= duration

    def _observe_elsewhere(self, item: dict) -> list[tuple[int, float]]:
        """Nothing of the playlist plays: not started yet, a pause, the end, or another track."""
        if self.current is None:
            return []
        at_end = self.current == len(self.track_ids) - 1 and self._near_end()
        if item.get("id"):  # another track plays: the playlist ended (autoplay) or was left
            self.left_playlist = not at_end
        elif not at_end:
            return []  # 204 / no item mid-playlist: maybe a pause, maybe a blip; the caller's clock decides
        self.over = True
        return self._report_until(self.current + 1)

    def finish(self) -> list[tuple[int, float]]:
        """Stop following: report everything played so far, including the current track."""
        self.over = True
        return self._report_until(self.current + 1) if self.current is not None else []


@contextmanager
def interrupt_flag() -> Iterator[threading.Event]:
    """An Event that Ctrl-C (SIGINT) sets while the block runs; Ctrl-C still raises KeyboardInterrupt.

    A KeyboardInterrupt can be lost when it lands in code that swallows exceptions (an object's
    finaliser, say); the flag cannot, so a loop that checks it stops at its next turn. Signal
    handlers can only be set in the main thread: elsewhere the flag is never set.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def on_interrupt(signum, frame) -> None:
        flag.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def now_playing(state: dict, position: int, n_tracks: int) -> str:
    """'now playing 3/10: Name by Artist, Artist' from a playback state."""
    item = state.get("item") or {}
    artists = ", ".join(artist.get("name", "") for artist in item.get("artists") or [])
    return f"now playing {position + 1}/{n_tracks}: {item.get('name') or item.get('id')}" + (
        f" by {artists}" if artists else "")


class SpotifyListener:
    """A person listening on Spotify: plays the tracks with one call and follows the playback.

    It stops when the playlist has ended or playback has left it, when nothing of it has played
    for `pause_timeout` seconds (paused, stopped, or never started), or on KeyboardInterrupt
    (Ctrl-C, a notebook's interrupt). In every case each track played so far, the current one
    included, goes to `on_finished(position, percentage_listened, liked)` before it returns.
    """

    source = "spotify"

    def __init__(self, player: SpotifyPlayer, *, device_name: str | None = None, poll_interval: float = 2.0,
                 pause_timeout: float = 120.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, aliases: Mapping[str, str] | None = None,
                 announce: Callable[[str], None] | None = None) -> None:
        if poll_interval < 0 or pause_timeout < 0:
            raise ValueError(f"poll_interval and pause_timeout must be >= 0, got {poll_interval}, {pause_timeout}")
        self.player = player
        self.aliases = aliases  # other ids of the playlist's songs (see PlaybackFollower.position_of)
        self.announce = announce  # told "now playing ..." with the name from the playback state
        self.device_name = device_name
        self.poll_interval = poll_interval
        self.pause_timeout = pause_timeout
        self._sleep = sleep
        self._clock = clock

    def listen(self, track_ids: Sequence[str],
               on_finished: Callable[[int, float, int], None]) -> StopReason:
        """Play `track_ids` in order, report each finished track, and say why it stopped."""
        follower = PlaybackFollower(track_ids, end_margin_ms=int(self.poll_interval * 1000) + 2_000,
                                    aliases=self.aliases)
        pending: list[tuple[int, float]] = []

        def report() -> None:
            """Report the pending tracks; each leaves `pending` only once reported, so an
            interrupt in the library check or in `on_finished` loses none of them."""
            if pending:
                likes = self.player.liked([track_ids[position] for position, _ in pending])
                for liked in likes:
                    on_finished(*pending[0], liked)
                    del pending[0]

        device = self.player.choose_device(self.device_name)
        self.player.start(track_ids, device["id"])
        with interrupt_flag() as interrupted:
            try:
                reason = self._follow(follower, pending, report, interrupted)
            except KeyboardInterrupt:
                reason = "interrupted"
        pending += follower.finish()
        report()
        return reason

    def _follow(self, follower: PlaybackFollower, pending: list[tuple[int, float]],
                report: Callable[[], None], interrupted: threading.Event) -> StopReason:
        """Poll the playback state until the playlist is over, nothing of it plays for too long,
        or `interrupted` is set (a state read after the interrupt is not used)."""
        quiet_since: float | None = None
        while True:
            state = self.player.playback()
            if interrupted.is_set():
                return "interrupted"
            playing_before = follower.current
            pending += follower.observe(state)
            if self.announce and follower.current is not None and follower.current != playing_before:
                self.announce(now_playing(state, follower.current, len(follower.track_ids)))
            report()
            if follower.over:
                return "left_playlist" if follower.left_playlist else "finished"
            if follower.is_playing(state):
                quiet_since = None
            else:
                quiet_since = self._clock() if quiet_since is None else quiet_since
                if self._clock() - quiet_since >= self.pause_timeout:
                    return "paused" if follower.current is not None else "not_started"
            self._sleep(self.poll_interval)
