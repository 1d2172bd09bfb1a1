"""Evaluation: the exact optimum is exact, baselines behave, metrics mean what they say."""
import itertools

import numpy as np
import pytest
from conftest import make_rewards_table

from helpers.env import REWARD_FEATURES, BatchPlaylistEnv, TrackPool, build_neighbour_index, neighbours_needed
from helpers.evaluation import (baseline_policies, build_playlists, compare_policies, exact_optimum,
                                greedy_oracle_policy, largest_gain, lookahead_policy, mean_pairwise_distance,
                                nearest_policy, planner_policies, playlist_metrics, random_policy, reward_to_go_bounds,
                                split_start_tracks)


def make_env(n_tracks: int, playlist_length: int, n_candidates: int, seed: int = 0,
             look_ahead_depth: int = 1) -> BatchPlaylistEnv:
    pool = TrackPool.from_table(make_rewards_table(n_tracks=n_tracks, seed=seed))
    neighbours = build_neighbour_index(pool.latents, neighbours_needed(playlist_length, n_candidates))
    return BatchPlaylistEnv(pool, neighbours, playlist_length, n_candidates, look_ahead_depth=look_ahead_depth)


def all_playlist_returns(env: BatchPlaylistEnv, starts: np.ndarray) -> np.ndarray:
    """Returns of every action sequence from every start (brute force), shape (sequences, starts)."""
    sequences = itertools.product(range(env.n_candidates), repeat=env.n_picks)
    returns = [build_playlists(env, starts, lambda batch, seq=seq: np.full(len(starts), seq[env.step_index]))[1].sum(axis=1)
               for seq in sequences]
    return np.array(returns)


@pytest.mark.parametrize(("playlist_length", "n_candidates", "seed"), [(6, 3, 0), (5, 4, 1), (7, 2, 2)])
def test_branch_and_bound_equals_exhaustive_search(playlist_length, n_candidates, seed):
    env = make_env(80, playlist_length, n_candidates, seed)
    starts = np.arange(0, 80, 7)
    playlists, rewards = exact_optimum(env, starts, progress=False)
    np.testing.assert_allclose(rewards.sum(axis=1), all_playlist_returns(env, starts).max(axis=0))
    assert (playlists[:, 0] == starts).all()
    assert all(len(set(p)) == playlist_length for p in playlists.tolist())
    np.testing.assert_allclose(env.pool.rewards[playlists[:, 1:]], rewards)


def test_reward_to_go_bounds_never_underestimate_the_optimum():
    env = make_env(120, 8, 4, seed=3)
    starts = np.arange(120)
    bounds = reward_to_go_bounds(env.neighbours, env.pool.rewards, 8, 4)
    optimum = exact_optimum(env, starts, progress=False)[1].sum(axis=1)
    assert (bounds[0, starts] >= optimum - 1e-9).all()
    assert (bounds[-1] == 0).all()


def test_greedy_oracle_picks_the_best_real_candidate_and_random_only_real_ones():
    env = make_env(12, 12, 4)
    batch = env.reset(np.arange(12))
    oracle, rng_policy = greedy_oracle_policy(env.pool.rewards), random_policy(seed=0)
    done = False
    while not done:
        choice = oracle(batch)
        best = np.where(batch.mask, env.pool.rewards[batch.candidate_rows], -np.inf).max(axis=1)
        np.testing.assert_array_equal(env.pool.rewards[batch.candidate_rows[np.arange(12), choice]], best)
        for _ in range(20):
            assert batch.mask[np.arange(12), rng_policy(batch)].all()
        batch, _, done = env.step(choice)


def test_a_full_look_ahead_is_the_exact_optimum_and_deeper_searches_do_better():
    env = make_env(80, 6, 3, seed=5)
    starts = np.arange(0, 80, 3)
    optimum = exact_optimum(env, starts, progress=False)[1].sum(axis=1)
    full = build_playlists(env, starts, lookahead_policy(env, env.n_picks))[1].sum(axis=1)
    np.testing.assert_allclose(full, optimum)
    greedy = build_playlists(env, starts, greedy_oracle_policy(env.pool.rewards))[1].sum(axis=1).mean()
    planned = [build_playlists(env, starts, lookahead_policy(env, depth))[1].sum(axis=1).mean() for depth in (1, 3)]
    assert greedy < planned[0] <= planned[1] + 1e-9 <= optimum.mean() + 2e-9
    with pytest.raises(ValueError, match="depth"):
        lookahead_policy(env, 0)


