"""Fine-tuning from logged feedback: the reward update, versioned checkpoints, the drift demo."""
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from helpers.env import BatchPlaylistEnv, TrackPool, load_neighbour_index, neighbours_needed
from helpers.feedback import Interaction, MalformedLineWarning, append_interaction, read_interactions
from helpers.evaluation import build_playlists
from helpers.drift import DriftSettings, DriftTarget, drifted_taste, run_drift_demo, true_rewards
from helpers.finetune import aggregate_feedback, fine_tune, log_provenance, save_version, update_rewards
from helpers.off_policy import observed_rewards, off_policy_estimates
from helpers.paths import ProjectPaths
from helpers.listeners import ListenerModel
from helpers.ppo import PPOConfig, TrainingRun, make_env, sampling_policy, train
from helpers.recommend import Recommender, checkpoint_path, version_path, versions
from helpers.rewards import RewardWeights
from tests.conftest import make_rewards_table

# Φ(0.25), Φ(-1), Φ(-2): standard normal CDF values from a table.
PHI_025, PHI_M1, PHI_M2 = 0.5987063257, 0.1586552539, 0.0227501319
WEIGHTS = RewardWeights()
FEEDBACK = dict(confidence_plays=3.0, prior_plays=1.0, weights=WEIGHTS)


def record(session: str, track: str, position: int, listened: float, liked: int | None) -> Interaction:
    return Interaction(timestamp="2026-01-01T00:00:00+00:00", session_id=session, track_id=track,
                       position=position, latent=[0.5], percentage_listened=listened, liked=liked,
                       source="simulated", model_version="v0", candidates=[], probs=[])


@pytest.fixture
def small_log(tmp_path):
    """a: played twice (listened 100 % and liked, then 50 %); c: once (20 %); b and d: never. One bad line."""
    path = tmp_path / "log.jsonl"
    append_interaction(path, record("s1", "a", 0, 1.0, 1))
    append_interaction(path, record("s1", "c", 1, 0.2, 0))
    with open(path, "a") as log:
        log.write('{"track_id": "a", "oops": true}\n')
    append_interaction(path, record("s2", "a", 0, 0.5, 0))
    return path


def small_table() -> pd.DataFrame:
    return pd.DataFrame({"id": ["a", "b", "c", "d"], "cluster": [0, 0, 1, 1], "percentage_listened": 0.5,
                         "proximity_score": [1.0, 1.0, 0.5, 0.5], "reward": [40.0, 30.0, 60.0, 20.0]})


def test_malformed_line_is_reported_and_skipped(small_log):
    with pytest.warns(MalformedLineWarning, match="line 3"):
        log = read_interactions(small_log)
    assert log["track_id"].tolist() == ["a", "c", "a"]


def test_feedback_is_aggregated_per_track(small_log):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MalformedLineWarning)
        feedback = aggregate_feedback(read_interactions(small_log), WEIGHTS).set_index("track_id")
    assert feedback.loc["a", "plays"] == 2 and feedback.loc["c", "plays"] == 1
    assert feedback.loc["a", "interaction_score"] == pytest.approx((150 + 50) / 2)
    assert feedback.loc["c", "interaction_score"] == pytest.approx(20)


def test_update_rule_on_a_hand_made_log(small_log):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MalformedLineWarning)
        log = read_interactions(small_log)
    model = ListenerModel(np.array([0.5, 0.5]), np.array([0.1, 0.1]), like_threshold=0.6, seed=0)
    updated, new_model = update_rewards(small_table(), log, model, confidence_plays=2, prior_plays=2, weights=WEIGHTS)
    # cluster means: 0.5 + ((1.0 - 0.5) + (0.5 - 0.5)) / (2 + 2) = 0.625 and 0.5 + (0.2 - 0.5) / (2 + 1) = 0.4
    np.testing.assert_allclose(new_model.cluster_mean, [0.625, 0.4])
    reward = updated.set_index("id")["reward"]
    shift = [0.8 * (100 * 0.125 + 50 * (PHI_025 - PHI_M1)), 0.8 * (100 * -0.1 + 50 * (PHI_M2 - PHI_M1))]
    # b and d move with their cluster's expected interaction score
    assert reward["b"] == pytest.approx(30 + shift[0])
    assert reward["d"] == pytest.approx(20 + shift[1])
    # a: observed 0.8 * 100 + 0.2 * 1 = 80.2, weight 2 / (2 + 2); c: observed 0.8 * 20 + 0.2 * 0.5, weight 1 / 3;
    # each blended with its reward after the cluster update
    assert reward["a"] == pytest.approx(0.5 * 80.2 + 0.5 * (40 + shift[0]))
    assert reward["c"] == pytest.approx(16.1 / 3 + (60 + shift[1]) * 2 / 3)
    assert updated["plays"].tolist() == [2, 0, 1, 0]


