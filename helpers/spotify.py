"""Spotify Web API: sign in, find a device, play a playlist and follow how it is heard.

    settings = SpotifySettings.from_environment()        # SPOTIPY_* and SPOTIFY_* variables
    player = SpotifyPlayer.connect(settings)              # signs in, checks the account
    listener = SpotifyListener(player, device_name=None, poll_interval=2.0)
    listener.listen(track_ids, on_finished)               # one play call, then follows playback

**Requests that never freeze or spin.** Every request has a timeout. Spotify answers 429 when
the app goes over its rate limit (a rolling 30-second window) and says in `Retry-After` how many
seconds to wait: every call waits at least 1 s (a `Retry-After` of 0 or garbage would otherwise
hammer the API) and tries again while the total wait stays under a cap (30 s by default), and
beyond it raises `RateLimited`. A 5xx answer or a network error is retried a
bounded number of times with exponential back-off, but only for calls that are safe to repeat.
The one call that starts the playlist is never re-sent after such an error, because Spotify may
have started playing anyway: no track ever plays twice. (spotipy's built-in urllib3 retry would
re-send any method and obey any `Retry-After`, even an hour: it is replaced.)

**Following playback.** Spotify's playback state says which track plays (`item.id`), how far
it is (`progress_ms`) and how long it lasts (`item.duration_ms`). Polled every `poll_interval`
seconds, a track is finished when the playback moves on, and

    percentage_listened = clip(last seen progress_ms / duration_ms, 0, 1)

(progress, not wall-clock time: pauses and buffering do not count as listening). When a
requested track is not playable in the listener's market Spotify *relinks* it: the state's
`item.id` is another id and `item.linked_from.id` the requested one. Tracks are matched on
either, logged under the requested (catalogue) id, with the played id kept. Shuffle and repeat
are turned off before the play request and restored afterwards; if Spotify refuses (or the
state shows shuffle on), tracks are matched by id in whatever order they play.

**Exactly once.** Each track the playback shows finished, and the one playing when the session
stops for any reason (its end, the pause timeout, Ctrl-C, a Spotify error), goes once to
`on_finished`. Ctrl-C only sets a flag while the follower hands a track over and while
`on_finished` writes it, so an interrupt can neither drop nor repeat a record. If the library
check fails, `liked` is reported as None (unknown), never as 0.
"""
from __future__ import annotations

import errno
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlparse

import requests
import spotipy
from requests.adapters import HTTPAdapter
from spotipy.cache_handler import CacheFileHandler
from spotipy.oauth2 import SpotifyOAuth, SpotifyOauthError, SpotifyPKCE
from urllib3.util.retry import Retry

from helpers.paths import REPO_ROOT
from helpers.playback import PlaybackError, StopReason

SCOPES = ("user-modify-playback-state", "user-read-playback-state", "user-library-read")
HISTORY_SCOPES = ("user-top-read", "user-read-recently-played", "user-library-read")  # helpers.history --spotify
TOP_RANGES = ("short_term", "medium_term", "long_term")  # about 4 weeks, 6 months, a year
PAGE_LIMIT = 50  # items per page of the top, recent and saved lists
MAX_SAVED_TRACKS = 20_000  # pages of saved tracks read at most: PAGE_LIMIT times 400
DEFAULT_REDIRECT_URI = "http://127.0.0.1:8888/callback"
DEFAULT_API_BASE = "https://api.spotify.com/v1/"
DEFAULT_TOKEN_CACHE = REPO_ROOT / ".spotify_cache"  # git-ignored (.spotify_cache*)
LIBRARY_CHECK_LIMIT = 40  # track URIs per GET /me/library/contains
SERVER_ERRORS = frozenset({500, 502, 503, 504})
MIN_RETRY_AFTER = 1.0  # seconds: the least wait after a 429, whatever Retry-After says
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


