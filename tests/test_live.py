"""The live loop: playlists in a row, the listener model learnt between them, saved as versions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import LIVE_LENGTH as LENGTH
from helpers import play, recommend
from helpers.feedback import SIMULATED_LOG_NAME, read_interactions
from helpers.live import LiveLearner, records_reader
from helpers.paths import ProjectPaths
from helpers.playlists import plan_playlist, playlist_tracks
from helpers.recommend import Recommender, load_chain, read_taste_rewards, taste_record
from helpers.spotify import SpotifySettings


def run_loop(paths: ProjectPaths, *arguments: str) -> int:
    return play.main(["--output-dir", str(paths.root), "--offline", "--no-progress", "--length", str(LENGTH),
                      "--seed", "3", *arguments])


def sessions_in_order(log: pd.DataFrame) -> list[str]:
    return log.groupby("session_id")["timestamp"].min().sort_values().index.tolist()


def test_two_offline_sessions_the_second_is_planned_on_the_model_the_first_updated(live_run):
    assert run_loop(live_run, "--sessions", "2") == 0
    log = read_interactions(live_run.feedback / SIMULATED_LOG_NAME)
    first, second = sessions_in_order(log)
    policy = load_chain(live_run, taste=False).run.model_version()
    by_session = log.groupby("session_id")["model_version"].unique()
    assert by_session[first].tolist() == [f"{policy}+taste-v0"], "the first is planned on the prior"
    assert by_session[second].tolist() == [f"{policy}+taste-v1"], "the second names the updated version"
    v1, v2 = taste_record(live_run.models, 1), taste_record(live_run.models, 2)
    assert v1["provenance"]["sessions"] == [first] and v1["provenance"]["n_records"] == LENGTH
    assert v2["provenance"]["sessions"] == sorted([first, second])

    served = Recommender.load(live_run.root)
    assert served.model_version == f"{policy}+taste-v2", "afterwards the newest version is served"
    assert np.array_equal(served.pool.rewards, read_taste_rewards(live_run.models, 2, served.pool.ids))

    # Version 1's table moved from the prior's in the direction of the first session's plays.
    first_plays = log[log["session_id"] == first]
    chain = load_chain(live_run, taste=False)
    prior = LiveLearner(chain, lambda: (first_plays.iloc[:0], "nothing"))
    rows = chain.pool.rows_of(first_plays["track_id"])
    prior_table = prior.prior_model.expected_rewards(prior.proximity, chain.weights, prior.like_threshold)
    moved = read_taste_rewards(live_run.models, 1, chain.pool.ids)[rows] - prior_table[rows]
    surprise = first_plays["percentage_listened"].to_numpy() - prior.prior_model.prior_mean[rows]
    assert np.corrcoef(moved, surprise)[0, 1] > 0.8

    # The second playlist is exactly the one a Thompson draw of version 1 gives.
    learner = LiveLearner(chain, lambda: (first_plays, "the first session"))
    learner.update()
    steps = plan_playlist(learner.exploring(3, 1), None, LENGTH, seed=play.session_seed(3, 1))
    assert playlist_tracks(steps) == log[log["session_id"] == second].sort_values("position")["track_id"].tolist()



def test_an_interrupted_update_leaves_the_previous_version_served(live_run, monkeypatch, capsys):
    assert run_loop(live_run, "--sessions", "1") == 0
    before = Recommender.load(live_run.root)

    def fails(path, text):
        raise OSError(f"No space left on device: {path}")
    monkeypatch.setattr(recommend, "write_text_atomic", fails)  # the table is written, its JSON fails
    assert run_loop(live_run, "--sessions", "1") == 1
    assert "No space left on device" in capsys.readouterr().err
    log = read_interactions(live_run.feedback / SIMULATED_LOG_NAME)
    assert len(log) == 2 * LENGTH, "the interrupted session's plays are all logged"
    after = Recommender.load(live_run.root)
    assert after.model_version == before.model_version and after.model_version.endswith("+taste-v1")
    assert np.array_equal(after.pool.rewards, before.pool.rewards)

    monkeypatch.undo()
    learner = LiveLearner(load_chain(live_run), records_reader(live_run, simulated=True))
    assert learner.update() == 2, "the next update saves the version the interrupted one could not"
    assert taste_record(live_run.models, 2)["provenance"]["n_records"] == 2 * LENGTH


@pytest.mark.parametrize("sessions", ["0", "-2"])
def test_a_loop_of_no_sessions_is_refused(live_run, sessions, capsys):
    with pytest.raises(SystemExit) as stopped:
        run_loop(live_run, "--sessions", sessions)
    assert stopped.value.code == 2
    assert f"--sessions must be at least 1 (playlists to play in a row), got {sessions}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--sessions must be a whole number of playlists >= 1"):
        play.play_sessions(live_run, SpotifySettings.from_environment(), sessions=0, kind="simulated",
                           log_path=live_run.feedback / SIMULATED_LOG_NAME)
