"""The Recommender contract that the notebooks and the Spotify player rely on."""
import numpy as np
import pandas as pd
import pytest

from helpers.env import BatchPlaylistEnv, TrackPool, build_neighbour_index, neighbours_needed
from helpers.ppo import PPOConfig, TrainingRun, make_env, train
from helpers.paths import ProjectPaths
from helpers.recommend import Recommender, checkpoint_path, load_chain
from helpers.rewards import RewardWeights
from helpers.songs import save_aliases


@pytest.fixture(scope="module")
def run_root(tmp_path_factory, rewards_table) -> ProjectPaths:
    """A chain's run with a rewards table and both (barely trained) policies."""
    paths = ProjectPaths.at(tmp_path_factory.mktemp("run")).ensure()
    rewards_table.to_parquet(paths.file("rewards"), index=False)
    RewardWeights(liked_weight=40.0).save(paths.file("reward_weights"))
    # Two ids of the catalogue of notebook 01 that were merged into track00003: an album
    # release and the id Spotify relinks to in some market.
    songs = pd.DataFrame({"id": rewards_table["id"], "song_id": rewards_table["id"]})
    merged = pd.DataFrame({"id": ["album-release", "relinked"], "song_id": ["track00003", "track00003"]})
    save_aliases(pd.concat([songs, merged]), paths.file("aliases"))
    pool = TrackPool.from_table(rewards_table)
    for make_config in (PPOConfig, PPOConfig.original):
        config = make_config(hidden_size=16, n_fourier_features=4, total_timesteps=1000)
        TrainingRun.start(config, pool).save(checkpoint_path(paths.models, config.architecture))
    return paths


@pytest.fixture(scope="module")
def recommender(run_root):
    return Recommender.load(run_root.root)


@pytest.mark.parametrize("length", [2, 10, 14])
def test_playlist_has_length_minus_one_steps_that_chain(recommender, length):
    steps = recommender.playlist(start_id="track00003", length=length)
    assert len(steps) == length - 1
    assert steps[0]["track_id"] == "track00003"
    for step, following in zip(steps, steps[1:]):
        assert following["track_id"] == step["chosen"]
    tracks = [steps[0]["track_id"]] + [step["chosen"] for step in steps]
    assert len(set(tracks)) == length


def test_every_step_has_candidates_probabilities_and_a_chosen_candidate(recommender):
    for seed in range(5):
        for step in recommender.playlist(greedy=False, seed=seed):
            assert set(step) == {"track_id", "candidates", "probs", "chosen",
                                 "track_name", "track_artist", "chosen_name", "chosen_artist"}
            assert len(step["candidates"]) == len(step["probs"]) == 4
            assert all(isinstance(p, float) for p in step["probs"])
            assert sum(step["probs"]) == pytest.approx(1.0, abs=1e-6)
            assert step["chosen"] in step["candidates"]
            assert step["track_id"] not in step["candidates"]


def test_steps_name_the_current_and_the_chosen_track(recommender, rewards_table):
    by_id = rewards_table.set_index("id")
    for step in recommender.playlist(start_id="track00010"):
        assert (step["track_name"], step["track_artist"]) == tuple(by_id.loc[step["track_id"], ["name", "artist"]])
        assert (step["chosen_name"], step["chosen_artist"]) == tuple(by_id.loc[step["chosen"], ["name", "artist"]])


def test_any_id_of_a_song_starts_its_playlist(recommender):
    expected = recommender.playlist(start_id="track00003")
    assert recommender.playlist(start_id="album-release") == expected
    assert recommender.playlist(start_id="relinked")[0]["track_id"] == "track00003"
    with pytest.raises(ValueError, match="track 'nowhere' is not in the recommender's catalogue$"):
        recommender.playlist(start_id="nowhere")


def test_greedy_picks_the_most_probable_candidate(recommender):
    for step in recommender.playlist(start_id="track00010"):
        assert step["chosen"] == step["candidates"][int(np.argmax(step["probs"]))]


def test_same_seed_same_playlist(recommender):
    assert recommender.playlist(greedy=False, seed=7) == recommender.playlist(greedy=False, seed=7)
    assert recommender.playlist(seed=3)[0]["track_id"] == recommender.playlist(seed=3)[0]["track_id"]
    starts = {recommender.playlist(seed=seed)[0]["track_id"] for seed in range(10)}
    assert len(starts) > 1


def test_track_table_latent_and_model_version(recommender, rewards_table):
    assert recommender.track_table.loc["track00005", "artist"] == rewards_table.loc[5, "artist"]
    assert {"name", "cluster", "latent_0"} <= set(recommender.track_table.columns)
    assert recommender.latent("track00005") == pytest.approx(rewards_table.filter(like="latent_").iloc[5].tolist())
    assert recommender.model_version.startswith("candidate-")
    with pytest.raises(KeyError, match="nope"):
        recommender.latent("nope")