class SignInRevoked(SignInError):
    """The cached refresh token was revoked or is invalid (invalid_grant): the cache must go."""


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
    scopes: tuple[str, ...] = SCOPES

    def __post_init__(self) -> None:
        if not re.match(r"https?://[^/]+", self.api_base or ""):
            raise ValueError(f"api_base must be an http(s) URL like {DEFAULT_API_BASE}, got {self.api_base!r}")
        if urlparse(self.api_base).scheme != "https" and not is_loopback(urlparse(self.api_base).hostname):
            raise ValueError("api_base (SPOTIFY_API_BASE) must be https: every request carries the access token. "
                             "Plain http is allowed only on a loopback address (127.0.0.1, [::1]: a local test "
                             f"server); got {self.api_base!r}")
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


def is_loopback(host: str | None) -> bool:
    """Whether `host` is a loopback IP address (127.0.0.0/8, ::1); names are not resolved."""
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


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


def check_pasted_redirect(pasted: str, redirect_uri: str, state: str | None) -> None:
    """SignInError unless the URL pasted after Spotify's consent page goes to `redirect_uri` (same
    scheme, host, port and path) and carries the `state` this sign-in sent: a code in any other
    URL may be someone else's (a link that signs you in to their account) and is never used."""
    given, expected = urlparse(pasted.strip()), urlparse(redirect_uri)
    ports = {"http": 80, "https": 443}
    try:
        place = (given.scheme.lower(), (given.hostname or "").lower(), given.port or ports.get(given.scheme.lower()),
                 given.path or "/")
    except ValueError:  # a port that is not a number
        place = None
    if place != (expected.scheme.lower(), (expected.hostname or "").lower(),
                 expected.port or ports.get(expected.scheme.lower()), expected.path or "/"):
        shown = f"{given.scheme}://{given.netloc}{given.path}" if given.scheme else "text that is not that URL"
        raise SignInError(f"the pasted URL goes to {shown}, not to the redirect URI {redirect_uri}: paste the "
                          f"address your browser shows after Spotify's consent page (it starts with "
                          f"{redirect_uri}?code=). Nothing was sent to Spotify.")
    if state is not None and dict(parse_qsl(given.query)).get("state") != state:
        raise SignInError("the pasted URL does not carry the state this sign-in sent to Spotify (it comes from "
                          "another or an older sign-in): sign in again and paste the URL of this one. Nothing "
                          "was sent to Spotify.")


class _BoundSignIn:
    """Sign-in bound to its request: the pasted URL is checked (`check_pasted_redirect`) before
    spotipy reads a code from it; spotipy puts the random `state` in the authorize URL."""

    redirect_uri: str
    state: str | None

    def _get_user_input(self, prompt: str) -> str:
        pasted = super()._get_user_input(prompt)
        check_pasted_redirect(pasted, self.redirect_uri, self.state)
        return pasted


class BoundSpotifyOAuth(_BoundSignIn, SpotifyOAuth):
    """spotipy's authorization-code flow, bound to its request."""


class BoundSpotifyPKCE(_BoundSignIn, SpotifyPKCE):
    """spotipy's PKCE flow, bound to its request."""


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
        sign_in = dict(client_id=settings.client_id, redirect_uri=settings.redirect_uri, scope=list(settings.scopes),
                       cache_handler=cache, open_browser=settings.open_browser,
                       requests_timeout=settings.requests_timeout, state=secrets.token_urlsafe(16))
        if settings.pkce:
            auth_manager = BoundSpotifyPKCE(**sign_in)
        else:
            auth_manager = BoundSpotifyOAuth(client_secret=settings.client_secret, **sign_in)
        client = spotipy.Spotify(auth_manager=auth_manager, **common)
    else:
        raise SignInError(NO_CREDENTIALS_MESSAGE)
    client.prefix = settings.api_base
    return client


def sign_in_os_error_message(error: OSError, settings: SpotifySettings) -> str:
    """What an OSError during sign-in means: a taken port for the redirect, or what it says."""
    if error.errno == errno.EADDRINUSE:
        return (f"could not listen for Spotify's redirect to {settings.redirect_uri} ({error.strerror}): "
                "another program holds the port (JupyterLab uses 8888). Sign in without open_browser, "
                "pasting the URL you are redirected to.")
    return f"signing in to Spotify failed: {error.strerror or error} ({type(error).__name__})"


