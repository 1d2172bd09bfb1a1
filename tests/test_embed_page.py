"""The command's player page in a real browser: Debian's Chromium, the stand-in iFrame API, the
local server of `helpers.embed_server`; each song heard is handed over exactly once."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from collections.abc import Callable

import pandas as pd
import pytest

from embed_browser import standin_url
from helpers import play
from helpers.embed import EmbedListener
from helpers.embed_server import EmbedServer
from helpers.feedback import DEFAULT_LOG_NAME, read_interactions
from helpers.playback import PlaybackError
from helpers.recommend import load_chain, taste_record

SCREENSHOTS = "EMBED_SCREENSHOT_DIR"  # set it to keep a picture of the player (the README's gallery)
TRACKS = ["4uLU6hMCjMI75M1A2tKUQC", "7GhIk7Il098yCjg4BQjzvb", "3n3Ppam7vgaVa1iaRUc9Lp"]


class Session:
    """A listener on a local page, listening in a thread; `records` are its on_finished calls."""

    def __init__(self, api_url: str, close_grace: float = 5.0) -> None:
        self.server = EmbedServer(api_url=api_url).start()
        self.listener = EmbedListener(self.server, close_grace=close_grace, poll_interval=0.05)
        self.records: list[dict] = []
        self.outcome: object = None
        self.thread: threading.Thread | None = None

    def on_finished(self, position: int, share: float, liked: int | None, played_id: str | None = None, *,
                    preview_duration_ms: int | None = None) -> None:
        self.records.append({"position": position, "share": share, "liked": liked,
                             "preview_duration_ms": preview_duration_ms})

    def listen(self, track_ids: list[str]) -> None:
        def run() -> None:
            try:
                self.outcome = self.listener.listen(track_ids, self.on_finished)
            except PlaybackError as error:
                self.outcome = error

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        wait_for(None, lambda: self.listener.state()["playlist_id"] is not None, "the playlist is set")

    def result(self, page, timeout: float = 20.0) -> object:
        wait_for(page, lambda: not self.thread.is_alive(), "listen() returns", timeout)
        return self.outcome

    def heard_ms(self, position: int) -> int:
        return self.listener.state()["songs"][position]["heard_ms"]

    def logged(self) -> list[int]:
        return [record["position"] for record in self.records]

    def close(self) -> None:
        self.listener.stop()
        self.server.stop()


def wait_for(page, condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Wait until `condition()`, letting Playwright run meanwhile (its sync API only handles the
    browser's messages inside its own calls: a plain sleep can stall the page)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            shown = "" if page is None or page.is_closed() else (
                f": the page shows {status(page)!r}, its player {page.frame_locator('iframe').locator('body').inner_text()!r}")
            raise AssertionError(f"timed out waiting until {what}{shown}")
        if page is None or page.is_closed():
            time.sleep(0.02)
        else:
            page.wait_for_timeout(20)


@pytest.fixture
def session_factory(standin_origin):
    sessions: list[Session] = []

    def make(close_grace: float = 5.0, **settings: object) -> Session:
        sessions.append(Session(standin_url(standin_origin, **settings), close_grace=close_grace))
        return sessions[-1]

    yield make
    for session in sessions:
        session.close()


def open_player(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("button", name="▶ Play").wait_for()
    wait_for(page, lambda: page.get_by_role("button", name="▶ Play").is_enabled(), "the player is ready")


def status(page) -> str:
    return page.get_by_role("status").inner_text()


def test_a_whole_playlist_is_heard_and_logged_once_per_song(page, session_factory):
    session = session_factory(speed=150)
    session.listen(TRACKS)
    open_player(page, session.server.url)
    page.get_by_role("button", name="▶ Play").click()
    assert session.result(page) == "finished"
    assert session.logged() == [0, 1, 2]
    assert all(record["share"] == 1.0 and record["liked"] is None and record["preview_duration_ms"] is None
               for record in session.records)
    page.get_by_text("played to the end: every song is logged (3 of 3 songs)").wait_for()
    assert page.locator("td.ep-heard").all_inner_texts() == ["✓ 100 %"] * 3


def test_skip_moves_on_and_records_what_was_heard(page, session_factory):
    session = session_factory(speed=10)
    session.listen(TRACKS[:2])
    open_player(page, session.server.url)
    page.get_by_role("button", name="▶ Play").click()
    wait_for(page, lambda: session.heard_ms(0) > 0, "the first song has been heard a little")
    page.get_by_role("button", name="Skip").click()
    wait_for(page, lambda: "Playing 2 of 2" in status(page), "the second song plays")
    page.get_by_role("button", name="Skip").click()
    assert session.result(page) == "finished"
    first, second = session.records
    assert first["position"] == 0 and 0 < first["share"] < 1 and first["liked"] == 0
    assert second["position"] == 1 and second["share"] < 1 and second["liked"] == 0


def test_like_records_liked_and_stop_ends_with_the_current_song_logged(page, session_factory):
    session = session_factory(speed=10)
    session.listen(TRACKS[:2])
    open_player(page, session.server.url)
    page.get_by_role("button", name="▶ Play").click()
    page.get_by_role("button", name="♡ Like").click()
    page.get_by_role("button", name="♥ Liked").wait_for()
    wait_for(page, lambda: session.heard_ms(0) > 0, "the first song has been heard a little")
    page.get_by_role("button", name="Skip").click()  # liked, then skipped: still liked
    wait_for(page, lambda: session.heard_ms(1) > 0, "the second song has been heard a little")
    page.get_by_role("button", name="■ Stop").click()
    assert session.result(page) == "interrupted"
    assert [(record["position"], record["liked"]) for record in session.records] == [(0, 1), (1, None)]
    assert 0 < session.records[1]["share"] < 1
    page.get_by_text("stopped: what you heard is logged (2 of 2 songs)").wait_for()


def test_a_preview_is_recorded_as_a_preview_with_its_duration(page, session_factory):
    session = session_factory(speed=40, preview=1)
    session.listen(TRACKS[:2])
    open_player(page, session.server.url)
    page.get_by_role("button", name="▶ Play").click()
    assert session.result(page) == "finished"
    assert [(record["share"], record["preview_duration_ms"]) for record in session.records] == [(1.0, 30000)] * 2
    assert page.locator("td.ep-heard").all_inner_texts() == ["✓ 100 % of a 30 s preview"] * 2


def into_the_second_song(page, session_factory) -> Session:
    """A session of three songs whose first song is logged and whose second is being heard."""
    session = session_factory(speed=60)
    session.listen(TRACKS)
    open_player(page, session.server.url)
    page.get_by_role("button", name="▶ Play").click()
    wait_for(page, lambda: session.logged() == [0], "the first song is logged")
    wait_for(page, lambda: session.heard_ms(1) > 0, "the second song has been heard")
    return session


def test_a_reload_mid_song_repeats_nothing_and_loses_nothing(page, session_factory):
    session = into_the_second_song(page, session_factory)
    before = session.heard_ms(1)
    page.reload()
    open_player(page, session.server.url)
    assert "Press ▶ Play" in status(page)  # a reloaded page waits for a click, as browsers want
    assert page.locator("td.ep-heard").all_inner_texts()[0] == "✓ 100 %"
    page.get_by_role("button", name="▶ Play").click()
    wait_for(page, lambda: "Playing 2 of 3" in status(page), "the page goes on with the second song")
    page.get_by_role("button", name="Skip").click()
    page.get_by_role("button", name="Skip").click()
    assert session.result(page) == "finished"
    assert session.logged() == [0, 1, 2]
    duration = session.listener.state()["songs"][1]["duration_ms"]
    assert 0 < before / duration <= session.records[1]["share"] < 1  # what was heard before the reload counts


def test_the_server_stopping_mid_playlist_pauses_the_page_with_what_was_heard_logged(page, session_factory):
    session = into_the_second_song(page, session_factory)
    session.server.stop()
    outcome = session.result(page)
    assert isinstance(outcome, PlaybackError) and "server stopped" in str(outcome)
    assert session.logged() == [0, 1] and 0 < session.records[1]["share"] < 1
    page.get_by_text("The player's server has stopped").wait_for()
    player = page.frame_locator("iframe")
    player.get_by_text("paused").wait_for()
    assert page.get_by_role("button", name="Skip").is_disabled()


def test_closing_the_page_ends_the_session_with_the_current_song_logged(page, session_factory):
    session = session_factory(speed=20, close_grace=0.5)
    session.listen(TRACKS)
    open_player(page, session.server.url)
    page.get_by_role("button", name="▶ Play").click()
    wait_for(page, lambda: session.heard_ms(0) > 0, "the first song has been heard")
    page.close()
    assert session.result(page) == "closed"
    assert session.logged() == [0] and 0 < session.records[0]["share"] < 1


class Command:
    """`python -m helpers.play --browser ARGUMENTS` in a thread, on the stand-in script; the page it
    would open in a browser is in `opened`, each embed listener it makes in `listeners`."""

    def __init__(self, monkeypatch, api_url: str, *arguments: str, close_grace: float = 5.0) -> None:
        monkeypatch.setenv("SPOTIFY_EMBED_API_URL", api_url)
        self.opened: list[str] = []
        monkeypatch.setattr(play.webbrowser, "open", self.opened.append)
        self.listeners: list[EmbedListener] = []
        monkeypatch.setattr(play, "EmbedListener", self._listener(close_grace))
        self.exit_code: list[int] = []
        self.thread = threading.Thread(target=lambda: self.exit_code.append(play.main(
            ["--browser", "--no-progress", *arguments])), daemon=True)
        self.thread.start()
        wait_for(None, lambda: self.opened, "the command opens its page")

    def _listener(self, close_grace: float) -> Callable[..., EmbedListener]:
        def make(view) -> EmbedListener:
            self.listeners.append(EmbedListener(view, close_grace=close_grace, poll_interval=0.05))
            return self.listeners[-1]
        return make

    def ended(self, page) -> int:
        wait_for(page, lambda: not self.thread.is_alive(), "the command ends")
        return self.exit_code[0]


def test_the_command_serves_the_page_and_logs_each_song_once_as_embed(page, standin_origin, fake_recommender,
                                                                      offline_run, monkeypatch):
    monkeypatch.setattr(play, "load_recommender", lambda paths: fake_recommender)
    command = Command(monkeypatch, standin_url(standin_origin, speed=150), "--output-dir", str(offline_run),
                      "--length", "3", "--seed", "4")
    assert command.opened[0].startswith("http://127.0.0.1:") and "token=" in command.opened[0]
    page.goto(command.opened[0])
    page.get_by_role("button", name="▶ Play").wait_for()
    names = page.locator("table.ep-songs td:nth-child(2)").all_inner_texts()
    assert names == [f"Song {int(track[5:])}" for track in read_ids(page)]  # the catalogue's names
    wait_for(page, lambda: page.get_by_role("button", name="▶ Play").is_enabled(), "the player is ready")
    page.get_by_role("button", name="▶ Play").click()
    assert command.ended(page) == 0
    log = read_interactions(offline_run / "data" / "feedback" / DEFAULT_LOG_NAME)
    assert log["source"].tolist() == ["embed"] * 3 and log["position"].tolist() == [0, 1, 2]
    assert log["percentage_listened"].tolist() == [1.0] * 3 and not log["preview"].any()
    page.get_by_text("played to the end: every song is logged (3 of 3 songs)").wait_for()
    if os.environ.get(SCREENSHOTS):
        page.screenshot(path=str(Path(os.environ[SCREENSHOTS]) / "07_embed_player_page.png"))


def sessions_command(page, standin_origin, live_run, monkeypatch, *, speed: int,
                     close_grace: float = 5.0) -> Command:
    """`--browser --sessions 2` of three songs each on the live run, its page opened and played."""
    command = Command(monkeypatch, standin_url(standin_origin, speed=speed), "--output-dir", str(live_run.root),
                      "--sessions", "2", "--length", "3", "--seed", "5", close_grace=close_grace)
    open_player(page, command.opened[0])
    page.get_by_role("button", name="▶ Play").click()
    return command


def logged_sessions(live_run) -> list[pd.DataFrame]:
    """The person's log, one frame a session, in the order they were played."""
    log = read_interactions(live_run.feedback / DEFAULT_LOG_NAME)
    order = log.groupby("session_id")["timestamp"].min().sort_values().index
    return [log[log["session_id"] == session].reset_index(drop=True) for session in order]