def test_evidence_without_a_share_is_left_out_of_the_reward_update(small_log):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MalformedLineWarning)
        log = read_interactions(small_log)
    model = ListenerModel(np.array([0.5, 0.5]), np.array([0.1, 0.1]), like_threshold=0.6, seed=0)
    skips = log.head(3).assign(percentage_listened=0.0, source="export", share_from_evidence=True,
                               session_id=lambda frame: "history " + frame["session_id"])
    with_skips = pd.concat([log, skips], ignore_index=True)
    expected = update_rewards(small_table(), log, model, **FEEDBACK)
    updated = update_rewards(small_table(), with_skips, model, **FEEDBACK)
    pd.testing.assert_frame_equal(updated[0], expected[0])
    np.testing.assert_array_equal(updated[1].cluster_mean, expected[1].cluster_mean)


def test_plays_heard_as_expected_do_not_move_their_cluster_however_good_the_tracks(small_log):
    """The policy plays the tracks it believes are good; hearing them as well as expected is no news."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MalformedLineWarning)
        log = read_interactions(small_log)
    table = small_table().assign(percentage_listened=log.groupby("track_id")["percentage_listened"].mean()
                                 .reindex(["a", "b", "c", "d"]).fillna(0.5).to_numpy())
    model = ListenerModel(np.array([0.5, 0.5]), np.array([0.1, 0.1]), like_threshold=0.6, seed=0)
    updated, new_model = update_rewards(table, log, model, confidence_plays=3, prior_plays=1, weights=WEIGHTS)
    np.testing.assert_allclose(new_model.cluster_mean, model.cluster_mean)
    assert updated.set_index("id").loc[["b", "d"], "reward"].tolist() == [30.0, 20.0]


def test_a_played_track_in_a_newly_loved_cluster_is_not_ranked_below_its_unplayed_neighbours():
    """One play of a track the listener now loves must not pull it back toward the old, low prior."""
    table = pd.DataFrame({"id": [f"t{i}" for i in range(6)], "cluster": 0, "percentage_listened": 0.2,
                          "proximity_score": 1.0, "reward": 20.0})
    log = pd.DataFrame({"track_id": ["t0", "t1", "t2"], "percentage_listened": 0.95, "liked": 1})
    model = ListenerModel(np.array([0.2]), np.array([0.1]), like_threshold=0.6, seed=0)
    reward = update_rewards(table, log, model, confidence_plays=3, prior_plays=1, weights=WEIGHTS)[0].set_index("id")["reward"]
    assert reward["t3"] > 60
    assert (reward[["t0", "t1", "t2"]] >= reward["t3"]).all()


def test_an_unknown_like_is_missing_never_zero(tmp_path):
    """a: one play liked, one unknown -> like rate 1 over the known play; c: unknown only -> the
    cluster's like probability under the updated model (Φ(-2) here), not 0."""
    path = tmp_path / "log.jsonl"
    append_interaction(path, record("s1", "a", 0, 1.0, 1))
    append_interaction(path, record("s1", "c", 1, 0.2, None))
    append_interaction(path, record("s2", "a", 0, 0.5, None))
    log = read_interactions(path)
    feedback = aggregate_feedback(log, WEIGHTS).set_index("track_id")
    assert feedback.loc["a", "like_rate"] == 1.0 and np.isnan(feedback.loc["c", "like_rate"])
    model = ListenerModel(np.array([0.5, 0.5]), np.array([0.1, 0.1]), like_threshold=0.6, seed=0)
    updated, new_model = update_rewards(small_table(), log, model, confidence_plays=2, prior_plays=2, weights=WEIGHTS)
    observed = updated.set_index("id")["observed_reward"]
    assert observed["a"] == pytest.approx(0.8 * (100 * 0.75 + 50 * 1.0) + 0.2 * 1.0)
    assert new_model.cluster_mean[1] == pytest.approx(0.4)
    assert observed["c"] == pytest.approx(0.8 * (100 * 0.2 + 50 * PHI_M2) + 0.2 * 0.5)


