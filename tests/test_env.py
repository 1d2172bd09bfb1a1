"""The playlist environment: API, exact candidates, no repeats, masks, validation."""
import numpy as np
import pytest
from conftest import make_rewards_table
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.env import (REWARD_FEATURES, BatchPlaylistEnv, PlaylistEnv, TrackPool, build_neighbour_index,
                         load_neighbour_index, nearest_others, neighbours_needed)


@pytest.fixture(scope="module")
def pool(rewards_table):
    return TrackPool.from_table(rewards_table)


def brute_force_candidates(latents: np.ndarray, current: int, playlist: list[int], k: int) -> list[int]:
    """The k tracks nearest to `current` that are not in `playlist`, by (distance, row)."""
    distances = np.linalg.norm(latents.astype(np.float64) - latents[current], axis=1)
    order = np.lexsort((np.arange(len(latents)), distances))
    return [int(row) for row in order if row not in set(playlist)][:k]


def run_random_episodes(pool, playlist_length, n_candidates, n_episodes, seed):
    """Step a batch of random playlists; check every step against brute force; return the playlists."""
    rng = np.random.default_rng(seed)
    neighbours = build_neighbour_index(pool.latents, neighbours_needed(playlist_length, n_candidates))
    env = BatchPlaylistEnv(pool, neighbours, playlist_length, n_candidates)
    batch = env.reset(rng.integers(0, pool.n_tracks, n_episodes))
    done = False
    while not done:
        for b in range(n_episodes):
            playlist = [int(r) for r in env.playlists[b] if r >= 0]
            expected = brute_force_candidates(pool.latents, playlist[-1], playlist, n_candidates)
            assert batch.candidate_rows[b][batch.mask[b]].tolist() == expected
            assert (batch.candidate_rows[b][~batch.mask[b]] == -1).all()
        # A random real candidate per playlist: uniform noise, masked, argmax.
        actions = np.argmax(rng.random(batch.mask.shape) * batch.mask, axis=1)
        batch, _, done = env.step(actions)
    return env.playlists


@pytest.mark.parametrize("observation", ["latent", "candidates"])
def test_passes_gymnasium_env_checker(pool, observation):
    check_env(PlaylistEnv(pool, observation=observation), skip_render_check=True)


def test_candidates_equal_brute_force_nearest_search_over_tracks_not_in_playlist(pool):
    playlists = run_random_episodes(pool, playlist_length=10, n_candidates=4, n_episodes=64, seed=1)
    assert (playlists >= 0).all()


@settings(max_examples=40, deadline=None)
@given(
    n_tracks=st.integers(2, 30),
    playlist_length=st.integers(2, 12),
    n_candidates=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_no_track_ever_repeats_even_when_fewer_than_k_candidates_remain(n_tracks, playlist_length, n_candidates, seed):
    playlist_length = min(playlist_length, n_tracks)
    table = make_rewards_table(n_tracks=n_tracks, n_clusters=2, n_duplicates=min(3, n_tracks // 2), seed=seed)
    playlists = run_random_episodes(TrackPool.from_table(table), playlist_length, n_candidates, 8, seed)
    for playlist in playlists:
        assert len(set(playlist.tolist())) == playlist_length


def test_vector_env_gives_the_same_candidates_and_rewards_as_the_single_env(pool):
    neighbours = build_neighbour_index(pool.latents, neighbours_needed(10, 4))
    single = PlaylistEnv(pool, neighbours, observation="candidates")
    vector = BatchPlaylistEnv(pool, neighbours)
    rng = np.random.default_rng(3)
    starts = rng.integers(0, pool.n_tracks, 16)
    actions = rng.integers(0, 4, (9, 16))
    batch = vector.reset(starts)
    single_runs = []
    for b, start in enumerate(starts):
        _, info = single.reset(options={"start_id": pool.ids[start]})
        steps = [(info["candidate_ids"], None)]
        for t in range(9):
            _, reward, terminated, _, info = single.step(actions[t, b])
            steps.append((info.get("candidate_ids"), reward))
        assert terminated
        single_runs.append(steps)
    for t in range(9):
        for b in range(16):
            assert pool.ids[batch.candidate_rows[b]].tolist() == single_runs[b][t][0]
        batch, rewards, _ = vector.step(actions[t])
        assert rewards.tolist() == [single_runs[b][t + 1][1] for b in range(16)]


def test_tiny_catalogue_masks_missing_candidates_and_rejects_them():
    pool = TrackPool.from_table(make_rewards_table(n_tracks=5, n_duplicates=0))
    env = PlaylistEnv(pool, playlist_length=5, n_candidates=4, observation="candidates")
    observation, info = env.reset(seed=0)
    remaining = []
    for _ in range(4):
        remaining.append(int(observation["mask"].sum()))
        assert len(info["candidate_ids"]) == remaining[-1]
        assert not observation["candidates"][observation["mask"] == 0].any()
        if remaining[-1] < 4:
            with pytest.raises(ValueError, match="not a real candidate"):
                env.step(remaining[-1])
        observation, _, terminated, _, info = env.step(0)
    assert remaining == [4, 3, 2, 1]
    assert terminated and len(set(env.playlist_ids())) == 5


def test_observation_info_and_reward_scale(pool):
    env = PlaylistEnv(pool, observation="latent", reward_scale=0.01)
    observation, info = env.reset(options={"start_id": "track00007"})
    np.testing.assert_array_equal(observation, pool.latents[7])
    assert info["track_id"] == "track00007"
    candidate_rows = pool.rows_of(info["candidate_ids"])
    np.testing.assert_array_equal(info["candidate_latents"], pool.latents[candidate_rows])
    _, reward, _, _, step_info = env.step(2)
    picked = pool.rows_of(info["candidate_ids"][2])[0]
    assert step_info["table_reward"] == pool.rewards[picked]
    assert reward == pytest.approx(0.01 * pool.rewards[picked])
    with pytest.raises(KeyError, match="not-a-track"):
        env.reset(options={"start_id": "not-a-track"})


def test_step_after_the_playlist_is_complete_is_an_error(pool):
    env = PlaylistEnv(pool, playlist_length=3)
    env.reset(seed=0)
    env.step(0)
    assert env.step(0)[2]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_ties_are_ordered_by_row_and_a_track_is_never_its_own_neighbour():
    latents = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.6, 0.5], [0.5, 0.5], [0.9, 0.9]], dtype=np.float32)
    index = build_neighbour_index(latents, 4)
    assert index.tolist() == [[1, 2, 4, 3], [0, 2, 4, 3], [0, 1, 4, 3], [0, 1, 2, 4], [0, 1, 2, 3], [3, 0, 1, 2]]
    # Eight equidistant tracks tie across the cut of a narrow index: the lowest rows win.
    many_ties = np.vstack([[0.0, 0.0], np.full((8, 2), 0.5), [[1.0, 1.0]] * 3]).astype(np.float32)
    assert build_neighbour_index(many_ties[::-1].copy(), 2)[-1].tolist() == [3, 4]


