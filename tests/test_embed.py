"""The embed listener's bookkeeping and the local page's guards, without a browser."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pandas as pd
import pytest

from helpers.embed import EMBED_API_URL, EmbedListener, embed_api_url, song_rows
from helpers.embed_server import EmbedServer
from helpers.embed_widget import EmbedWidget, ended, in_background


class FakeView:
    """A PlayerView that remembers what it was shown; `gone` stands for a closed page."""

    def __init__(self) -> None:
        self.states: list[dict] = []
        self.gone: float | None = None
        self.handler = None

    def attach(self, handler) -> None:
        self.handler = handler

    def publish(self, state: dict) -> None:
        self.states.append(state)

    def gone_for(self) -> float | None:
        return self.gone

    def failure(self) -> str | None:
        return None


def start(listener: EmbedListener, track_ids: list[str], after: str | None = None):
    """listen() in the background; its records, and the playlist's id (the next one after `after`)."""
    records: list[tuple] = []
    future = in_background(lambda: listener.listen(
        track_ids, lambda *args, **kwargs: records.append((*args, kwargs["preview_duration_ms"]))))
    while listener.state()["playlist_id"] in (None, after):
        threading.Event().wait(0.01)
    return future, records, listener.state()["playlist_id"]


def test_a_song_is_logged_once_whatever_the_page_sends_twice_or_late():
    listener = EmbedListener(FakeView(), poll_interval=0.01)
    future, records, playlist = start(listener, ["a", "b"])
    event = {"playlist_id": playlist, "position": 0, "duration_ms": 200_000}
    listener.receive({**event, "type": "progress", "heard_ms": 50_000})
    listener.receive({**event, "type": "finished", "heard_ms": 40_000, "skipped": True})
    listener.receive({**event, "type": "finished", "heard_ms": 200_000, "ended": True})  # a resend
    listener.receive({**event, "type": "progress", "heard_ms": 90_000})  # late, after the finish
    listener.receive({**event, "type": "finished", "playlist_id": "an older playlist", "position": 1})
    assert records == [(0, 0.25, 0, None)]  # the furthest position heard; skipped, not liked
    listener.receive({**event, "type": "like", "position": 1})
    listener.receive({**event, "type": "finished", "position": 1, "heard_ms": 199_000, "ended": True})
    assert future.result(timeout=5) == "finished"
    assert records[1] == (1, 1.0, 1, None)  # played to its end, liked


def test_stopping_reports_the_started_song_with_liked_unknown_and_a_preview_as_such():
    listener = EmbedListener(FakeView(), poll_interval=0.01)
    future, records, playlist = start(listener, ["a", "b", "c"])
    listener.receive({"type": "progress", "playlist_id": playlist, "position": 0, "heard_ms": 15_000,
                      "duration_ms": 30_000})
    listener.receive({"type": "stop"})
    assert future.result(timeout=5) == "interrupted"
    assert records == [(0, 0.5, None, 30_000)]  # b and c never started: nothing is made up for them
    assert listener.state()["status"] == "stopped"


def test_a_page_gone_longer_than_the_grace_ends_the_session():
    view = FakeView()
    listener = EmbedListener(view, close_grace=0.5, poll_interval=0.01)
    future, records, _ = start(listener, ["a"])
    view.gone = 0.6
    assert future.result(timeout=5) == "closed"
    assert records == []


def test_a_log_that_fails_stops_the_session_with_that_error_and_the_song_stays_unlogged():
    listener = EmbedListener(FakeView(), poll_interval=0.01)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    future = in_background(lambda: listener.listen(["a", "b"], broken))
    while listener.state()["playlist_id"] is None:
        threading.Event().wait(0.01)
    with pytest.raises(OSError, match="disk full"):
        listener.receive({"type": "finished", "playlist_id": listener.state()["playlist_id"], "position": 0,
                          "heard_ms": 1, "duration_ms": 10})
    with pytest.raises(OSError, match="disk full"):
        future.result(timeout=5)
    assert listener.state()["songs"][0]["logged"] is None


@pytest.mark.parametrize("event, message", [
    ({"type": "finished", "position": 7}, "position must be an integer in"),
    ({"type": "progress", "position": 0, "heard_ms": -1}, "heard_ms must be a number"),
    ({"type": "progress", "position": 0, "heard_ms": float("nan")}, "heard_ms must be a number"),
    ({"type": "shuffle", "position": 0}, "unknown event type"),
])
def test_a_malformed_event_is_refused_by_name(event, message):
    listener = EmbedListener(FakeView(), poll_interval=0.01)
    future, _, playlist = start(listener, ["a"])
    with pytest.raises(ValueError, match=message):
        listener.receive({**event, "playlist_id": playlist})
    listener.stop()
    assert future.result(timeout=5) == "interrupted"