def test_one_level_look_ahead_reads_the_reward_and_plan_value_inputs():
    env = make_env(60, 8, 4, seed=6)
    batch, done = env.reset(np.arange(60)), False
    policy = lookahead_policy(env, 1)
    while not done:
        features = batch.candidate_rewards
        scores = features[..., REWARD_FEATURES.index("reward")] + features[..., REWARD_FEATURES.index("plan_value")]
        choice = policy(batch)
        np.testing.assert_allclose(scores[np.arange(60), choice], np.where(batch.mask, scores, -np.inf).max(axis=1),
                                   rtol=1e-6)
        batch, _, done = env.step(choice)
    assert set(planner_policies(env)) == {"reward + plan value", "2-level look-ahead", "3-level look-ahead",
                                          "4-level look-ahead"}


def test_the_plan_value_input_is_searched_as_deep_as_the_environment_says():
    shallow, deep = make_env(60, 8, 4, seed=6), make_env(60, 8, 4, seed=6, look_ahead_depth=3)
    batch, done = deep.reset(np.arange(60)), False
    while not done:
        features = batch.candidate_rewards
        scores = features[..., REWARD_FEATURES.index("reward")] + features[..., REWARD_FEATURES.index("plan_value")]
        expected = deep.look_ahead(batch.playlists, batch.candidate_rows, batch.mask, depth=3)
        np.testing.assert_allclose(np.where(batch.mask, scores, -np.inf), expected, rtol=1e-6)
        batch, _, done = deep.step(lookahead_policy(shallow, 1)(batch))
    with pytest.raises(ValueError, match="look_ahead_depth"):
        make_env(60, 8, 4, look_ahead_depth=0)


def test_largest_gain_finds_the_start_where_one_policy_beats_the_other_most():
    env = make_env(80, 6, 3, seed=5)
    starts = np.arange(0, 80, 4)
    start, planned, nearest = largest_gain(env, lookahead_policy(env, 2), nearest_policy(), starts)
    gains = (build_playlists(env, starts, lookahead_policy(env, 2))[1].sum(axis=1)
             - build_playlists(env, starts, nearest_policy())[1].sum(axis=1))
    assert start == starts[np.argmax(gains)] and gains.max() > 0
    assert planned[0] == nearest[0] == start
    np.testing.assert_array_equal(nearest, build_playlists(env, np.array([start]), nearest_policy())[0][0])


def test_look_ahead_never_repeats_and_copes_with_missing_candidates():
    env = make_env(12, 12, 4)  # the last picks of a 12-song playlist over 12 songs have fewer than 4 candidates
    playlists, _ = build_playlists(env, np.arange(12), lookahead_policy(env, 3))
    assert all(len(set(p)) == 12 for p in playlists.tolist())


def test_split_start_tracks_is_a_seeded_partition():
    train, heldout = split_start_tracks(1000, 0.15, seed=7)
    assert len(heldout) == 150 and len(np.intersect1d(train, heldout)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, heldout])), np.arange(1000))
    assert np.array_equal(split_start_tracks(1000, 0.15, seed=7)[1], heldout)
    assert not np.array_equal(split_start_tracks(1000, 0.15, seed=8)[1], heldout)
    with pytest.raises(ValueError, match="heldout_fraction"):
        split_start_tracks(1000, 1.5)


def test_mean_pairwise_distance_and_repeats_are_counted():
    latents = np.array([[[0.0], [1.0], [3.0]]])
    np.testing.assert_allclose(mean_pairwise_distance(latents), [2.0])  # (1 + 3 + 2) / 3
    pool = TrackPool.from_table(make_rewards_table(n_tracks=20))
    playlists = np.array([[0, 1, 2, 3], [4, 5, 5, 4]])
    metrics = playlist_metrics(playlists, np.array([10.0, 20.0]), pool)
    assert metrics["repeats_per_episode"] == 1.0
    assert metrics["mean_return"] == 15.0 and metrics["distinct_tracks"] == 5


def test_compare_policies_reports_every_policy_against_the_optimum():
    env = make_env(200, 10, 4, seed=4)
    _, heldout = split_start_tracks(200, 0.25, seed=0)
    table = compare_policies(env, baseline_policies(env.pool), heldout, n_eval_starts=30,
                             eval_seeds=(0, 1), progress=False)
    assert set(table.index) == {"exact optimum", "uniform random", "always nearest", "greedy oracle"}
    assert (table["episodes"] == 60).all()
    assert table.loc["exact optimum", "share_of_optimum"] == 1.0
    assert (table["share_of_optimum"] <= 1.0 + 1e-12).all()
    assert (table["repeats_per_episode"] == 0).all()
    assert table.loc["greedy oracle", "mean_return"] > table.loc["uniform random", "mean_return"]
    assert (table["ci95"] > 0).all() and (table["distinct_clusters"] >= 1).all()