def test_loads_the_original_architecture_by_name(run_root):
    original = Recommender.load(run_root.root, architecture="original")
    assert original.model_version.startswith("original-")
    assert len(original.playlist(start_id="track00001")) == 9


def test_missing_files_name_the_notebook_to_run(tmp_path, run_root):
    paths = ProjectPaths.at(tmp_path).ensure()
    with pytest.raises(FileNotFoundError, match="ppo_candidate.pt does not exist: run notebook 06_ppo first"):
        load_chain(paths)
    checkpoint_path(paths.models).write_bytes(checkpoint_path(run_root.models).read_bytes())
    with pytest.raises(FileNotFoundError, match="rewards.parquet does not exist: run notebook 05_rewards first"):
        load_chain(paths)


def test_the_recommender_reads_the_reward_weights_notebook_05_saved(run_root, tmp_path):
    assert Recommender.load(run_root.root).reward_weights == RewardWeights(liked_weight=40.0)
    paths = ProjectPaths.at(tmp_path).ensure()
    for artefact in ("rewards", "policy"):
        source = run_root.file(artefact, architecture="candidate")
        paths.file(artefact, architecture="candidate").write_bytes(source.read_bytes())
    with pytest.raises(FileNotFoundError, match="reward_weights.json does not exist: run notebook 05_rewards"):
        Recommender.load(tmp_path)
    paths.file("reward_weights").write_text('{"liked_weight": 50}')
    with pytest.raises(ValueError, match="not a reward weights file written by notebook 05"):
        Recommender.load(tmp_path)


def test_the_chain_loads_every_artefact_a_trained_run_left(run_root):
    chain = load_chain(run_root)
    assert chain.version == 0 and chain.run.config.architecture == "candidate"
    assert chain.pool.fingerprint == chain.run.pool_fingerprint and len(chain.table) == chain.pool.n_tracks
    assert chain.neighbours().shape == (chain.pool.n_tracks, neighbours_needed(10, 4))
    assert chain.neighbours(playlist_length=12).shape[1] == neighbours_needed(12, 4)
    assert set(chain.aliases["id"]) >= {"album-release", "relinked"}


def test_the_other_ids_of_a_playlists_songs(recommender):
    assert recommender.aliases_of(["track00003", "track00004"]) == {"album-release": "track00003",
                                                                    "relinked": "track00003"}
    assert recommender.aliases_of(["track00004"]) == {}


@pytest.fixture(scope="module")
def trained(rewards_table):
    """A candidate-aware policy trained briefly on the small table."""
    pool = TrackPool.from_table(rewards_table)
    config = PPOConfig(hidden_size=32, total_timesteps=40_000, seed=0)
    env = make_env(config, pool, build_neighbour_index(pool.latents, neighbours_needed(10, 4), show_progress=False))
    return train(TrainingRun.start(config, pool), env, np.arange(pool.n_tracks), progress=False)


def test_the_policy_reads_the_reward_table_it_serves(trained, rewards_table, tmp_path):
    """Raising one candidate's reward in the served table makes the policy go for it at once, without
    retraining: the first pick changes and the playlist plays it."""
    served = Recommender(trained, TrackPool.from_table(rewards_table), tmp_path / "neighbours.npz")
    first = served.playlist(start_id="track00003")[0]
    other = next(track for track in first["candidates"] if track != first["chosen"])
    table = rewards_table.assign(reward=np.where(rewards_table["id"] == other, 500.0, rewards_table["reward"]))
    updated = Recommender(trained, TrackPool.from_table(table), tmp_path / "neighbours.npz")
    assert updated.model_version == served.model_version  # the same weights
    playlist = updated.playlist(start_id="track00003")
    assert playlist[0]["chosen"] != first["chosen"] and other in [step["chosen"] for step in playlist]


def test_a_checkpoint_with_another_reward_table_fails_clearly_and_tables_are_read_only(trained, rewards_table,
                                                                                       tmp_path):
    paths = ProjectPaths.at(tmp_path).ensure()
    trained.save(checkpoint_path(paths.models))
    changed = rewards_table.assign(reward=rewards_table["reward"].where(rewards_table.index != 7, 0.0))
    changed.to_parquet(paths.file("rewards"), index=False)
    RewardWeights().save(paths.file("reward_weights"))
    with pytest.raises(ValueError, match="another rewards table"):
        Recommender.load(tmp_path)
    pool = TrackPool.from_table(rewards_table)
    with pytest.raises(ValueError, match="read-only"):
        pool.rewards[7] = 0.0  # inputs derived from the table can never go stale
