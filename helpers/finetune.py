"""Fine-tuning the policy from logged feedback: the reward update and versioned training.

Reward update (notebook 08), in two steps.

1. Every cluster c learns from the plays in it. The listener model's mean moves by the average
   surprise of the n_c plays, with a prior worth k0 plays (`prior_plays`):

       mu_c' = mu_c + Σ (percentage_listened - x̂_j) / (k0 + n_c)

   where x̂_j is what notebook 04 expected of the played track j (its `percentage_listened` in the
   rewards table). Comparing each play with its own track's expectation, not with the cluster
   mean, matters because the policy plays the tracks it believes are good: their raw listening
   is above the cluster mean even when the listener has not changed. Every track's reward then
   moves by the change of its cluster's expected interaction score,

       r̃_i = r_i + interaction_weight * (listened_weight * (mu_c' - mu_c)
                                          + liked_weight * (Φ((mu_c' - θ) / σ_c) - Φ((mu_c - θ) / σ_c)))

   with θ the like threshold and Φ the standard normal CDF, clipped to the reward's range.

2. A track i played n_i times with mean interaction score
   Ī_i = mean(listened_weight * percentage_listened + liked_weight * liked) blends its own
   evidence with that cluster-informed prior r̃_i:

       observed_i = interaction_weight * Ī_i + proximity_weight * proximity_i     (notebook 05's formula)
       w_i        = n_i / (n_i + k)                                              (confidence, k = `confidence_plays`)
       r_i'       = w_i * observed_i + (1 - w_i) * r̃_i

   Blending with r̃_i rather than r_i matters after a drift: one play of a track in a cluster
   the listener now loves would otherwise pull it below its unplayed neighbours.

An imported play whose share is only the export's 0/1 evidence (`share_from_evidence`: the song's
length was unknown) has no share to average and is left out here; the taste model
(`helpers.taste`) is what learns from it.

A `liked` logged as unknown (<NA>: Spotify's library check failed) is missing, never 0: the
like rate of a track is taken over its plays whose like is known, and a track with none known
uses its cluster's like probability under the updated listener model, Φ((mu_c' - θ) / σ_c).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.env import TrackPool
from helpers.evaluation import build_playlists
from helpers.listeners import ListenerModel
from helpers.paths import save_parquet, write_text_atomic
from helpers.ppo import TrainingRun, greedy_policy, make_env, make_optimizer, train
from helpers.recommend import DEFAULT_ARCHITECTURE, version_path, version_record_path, version_rewards_path, versions
from helpers.rewards import RewardWeights, interaction_score, reward, reward_range


def aggregate_feedback(log: pd.DataFrame, weights: RewardWeights) -> pd.DataFrame:
    """Per track of the log: plays, mean percentage_listened, like rate and mean interaction score.

    An unknown `liked` (<NA>) is left out of the like rate, which is NaN when no like of the
    track is known (and so is its interaction score).
    """
    missing = [c for c in ("track_id", "percentage_listened", "liked") if c not in log.columns]
    if missing:
        raise ValueError(f"the interaction log lacks the column(s) {missing} (read it with read_interactions)")
    liked = pd.to_numeric(log["liked"]).astype("Float64")
    if not liked.dropna().isin([0, 1]).all():
        raise ValueError("liked must be 0, 1 or missing")
    feedback = (log.assign(liked=liked).groupby("track_id", sort=True)
                .agg(plays=("track_id", "size"), percentage_listened=("percentage_listened", "mean"),
                     like_rate=("liked", "mean"))
                .reset_index())
    feedback["like_rate"] = feedback["like_rate"].astype("float64")
    feedback["interaction_score"] = interaction_score(feedback["percentage_listened"], feedback["like_rate"], weights)
    return feedback


def update_listener_model(model: ListenerModel, cluster_plays: pd.DataFrame, prior_plays: float) -> ListenerModel:
    """mu_c' = mu_c + Σ (x - x̂) / (k0 + n_c) per cluster, clipped to [0, 1], from `cluster_plays`
    (cluster, percentage_listened x, expected_listened x̂)."""
    if prior_plays <= 0:
        raise ValueError(f"prior_plays must be > 0, got {prior_plays}")
    clusters = cluster_plays["cluster"].to_numpy(np.int64)
    n = np.bincount(clusters, minlength=model.n_clusters)[: model.n_clusters]
    surprise = (cluster_plays["percentage_listened"] - cluster_plays["expected_listened"]).to_numpy(np.float64)
    total = np.bincount(clusters, weights=surprise, minlength=model.n_clusters)[: model.n_clusters]
    mean = np.clip(model.cluster_mean + total / (prior_plays + n), 0.0, 1.0)
    return ListenerModel(mean, model.cluster_std, model.like_threshold, model.seed)


def expected_interaction(model: ListenerModel, weights: RewardWeights) -> np.ndarray:
    """Per cluster: listened_weight * mu_c + liked_weight * P(N(mu_c, sigma_c) > threshold)."""
    return interaction_score(model.cluster_mean, model.like_probability(), weights)


def shift_through_clusters(table: pd.DataFrame, model: ListenerModel, updated_model: ListenerModel,
                           weights: RewardWeights) -> np.ndarray:
    """Step 1 of the update: every track's reward moved by the change of its cluster's expected
    interaction score from `model` to `updated_model`, clipped to the reward's range."""
    shift = weights.interaction_weight * (expected_interaction(updated_model, weights)
                                          - expected_interaction(model, weights))
    low, high = reward_range(weights)
    return np.clip(table["reward"].to_numpy(np.float64) + shift[table["cluster"].to_numpy(np.int64)], low, high)


