"""Playing a playlist: planning it, the simulated listener, the session log, and `python -m helpers.play`.

The recommender is the small fake from conftest.py (no trained policy needed); the online
command runs against the fake Spotify server through the environment variables a user sets.
"""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fake_spotify import FakeSpotify, FakeTrack
from helpers import play
from helpers.feedback import DEFAULT_LOG_NAME, INTERACTION_KEYS, SIMULATED_LOG_NAME
from helpers.listeners import ListenerModel, SimulatedListener, simulated_listener
from helpers.paths import ProjectPaths
from helpers.playlists import (choice_probability, format_steps, missing_names, plan_playlist, playlist_table,
                               playlist_tracks)
from helpers.session import play_session
from helpers.spotify import SpotifyListener, SpotifyPlayer, SpotifySettings, SpotifyUnavailable

SPOTIFY_VARIABLES = ("SPOTIPY_CLIENT_ID", "SPOTIPY_CLIENT_SECRET", "SPOTIPY_REDIRECT_URI",
                     "SPOTIFY_ACCESS_TOKEN", "SPOTIFY_API_BASE")


@pytest.fixture(autouse=True)
def no_spotify_credentials(monkeypatch):
    for name in SPOTIFY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- planning ---------------------------------------------------------------------------------

def test_playlist_is_the_chain_of_the_recommender_steps(fake_recommender):
    planned = plan_playlist(fake_recommender, "track00007", length=10, seed=1)
    steps = fake_recommender.playlist("track00007", length=10, greedy=False, seed=1)
    assert planned == steps
    assert playlist_tracks(planned) == ["track00007"] + [s["chosen"] for s in steps]
    assert all(choice_probability(s) == s["probs"][s["candidates"].index(s["chosen"])] for s in planned)
    table = playlist_table(planned, fake_recommender.track_table)
    assert table["position"].tolist() == list(range(10)) and np.isnan(table["probability"].iloc[0])
    assert table["probability"].iloc[1:].tolist() == [choice_probability(s) for s in steps]


def test_playlist_planning_refuses_bad_requests_and_bad_answers(fake_recommender, monkeypatch):
    with pytest.raises(ValueError, match="track 'nope' is not in the recommender's catalogue"):
        plan_playlist(fake_recommender, "nope")
    with pytest.raises(ValueError, match="a playlist has 2 to 57 tracks"):
        plan_playlist(fake_recommender, length=1)
    steps = fake_recommender.playlist(length=4, seed=0)
    steps[2] = {**steps[2], "chosen": "elsewhere"}
    monkeypatch.setattr(fake_recommender, "playlist", lambda **kwargs: steps)
    with pytest.raises(ValueError, match="step 3 chose elsewhere outside its 4 candidates"):
        plan_playlist(fake_recommender, length=4)


def test_playlist_table_takes_names_from_the_catalogue_or_the_lookup(fake_recommender):
    steps = plan_playlist(fake_recommender, "track00003", length=5, seed=0)
    entries = playlist_tracks(steps)
    table = playlist_table(steps, fake_recommender.track_table)
    assert list(table.columns) == ["position", "track_id", "artist", "name", "cluster", "reward", "probability"]
    assert table["name"].tolist() == [f"Song {int(track_id[5:])}" for track_id in entries]

    nameless = fake_recommender.track_table.drop(columns="name").reset_index()
    assert missing_names(steps, nameless) == entries
    assert "name" not in playlist_table(steps, nameless).columns, "no name known: no column"
    looked_up = {entries[0]: "Found on Spotify"}
    assert playlist_table(steps, nameless, looked_up)["name"].tolist() == ["Found on Spotify"] + [""] * 4


# -- the simulated listener and the session log ----------------------------------------------

def test_simulated_listener_draws_from_each_track_cluster(fake_recommender):
    clusters = fake_recommender.track_table["cluster"]
    means = np.linspace(0.3, 0.9, clusters.max() + 1)
    exact = ListenerModel(means, np.zeros_like(means), like_threshold=0.6, seed=0)
    track_ids = list(clusters.index[:10])
    heard = []
    assert SimulatedListener(exact, clusters, seed=0).listen(track_ids, lambda *h: heard.append(h)) == "finished"
    expected = means[clusters.loc[track_ids].to_numpy()]
    assert [h[0] for h in heard] == list(range(10))
    assert np.allclose([h[1] for h in heard], expected)
    assert [h[2] for h in heard] == (expected > 0.6).astype(int).tolist()