def ask_on_terminal(question: str) -> bool:
    """Ask a yes/no question when a person is at a terminal; without one the answer is no."""
    if not (sys.stdin and sys.stdin.isatty()):
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _spotify_message(error: spotipy.SpotifyException) -> str:
    """The message Spotify sent (spotipy prefixes it with the URL and a newline)."""
    return str(error.msg).split("\n", 1)[-1].strip()


def _retry_after_seconds(error: spotipy.SpotifyException) -> float:
    """The wait Spotify asks for, at least MIN_RETRY_AFTER; infinite when it makes no sense."""
    try:
        seconds = float((error.headers or {}).get("Retry-After", MIN_RETRY_AFTER))
    except (TypeError, ValueError):
        return MIN_RETRY_AFTER
    return max(MIN_RETRY_AFTER, seconds) if math.isfinite(seconds) else math.inf


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
    def connect(cls, settings: SpotifySettings, *, sleep: Callable[[float], None] = time.sleep,
                ask: Callable[[str], bool] | None = None) -> "SpotifyPlayer":
        """Sign in (a cached token, else paste the URL Spotify redirects to) and check the account.

        A revoked cached sign-in (invalid_grant) is deleted after `ask(question)` agrees, then
        sign-in starts afresh; by default the question is asked only when a terminal is attached,
        otherwise the error says which file to delete.
        """
        ask = ask if ask is not None else ask_on_terminal
        try:
            return cls._sign_in(settings, sleep)
        except SignInRevoked:
            if not ask(f"Spotify refused the sign-in saved in {settings.cache_path}. Delete it and sign in "
                       "again?"):
                raise
        settings.cache_path.unlink(missing_ok=True)
        return cls._sign_in(settings, sleep)

    @classmethod
    def _sign_in(cls, settings: SpotifySettings, sleep: Callable[[float], None]) -> "SpotifyPlayer":
        """One sign-in attempt, its failures turned into SignInError."""
        player = cls(create_client(settings), settings, sleep=sleep)
        try:
            player.user = player.current_user()
        except (EOFError, NotImplementedError):  # input() without a terminal, or in papermill
            raise SignInError(CANNOT_PROMPT_MESSAGE) from None
        except OSError as error:
            raise SignInError(sign_in_os_error_message(error, settings)) from None
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
                if error.error == "invalid_grant":
                    raise SignInRevoked(
                        f"Spotify refused the saved sign-in (invalid_grant: {error.error_description}): the "
                        f"token cached in {self.settings.cache_path} was revoked or is no longer valid. "
                        "Delete that file and run again to sign in afresh.") from None
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

    def top_tracks(self) -> dict[str, list[dict]]:
        """The signed-in person's top tracks (GET /me/top/tracks), by time range (`TOP_RANGES`)."""
        return {span: self._call(f"GET /me/top/tracks ({span})", lambda span=span: self.client.current_user_top_tracks(
            limit=PAGE_LIMIT, time_range=span)).get("items", []) for span in TOP_RANGES}

    def recently_played(self) -> list[dict]:
        """The person's last plays (GET /me/player/recently-played: at most 50, each heard 30 s or more)."""
        return self._call("GET /me/player/recently-played",
                          lambda: self.client.current_user_recently_played(limit=PAGE_LIMIT)).get("items", [])

    def saved_tracks(self) -> list[dict]:
        """The person's saved tracks (GET /me/tracks, page by page, at most `MAX_SAVED_TRACKS`)."""
        items: list[dict] = []
        while len(items) < MAX_SAVED_TRACKS:
            page = self._call("GET /me/tracks", lambda: self.client.current_user_saved_tracks(
                limit=PAGE_LIMIT, offset=len(items)))
            items += page.get("items", [])
            if not page.get("next") or not page.get("items"):
                return items
        return items

    def play_mode(self) -> PlayMode | None:
        """The current shuffle and repeat settings (None when nothing plays, so none are known)."""
        state = self.playback()
        if not state or "shuffle_state" not in state or "repeat_state" not in state:
            return None
        return PlayMode(bool(state["shuffle_state"]), str(state["repeat_state"]))

    def set_play_mode(self, mode: PlayMode, device_id: str) -> list[SpotifyRefused]:
        """Set shuffle and repeat; returns Spotify's refusals (some devices refuse), empty when both are set."""
        refused = []
        for what, request in (
            ("PUT /me/player/shuffle", lambda: self.client.shuffle(mode.shuffle, device_id=device_id)),
            ("PUT /me/player/repeat", lambda: self.client.repeat(mode.repeat, device_id=device_id)),
        ):
            try:
                self._call(what, request)
            except SpotifyRefused as error:
                refused.append(error)
        return refused

    def pause(self, device_id: str) -> None:
        """Pause playback (PUT /me/player/pause)."""
        self._call("PUT /me/player/pause", lambda: self.client.pause_playback(device_id=device_id))

    def start(self, track_ids: Sequence[str], device_id: str) -> None:
        """Play the tracks in order with one PUT /me/player/play, sent at most once.

        A 429 means Spotify did nothing, so the call is repeated after the wait. After a 5xx or
        a network error the outcome is unknown: the playback state decides. If one of the tracks
        plays (relinked or not), the call worked; otherwise it is not re-sent (it might still
        take effect) and SpotifyUnavailable says to run again.
        """
        uris = [f"spotify:track:{track_id}" for track_id in track_ids]
        try:
            self._call("PUT /me/player/play", lambda: self.client.start_playback(device_id=device_id, uris=uris),
                       repeatable=False)
        except SpotifyUnavailable as error:
            self._sleep(self.settings.backoff_seconds)
            if not set(item_ids(self.playback())) & set(track_ids):
                raise SpotifyUnavailable(f"{error} The play request was not re-sent, so that nothing "
                                         "plays twice.") from None