def update_rewards(table: pd.DataFrame, log: pd.DataFrame, model: ListenerModel, *, confidence_plays: float,
                   prior_plays: float, weights: RewardWeights) -> tuple[pd.DataFrame, ListenerModel]:
    """The rewards table with `reward` updated from `log` (see the module docstring), and the updated model.

    Adds the columns `prior_reward`, `plays`, `confidence` and `observed_reward` (NaN when unplayed).
    Records marked `share_from_evidence` are left out (no measured share).
    """
    if "share_from_evidence" in log.columns:
        log = log[~log["share_from_evidence"].to_numpy(bool)]
    if confidence_plays <= 0:
        raise ValueError(f"confidence_plays must be > 0, got {confidence_plays}")
    missing = [c for c in ("id", "cluster", "reward", "proximity_score", "percentage_listened") if c not in table]
    if missing:
        raise ValueError(f"the rewards table lacks the column(s) {missing} (notebook 05's rewards.parquet has them)")
    unknown = sorted(set(log["track_id"]) - set(table["id"]))
    if unknown:
        raise ValueError(f"the log holds {len(unknown)} track(s) not in the rewards table, e.g. {unknown[:3]}")
    feedback = aggregate_feedback(log, weights).set_index("track_id").reindex(table["id"])
    plays = feedback["plays"].fillna(0).to_numpy()
    clusters = table["cluster"].to_numpy(np.int64)
    played = table.set_index("id").loc[log["track_id"], ["cluster", "percentage_listened"]]
    updated_model = update_listener_model(
        model, pd.DataFrame({"cluster": played["cluster"].to_numpy(),
                             "percentage_listened": log["percentage_listened"].to_numpy(),
                             "expected_listened": played["percentage_listened"].to_numpy()}), prior_plays)
    like_rate = feedback["like_rate"].to_numpy()
    like_rate = np.where(np.isnan(like_rate), updated_model.like_probability()[clusters], like_rate)
    observed = np.full(len(table), np.nan)
    heard = plays > 0
    observed[heard] = reward(interaction_score(feedback["percentage_listened"].to_numpy()[heard],
                                               like_rate[heard], weights),
                             table["proximity_score"].to_numpy()[heard], weights)
    prior = table["reward"].to_numpy(np.float64)
    confidence = plays / (plays + confidence_plays)
    through_cluster = shift_through_clusters(table, model, updated_model, weights)
    new_reward = np.where(heard, confidence * np.nan_to_num(observed) + (1 - confidence) * through_cluster,
                          through_cluster)
    updated = table.assign(prior_reward=prior, plays=plays.astype(np.int64), confidence=confidence,
                           observed_reward=observed, reward=new_reward)
    return updated, updated_model