def test_simulated_listener_is_reproducible_with_its_seed_and_draws_afresh_each_session(fake_recommender):
    clusters = fake_recommender.track_table["cluster"]
    noisy = ListenerModel(np.full(6, 0.6), np.full(6, 0.2), like_threshold=0.6, seed=0)
    track_ids = list(clusters.index[:10])

    def run(seed, sessions=2):
        listener, heard = SimulatedListener(noisy, clusters, seed=seed), []
        for _ in range(sessions):
            heard.append([])
            listener.listen(track_ids, lambda *h: heard[-1].append(h))
        return heard

    first, second = run(5)
    assert [first, second] == run(5) and first != run(6)[0]
    assert first != second  # each session draws afresh: the same playlist is not heard the same way twice


def test_a_session_appends_one_complete_record_per_track(fake_recommender, offline_run):
    paths = ProjectPaths.at(offline_run)
    log = paths.feedback / DEFAULT_LOG_NAME
    log.write_text("earlier line kept as is\n")
    steps = plan_playlist(fake_recommender, length=10, seed=2)
    listener = simulated_listener(paths, fake_recommender.track_table["cluster"], seed=2)

    result = play_session(fake_recommender, listener, steps, log, progress=False)

    lines = log.read_text().splitlines()
    assert lines[0] == "earlier line kept as is" and len(lines) == 11
    logged = [json.loads(line) for line in lines[1:]]
    assert all(list(r) == list(INTERACTION_KEYS) for r in logged)
    assert [r["track_id"] for r in logged] == playlist_tracks(steps)
    assert [r["position"] for r in logged] == list(range(10))
    assert [(r["candidates"], r["probs"]) for r in logged] == [([], [])] + [(s["candidates"], s["probs"]) for s in steps]
    assert all(r["latent"] == fake_recommender.latent(r["track_id"]) for r in logged)
    assert {(r["source"], r["model_version"], r["session_id"]) for r in logged} == {
        ("simulated", "fake-policy-1", result.session_id)}
    assert result.stop_reason == "finished" and len(result.interactions) == 10


def test_a_spotify_failure_mid_playlist_says_what_is_already_logged(fake_recommender, tmp_path):
    steps = plan_playlist(fake_recommender, length=10, seed=0)
    tracks = {track_id: FakeTrack(f"Song {position}", 100_000, listened=0.5)
              for position, track_id in enumerate(playlist_tracks(steps))}
    with FakeSpotify(tracks, step_ms=25_000) as fake:
        fake.fail("GET", "/me/player", 503, after=9)
        settings = SpotifySettings(access_token=fake.token, api_base=fake.api_base, max_retries=0)
        listener = SpotifyListener(SpotifyPlayer.connect(settings), poll_interval=0)
        with pytest.raises(SpotifyUnavailable, match=r"503 .* The 3 track\(s\) finished before are logged in"):
            play_session(fake_recommender, listener, steps, tmp_path / "log.jsonl", progress=False)
    assert [r["position"] for r in records(tmp_path / "log.jsonl")] == [0, 1, 2]


# -- the command ------------------------------------------------------------------------------

@pytest.fixture
def cli(monkeypatch, fake_recommender, offline_run, capsys):
    """Run `python -m helpers.play` in-process on the fake recommender; returns (exit code, out, err)."""
    monkeypatch.setattr(play, "load_recommender", lambda paths: fake_recommender)

    def run(*arguments):
        code = play.main(["--output-dir", str(offline_run), "--no-progress", "--seed", "4", *arguments])
        out, err = capsys.readouterr()
        return code, out, err

    run.log = ProjectPaths.at(offline_run).feedback / DEFAULT_LOG_NAME
    return run


def test_command_plays_offline_by_default_without_credentials(cli, tmp_path):
    code, out, err = cli("--log", str(tmp_path / "elsewhere.jsonl"))
    assert code == 0, err
    assert "No Spotify credentials are set: playing offline" in out
    assert "step 9: from" in out and "probability" in out and "played to the end; logged 10 of 10" in out
    assert [r["source"] for r in records(tmp_path / "elsewhere.jsonl")] == ["simulated"] * 10
    assert not cli.log.exists()


def test_command_without_listener_model_says_which_notebook_to_run(cli, offline_run):
    (ProjectPaths.at(offline_run).processed / "listener_model.json").unlink()
    code, _, err = cli("--offline")
    assert code == 1 and "run notebook 04_listeners first" in err and "Traceback" not in err


def test_command_refuses_an_unknown_start_track(cli):
    code, _, err = cli("--offline", "--start", "no-such-track")
    assert code == 1 and err.strip() == "error: track 'no-such-track' is not in the recommender's catalogue"


@pytest.fixture
def spotify(monkeypatch, fake_recommender):
    """The fake Spotify with every catalogue track, reached through the user's environment variables."""
    rng = np.random.default_rng(0)
    tracks = {track_id: FakeTrack(name, 100_000, listened=rng.integers(0, 21) / 20)
              for track_id, name in fake_recommender.track_table["name"].items()}
    liked = set(list(tracks)[::3])

    def start(**options):
        fake = FakeSpotify(tracks, liked=liked, **options).__enter__()
        monkeypatch.setenv("SPOTIFY_API_BASE", fake.api_base)
        monkeypatch.setenv("SPOTIFY_ACCESS_TOKEN", fake.token)
        started.append(fake)
        return fake

    started: list[FakeSpotify] = []
    yield start
    for fake in started:
        fake.__exit__(None, None, None)