@dataclass(frozen=True)
class PlayMode:
    """Spotify's shuffle and repeat settings ("off", "track" or "context")."""

    shuffle: bool
    repeat: str


IN_ORDER = PlayMode(shuffle=False, repeat="off")


def item_ids(state: dict | None) -> tuple[str, ...]:
    """The ids of the playing item: its own, then the requested one it was relinked from."""
    item = (state or {}).get("item") or {}
    linked = (item.get("linked_from") or {}).get("id")
    return tuple(track_id for track_id in (item.get("id"), linked) if track_id)


class PlaybackFollower:
    """Turns successive playback states into finished tracks of one playlist.

    `observe(state)` returns the positions the state shows to be finished, with their
    percentage listened; `over` turns True once the playlist has ended or playback has left it.
    Each position is reported at most once. A track matches its position by its id or, when
    Spotify relinked it, by `item.linked_from.id`; `played_ids` keeps the id really played.

    In order (`in_order`, shuffle off), moving on to a later track finishes every track before
    it: one that started and ended between two polls counts as 0 listened (none of it was
    seen), and going back to an earlier track reports nothing again. Out of order (shuffle
    could not be turned off, or a state shows it on), a track is finished when another plays,
    whatever their positions, and tracks never seen playing are not reported.
    """

    def __init__(self, track_ids: Sequence[str], end_margin_ms: int = 5_000, in_order: bool = True,
                 aliases: Mapping[str, str] | None = None) -> None:
        if len(set(track_ids)) != len(track_ids) or not track_ids:
            raise ValueError("a playlist to follow needs at least one track and no track twice")
        self.track_ids = list(track_ids)
        self.end_margin_ms = end_margin_ms
        self.in_order = in_order
        self.aliases = dict(aliases or {})  # another id of a playlist's song -> the song's id
        self._position_of = {track_id: position for position, track_id in enumerate(track_ids)}
        self._progress_ms = [0] * len(track_ids)
        self._duration_ms = [0] * len(track_ids)
        self._seen: set[int] = set()
        self._reported: set[int] = set()
        self.played_ids: dict[int, str] = {}
        self.current: int | None = None
        self.over = False
        self.left_playlist = False

    def position_of(self, state: dict | None) -> int | None:
        """The playlist position of the state's item, or None when it is not the playlist's.

        Spotify may play another id than the one asked for: a copy of the track for the
        listener's market (the asked id is then the item's `linked_from`), or another release
        of the same song (mapped back by `aliases`)."""
        songs = (self.aliases.get(track_id, track_id) for track_id in item_ids(state))
        return next((self._position_of[song] for song in songs if song in self._position_of), None)

    def _percentage(self, position: int) -> float:
        duration = self._duration_ms[position]
        return min(max(self._progress_ms[position] / duration, 0.0), 1.0) if duration > 0 else 0.0

    def _report(self, positions: Iterable[int]) -> list[tuple[int, float]]:
        """The positions not reported yet, with their percentage listened; they count as reported."""
        finished = [(position, self._percentage(position)) for position in positions if position not in self._reported]
        self._reported.update(position for position, _ in finished)
        return finished

    def _report_current(self) -> list[tuple[int, float]]:
        """Finish the current track and, in order, every track before it."""
        if self.current is None:
            return []
        return self._report(range(self.current + 1) if self.in_order else [self.current])

    def is_playing(self, state: dict | None) -> bool:
        """Whether `state` shows one of the playlist's tracks playing."""
        return bool(state and state.get("is_playing") and self.position_of(state) is not None)

    def observe(self, state: dict | None) -> list[tuple[int, float]]:
        """The positions this state shows to be finished, as (position, percentage_listened)."""
        if self.over:
            return []
        if state and state.get("shuffle_state"):
            self.in_order = False
        position = self.position_of(state)
        if position is None:
            return self._observe_elsewhere(state)
        item = state.get("item") or {}
        if item.get("id") != self.track_ids[position]:
            self.played_ids[position] = item["id"]
        finished: list[tuple[int, float]] = []
        if self.in_order:
            if self.current is None or position > self.current:
                finished = self._report(range(position))
                self.current = position
        elif position != self.current:
            finished = self._report_current()
            self.current = position
        self._seen.add(position)
        last = len(self.track_ids) - 1
        if self.in_order and position < self.current:
            if self.current == last and not state.get("is_playing"):
                # A player may also end a playlist by going back to its first track, stopped.
                self.over = True
                return finished + self._report_current()
            return finished
        progress, duration = int(state.get("progress_ms") or 0), int(item.get("duration_ms") or 0)
        rewound = progress < self._progress_ms[position]
        if state.get("is_playing") or not rewound:
            self._progress_ms[position], self._duration_ms[position] = progress, duration
        if self._on_last_track() and not state.get("is_playing") and (rewound or self._near_end()):
            # Once the playlist has ended the player stops on its last track, rewound or at its end.
            self.over = True
            finished += self._report_current()
        return finished

    def _on_last_track(self) -> bool:
        """Whether the current track is the last one to play (in order: the last position)."""
        if self.in_order:
            return self.current == len(self.track_ids) - 1
        return len(self._seen) == len(self.track_ids)

    def _near_end(self) -> bool:
        """Whether the current track was last seen within `end_margin_ms` of its end."""
        duration = self._duration_ms[self.current]
        return duration > 0 and self._progress_ms[self.current] + self.end_margin_ms >= duration

    def _observe_elsewhere(self, state: dict | None) -> list[tuple[int, float]]:
        """Nothing of the playlist plays: not started yet, a pause, the end, or another track."""
        if self.current is None:
            return []
        at_end = self._on_last_track() and self._near_end()
        if item_ids(state):  # another track plays: the playlist ended (autoplay) or was left
            self.left_playlist = not at_end
        elif not at_end:
            return []  # 204 / no item mid-playlist: maybe a pause, maybe a blip; the caller's clock decides
        self.over = True
        return self._report_current()

    def finish(self) -> list[tuple[int, float]]:
        """Stop following: report everything played so far, including the current track."""
        self.over = True
        return self._report_current()