def test_a_rewards_table_without_the_expected_listening_is_refused(small_log):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MalformedLineWarning)
        log = read_interactions(small_log)
    model = ListenerModel(np.array([0.5, 0.5]), np.array([0.1, 0.1]), like_threshold=0.6, seed=0)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['percentage_listened'\]"):
        update_rewards(small_table().drop(columns="percentage_listened"), log, model, **FEEDBACK)


def test_unknown_track_in_the_log_is_an_error(small_log):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MalformedLineWarning)
        log = read_interactions(small_log)
    model = ListenerModel(np.array([0.5, 0.5]), np.array([0.1, 0.1]), like_threshold=0.6, seed=0)
    with pytest.raises(ValueError, match="not in the rewards table"):
        update_rewards(small_table().iloc[1:], log, model, **FEEDBACK)


def tiny_config(**overrides) -> PPOConfig:
    return PPOConfig(**{"hidden_size": 16, "n_fourier_features": 4, "num_envs": 64, "num_minibatches": 3,
                        "total_timesteps": 2_000, **overrides})


@pytest.fixture
def chain(tmp_path):
    """A rewards table with proximity scores, its data folder, neighbours and held-out starts."""
    table = make_rewards_table().assign(proximity_score=lambda t: np.linspace(0, 1, len(t)))
    pool = TrackPool.from_table(table)
    paths = ProjectPaths.at(tmp_path).ensure()
    table.to_parquet(paths.file("rewards"), index=False)
    WEIGHTS.save(paths.file("reward_weights"))
    neighbours = load_neighbour_index(pool, neighbours_needed(10, 4), paths.file("neighbours"))
    heldout = pool.ids[::8].tolist()
    return table, pool, neighbours, paths, paths.models, heldout


def test_versions_are_kept_and_the_newest_is_loaded(chain, small_log):
    table, pool, neighbours, paths, models_dir, heldout = chain
    TrainingRun.start(tiny_config(), pool, heldout).save(checkpoint_path(models_dir))
    base_bytes = checkpoint_path(models_dir).read_bytes()
    log = pd.DataFrame({"session_id": ["s"], "track_id": [pool.ids[0]], "position": [0],
                        "percentage_listened": [1.0], "liked": [1],
                        "timestamp": pd.to_datetime(["2026-01-01"], utc=True)})
    tuned_versions = []
    for boost in (10.0, 20.0):
        updated = table.assign(reward=table["reward"] + boost)
        run = fine_tune(models_dir, TrackPool.from_table(updated), neighbours, timesteps=1_000, learning_rate=2e-3,
                        reset_policy_head=True)
        tuned_versions.append((save_version(run, models_dir, updated, log_provenance(log)), run.model_version()))
    assert versions(models_dir) == [0, 1, 2] and [v for v, _ in tuned_versions] == [1, 2]
    assert checkpoint_path(models_dir).read_bytes() == base_bytes
    provenance = json.loads(version_path(models_dir, 2).with_suffix(".json").read_text())
    assert provenance["n_records"] == 1 and provenance["sessions"] == ["s"] and len(provenance["sha256"]) == 64
    assert Recommender.load(paths.root).model_version == tuned_versions[1][1]
    assert Recommender.load(paths.root, version=1).model_version == tuned_versions[0][1]
    assert Recommender.load(paths.root, version=0).run.global_step == 0
    with pytest.raises(FileNotFoundError, match="no version 7"):
        Recommender.load(paths.root, version=7)


