"""The Spotify side: settings, sign-in, errors, retries, devices and following playback.

Everything that talks HTTP goes through the real spotipy client to the fake server in
tests/fake_spotify.py, pointed at it by `api_base` and given a ready access token.
"""
from __future__ import annotations

import errno
import json
import logging
import signal
import stat
import subprocess
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spotipy.oauth2 import SpotifyOAuth, SpotifyPKCE

from fake_spotify import FakeSpotify, FakeTrack, error_answer
from helpers.paths import REPO_ROOT
from helpers.spotify import (DEFAULT_API_BASE, DEFAULT_TOKEN_CACHE, NoDevice, PlaybackFollower, PremiumRequired,
                             SCOPES, PrivateTokenCache, RateLimited, SignInError, SignInRevoked, SpotifyListener,
                             SpotifyPlayer, SpotifySettings, SpotifyUnavailable, UserNotRegistered, now_playing)

PLAYLIST = [f"track{i:03d}" for i in range(10)]
LISTENED = [1.0, 0.5, 0.3, 0.0, 0.75, 1.0, 0.05, 0.9, 0.2, 1.0]
LIKED = {"track001", "track004", "track009"}


def catalogue() -> dict[str, FakeTrack]:
    tracks = {track_id: FakeTrack(f"Song {i}", 100_000, listened) for i, (track_id, listened)
              in enumerate(zip(PLAYLIST, LISTENED))}
    tracks["other00"] = FakeTrack("Not in the playlist", 100_000)
    return tracks


