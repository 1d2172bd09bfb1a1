"""The drift demo: a listener whose taste changed, rounds of feedback, and how much the policy adapts.

The simulated listener now loves the clusters notebook 04 rated lowest. Each round plays
playlists sampled from the current policy, logs them, updates the rewards from the whole log
(`helpers.finetune.update_rewards`) and fine-tunes a new version. The policy never sees the
listener's true rewards; they only measure it: the share of the gap between the un-tuned
policy and the exact optimum (under the true rewards) that fine-tuning closes. A policy is
always run on the reward table it serves (the prior table, then each round's updated one),
because the candidate-aware policy reads its inputs from that table; only the playlists it
builds are scored with the true rewards.
"""
from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.env import TrackPool
from helpers.evaluation import Policy, build_playlists, evaluation_starts, exact_optimum
from helpers.feedback import read_interactions
from helpers.finetune import fine_tune, log_provenance, save_version, update_rewards
from helpers.listeners import ListenerModel, SimulatedListener
from helpers.off_policy import off_policy_estimates
from helpers.ppo import TrainingRun, greedy_policy, make_env, sampling_policy
from helpers.recommend import Recommender, version_path
from helpers.people import expected_rewards
from helpers.rewards import RewardWeights
from helpers.playlists import plan_playlist
from helpers.session import play_session


def drifted_taste(table: pd.DataFrame, model: ListenerModel, n_loved: int = 2, loved_mean: float = 0.95,
                  *, seed: int = 42) -> tuple[pd.Series, np.ndarray]:
    """The taste of a listener who now loves the `n_loved` clusters `model` rated lowest.

    Its taste for a track (the share it listens to on average) is notebook 04's
    `percentage_listened` outside those clusters, and a fresh draw clip(N(loved_mean, sigma_c), 0, 1)
    inside them. Returns the taste indexed by track id, and the loved clusters.
    """
    if not 1 <= n_loved <= model.n_clusters:
        raise ValueError(f"n_loved must lie in [1, {model.n_clusters}], got {n_loved}")
    loved = np.sort(np.argsort(model.cluster_mean, kind="stable")[:n_loved])
    clusters = table["cluster"].to_numpy(np.int64)
    taste = table["percentage_listened"].to_numpy(np.float64).copy()
    in_loved = np.isin(clusters, loved)
    rng = np.random.default_rng(seed)
    taste[in_loved] = np.clip(rng.normal(loved_mean, model.cluster_std[clusters[in_loved]]), 0.0, 1.0)
    return pd.Series(taste, index=table["id"].to_numpy(), name="taste"), loved


def true_rewards(table: pd.DataFrame, taste: pd.Series, play_noise: float, like_threshold: float,
                 *, weights: RewardWeights) -> np.ndarray:
    """Each track's expected reward when a listener with `taste` hears it (notebook 05's formula on
    the expected listening and like probability of `SimulatedListener(taste=..., play_noise=...)`)."""
    return expected_rewards(taste.loc[table["id"]].to_numpy(), play_noise, table["proximity_score"].to_numpy(), weights,
                            like_threshold=like_threshold)


@dataclass(frozen=True)
class DriftTarget:
    """What a policy is measured against under a drifted taste: the held-out starts, the
    un-tuned policy's and the exact optimum's mean return there, under the true rewards."""

    true_pool: TrackPool
    neighbours: np.ndarray
    heldout_rows: np.ndarray
    untuned: float
    optimum: float

    @classmethod
    def build(cls, base_run: TrainingRun, table: pd.DataFrame, taste: pd.Series, neighbours: np.ndarray,
              *, play_noise: float, like_threshold: float, n_eval_starts: int, seed: int,
              weights: RewardWeights) -> "DriftTarget":
        """`n_eval_starts` of `base_run`'s held-out starts (seeded); `base_run` is the un-tuned policy."""
        if not base_run.heldout_ids:
            raise ValueError("the base checkpoint records no held-out start tracks to evaluate on")
        true_pool = TrackPool.from_table(table.assign(
            reward=true_rewards(table, taste, play_noise, like_threshold, weights=weights)))
        heldout_rows = evaluation_starts(true_pool.rows_of(base_run.heldout_ids), n_eval_starts, seed)
        env = make_env(base_run.config, true_pool, neighbours)
        optimum = float(exact_optimum(env, heldout_rows, progress=False)[1].sum(axis=1).mean())
        target = cls(true_pool, neighbours, heldout_rows, float("nan"), optimum)
        untuned = target.mean_return(base_run, TrackPool.from_table(table))
        return dataclasses.replace(target, untuned=untuned)

    def true_return(self, run: TrainingRun, served: TrackPool, start_rows: np.ndarray, policy: Policy) -> float:
        """Mean true return of the playlists `policy` builds from `start_rows` while serving the table `served`."""
        playlists, _ = build_playlists(make_env(run.config, served, self.neighbours), start_rows, policy)
        return float(self.true_pool.rewards[playlists[:, 1:]].sum(axis=1).mean())

    def mean_return(self, run: TrainingRun, served: TrackPool) -> float:
        """The greedy policy's mean return over the held-out starts, serving `served`, under the true rewards."""
        return self.true_return(run, served, self.heldout_rows, greedy_policy(run.agent))

    def planned_return(self, run: TrainingRun, served: TrackPool) -> float:
        """Mean true return of the best playlists by `served`'s rewards (exact search): what a
        perfect planner reading that table reaches, whatever the policy."""
        playlists, _ = exact_optimum(make_env(run.config, served, self.neighbours), self.heldout_rows, progress=False)
        return float(self.true_pool.rewards[playlists[:, 1:]].sum(axis=1).mean())

    def gap_closed(self, mean_return: float) -> float:
        """(R - R_untuned) / (R* - R_untuned); NaN when the un-tuned policy is already optimal."""
        if self.optimum <= self.untuned:
            return float("nan")
        return (mean_return - self.untuned) / (self.optimum - self.untuned)