def test_sessions_play_in_one_page_the_second_planned_on_the_model_the_first_updated(
        page, standin_origin, live_run, monkeypatch):
    command = sessions_command(page, standin_origin, live_run, monkeypatch, speed=300)
    url = page.url
    assert command.ended(page) == 0
    assert command.opened == [url] and page.url == url and len(command.listeners) == 1, "one page, one listener"
    first, second = logged_sessions(live_run)
    policy = load_chain(live_run, taste=False).run.model_version()
    assert first["model_version"].tolist() == [f"{policy}+taste-v0"] * 3, "the first is planned on the prior"
    assert second["model_version"].tolist() == [f"{policy}+taste-v1"] * 3, "the second on the first's update"
    assert taste_record(live_run.models, 1)["provenance"]["sessions"] == [first["session_id"][0]]
    for session in (first, second):  # each song once, heard to its end
        assert session["position"].tolist() == [0, 1, 2] and session["percentage_listened"].tolist() == [1.0] * 3
    assert read_ids(page) == second["track_id"].tolist(), "the page shows the second playlist"
    page.get_by_text("played to the end: every song is logged (3 of 3 songs)").wait_for()


def test_closing_the_page_in_the_second_session_keeps_every_song_heard_once(
        page, standin_origin, live_run, monkeypatch):
    command = sessions_command(page, standin_origin, live_run, monkeypatch, speed=200, close_grace=0.5)
    log = live_run.feedback / DEFAULT_LOG_NAME
    wait_for(page, lambda: log.exists() and len(log.read_text().splitlines()) == 4
             and command.listeners[0].state()["songs"][1]["heard_ms"] > 0,
             "the second session's first song is logged and its second is being heard")
    page.close()
    assert command.ended(page) == play.EXIT_STOPPED_EARLY
    first, second = logged_sessions(live_run)
    assert first["position"].tolist() == [0, 1, 2] and first["percentage_listened"].tolist() == [1.0] * 3
    assert second["position"].tolist() == [0, 1] and second["model_version"].str.endswith("+taste-v1").all()
    assert second["percentage_listened"][0] == 1.0 and 0 < second["percentage_listened"][1] < 1
    assert taste_record(live_run.models, 2)["provenance"]["n_records"] == 5, "the closed session is learnt too"