def test_the_script_url_is_a_setting_and_must_be_https_or_loopback():
    assert embed_api_url({}) == EMBED_API_URL
    assert embed_api_url({"SPOTIFY_EMBED_API_URL": "http://127.0.0.1:9/api.js"}) == "http://127.0.0.1:9/api.js"
    with pytest.raises(ValueError, match="SPOTIFY_EMBED_API_URL must be an https"):
        embed_api_url({"SPOTIFY_EMBED_API_URL": "http://example.com/api.js"})


def test_song_rows_show_names_artists_and_the_policys_probability():
    table = pd.DataFrame({"position": [0, 1], "track_id": ["a", "b"], "artist": ["Sia", None],
                          "name": ["Chandelier", ""], "probability": [float("nan"), 0.4]})
    assert song_rows(table) == {"a": {"name": "Chandelier", "artist": "Sia", "probability": None},
                                "b": {"name": None, "artist": None, "probability": 0.4}}


def test_the_widget_syncs_the_state_and_takes_the_pages_events():
    widget = EmbedWidget(api_url="http://127.0.0.1:9/api.js")
    listener = EmbedListener(widget, poll_interval=0.01)
    future, records, playlist = start(listener, ["a"])
    assert widget.state["playlist_id"] == playlist and widget.api_url == "http://127.0.0.1:9/api.js"
    widget._on_message(widget, {"type": "finished", "playlist_id": playlist, "position": 0, "heard_ms": 100_000,
                                "duration_ms": 200_000}, [])
    assert future.result(timeout=5) == "finished"
    assert records == [(0, 0.5, None, None)] and widget.state["status"] == "finished"


def request(url: str, *, data: dict | None = None, headers: dict | None = None) -> int:
    body = None if data is None else json.dumps(data).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers or {}), timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_page_server_binds_loopback_and_takes_events_only_with_its_token_and_origin():
    with EmbedServer(api_url="http://127.0.0.1:9/api.js") as server:
        EmbedListener(server)
        assert server._httpd.server_address[0] == "127.0.0.1"
        event, own = {"type": "like", "playlist_id": "none playing", "position": 0}, {"Content-Type": "application/json", "Origin": server.origin}
        assert request(server.url) == 200
        assert request(f"{server.origin}/?token=wrong") == 403
        assert request(f"{server.origin}/state") == 403
        assert request(f"{server.origin}/event?token={server.token}", data=event, headers=own) == 200
        assert request(f"{server.origin}/event?token=wrong", data=event, headers=own) == 403
        assert request(f"{server.origin}/event?token={server.token}", data=event,
                       headers={**own, "Origin": "https://evil.example"}) == 403
        assert request(f"{server.origin}/event?token={server.token}", data=event,
                       headers={**own, "Host": "evil.example"}) == 403
        assert request(f"{server.origin}/event?token={server.token}", data={"type": "nope"}, headers=own) == 400


def test_the_next_playlist_replaces_the_last_on_the_same_view_and_clears_the_note():
    view = FakeView()
    listener = EmbedListener(view, poll_interval=0.01)
    first, records, playlist = start(listener, ["a"])
    listener.receive({"type": "finished", "playlist_id": playlist, "position": 0, "ended": True, "duration_ms": 200_000})
    assert first.result(timeout=5) == "finished"
    listener.note("playlist 2 of 2 comes next")
    assert view.states[-1]["note"] == "playlist 2 of 2 comes next" and view.states[-1]["status"] == "finished"
    second, _, _ = start(listener, ["b", "c"], after=playlist)
    assert view.states[-1]["note"] == "" and [song["id"] for song in view.states[-1]["songs"]] == ["b", "c"]
    assert view.states[-1]["version"] > view.states[0]["version"], "the page keeps the newest state"
    listener.receive({"type": "finished", "playlist_id": playlist, "position": 0, "ended": True})  # the old one
    assert records == [(0, 1.0, None, None)] and listener.state()["songs"][0]["logged"] is None
    listener.stop()
    assert second.result(timeout=5) == "interrupted"


def test_a_session_still_playing_says_so_instead_of_holding_the_kernel():
    listener = EmbedListener(FakeView(), poll_interval=0.01)
    session, _, _ = start(listener, ["a"])
    with pytest.raises(RuntimeError, match="still playing in the player above"):
        ended(session)
    listener.stop()
    session.result(timeout=5)
    assert ended(session) == "interrupted"