class Recorder:
    """Stands in for time.sleep: remembers the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def session(fake: FakeSpotify, sleep: Recorder | None = None, **listener_options):
    """A connected player and a listener that polls without waiting."""
    sleep = sleep or Recorder()
    settings = SpotifySettings(access_token=fake.token, api_base=fake.api_base, max_retries=2)
    player = SpotifyPlayer.connect(settings, sleep=sleep)
    options = dict(poll_interval=0.0, pause_timeout=60.0, sleep=sleep) | listener_options
    return player, SpotifyListener(player, **options)


def listen(listener: SpotifyListener, track_ids=PLAYLIST, played: dict | None = None):
    """Listen to `track_ids`; heard is [(position, share, liked)], `played` collects relinked ids."""
    heard = []

    def on_finished(position, share, liked, played_id=None):
        heard.append((position, share, liked))
        if played_id is not None and played is not None:
            played[position] = played_id

    reason = listener.listen(track_ids, on_finished)
    return reason, heard


# -- settings and sign-in --------------------------------------------------------------------

def test_settings_never_show_the_secret_or_the_token():
    settings = SpotifySettings(client_id="my-client-id", client_secret="s3cr3t-value", access_token="tok3n-value")
    for text in (repr(settings), str(settings), f"{settings}", repr([settings])):
        assert "s3cr3t-value" not in text and "tok3n-value" not in text
        assert "my-client-id" in text and "client_secret='***'" in text


def test_settings_take_explicit_values_then_the_environment_then_defaults():
    environ = {"SPOTIPY_CLIENT_ID": "env-id", "SPOTIPY_CLIENT_SECRET": "env-secret",
               "SPOTIFY_API_BASE": "http://127.0.0.1:9/v1"}
    settings = SpotifySettings.from_environment(environ, client_id="given-id", redirect_uri=None)
    assert settings.client_id == "given-id" and settings.client_secret == "env-secret"
    assert settings.api_base == "http://127.0.0.1:9/v1/"
    assert settings.redirect_uri == "http://127.0.0.1:8888/callback" and not settings.pkce
    empty = SpotifySettings.from_environment({})
    assert not empty.has_credentials and empty.api_base == DEFAULT_API_BASE
    assert SpotifySettings(client_id="id").pkce, "no secret: PKCE"
    assert SpotifySettings(access_token="t").has_credentials


@pytest.mark.parametrize("options, complaint", [
    (dict(redirect_uri="http://localhost:8888/callback"), "localhost"),
    (dict(redirect_uri="http://example.com/callback"), "https, or http on 127.0.0.1"),
    (dict(api_base="api.spotify.com"), "api_base"),
    (dict(api_base="http://any-host/v1/"), r"api_base \(SPOTIFY_API_BASE\) must be https: every request carries"),
    (dict(api_base="http://localhost:9/v1/"), "must be https"),
    (dict(api_base="http://127.0.0.1.evil.example/v1/"), "must be https"),
    (dict(requests_timeout=0), "requests_timeout"),
])
def test_bad_settings_are_refused(options, complaint):
    with pytest.raises(ValueError, match=complaint):
        SpotifySettings(**options)


def test_no_credentials_is_a_sign_in_error():
    with pytest.raises(SignInError, match="SPOTIPY_CLIENT_ID"):
        SpotifyPlayer.connect(SpotifySettings())


def test_sign_in_that_needs_input_without_a_terminal_says_what_to_do(tmp_path, monkeypatch):
    def no_terminal(prompt=""):
        raise EOFError

    monkeypatch.setattr("builtins.input", no_terminal)
    settings = SpotifySettings(client_id="abc123", cache_path=tmp_path / ".spotify_cache",
                               api_base="http://127.0.0.1:9/v1/")
    with pytest.raises(SignInError, match="cannot read input"):
        SpotifyPlayer.connect(settings)


def test_sign_in_on_a_taken_port_suggests_pasting_the_url(tmp_path, monkeypatch):
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    monkeypatch.setattr("webbrowser.open", lambda url: True)
    port = holder.getsockname()[1]
    settings = SpotifySettings(client_id="abc123", cache_path=tmp_path / ".spotify_cache", open_browser=True,
                               redirect_uri=f"http://127.0.0.1:{port}/callback", api_base="http://127.0.0.1:9/v1/")
    with holder, pytest.raises(SignInError, match="another program holds the port"):
        SpotifyPlayer.connect(settings)


def test_token_cache_is_private_and_git_ignored(tmp_path):
    cache = PrivateTokenCache(cache_path=str(tmp_path / ".spotify_cache"))
    cache.save_token_to_cache({"access_token": "abc", "expires_at": 1})
    assert stat.S_IMODE((tmp_path / ".spotify_cache").stat().st_mode) == 0o600
    assert cache.get_cached_token()["access_token"] == "abc"
    assert [p.name for p in tmp_path.iterdir()] == [".spotify_cache"], "no temporary file left behind"
    (tmp_path / ".spotify_cache").chmod(0o644)
    cache.get_cached_token()
    assert stat.S_IMODE((tmp_path / ".spotify_cache").stat().st_mode) == 0o600
    ignored = subprocess.run(["git", "check-ignore", "-q", str(DEFAULT_TOKEN_CACHE)], cwd=REPO_ROOT)
    assert ignored.returncode == 0, f"{DEFAULT_TOKEN_CACHE} must be git-ignored"


def test_the_token_never_reaches_the_logs(caplog):
    caplog.set_level(logging.DEBUG)
    with FakeSpotify(catalogue(), liked=LIKED) as fake:
        _, listener = session(fake)
        listen(listener)
    assert "Bearer ***" in caplog.text, "spotipy's debug lines were captured, redacted"
    assert fake.token not in caplog.text


# -- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("answer", [
    error_answer(403, "User not registered in the Developer Dashboard"),
    error_answer(403, "User not registered in the Developer Dashboard", text=True),
    error_answer(403, "Check settings on developer.spotify.com/dashboard, the user may not be registered."),
])
def test_unregistered_user_gets_one_clear_message(answer):
    with FakeSpotify(catalogue(), registered=False) as fake:
        fake.unregistered_answer = answer
        with pytest.raises(UserNotRegistered, match="User Management"):
            session(fake)


def test_rejected_token_asks_to_sign_in_again():
    with FakeSpotify(catalogue()) as fake:
        settings = SpotifySettings(access_token="expired", api_base=fake.api_base)
        with pytest.raises(SignInError, match="401"):
            SpotifyPlayer.connect(settings)


def test_free_account_gets_the_premium_message_and_nothing_plays():
    with FakeSpotify(catalogue(), premium=False) as fake:
        _, listener = session(fake)
        with pytest.raises(PremiumRequired, match="Premium account"):
            listen(listener)
        assert fake.plays == []


def test_no_device_at_all_says_to_open_spotify():
    with FakeSpotify(catalogue(), devices=[]) as fake:
        _, listener = session(fake)
        with pytest.raises(NoDevice, match="open Spotify on your phone or computer"):
            listen(listener)


@pytest.mark.parametrize("device_name, chosen", [("laptop", "laptop-1"), (None, "speaker-1")])
def test_without_an_active_device_playback_moves_to_the_named_or_first_one(device_name, chosen):
    devices = [{"id": "speaker-1", "name": "Speaker", "is_active": False, "is_restricted": False},
               {"id": "tv-1", "name": "TV", "is_active": False, "is_restricted": True},
               {"id": "laptop-1", "name": "Laptop", "is_active": False, "is_restricted": False}]
    with FakeSpotify(catalogue(), devices=devices) as fake:
        _, listener = session(fake, device_name=device_name)
        reason, heard = listen(listener)
        transfers = [r for r in fake.requests if r.method == "PUT" and r.path == "/me/player"]
        plays = [r for r in fake.requests if r.path == "/me/player/play"]
    assert transfers[0].body == {"device_ids": [chosen], "play": False}
    assert plays[0].query["device_id"] == [chosen]
    assert reason == "finished" and len(heard) == 10


def test_an_unknown_device_name_lists_the_available_ones():
    with FakeSpotify(catalogue()) as fake:
        _, listener = session(fake, device_name="Kitchen")
        with pytest.raises(NoDevice, match="No Spotify device named 'Kitchen'; available: 'Test Phone'"):
            listen(listener)


def test_rate_limit_waits_retry_after_then_carries_on():
    sleep = Recorder()
    with FakeSpotify(catalogue(), liked=LIKED) as fake:
        _, listener = session(fake, sleep=sleep)
        fake.fail("GET", "/me/player", 429, times=2, retry_after=7)
        fake.fail("PUT", "/me/player/play", 429, retry_after=3)
        reason, heard = listen(listener)
    assert reason == "finished" and len(heard) == 10
    assert sorted(w for w in sleep.waits if w > 0) == [3, 7, 7]
    assert fake.count("PUT", "/me/player/play") == 2 and len(fake.plays) == 1


def test_rate_limit_beyond_the_cap_stops_with_a_clear_message_instead_of_freezing():
    sleep = Recorder()
    with FakeSpotify(catalogue()) as fake:
        _, listener = session(fake, sleep=sleep)
        fake.fail("GET", "/me/player/devices", 429, retry_after=3600)
        with pytest.raises(RateLimited, match="wait 3600 s more, beyond the 30 s"):
            listen(listener)
    assert sleep.waits == []


def test_server_errors_and_dropped_connections_are_retried_for_safe_calls():
    with FakeSpotify(catalogue(), liked=LIKED) as fake:
        _, listener = session(fake)
        fake.fail("GET", "/me/player", 503, times=2)
        fake.fail("GET", "/me/library/contains", 0, drop=True)
        reason, heard = listen(listener)
    assert reason == "finished" and [h[2] for h in heard] == [int(t in LIKED) for t in PLAYLIST]


def test_server_errors_that_outlast_the_retries_stop_with_a_clear_message():
    with FakeSpotify(catalogue()) as fake:
        _, listener = session(fake)
        fake.fail("GET", "/me/player/devices", 502, times=3)
        with pytest.raises(SpotifyUnavailable, match="502 to GET /me/player/devices \\(3 attempt"):
            listen(listener)


def test_play_is_never_re_sent_after_a_server_error():
    with FakeSpotify(catalogue()) as fake:
        _, listener = session(fake)
        fake.fail("PUT", "/me/player/play", 500)
        with pytest.raises(SpotifyUnavailable, match="not re-sent"):
            listen(listener)
        assert fake.count("PUT", "/me/player/play") == 1 and fake.plays == []


def test_a_play_that_worked_despite_a_server_error_is_followed_not_repeated():
    with FakeSpotify(catalogue(), liked=LIKED) as fake:
        _, listener = session(fake)
        fake.fail("PUT", "/me/player/play", 502, apply=True)
        reason, heard = listen(listener)
        assert fake.count("PUT", "/me/player/play") == 1 and len(fake.plays) == 1
    assert reason == "finished" and len(heard) == 10


# -- following playback ----------------------------------------------------------------------

@pytest.mark.parametrize("end", ["stopped", "nothing", "autoplay"])
def test_happy_path_logs_every_track_with_its_share_and_like(end):
    with FakeSpotify(catalogue(), liked=LIKED, end=end) as fake:
        player, listener = session(fake)
        reason, heard = listen(listener)
        assert fake.plays == [PLAYLIST], "one play request with every track, in order"
        assert fake.count("PUT", "/me/player/play") == 1
        assert fake.count("POST", "/me/player/queue") == 0
        assert (fake.shuffle_state, fake.repeat_state) == (False, "off"), "set before the play request"
        paths = [r.path for r in fake.requests]
        assert paths.index("/me/player/shuffle") < paths.index("/me/player/play")
        expected = [(position, pytest.approx(fake.percentage(track_id)), int(track_id in LIKED))
                    for position, track_id in enumerate(PLAYLIST)]
    assert reason == "finished"
    assert heard == expected


def test_track_names_come_one_by_one_from_the_tracks_endpoint():
    with FakeSpotify(catalogue()) as fake:
        player, _ = session(fake)
        names = player.track_names(PLAYLIST[:3])
        assert fake.count("GET", "/tracks/") == 3 and fake.count("GET", "/tracks") == 0
    assert names == {"track000": "Song 0", "track001": "Song 1", "track002": "Song 2"}


def test_library_check_asks_at_most_40_tracks_at_a_time():
    tracks = {f"id{i:03d}": FakeTrack(f"Song {i}") for i in range(45)}
    with FakeSpotify(tracks, liked={"id000", "id044"}) as fake:
        player, _ = session(fake)
        likes = player.liked(list(tracks))
        assert fake.count("GET", "/me/library/contains") == 2
    assert likes == [1] + [0] * 43 + [1]


def test_pause_past_the_timeout_logs_what_was_played_including_the_current_track():
    with FakeSpotify(catalogue(), liked=LIKED, pause_at=(4, 40_000)) as fake:
        _, listener = session(fake, pause_timeout=0.05)
        reason, heard = listen(listener)
        paused = fake.reported[-1]
    assert reason == "paused" and not paused["is_playing"]
    assert [h[0] for h in heard] == [0, 1, 2, 3, 4]
    assert heard[-1][1] == pytest.approx(paused["progress_ms"] / paused["item"]["duration_ms"]) == 0.4


def test_interrupt_mid_playlist_logs_everything_played_so_far():
    class InterruptAt(Recorder):
        def __call__(self, seconds):
            super().__call__(seconds)
            if len(self.waits) == 25:
                raise KeyboardInterrupt

    with FakeSpotify(catalogue(), liked=LIKED) as fake:
        _, listener = session(fake, sleep=InterruptAt())
        reason, heard = listen(listener)
        last_state = fake.reported[-1]
    current = PLAYLIST.index(last_state["item"]["id"])
    assert reason == "interrupted" and 0 < current < 9
    assert [h[0] for h in heard] == list(range(current + 1))
    assert heard[-1][1] == pytest.approx(last_state["progress_ms"] / last_state["item"]["duration_ms"])
    assert [h[2] for h in heard] == [int(t in LIKED) for t in PLAYLIST[:current + 1]]


def test_an_interrupt_swallowed_by_other_code_still_stops_the_listener():
    """Ctrl-C landing in code that swallows exceptions (an object's finaliser, say) is not lost."""
    class SwallowedInterruptAt(Recorder):
        def __call__(self, seconds):
            super().__call__(seconds)
            if len(self.waits) == 25:
                try:
                    signal.raise_signal(signal.SIGINT)
                except KeyboardInterrupt:
                    pass

    handler = signal.getsignal(signal.SIGINT)
    with FakeSpotify(catalogue(), liked=LIKED) as fake:
        sleep = SwallowedInterruptAt()
        _, listener = session(fake, sleep=sleep)
        reason, heard = listen(listener)
    assert reason == "interrupted"
    assert len(fake.reported) == len(sleep.waits) + 2  # the look before playing, and one more poll, not used
    last_used = fake.reported[-2]
    current = PLAYLIST.index(last_used["item"]["id"])
    assert [h[0] for h in heard] == list(range(current + 1)) and 0 < current < 9
    assert heard[-1][1] == pytest.approx(last_used["progress_ms"] / last_used["item"]["duration_ms"])
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C behaves as before once listening ends


def state(track_id: str | None, progress_ms: int = 0, is_playing: bool = True, duration_ms: int = 100_000):
    if track_id is None:
        return None
    return {"is_playing": is_playing, "progress_ms": progress_ms,
            "item": {"id": track_id, "duration_ms": duration_ms}}


def test_follower_reports_each_track_once_in_order():
    follower = PlaybackFollower(["a", "b", "c", "d"])
    assert follower.observe(state("other", 5_000)) == [], "not started yet"
    assert follower.observe(state("a", 40_000)) == []
    assert follower.observe(None) == [], "a 204 blip mid-playlist is not an end"
    assert follower.observe(state("a", 60_000)) == []
    assert follower.observe(state("c", 10_000)) == [(0, 0.6), (1, 0.0)], "b began and ended between two polls"
    assert follower.observe(state("a", 20_000)) == [], "going back logs nothing again"
    assert follower.observe(state("c", 120_000)) == []
    assert follower.finish() == [(2, 1.0)], "clipped to 1"
    assert follower.observe(state("d")) == [] and follower.finish() == []


@pytest.mark.parametrize("final, share", [
    (state("b", 0, is_playing=False), 0.98),            # stopped on the last track, rewound
    (state("b", 99_000, is_playing=False), 0.99),       # stopped at the end of the last track
    (state("a", 0, is_playing=False), 0.98),            # stopped, back on the first track
    (None, 0.98),                                       # nothing plays after the last track
    (state("radio-song", 3_000), 0.98),                 # autoplay after the last track
])
def test_follower_knows_when_the_playlist_ended(final, share):
    follower = PlaybackFollower(["a", "b"])
    follower.observe(state("a", 50_000))
    assert follower.observe(state("b", 98_000)) == [(0, 0.5)]
    assert follower.observe(final) == [(1, share)]
    assert follower.over and not follower.left_playlist


def test_follower_sees_the_listener_leave_the_playlist():
    follower = PlaybackFollower(["a", "b", "c"])
    assert follower.observe(state("b", 30_000)) == [(0, 0.0)]
    assert follower.observe(state("some-other-song", 1_000)) == [(1, 0.3)]
    assert follower.over and follower.left_playlist


@settings(max_examples=60, deadline=None)
@given(stops=st.lists(st.integers(0, 20), min_size=1, max_size=10), step=st.integers(1, 8))
def test_follower_recovers_every_share_listened(stops, step):
    """Tracks of 20 s, each heard for stops[i] s, polled every `step` s of progress."""
    track_ids = [f"t{i}" for i in range(len(stops))]
    follower, heard = PlaybackFollower(track_ids), []
    for track_id, stop in zip(track_ids, stops):
        for progress in [*range(0, stop, step), stop]:
            heard += follower.observe(state(track_id, progress * 1000, duration_ms=20_000))
    heard += follower.observe(state(track_ids[-1], 0, is_playing=False))
    # Stopped at 0 s of a last track that was skipped at 0 s looks like a pause: the caller's
    # pause timeout ends that session.
    assert follower.over is (stops[-1] > 0) and not follower.left_playlist
    heard += follower.finish()
    assert heard == [(position, pytest.approx(stop / 20)) for position, stop in enumerate(stops)]


def test_follower_refuses_a_playlist_with_repeats():
    with pytest.raises(ValueError, match="no track twice"):
        PlaybackFollower(["a", "b", "a"])


# -- exactly once, whatever happens ------------------------------------------------------------

def expected_heard(fake: FakeSpotify, liked=LIKED, track_ids=PLAYLIST):
    return [(position, pytest.approx(fake.percentage(track_id)), int(track_id in liked))
            for position, track_id in enumerate(track_ids)]


def test_relinked_tracks_are_logged_under_the_requested_id_with_the_played_id():
    relinked = {"track002": "market2", "track005": "market5"}
    with FakeSpotify(catalogue(), liked={"track001", "market2"}, relinked=relinked) as fake:
        _, listener = session(fake)
        played = {}
        reason, heard = listen(listener, played=played)
        assert [state["item"]["id"] for state in fake.reported if state and state["item"]].count("market5") > 0
        expected = expected_heard(fake, liked={"track001", "track002"})
    assert reason == "finished", "a relinked track mid-playlist is not 'left the playlist'"
    assert heard == expected, "every track, relinked ones under the requested id, liked through the played id"
    assert played == {2: "market2", 5: "market5"}


def test_a_relinked_first_track_proves_a_play_request_that_failed_with_a_server_error_worked():
    with FakeSpotify(catalogue(), relinked={"track000": "market0"}) as fake:
        _, listener = session(fake)
        fake.fail("PUT", "/me/player/play", 502, apply=True)
        reason, heard = listen(listener)
        assert fake.count("PUT", "/me/player/play") == 1
    assert reason == "finished" and len(heard) == 10


@pytest.mark.parametrize("boundary", range(10))
def test_ctrl_c_right_after_a_record_is_written_logs_each_track_exactly_once(boundary):
    """The race of issue 11: an interrupt that lands just after on_finished wrote record `boundary`."""
    handler = signal.getsignal(signal.SIGINT)
    with FakeSpotify(catalogue(), liked=LIKED) as fake:
        _, listener = session(fake)
        written = []

        def on_finished(position, share, liked, played_id=None):
            written.append(position)
            if position == boundary:
                signal.raise_signal(signal.SIGINT)

        reason = listener.listen(PLAYLIST, on_finished)
    assert written == sorted(set(written)) and written[:boundary + 1] == list(range(boundary + 1))
    assert reason == "interrupted"
    assert signal.getsignal(signal.SIGINT) is handler


def test_ctrl_c_pressed_again_at_every_record_still_logs_each_track_once():
    with FakeSpotify(catalogue(), liked=LIKED, interrupt_at_poll=15) as fake:
        _, listener = session(fake)
        written = []

        def on_finished(position, share, liked, played_id=None):
            written.append(position)
            signal.raise_signal(signal.SIGINT)

        reason = listener.listen(PLAYLIST, on_finished)
    assert reason == "interrupted" and written == list(range(len(written))) and len(written) > 1


@pytest.mark.parametrize("poll", range(2, 42, 2))
def test_ctrl_c_at_any_poll_logs_each_track_played_exactly_once(poll):
    """Interrupts landing anywhere (in a poll, the library check, between records), many times."""
    with FakeSpotify(catalogue(), liked=LIKED, interrupt_at_poll=poll) as fake:
        _, listener = session(fake)
        reason, heard = listen(listener)
    positions = [h[0] for h in heard]
    assert positions == list(range(len(positions))), "each position once, none skipped"
    assert reason in ("interrupted", "finished")


@pytest.mark.parametrize("status", [401, 503])
def test_a_failing_library_check_logs_the_tracks_with_liked_unknown(status):
    with FakeSpotify(catalogue(), liked=LIKED) as fake:
        _, listener = session(fake)
        fake.fail("GET", "/me/library/contains", status, times=9, after=2)
        with pytest.warns(UserWarning, match="liked is logged as unknown"):
            reason, heard = listen(listener)
        expected = expected_heard(fake)
    assert reason == "finished" and [h[:2] for h in heard] == [e[:2] for e in expected]
    unknown = [h[0] for h in heard if h[2] is None]
    assert unknown, "the failed checks say unknown"
    assert all(h[2] == e[2] for h, e in zip(heard, expected) if h[2] is not None), "never 0 for unknown"


def test_a_burst_of_server_errors_on_the_player_state_keeps_the_partly_heard_track_and_pauses():
    with FakeSpotify(catalogue(), liked=LIKED) as fake:
        _, listener = session(fake)
        fake.fail("GET", "/me/player", 503, times=10, after=22)
        heard = []
        with pytest.raises(SpotifyUnavailable, match="503 to GET /me/player"):
            listener.listen(PLAYLIST, lambda *finished: heard.append(finished))
        last = next(state for state in reversed(fake.reported) if state)
        assert fake.count("PUT", "/me/player/pause") == 1 and not fake.is_playing
    current = PLAYLIST.index(last["item"]["id"])
    assert [h[0] for h in heard] == list(range(current + 1))
    assert heard[-1][1] == pytest.approx(last["progress_ms"] / 100_000) and 0 < heard[-1][1] < 1


def test_a_log_that_fails_mid_session_stops_and_pauses_the_playback():
    with FakeSpotify(catalogue(), liked=LIKED) as fake:
        _, listener = session(fake)
        written = []

        def on_finished(position, *rest):
            if position == 3:
                raise OSError(28, "No space left on device")
            written.append(position)

        with pytest.raises(OSError, match="No space left"):
            listener.listen(PLAYLIST, on_finished)
        assert not fake.is_playing and fake.count("PUT", "/me/player/pause") == 1
    assert written == [0, 1, 2]


def test_retry_after_zero_cannot_make_the_client_spin():
    sleep = Recorder()
    with FakeSpotify(catalogue()) as fake:
        _, listener = session(fake, sleep=sleep)
        fake.fail("GET", "/me/player/devices", 429, times=10**6, retry_after=0)
        with pytest.raises(RateLimited, match="rate limit"):
            listen(listener)
        requests = fake.count("GET", "/me/player/devices")
    assert sleep.waits and min(sleep.waits) >= 1, "a floor of 1 s between two tries"
    assert sum(sleep.waits) <= 30 and requests == len(sleep.waits) + 1 <= 31


def test_shuffle_that_cannot_be_turned_off_still_gives_every_track_its_real_share():
    with FakeSpotify(catalogue(), liked=LIKED) as fake:
        _, listener = session(fake)
        fake.fail("PUT", "/me/player/shuffle", 403, message="Player command failed: Restriction violated")
        with pytest.warns(UserWarning, match="Restriction violated. Tracks are then matched by id"):
            reason, heard = listen(listener)
        assert fake.queue != PLAYLIST, "the fake played them shuffled"
        expected = expected_heard(fake)
        order = [PLAYLIST.index(track_id) for track_id in fake.queue]
    assert reason == "finished"
    assert [h[0] for h in heard] == order, "reported in the order they were heard"
    assert sorted(heard) == expected, "each with its real share, not 0 %"


def test_shuffle_and_repeat_are_turned_off_to_play_and_restored_afterwards():
    with FakeSpotify(catalogue(), liked=LIKED, idle_state=True) as fake:
        _, listener = session(fake)
        reason, heard = listen(listener)
        settings = [(r.path.removeprefix("/me/player/"), r.query.get("state", [""])[0]) for r in fake.requests
                    if r.path in ("/me/player/shuffle", "/me/player/repeat", "/me/player/play")]
        assert (fake.shuffle_state, fake.repeat_state) == (True, "context")
    assert reason == "finished" and len(heard) == 10
    assert settings == [("shuffle", "false"), ("repeat", "off"), ("play", ""),
                        ("shuffle", "true"), ("repeat", "context")]


# -- sign-in failures ------------------------------------------------------------------------------

def revoked_sign_in(fake: FakeSpotify, tmp_path, monkeypatch) -> SpotifySettings:
    """Settings whose token cache holds an expired token with a refresh token the fake refuses."""
    monkeypatch.setattr(SpotifyOAuth, "OAUTH_TOKEN_URL", fake.token_url)
    cache = tmp_path / ".spotify_cache"
    cache.write_text(json.dumps({"access_token": "old", "token_type": "Bearer", "expires_in": 3600,
                                 "expires_at": 1, "refresh_token": "revoked-refresh",
                                 "scope": " ".join(SCOPES)}))
    return SpotifySettings(client_id="abc123", client_secret="s3cr3t", cache_path=cache, api_base=fake.api_base)


def test_a_revoked_refresh_token_says_which_cache_file_to_delete(tmp_path, monkeypatch):
    with FakeSpotify(catalogue(), revoked=True) as fake:
        settings = revoked_sign_in(fake, tmp_path, monkeypatch)
        with pytest.raises(SignInRevoked, match=f"invalid_grant.*{settings.cache_path} was revoked.*Delete that file"):
            SpotifyPlayer.connect(settings, ask=lambda question: False)
        assert settings.cache_path.exists(), "not deleted without asking"


def test_a_revoked_refresh_token_is_deleted_after_asking_and_sign_in_starts_afresh(tmp_path, monkeypatch):
    questions = []

    def no_input(prompt=""):
        raise EOFError

    monkeypatch.setattr("builtins.input", no_input)
    with FakeSpotify(catalogue(), revoked=True) as fake:
        settings = revoked_sign_in(fake, tmp_path, monkeypatch)
        with pytest.raises(SignInError, match="cannot read input"):
            SpotifyPlayer.connect(settings, ask=lambda question: questions.append(question) or True)
    assert not settings.cache_path.exists() and str(settings.cache_path) in questions[0]


def test_an_os_error_during_sign_in_is_reported_as_what_it_is(tmp_path, monkeypatch):
    def refuse(port, handler=None):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("spotipy.oauth2.start_local_http_server", refuse)
    monkeypatch.setattr("webbrowser.open", lambda url: True)
    settings = SpotifySettings(client_id="abc123", cache_path=tmp_path / ".spotify_cache", open_browser=True,
                               api_base="http://127.0.0.1:9/v1/")
    with pytest.raises(SignInError, match=r"signing in to Spotify failed: Permission denied \(PermissionError\)"):
        SpotifyPlayer.connect(settings)


def test_follower_knows_a_relinked_track_and_another_release_of_a_song():
    follower = PlaybackFollower(["a", "b", "c"], aliases={"b-album": "b"})
    relinked = state("a-market", 50_000)
    relinked["item"]["linked_from"] = {"id": "a"}
    assert follower.position_of(relinked) == 0 and follower.is_playing(relinked)
    assert follower.observe(relinked) == []
    assert follower.observe(state("b-album", 10_000)) == [(0, 0.5)], "another release of b is b"
    assert follower.observe(state("c", 1_000)) == [(1, 0.1)] and not follower.left_playlist
    assert follower.position_of({"item": {"id": "elsewhere"}}) is None


def test_now_playing_names_the_track_from_the_playback_state():
    playing = {"item": {"id": "a", "name": "Halo", "artists": [{"name": "Beyoncé"}, {"name": "X"}]}}
    assert now_playing(playing, 2, 10) == "now playing 3/10: Halo by Beyoncé, X"
    assert now_playing({"item": {"id": "a"}}, 0, 2) == "now playing 1/2: a"


def test_the_listener_announces_each_track_by_the_name_spotify_reports():
    announced: list[str] = []
    with FakeSpotify(catalogue()) as fake:
        _, listener = session(fake, announce=announced.append)
        reason, _ = listen(listener)
    assert reason == "finished" and len(announced) == len(PLAYLIST)
    assert announced[0].startswith("now playing 1/10: ") and announced[0].endswith(" by Fake Artist")
    assert announced[-1].startswith("now playing 10/10: ")



def test_the_api_base_may_be_plain_http_only_on_a_loopback_address():
    for base in ("http://127.0.0.1:9/v1/", "http://[::1]:9/v1/", "http://127.1.2.3/v1/", "https://any-host/v1/"):
        assert SpotifySettings(api_base=base).api_base == base
    with pytest.raises(ValueError, match="must be https"):
        SpotifySettings.from_environment({"SPOTIFY_API_BASE": "http://any-host/", "SPOTIFY_ACCESS_TOKEN": "t"})


# -- sign-in is bound to its request -------------------------------------------------------------

@pytest.fixture(params=["s3cr3t", None], ids=["authorization code", "PKCE"])
def paste(tmp_path, monkeypatch, request):
    """Sign in against the fake (with a client secret, or with PKCE); the pasted URL comes from
    `answer(authorize_url)`. Returns (run, fake): run(answer) signs in and gives the player."""
    fake = FakeSpotify(catalogue()).__enter__()
    monkeypatch.setattr(SpotifyOAuth, "OAUTH_TOKEN_URL", fake.token_url)
    monkeypatch.setattr(SpotifyPKCE, "OAUTH_TOKEN_URL", fake.token_url)
    settings = SpotifySettings(client_id="abc123", client_secret=request.param, cache_path=tmp_path / ".cache",
                               api_base=fake.api_base)

    def run(answer):
        monkeypatch.setattr("builtins.input", lambda prompt: answer(prompt.split("URL: ")[1].split()[0]))
        return SpotifyPlayer.connect(settings, ask=lambda question: False)

    yield run, fake
    fake.__exit__(None, None, None)


def state_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["state"][0]


def test_the_authorize_url_carries_a_fresh_random_state_and_the_right_paste_signs_in(paste):
    run, fake = paste
    seen = []

    def consent(url):
        seen.append(state_of(url))
        return f"http://127.0.0.1:8888/callback?code=good&state={state_of(url)}"

    assert run(consent).user_name == "Test Listener" and fake.count("POST", "/api/token") == 1
    assert len(seen[0]) >= 20


@pytest.mark.parametrize("pasted, complaint", [
    ("https://evil.example/x?code=ATTACKER", r"the pasted URL goes to https://evil.example/x, not to the redirect URI"),
    ("http://127.0.0.1:8889/callback?code=ATTACKER&state={state}", "not to the redirect URI"),
    ("http://127.0.0.1:8888/other?code=ATTACKER&state={state}", "not to the redirect URI"),
    ("https://127.0.0.1:8888/callback?code=ATTACKER&state={state}", "not to the redirect URI"),
    ("ATTACKER", "the pasted URL goes to text that is not that URL"),
    ("http://127.0.0.1:8888/callback?code=ATTACKER", "does not carry the state this sign-in sent"),
    ("http://127.0.0.1:8888/callback?code=ATTACKER&state=guessed", "does not carry the state"),
])
def test_a_pasted_url_that_is_not_this_sign_ins_redirect_is_refused_before_spotify_hears_of_it(paste, pasted,
                                                                                               complaint):
    run, fake = paste
    with pytest.raises(SignInError, match=complaint) as error:
        run(lambda url: pasted.format(state=state_of(url)))
    assert fake.count("POST", "/api/token") == 0 and "ATTACKER" not in str(error.value)
