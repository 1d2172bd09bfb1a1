"""Shared pytest fixtures."""
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from embed_browser import browser, page, standin_origin  # noqa: F401 - the embed player's browser fixtures, one of each
from helpers.paths import ProjectPaths


def share_the_cores_between_workers() -> None:
    """Give each pytest-xdist worker its share of the cores for BLAS, OpenMP and numba threads.

    Each pool defaults to every core, so two workers on two cores ran four busy threads: the suite
    took twice as long and a live loop's update between two sessions outlasted its test's wait.
    The environment reaches the notebook kernels and commands the tests start; threadpoolctl
    limits the pools this process has already loaded.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    threads = max(1, (os.cpu_count() or 1) // workers)
    for pool in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(pool, str(threads))
    threadpool_limits(limits=threads)


share_the_cores_between_workers()

# PPO, evaluation and fine-tune settings for the tests that run notebooks 06-08: they assert the
# files, shapes and lengths a chain leaves, never what its policy learned, so a few thousand
# steps do (on top of the runner's quick settings, which train 50,000 steps per policy).
SHORT_TRAINING: dict[str, object] = {
    "num_envs": 64, "total_timesteps_candidate": 3_000, "total_timesteps_original": 3_000, "n_eval_starts": 5,
    "eval_seeds": [0], "finetune_timesteps": 1_000, "n_listeners": 1,
    "scenarios": ["smooth taste", "loves the two lowest clusters"],
}


def benchmark_module(name: str) -> ModuleType:
    """benchmarks/`name`.py, imported from its path (benchmarks/ is a folder of scripts)."""
    from helpers.paths import REPO_ROOT

    if str(REPO_ROOT / "benchmarks") not in sys.path:  # a benchmark imports its neighbours by name
        sys.path.append(str(REPO_ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    if spec.name not in sys.modules:
        sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


def make_rewards_table(n_tracks: int = 240, latent_dim: int = 5, n_clusters: int = 6, n_duplicates: int = 6,
                       seed: int = 0) -> pd.DataFrame:
    """A small synthetic rewards table with the columns the RL step reads.

    Rewards are per-cluster means plus per-track noise, like the simulated listeners'; the
    last `n_duplicates` tracks copy the latents of earlier ones, so distances tie.
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.2, 0.8, (n_clusters, latent_dim))
    cluster = rng.integers(0, n_clusters, n_tracks)
    latents = np.clip(centres[cluster] + rng.normal(0, 0.08, (n_tracks, latent_dim)), 0, 1)
    latents[n_tracks - n_duplicates:] = latents[:n_duplicates]
    reward = rng.uniform(20, 110, n_clusters)[cluster] + rng.normal(0, 15, n_tracks)
    table = pd.DataFrame({
        "id": [f"track{i:05d}" for i in range(n_tracks)],
        "artist": rng.choice(["Adele", "Drake", "Sia"], n_tracks),
        "name": [f"Song {i}" for i in range(n_tracks)],
    })
    for j in range(latent_dim):
        table[f"latent_{j}"] = latents[:, j]
    table["cluster"] = cluster
    table["umap_x"], table["umap_y"] = latents[:, 0] * 10, latents[:, 1] * 10
    table["reward"] = reward
    return table


@pytest.fixture(scope="session")
def rewards_table() -> pd.DataFrame:
    return make_rewards_table()


@pytest.fixture(scope="session")
def rewards_parquet(tmp_path_factory, rewards_table) -> Path:
    path = tmp_path_factory.mktemp("processed") / "rewards.parquet"
    rewards_table.to_parquet(path, index=False)
    return path


class FakeRecommender:
    """The Recommender's interface (helpers.recommend) over a small table, for tests without a trained policy.

    The candidates of a step are the 4 nearest unvisited tracks in latent space; their
    probabilities are a softmax of -10 x their distance.
    """

    model_version = "fake-policy-1"

    def __init__(self, table: pd.DataFrame, n_candidates: int = 4) -> None:
        self.track_table = table.set_index("id")
        self.n_candidates = n_candidates
        self._latent_columns = [column for column in self.track_table.columns if column.startswith("latent_")]

    def latent(self, track_id: str) -> list[float]:
        return self.track_table.loc[track_id, self._latent_columns].astype(float).tolist()

    def aliases_of(self, track_ids: list[str]) -> dict[str, str]:
        return {}

    def song_id(self, track_id: str) -> str:
        if track_id not in self.track_table.index:
            raise ValueError(f"track {track_id!r} is not in the recommender's catalogue")
        return track_id

    def playlist(self, start_id: str | None = None, length: int = 10, greedy: bool = True,
                 seed: int | None = None) -> list[dict]:
        rng = np.random.default_rng(seed)
        ids = self.track_table.index.to_numpy()
        latents = self.track_table[self._latent_columns].to_numpy()
        current = start_id if start_id is not None else str(ids[rng.integers(len(ids))])
        visited = np.zeros(len(ids), dtype=bool)
        steps = []
        for _ in range(length - 1):
            row = self.track_table.index.get_loc(current)
            visited[row] = True
            distance = np.linalg.norm(latents - latents[row], axis=1)
            distance[visited] = np.inf
            nearest = np.argsort(distance, kind="stable")[:self.n_candidates]
            logits = -10 * distance[nearest]
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            choice = nearest[np.argmax(probs)] if greedy else rng.choice(nearest, p=probs)
            steps.append({"track_id": current, "candidates": [str(i) for i in ids[nearest]],
                          "probs": probs.tolist(), "chosen": str(ids[choice])})
            current = str(ids[choice])
        return steps


@pytest.fixture
def fake_recommender() -> FakeRecommender:
    return FakeRecommender(make_rewards_table(n_tracks=60))


@pytest.fixture
def offline_run(tmp_path) -> Path:
    """A run folder with notebook 04's listener model for the fake catalogue's 6 clusters."""
    from helpers.listeners import draw_listener_model
    from helpers.paths import ProjectPaths

    paths = ProjectPaths.at(tmp_path).ensure()
    draw_listener_model(n_clusters=6, seed=0).to_json(paths.processed / "listener_model.json")
    return tmp_path


LIVE_LENGTH = 8  # the longest playlist the live run's neighbour index serves


@pytest.fixture
def live_run(tmp_path) -> ProjectPaths:
    """A run folder with what the live loop reads: notebook 05's table and weights, 04's listener
    model, an (untrained) default policy and its neighbour index."""
    from helpers.env import TrackPool, load_neighbour_index, neighbours_needed
    from helpers.listeners import draw_listener_model
    from helpers.ppo import PPOConfig, TrainingRun
    from helpers.recommend import checkpoint_path
    from helpers.rewards import RewardWeights

    paths = ProjectPaths.at(tmp_path).ensure()
    rng = np.random.default_rng(0)
    table = make_rewards_table(n_tracks=300, n_clusters=6, seed=1)
    table = table.assign(percentage_listened=rng.uniform(0.3, 0.9, len(table)),
                         proximity_score=rng.uniform(0, 1, len(table)))
    table.to_parquet(paths.file("rewards"), index=False)
    RewardWeights().save(paths.file("reward_weights"))
    draw_listener_model(n_clusters=6, seed=0).to_json(paths.file("listener_model"))
    pool = TrackPool.from_table(table)
    config = PPOConfig(hidden_size=16, n_fourier_features=4, total_timesteps=1000)
    TrainingRun.start(config, pool).save(checkpoint_path(paths.models))
    load_neighbour_index(pool, neighbours_needed(LIVE_LENGTH, 4), paths.file("neighbours"), show_progress=False)
    return paths