def test_command_plays_on_spotify_and_logs_real_feedback(cli, spotify):
    fake = spotify()
    code, out, err = cli("--poll-interval", "0.001")
    assert code == 0, err
    logged = records(cli.log)
    assert fake.plays == [[r["track_id"] for r in logged]] and len(logged) == 10
    shares = [fake.percentage(r["track_id"]) for r in logged]
    assert [r["percentage_listened"] for r in logged] == pytest.approx(shares)
    assert [r["liked"] for r in logged] == [int(r["track_id"] in fake.liked) for r in logged]
    assert {r["source"] for r in logged} == {"spotify"}
    assert "Song " in out, "the table shows the tracks' names"
    for text in (out, err, cli.log.read_text()):
        assert fake.token not in text


@pytest.mark.parametrize("options, failure, says", [
    (dict(premium=False), None, "PREMIUM_REQUIRED"),
    (dict(registered=False), None, "User Management"),
    (dict(devices=[]), None, "open Spotify on your phone or computer"),
    ({}, ("GET", "/me/player/devices", 429, 3600), "rate limit"),
])
def test_command_errors_are_one_clear_line(cli, spotify, options, failure, says):
    fake = spotify(**options)
    if failure:
        method, path, status, retry_after = failure
        fake.fail(method, path, status, retry_after=retry_after)
    code, _, err = cli("--poll-interval", "0.001")
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: ") and says in err and "Traceback" not in err
    assert fake.plays == [] and not cli.log.exists()


def test_command_interrupted_mid_playlist_logs_what_was_played(cli, spotify):
    fake = spotify(interrupt_at_poll=20)
    code, _, err = cli("--poll-interval", "0.001")
    seen = fake.reported[18]  # the last state the command read: the 19th poll's
    current = fake.queue.index(seen["item"]["id"])
    logged = records(cli.log)
    assert code == 130 and f"interrupted; logged {current + 1} of 10 tracks" in err
    assert [r["position"] for r in logged] == list(range(current + 1)) and 0 < current < 9
    assert logged[-1]["percentage_listened"] == pytest.approx(seen["progress_ms"] / 100_000)


def test_command_stops_after_a_long_pause_and_keeps_what_was_played(cli, spotify):
    spotify(pause_at=(2, 20_000))
    code, _, err = cli("--poll-interval", "0.001", "--pause-timeout", "0.05")
    assert code == 3 and "stopped: nothing of the playlist played" in err and "logged 3 of 10" in err
    assert [r["position"] for r in records(cli.log)] == [0, 1, 2]


def test_simulated_listener_with_a_taste_hears_each_track_around_its_own_taste(fake_recommender):
    clusters = fake_recommender.track_table["cluster"]
    model = ListenerModel(np.full(6, 0.5), np.full(6, 0.1), like_threshold=0.6, seed=0)
    track_ids = list(clusters.index[:4])
    taste = pd.Series([0.2, 0.65, 1.0, 0.0], index=track_ids)
    heard = []
    SimulatedListener(model, clusters, seed=0, taste=taste, play_noise=0.0).listen(track_ids, lambda *h: heard.append(h))
    assert heard == [(0, 0.2, 0), (1, 0.65, 1), (2, 1.0, 1), (3, 0.0, 0)]
    with pytest.raises(ValueError, match="no taste known"):
        SimulatedListener(model, clusters, taste=taste).listen([str(clusters.index[5])], lambda *h: None)


# -- bad input: one line, exit 1, nothing played, nothing logged lost -------------------------------

def one_clear_line(code, err) -> bool:
    return code == 1 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


@pytest.mark.parametrize("arguments, says", [
    (("--poll-interval", "inf"), "--poll-interval must be a finite number of seconds > 0, got inf"),
    (("--poll-interval", "nan"), "--poll-interval must be a finite number"),
    (("--poll-interval", "0"), "--poll-interval must be a finite number"),
    (("--pause-timeout", "nan"), "--pause-timeout must be a finite number"),
    (("--pause-timeout", "-1"), "--pause-timeout must be a finite number"),
    (("--length", "100000"), "a playlist has 2 to 57 tracks with this catalogue of 60 tracks"),
    (("--length", "1"), "a playlist has 2 to 57 tracks"),
])
def test_bad_numbers_fail_before_anything_plays_or_is_built(cli, spotify, fake_recommender, monkeypatch,
                                                            arguments, says):
    fake = spotify()
    monkeypatch.setattr(fake_recommender, "playlist", lambda **kwargs: pytest.fail("planned a playlist"))
    code, _, err = cli(*arguments)
    assert one_clear_line(code, err) and says in err, err
    assert fake.plays == [] and fake.count("GET", "/me") == 0 and not cli.log.exists()