def test_ctrl_c_in_the_second_session_keeps_every_song_heard_once(page, standin_origin, live_run):
    """The command itself in a process of its own: Ctrl-C is a SIGINT to its main thread."""
    # 60 times real time: the second session's last two songs take seconds, so a machine under load
    # still interrupts the command mid-song (at 200 it had once finished before the signal came).
    environment = {**os.environ, "SPOTIFY_EMBED_API_URL": standin_url(standin_origin, speed=60),
                   "PYTHONUNBUFFERED": "1"}
    command = subprocess.Popen(
        [sys.executable, "-m", "helpers.play", "--browser", "--no-open", "--no-progress", "--output-dir",
         str(live_run.root), "--sessions", "2", "--length", "3", "--seed", "5"],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        # pytest-xdist's workers ignore SIGINT and a child inherits that: give the command a terminal's default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        url = next(line for line in command.stdout if line.startswith("The player is at ")).split()[4].rstrip(":")
        open_player(page, url)
        page.get_by_role("button", name="▶ Play").click()
        log = live_run.feedback / DEFAULT_LOG_NAME
        wait_for(page, lambda: log.exists() and len(log.read_text().splitlines()) == 4
                 and re.search(r"Playing 2 of 3: .* [1-9]\d* % heard", status(page)) is not None,
                 "the second session's first song is logged and its second is being heard")
        page.wait_for_timeout(150)  # the page's progress reaches the command
        command.send_signal(signal.SIGINT)
        assert command.wait(timeout=20) == play.EXIT_INTERRUPTED
    finally:
        command.kill()
        command.stdout.close()
    first, second = logged_sessions(live_run)
    assert first["position"].tolist() == [0, 1, 2] and first["percentage_listened"].tolist() == [1.0] * 3
    assert second["position"].tolist() == [0, 1] and second["model_version"].str.endswith("+taste-v1").all()
    assert second["percentage_listened"][0] == 1.0 and 0 < second["percentage_listened"][1] < 1


def read_ids(page) -> list[str]:
    return page.locator("table.ep-songs tr[data-position]").evaluate_all(
        "rows => rows.map(row => row.dataset.id)")