class Interrupt:
    """Ctrl-C (SIGINT) as a flag, with sections it cannot break.

    The handler sets the flag and raises KeyboardInterrupt, except inside `shielded()`, where
    it only sets the flag: a loop that checks `is_set()` then stops at its next turn. Shielded
    sections hand a finished track over and write it, so an interrupt can neither drop a
    record nor have it written twice. A flag also survives a KeyboardInterrupt that lands in
    code that swallows exceptions (an object's finaliser, say).
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._shields = 0

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """A block that Ctrl-C does not break (it is noted and acted on afterwards)."""
        self._shields += 1
        try:
            yield
        finally:
            self._shields -= 1

    def on_signal(self, signum: int, frame: object) -> None:
        self._event.set()
        if not self._shields:
            raise KeyboardInterrupt


@contextmanager
def interrupt_flag() -> Iterator[Interrupt]:
    """An `Interrupt` that Ctrl-C (SIGINT) sets while the block runs.

    Signal handlers can only be set in the main thread: elsewhere the flag is never set.
    """
    interrupt = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield interrupt
        return
    previous = signal.signal(signal.SIGINT, interrupt.on_signal)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)


class _Reporter:
    """Hands finished tracks to `on_finished` exactly once, with their liked flag (None: unknown)."""

    def __init__(self, player: SpotifyPlayer, follower: PlaybackFollower, on_finished: Callable[..., None],
                 interrupt: Interrupt) -> None:
        self.player = player
        self.follower = follower
        self.on_finished = on_finished
        self.interrupt = interrupt
        self.pending: list[tuple[int, float]] = []

    def take(self, finished: Callable[[], list[tuple[int, float]]]) -> None:
        """Move the follower's finished tracks to `pending`, in one step Ctrl-C cannot split."""
        with self.interrupt.shielded():
            self.pending += finished()

    def report(self) -> None:
        """Report the pending tracks; each leaves `pending` in the same shielded step that reports it."""
        if not self.pending:
            return
        liked = self._liked([position for position, _ in self.pending])
        with self.interrupt.shielded():
            while self.pending:
                position, share = self.pending[0]
                self.on_finished(position, share, liked[position], self.follower.played_ids.get(position))
                del self.pending[0]

    def _liked(self, positions: list[int]) -> dict[int, int | None]:
        """Liked per position: in the library under its requested or its played id; None if the check failed."""
        ids = {position: [self.follower.track_ids[position], *filter(None, [self.follower.played_ids.get(position)])]
               for position in positions}
        asked = list(dict.fromkeys(track_id for both in ids.values() for track_id in both))
        try:
            in_library = dict(zip(asked, self.player.liked(asked)))
        except (SpotifyError, KeyboardInterrupt) as error:
            if isinstance(error, KeyboardInterrupt):
                self.interrupt.set()
            else:
                warnings.warn(f"the liked check failed, so liked is logged as unknown: {error}", stacklevel=2)
            return {position: None for position in positions}
        return {position: int(any(in_library[track_id] for track_id in both)) for position, both in ids.items()}