def test_nearest_others_of_a_few_tracks_are_their_rows_of_the_neighbour_index(pool):
    rows = np.array([0, 17, 235, 239])  # the last tracks duplicate the first ones' latents
    index = build_neighbour_index(pool.latents, 6, show_progress=False)
    np.testing.assert_array_equal(nearest_others(pool.latents, rows, 6), index[rows])
    with pytest.raises(ValueError, match="width must be between 1"):
        nearest_others(pool.latents, rows, pool.n_tracks)


def test_neighbour_index_is_cached_and_reused(pool, tmp_path, monkeypatch):
    cache = tmp_path / "neighbours.npz"
    wide = load_neighbour_index(pool, 12, cache)
    assert cache.exists()
    monkeypatch.setattr("helpers.env.build_neighbour_index", lambda *a, **k: pytest.fail("index rebuilt"))
    np.testing.assert_array_equal(load_neighbour_index(pool, 6, cache), wide[:, :6])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop(columns="reward"), "reward"),
        (lambda t: t.drop(columns=[c for c in t.columns if c.startswith("latent_")]), "latent_0"),
        (lambda t: t.assign(latent_2=t["latent_2"] + 2), r"\[0, 1\]"),
        (lambda t: t.assign(id=["same"] * len(t)), "unique"),
        (lambda t: t.assign(reward=np.nan), "NaN"),
    ],
)
def test_bad_rewards_table_gets_a_specific_error(rewards_table, change, message):
    with pytest.raises(ValueError, match=message):
        TrackPool.from_table(change(rewards_table.copy()), source="rewards.parquet")


def test_catalogue_smaller_than_a_playlist_is_rejected():
    pool = TrackPool.from_table(make_rewards_table(n_tracks=4, n_duplicates=0))
    with pytest.raises(ValueError, match="at least"):
        PlaylistEnv(pool, playlist_length=10)


def brute_force_plan_value(latents: np.ndarray, rewards: np.ndarray, track: int, excluded: list[int], picks: int,
                           k: int) -> float:
    """Best return of `picks` more picks from `track` among its k nearest outside `excluded`, then
    among the k nearest other than the track just left (plain recursion)."""
    if picks == 0:
        return 0.0
    return max(rewards[j] + brute_force_plan_value(latents, rewards, j, [j, track], picks - 1, k)
               for j in brute_force_candidates(latents, track, excluded, k))


def test_reward_inputs_are_the_served_tables_values_checked_by_brute_force(pool):
    rng = np.random.default_rng(0)
    neighbours = build_neighbour_index(pool.latents, neighbours_needed(6, 3))
    env = BatchPlaylistEnv(pool, neighbours, playlist_length=6, n_candidates=3)
    rewards, latents = pool.rewards, pool.latents
    batch, done = env.reset(rng.integers(0, pool.n_tracks, 8)), False
    while not done:
        for b in range(8):
            playlist = [int(r) for r in env.playlists[b] if r >= 0]
            for slot in np.flatnonzero(batch.mask[b]):
                c = int(batch.candidate_rows[b, slot])
                near = rewards[brute_force_candidates(latents, c, [c], 3)]
                offer = rewards[brute_force_candidates(latents, c, [*playlist, c], 3)]
                picks_after = env.n_picks - len(playlist)
                expected = [rewards[c], near.max(), near.mean(), offer.max(), offer.mean(),
                            brute_force_plan_value(latents, rewards, c, [*playlist, c], picks_after, 3)]
                np.testing.assert_allclose(batch.candidate_rewards[b, slot], expected, rtol=1e-5)
            assert (batch.candidate_rewards[b][~batch.mask[b]] == 0).all()
        batch, _, done = env.step(np.argmax(rng.random(batch.mask.shape) * batch.mask, axis=1))


def test_reward_inputs_follow_the_table_the_environment_serves(pool, rewards_table):
    neighbours = build_neighbour_index(pool.latents, neighbours_needed(10, 4))
    first = BatchPlaylistEnv(pool, neighbours).reset(np.array([0]))
    raised = rewards_table.assign(reward=rewards_table["reward"].where(
        rewards_table.index != first.candidate_rows[0, 1], 1_000.0))
    again = BatchPlaylistEnv(TrackPool.from_table(raised), neighbours).reset(np.array([0]))
    reward = REWARD_FEATURES.index("reward")
    assert again.candidate_rewards[0, 1, reward] == 1_000.0
    assert again.candidate_rewards[0, 0, reward] == first.candidate_rewards[0, 0, reward]