def log_provenance(log: pd.DataFrame) -> dict:
    """Which records a version used: their count, sessions, time span and a digest of their content."""
    content = log[["session_id", "track_id", "position", "percentage_listened", "liked"]].to_csv(index=False)
    digest = hashlib.sha256(content.encode())
    return {"n_records": int(len(log)), "sessions": sorted(log["session_id"].unique().tolist()),
            "first": str(log["timestamp"].min()) if len(log) else None,
            "last": str(log["timestamp"].max()) if len(log) else None,
            "sha256": digest.hexdigest()}


def fine_tune(models_dir: str | Path, pool: TrackPool, neighbours: np.ndarray, timesteps: int,
              *, learning_rate: float, reset_policy_head: bool,
              architecture: str = DEFAULT_ARCHITECTURE, progress: bool = False) -> TrainingRun:
    """Continue PPO from the newest version in `models_dir` for `timesteps` steps on `pool`'s rewards.

    The learning rate is constant (no annealing); held-out starts stay out of the training starts.
    With `reset_policy_head` the actor's output layer is re-initialised first
    (`ActorCritic.reset_policy_head`, seeded by the config's seed and the version number) and the
    optimiser restarts; without it the checkpoint's weights and optimiser state continue as saved.
    """
    saved = versions(models_dir, architecture)
    if not saved:
        raise FileNotFoundError(f"no {architecture} policy in {models_dir}: run notebook 06_ppo first")
    run = TrainingRun.load(version_path(models_dir, saved[-1], architecture))
    if reset_policy_head:
        run.agent.reset_policy_head(run.config.seed + saved[-1] + 1)
        run.optimizer = make_optimizer(run.agent, learning_rate)
    run.config = dataclasses.replace(run.config, total_timesteps=run.global_step + timesteps, train_seconds=None,
                                     learning_rate=learning_rate, anneal_lr=False)
    run.optimizer.param_groups[0]["lr"] = learning_rate
    run.pool_fingerprint = pool.fingerprint
    heldout = set(run.heldout_ids)
    starts = np.flatnonzero([track_id not in heldout for track_id in pool.ids])
    env = make_env(run.config, pool, neighbours)
    return train(run, env, starts, progress=progress)


def save_version(run: TrainingRun, models_dir: str | Path, table: pd.DataFrame, provenance: dict,
                 *, architecture: str = DEFAULT_ARCHITECTURE) -> int:
    """Save `run` as the next version, with its rewards table and a JSON of the log records it used."""
    version = max(versions(models_dir, architecture), default=0) + 1
    run.save(version_path(models_dir, version, architecture))
    save_parquet(table, version_rewards_path(models_dir, version, architecture))
    record = {"version": version, "model_version": run.model_version(), "global_step": run.global_step, **provenance}
    write_text_atomic(version_record_path(models_dir, version, architecture), json.dumps(record, indent=2) + "\n")
    return version


def greedy_returns(run: TrainingRun, pool: TrackPool, neighbours: np.ndarray, start_rows: np.ndarray) -> np.ndarray:
    """Return of the greedy policy's playlist from every start, under `pool`'s rewards."""
    env = make_env(run.config, pool, neighbours)
    return build_playlists(env, start_rows, greedy_policy(run.agent))[1].sum(axis=1)


def cluster_shares(run: TrainingRun, pool: TrackPool, neighbours: np.ndarray, start_rows: np.ndarray) -> pd.Series:
    """Share of the greedy policy's picks that fall in each cluster, over playlists from `start_rows`."""
    env = make_env(run.config, pool, neighbours)
    playlists, _ = build_playlists(env, start_rows, greedy_policy(run.agent))
    clusters = pool.table["cluster"].to_numpy(np.int64)[playlists[:, 1:]].ravel()
    n_clusters = int(pool.table["cluster"].max()) + 1
    return pd.Series(np.bincount(clusters, minlength=n_clusters) / clusters.size, name="share").rename_axis("cluster")