def now_playing(state: dict, position: int, n_tracks: int) -> str:
    """'now playing 3/10: Name by Artist, Artist' from a playback state."""
    item = state.get("item") or {}
    artists = ", ".join(artist.get("name", "") for artist in item.get("artists") or [])
    return f"now playing {position + 1}/{n_tracks}: {item.get('name') or item.get('id')}" + (
        f" by {artists}" if artists else "")


class SpotifyListener:
    """A person listening on Spotify: plays the tracks with one call and follows the playback.

    Shuffle and repeat are turned off before the play request and put back as they were
    afterwards. It stops when the playlist has ended or playback has left it, when nothing of
    it has played for `pause_timeout` seconds (paused, stopped, or never started), on
    KeyboardInterrupt (Ctrl-C, a notebook's interrupt), or on an error. In every case each
    track played so far, the current one included, goes once to
    `on_finished(position, percentage_listened, liked, played_id)` before it returns or raises
    (`liked` None: the library check failed; `played_id` None unless Spotify relinked the
    track). If an error stops it, playback is paused: nothing plays that is not logged.
    """

    source = "spotify"

    def __init__(self, player: SpotifyPlayer, *, device_name: str | None = None, poll_interval: float = 2.0,
                 pause_timeout: float = 120.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, aliases: Mapping[str, str] | None = None,
                 announce: Callable[[str], None] | None = None) -> None:
        if not (math.isfinite(poll_interval) and math.isfinite(pause_timeout)) or poll_interval < 0 \
                or pause_timeout < 0:
            raise ValueError("poll_interval and pause_timeout must be finite numbers >= 0, got "
                             f"{poll_interval}, {pause_timeout}")
        self.player = player
        self.aliases = aliases  # other ids of the playlist's songs (see PlaybackFollower.position_of)
        self.announce = announce  # told "now playing ..." with the name from the playback state
        self.device_name = device_name
        self.poll_interval = poll_interval
        self.pause_timeout = pause_timeout
        self._sleep = sleep
        self._clock = clock

    def listen(self, track_ids: Sequence[str], on_finished: Callable[..., None]) -> StopReason:
        """Play `track_ids` in order, report each finished track, and say why it stopped."""
        device = self.player.choose_device(self.device_name)
        before = self.player.play_mode()
        refused = self.player.set_play_mode(IN_ORDER, device["id"])
        for error in refused:
            warnings.warn(f"{error}. Tracks are then matched by id in whatever order they play.", stacklevel=2)
        follower = PlaybackFollower(track_ids, end_margin_ms=int(self.poll_interval * 1000) + 2_000,
                                    in_order=not refused, aliases=self.aliases)
        try:
            self.player.start(track_ids, device["id"])
            with interrupt_flag() as interrupt:
                reporter = _Reporter(self.player, follower, on_finished, interrupt)
                try:
                    reason = self._follow(follower, reporter, interrupt)
                except KeyboardInterrupt:
                    reason = "interrupted"
                finally:
                    with interrupt.shielded():  # a second Ctrl-C cannot cut the last report short
                        reporter.take(follower.finish)
                        reporter.report()
        except Exception:
            self._pause_quietly(device["id"])
            raise
        finally:
            if before is not None and before != IN_ORDER:
                self._restore_quietly(before, device["id"])
        return reason

    def _pause_quietly(self, device_id: str) -> None:
        """Pause after an error (what plays could not be logged); a failure here changes nothing."""
        try:
            self.player.pause(device_id)
        except SpotifyError:
            pass

    def _restore_quietly(self, mode: PlayMode, device_id: str) -> None:
        """Put shuffle and repeat back as they were; a failure only warns."""
        try:
            refused = self.player.set_play_mode(mode, device_id)
        except SpotifyError as error:
            refused = [error]
        for error in refused:
            warnings.warn(f"could not restore shuffle and repeat: {error}", stacklevel=3)

    def _follow(self, follower: PlaybackFollower, reporter: _Reporter, interrupt: Interrupt) -> StopReason:
        """Poll the playback state until the playlist is over, nothing of it plays for too long,
        or `interrupt` is set (a state read after the interrupt is not used)."""
        quiet_since: float | None = None
        while True:
            state = self.player.playback()
            if interrupt.is_set():
                return "interrupted"
            playing_before = follower.current
            reporter.take(lambda: follower.observe(state))
            if self.announce and follower.current is not None and follower.current != playing_before:
                self.announce(now_playing(state, follower.current, len(follower.track_ids)))
            reporter.report()
            if interrupt.is_set():
                return "interrupted"
            if follower.over:
                return "left_playlist" if follower.left_playlist else "finished"
            if follower.is_playing(state):
                quiet_since = None
            else:
                quiet_since = self._clock() if quiet_since is None else quiet_since
                if self._clock() - quiet_since >= self.pause_timeout:
                    return "paused" if follower.current is not None else "not_started"
            self._sleep(self.poll_interval)