def test_drift_demo_improves_the_return(tmp_path):
    """Clusters scattered over the latent space, so every step can choose a loved cluster or not."""
    table = make_rewards_table().assign(
        proximity_score=lambda t: np.linspace(0, 1, len(t)),
        cluster=lambda t: np.random.default_rng(0).permutation(t["cluster"].to_numpy()))
    model = ListenerModel(np.array([0.55, 0.5, 0.3, 0.3, 0.5, 0.55]), np.full(6, 0.1), like_threshold=0.6, seed=0)
    table["percentage_listened"] = model.cluster_mean[table["cluster"]]
    table["reward"] = 0.8 * 100 * table["percentage_listened"] + 0.2 * table["proximity_score"]
    pool = TrackPool.from_table(table)
    neighbours_path = tmp_path / "neighbours.npz"
    neighbours = load_neighbour_index(pool, neighbours_needed(10, 4), neighbours_path)
    heldout = pool.ids[::8].tolist()
    starts = np.setdiff1d(np.arange(pool.n_tracks), pool.rows_of(heldout))
    run = TrainingRun.start(tiny_config(num_envs=128, num_minibatches=3, total_timesteps=30_000, seed=0),
                            pool, heldout)
    train(run, make_env(run.config, pool, neighbours), starts, progress=False)
    run.save(checkpoint_path(tmp_path / "models"))
    taste, loved = drifted_taste(table, model, seed=0)
    assert loved.tolist() == [2, 3]
    results = run_drift_demo(tmp_path / "models", tmp_path / "demo", table, model, taste=taste, neighbours=neighbours,
                             neighbours_path=neighbours_path, weights=WEIGHTS,
                             settings=DriftSettings(n_rounds=3, playlists_per_round=10, finetune_timesteps=15_000,
                                                    learning_rate=2e-3, seed=0),
                             progress=False)
    assert results["round"].tolist() == [0, 1, 2, 3]
    assert results["gap_closed"].iloc[0] == 0.0
    assert (results["fine_tuned"] <= results["optimum"] + 1e-9).all()
    assert results["gap_closed"].iloc[-1] > 0.3
    assert versions(tmp_path / "demo" / "models") == [0, 1, 2, 3]
    assert np.isfinite(results[["ips", "snips", "dr", "simulated"]].iloc[1:].to_numpy()).all()
    # an exact planner reading the true table builds the optimal playlists; reading the prior table it cannot beat them
    target = DriftTarget.build(run, table, taste, neighbours, play_noise=0.05, like_threshold=model.like_threshold,
                               n_eval_starts=40, seed=0, weights=WEIGHTS)
    assert target.gap_closed(target.planned_return(run, target.true_pool)) == pytest.approx(1.0)
    assert target.planned_return(run, pool) < target.optimum


def test_the_drifted_taste_changes_only_the_loved_clusters_and_true_rewards_are_expectations():
    table = small_table().assign(percentage_listened=[0.8, 0.7, 0.2, 0.3])
    prior = ListenerModel(np.array([0.7, 0.2]), np.array([0.1, 0.1]), like_threshold=0.6, seed=0)
    taste, loved = drifted_taste(table, prior, n_loved=1, loved_mean=0.9, seed=0)
    assert loved.tolist() == [1] and taste[["a", "b"]].tolist() == [0.8, 0.7]
    assert (taste[["c", "d"]] > 0.5).all()  # clip(N(0.9, 0.1)): far above 0.2 and 0.3
    # without play noise the expected listening is the taste itself: notebook 05's formula on it
    np.testing.assert_allclose(true_rewards(table, taste, 0.0, 0.6, weights=WEIGHTS),
                               0.8 * (100 * taste.to_numpy() + 50 * (taste.to_numpy() > 0.6)) + 0.2 * table["proximity_score"])
    # with noise: a taste of 0.6 is liked half the time; a taste of 1 is heard less than fully
    edge = pd.Series([0.6, 1.0], index=["a", "b"])
    rewards = true_rewards(table.iloc[:2], edge, 0.1, 0.6, weights=WEIGHTS)
    assert rewards[0] == pytest.approx(0.8 * (60 + 25) + 0.2)
    assert 0.8 * (100 * 0.96 + 50 * 0.99) + 0.2 < rewards[1] < 0.8 * (100 + 50) + 0.2