def test_a_log_that_cannot_be_appended_to_fails_before_anything_plays(cli, spotify, tmp_path, monkeypatch):
    fake = spotify()
    (tmp_path / "a-file").write_text("")
    for unusable, says in ((tmp_path, "Is a directory"), (tmp_path / "a-file" / "log.jsonl", "is a file, not a folder")):
        code, _, err = cli("--log", str(unusable))
        assert one_clear_line(code, err) and f"cannot append to the interaction log {unusable}" in err and says in err

    class Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr("helpers.feedback.os.fstatvfs", lambda fd: Full())
    code, _, err = cli()
    assert one_clear_line(code, err) and "is full" in err
    assert fake.plays == [] and fake.count("GET", "/me") == 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("online", [False, True])
def test_a_disk_that_fills_up_mid_session_stops_with_one_line_and_pauses(cli, spotify, online, tmp_path,
                                                                         monkeypatch):
    fake = spotify() if online else None
    log = tmp_path / "log.jsonl"
    sync = os.fsync

    def full_once_the_log_holds_a_record(descriptor: int) -> None:
        if Path(f"/proc/self/fd/{descriptor}").resolve() == log and log.stat().st_size > 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        sync(descriptor)

    monkeypatch.setattr("helpers.feedback.os.fsync", full_once_the_log_holds_a_record)
    code, _, err = cli("--log", str(log), *(("--poll-interval", "0.001") if online else ("--offline",)))
    assert one_clear_line(code, err) and "No space left on device" in err and str(log) in err, err
    if online:
        assert len(fake.plays) == 1 and not fake.is_playing, "paused: nothing plays that cannot be logged"


@pytest.mark.parametrize("online", [False, True])
def test_a_log_on_a_device_is_refused_before_anything_plays(cli, spotify, online):
    fake = spotify() if online else None
    code, _, err = cli("--log", "/dev/full", *(("--poll-interval", "0.001") if online else ("--offline",)))
    assert one_clear_line(code, err) and "the interaction log /dev/full is not a regular file" in err, err
    if online:
        assert not fake.plays, "nothing played"


def test_missing_models_say_which_notebook_to_run(tmp_path, capsys):
    code = play.main(["--output-dir", str(tmp_path), "--offline", "--no-progress"])
    err = capsys.readouterr().err
    assert one_clear_line(code, err) and "run notebook 06_ppo first" in err


def test_offline_sessions_go_to_the_simulated_log_not_the_listener_history(cli):
    code, out, err = cli("--offline")
    assert code == 0, err
    simulated = cli.log.with_name(SIMULATED_LOG_NAME)
    assert [r["source"] for r in records(simulated)] == ["simulated"] * 10 and not cli.log.exists()
    assert simulated.stat().st_mode & 0o777 == 0o600


def test_relinked_tracks_and_unknown_likes_reach_the_log_over_http(cli, spotify, fake_recommender):
    steps = fake_recommender.playlist(length=10, greedy=False, seed=4)
    relinked_id = playlist_tracks(steps)[3]
    fake = spotify(relinked={relinked_id: "market-copy"})
    fake.fail("GET", "/me/library/contains", 401, after=1)
    with pytest.warns(UserWarning, match="liked is logged as unknown"):
        code, _, err = cli("--poll-interval", "0.001")
    assert code == 0, err
    logged = records(cli.log)
    assert [r["track_id"] for r in logged] == playlist_tracks(steps) and all(
        list(r) == list(INTERACTION_KEYS) for r in logged)
    assert [r["played_id"] for r in logged] == [None] * 3 + ["market-copy"] + [None] * 6
    assert None in [r["liked"] for r in logged]
    assert all(r["liked"] == int(r["track_id"] in fake.liked) for r in logged if r["liked"] is not None)


def test_printed_steps_name_the_tracks():
    steps = [{"track_id": "a", "candidates": ["b", "c"], "probs": [0.3, 0.7], "chosen": "c",
              "track_name": "Halo", "track_artist": "Beyoncé", "chosen_name": None, "chosen_artist": "Sia"}]
    assert format_steps(steps).splitlines() == [
        "step 1: from Halo by Beyoncé (a)", "     0.700  Sia (c)  <- chosen", "     0.300  b"]
    catalogue = pd.DataFrame({"id": ["a", "b", "c"], "name": ["Halo", "Flash", None],
                              "artist": ["Beyoncé", "Queen", "Sia"]})
    assert format_steps(steps, catalogue).splitlines()[2] == "     0.300  Flash by Queen (b)"