@dataclass(frozen=True)
class DriftSettings:
    """The drift demo: rounds of sampled playlists played by the drifted listener, a fine-tune after each."""

    n_rounds: int = 5
    playlists_per_round: int = 10
    finetune_timesteps: int = 200_000
    learning_rate: float = 2e-3
    confidence_plays: float = 3.0
    prior_plays: float = 1.0
    reset_policy_head: bool = True
    play_noise: float = 0.05
    n_eval_starts: int = 500
    seed: int = 42

    def __post_init__(self) -> None:
        for name in ("n_rounds", "playlists_per_round", "finetune_timesteps", "n_eval_starts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.play_noise < 0:
            raise ValueError(f"play_noise must be >= 0, got {self.play_noise}")


def play_round(run: TrainingRun, pool: TrackPool, neighbours_path: Path, listener: SimulatedListener,
               *, start_ids: Sequence[str], log_path: Path, seed: int, weights: RewardWeights) -> None:
    """Sample one playlist per start from `run`'s policy and let `listener` play it, logging to `log_path`."""
    recommender = Recommender(run, pool, neighbours_path, weights)
    for offset, start_id in enumerate(start_ids):
        steps = plan_playlist(recommender, start_id, run.config.playlist_length, greedy=False, seed=seed + offset)
        play_session(recommender, listener, steps, log_path, progress=False)


def run_drift_demo(base_models_dir: Path, demo_dir: Path, table: pd.DataFrame, prior_model: ListenerModel,
                   *, taste: pd.Series, neighbours: np.ndarray, neighbours_path: Path, weights: RewardWeights,
                   settings: DriftSettings = DriftSettings(), progress: bool = True) -> pd.DataFrame:
    """Play rounds with a listener of `taste` (see `drifted_taste`), fine-tune after each, and
    measure on the held-out starts.

    The policy of `base_models_dir` (notebook 06's) is copied to `demo_dir`/models as version 0.
    One row per round (0: before any feedback): the held-out mean greedy return of the fine-tuned
    and the un-tuned policy and the exact optimum under the listener's true rewards (`true_rewards`),
    the share of the gap closed, and IPS / SNIPS / DR estimates of the new policy on that round's
    log next to its simulated value (mean return of its sampled playlists from the same starts).
    """
    models_dir, log_path = demo_dir / "models", demo_dir / "interactions.jsonl"
    models_dir.mkdir(parents=True, exist_ok=True)
    log_path.unlink(missing_ok=True)
    for stale in models_dir.glob("ppo_*"):
        stale.unlink()
    shutil.copy(version_path(base_models_dir, 0), version_path(models_dir, 0))
    base_run = TrainingRun.load(version_path(models_dir, 0))
    prior_pool = TrackPool.from_table(table)
    target = DriftTarget.build(base_run, table, taste, neighbours, play_noise=settings.play_noise,
                               like_threshold=prior_model.like_threshold, n_eval_starts=settings.n_eval_starts,
                               seed=settings.seed, weights=weights)
    train_ids = np.setdiff1d(prior_pool.ids.astype(str), np.asarray(base_run.heldout_ids, dtype=str))
    listener = SimulatedListener(prior_model, table.set_index("id")["cluster"], seed=settings.seed, taste=taste,
                                 play_noise=settings.play_noise)
    rng = np.random.default_rng(settings.seed)

    def row(round_number: int, run: TrainingRun, served: TrackPool, estimates: dict[str, float]) -> dict:
        tuned = target.mean_return(run, served)
        return {"round": round_number, "fine_tuned": tuned, "untuned": target.untuned, "optimum": target.optimum,
                "gap_closed": target.gap_closed(tuned), **estimates}

    rows, run, served = [row(0, base_run, prior_pool, {})], base_run, prior_pool
    for round_number in tqdm(range(1, settings.n_rounds + 1), desc="drift rounds", disable=not progress):
        start_ids = rng.choice(train_ids, settings.playlists_per_round, replace=False)
        before = len(read_interactions(log_path)) if log_path.exists() else 0
        play_round(run, served, neighbours_path, listener, start_ids=start_ids, log_path=log_path,
                   seed=settings.seed + 1000 * round_number, weights=weights)
        log = read_interactions(log_path)
        updated, _ = update_rewards(table, log, prior_model, confidence_plays=settings.confidence_plays,
                                    prior_plays=settings.prior_plays, weights=weights)
        served = TrackPool.from_table(updated)
        run = fine_tune(models_dir, served, neighbours, settings.finetune_timesteps,
                        learning_rate=settings.learning_rate, reset_policy_head=settings.reset_policy_head)
        save_version(run, models_dir, updated, log_provenance(log))
        round_log = log.iloc[before:]
        estimates = off_policy_estimates(run, round_log, served, neighbours, weights=weights)
        simulated = target.true_return(run, served, served.rows_of(start_ids), sampling_policy(run.agent, settings.seed))
        rows.append(row(round_number, run, served, {**estimates, "simulated": simulated}))
    return pd.DataFrame(rows)