def test_off_policy_rewards_of_steps_with_an_unknown_like_come_from_the_reward_model():
    pool = TrackPool.from_table(make_rewards_table(n_tracks=8).assign(proximity_score=0.5))
    steps = pd.DataFrame({"track_id": pool.ids[:3], "percentage_listened": [1.0, 0.4, 0.4],
                          "liked": pd.array([1, pd.NA, 0], dtype="Int64")})
    observed = observed_rewards(steps, pool, WEIGHTS, predicted=np.array([-1.0, 77.0, -1.0]))
    np.testing.assert_allclose(observed, [0.8 * 150 + 0.1, 77.0, 0.8 * 40 + 0.1])


def logged_sessions(env: BatchPlaylistEnv, start_rows: np.ndarray, listened: np.ndarray,
                    temperature: float, seed: int) -> pd.DataFrame:
    """A log of sessions from a logging policy that prefers rewarding candidates (softmax of
    their rewards), each pick heard exactly as `listened` says (liked above 0.6)."""
    rng = np.random.default_rng(seed)
    ids = env.pool.ids
    sessions = np.array([f"s{b}" for b in range(len(start_rows))])
    records = [pd.DataFrame({"session_id": sessions, "track_id": ids[start_rows], "position": 0,
                             "candidates": [[]] * len(sessions), "probs": [[]] * len(sessions)})]
    batch = env.reset(start_rows)
    for position in range(1, env.playlist_length):
        scores = np.where(batch.mask, env.pool.rewards[batch.candidate_rows] / temperature, -np.inf)
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        actions = (rng.random((len(probs), 1)) > probs.cumsum(axis=1)).sum(axis=1)
        records.append(pd.DataFrame({"session_id": sessions, "position": position,
                                     "track_id": ids[batch.candidate_rows[np.arange(len(actions)), actions]],
                                     "candidates": ids[batch.candidate_rows].tolist(), "probs": probs.tolist()}))
        batch, _, _ = env.step(actions)
    log = pd.concat(records, ignore_index=True)
    heard = pd.Series(listened, index=ids).loc[log["track_id"]].to_numpy()
    return log.assign(percentage_listened=heard, liked=(heard > 0.6).astype(int))


def test_off_policy_estimates_recover_the_value_of_a_different_policy(chain):
    table, _, neighbours, _, _, heldout = chain
    rng = np.random.default_rng(3)
    listened = rng.uniform(0, 1, len(table))
    table = table.assign(reward=0.8 * (100 * listened + 50 * (listened > 0.6)) + 0.2 * table["proximity_score"])
    pool = TrackPool.from_table(table)
    target = TrainingRun.start(tiny_config(seed=4, planner_weight=0.0), pool, heldout)  # untrained, no planner
    env = make_env(target.config, pool, neighbours)
    starts = np.resize(np.arange(pool.n_tracks), 4_000)
    log = logged_sessions(env, starts, listened, temperature=60.0, seed=1)
    true_value = build_playlists(env, starts, sampling_policy(target.agent, 0))[1].sum(axis=1).mean()
    logged_value = log.groupby("session_id")["track_id"].size().mean()  # sanity: 10 records per session
    estimates = off_policy_estimates(target, log, pool, neighbours, weights=WEIGHTS)
    assert logged_value == 10 and estimates["n_sessions"] == len(starts)
    assert estimates["logged"] > 1.1 * true_value  # the logging policy is much better: a naive mean is off
    for name in ("ips", "snips", "dr"):
        assert estimates[name] == pytest.approx(true_value, rel=0.03), name
    # DR stays unbiased with a wrong reward model, and an exact one makes it the most precise
    wrong_model = TrackPool.from_table(table.assign(reward=table["reward"] + rng.normal(0, 30, len(table))))
    estimates = off_policy_estimates(target, log, wrong_model, neighbours, weights=WEIGHTS)
    assert estimates["dr"] == pytest.approx(true_value, rel=0.05)
