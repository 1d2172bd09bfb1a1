"""Fine-tuning the policy from logged feedback: the reward update, versioned training, evaluation.

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
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import norm
from tqdm.auto import tqdm

from helpers.env import Catalogue, VectorPlaylistEnv
from helpers.evaluation import evaluation_starts, exact_optimum, rollout
from helpers.feedback import read_interactions
from helpers.listeners import ListenerModel, expected_listening
from helpers.play import SimulatedListener, plan_playlist, play_session
from helpers.ppo import Observations, TrainingRun, greedy_policy, make_optimizer, sampling_policy, train
from helpers.recommend import DEFAULT_ARCHITECTURE, Recommender, version_path, version_rewards_path, versions
from helpers.rewards import RewardWeights, interaction_score, reward, reward_range


def aggregate_feedback(log: pd.DataFrame, weights: RewardWeights = RewardWeights()) -> pd.DataFrame:
    """Per track of the log: plays, mean percentage_listened, like rate and mean interaction score."""
    missing = [c for c in ("track_id", "percentage_listened", "liked") if c not in log.columns]
    if missing:
        raise ValueError(f"the interaction log lacks the column(s) {missing} (read it with read_interactions)")
    scored = log.assign(interaction_score=interaction_score(log["percentage_listened"], log["liked"], weights))
    return (scored.groupby("track_id", sort=True)
            .agg(plays=("track_id", "size"), percentage_listened=("percentage_listened", "mean"),
                 like_rate=("liked", "mean"), interaction_score=("interaction_score", "mean"))
            .reset_index())


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


def expected_interaction(model: ListenerModel, weights: RewardWeights = RewardWeights()) -> np.ndarray:
    """Per cluster: listened_weight * mu_c + liked_weight * P(N(mu_c, sigma_c) > threshold)."""
    std = np.maximum(model.cluster_std, 1e-9)
    like_probability = norm.cdf((model.cluster_mean - model.like_threshold) / std)
    return weights.listened_weight * model.cluster_mean + weights.liked_weight * like_probability


def update_rewards(table: pd.DataFrame, log: pd.DataFrame, model: ListenerModel, *, confidence_plays: float = 3.0,
                   prior_plays: float = 1.0,
                   weights: RewardWeights = RewardWeights()) -> tuple[pd.DataFrame, ListenerModel]:
    """The rewards table with `reward` updated from `log` (see the module docstring), and the updated model.

    Adds the columns `prior_reward`, `plays`, `confidence` and `observed_reward` (NaN when unplayed).
    """
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
    observed = reward(feedback["interaction_score"].to_numpy(), table["proximity_score"].to_numpy(), weights)
    clusters = table["cluster"].to_numpy(np.int64)
    played = table.set_index("id").loc[log["track_id"], ["cluster", "percentage_listened"]]
    updated_model = update_listener_model(
        model, pd.DataFrame({"cluster": played["cluster"].to_numpy(),
                             "percentage_listened": log["percentage_listened"].to_numpy(),
                             "expected_listened": played["percentage_listened"].to_numpy()}), prior_plays)
    shift = weights.interaction_weight * (expected_interaction(updated_model, weights)
                                          - expected_interaction(model, weights))
    low, high = reward_range(weights)
    prior = table["reward"].to_numpy(np.float64)
    confidence = plays / (plays + confidence_plays)
    through_cluster = np.clip(prior + shift[clusters], low, high)
    new_reward = np.where(plays > 0, confidence * np.nan_to_num(observed) + (1 - confidence) * through_cluster,
                          through_cluster)
    updated = table.assign(prior_reward=prior, plays=plays.astype(np.int64), confidence=confidence,
                           observed_reward=np.where(plays > 0, observed, np.nan), reward=new_reward)
    return updated, updated_model


def log_provenance(log: pd.DataFrame) -> dict:
    """Which records a version used: their count, sessions, time span and a digest of their content."""
    content = log[["session_id", "track_id", "position", "percentage_listened", "liked"]].to_csv(index=False)
    digest = hashlib.sha256(content.encode())
    return {"n_records": int(len(log)), "sessions": sorted(log["session_id"].unique().tolist()),
            "first": str(log["timestamp"].min()) if len(log) else None,
            "last": str(log["timestamp"].max()) if len(log) else None,
            "sha256": digest.hexdigest()}


def fine_tune(models_dir: str | Path, catalogue: Catalogue, neighbours: np.ndarray, timesteps: int,
              learning_rate: float = 2e-3, reset_policy_head: bool = True,
              architecture: str = DEFAULT_ARCHITECTURE, progress: bool = False) -> TrainingRun:
    """Continue PPO from the newest version in `models_dir` for `timesteps` steps on `catalogue`'s rewards.

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
    run.catalogue_fingerprint = catalogue.fingerprint
    heldout = set(run.heldout_ids)
    starts = np.flatnonzero([track_id not in heldout for track_id in catalogue.ids])
    env = VectorPlaylistEnv(catalogue, neighbours, run.config.playlist_length, run.config.n_candidates)
    return train(run, env, starts, progress=progress)


def save_version(run: TrainingRun, models_dir: str | Path, table: pd.DataFrame, provenance: dict,
                 architecture: str = DEFAULT_ARCHITECTURE) -> int:
    """Save `run` as the next version, with its rewards table and a JSON of the log records it used."""
    version = max(versions(models_dir, architecture), default=0) + 1
    path = run.save(version_path(models_dir, version, architecture))
    table.to_parquet(version_rewards_path(models_dir, version, architecture), index=False)
    record = {"version": version, "model_version": run.model_version(), "global_step": run.global_step, **provenance}
    path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return version


def greedy_returns(run: TrainingRun, catalogue: Catalogue, neighbours: np.ndarray, start_rows: np.ndarray) -> np.ndarray:
    """Return of the greedy policy's playlist from every start, under `catalogue`'s rewards."""
    env = VectorPlaylistEnv(catalogue, neighbours, run.config.playlist_length, run.config.n_candidates)
    return rollout(env, start_rows, greedy_policy(run.agent))[1].sum(axis=1)


def logged_steps(log: pd.DataFrame, playlist_length: int) -> pd.DataFrame:
    """The chosen steps of the log (position >= 1) whose previous track is logged, with
    `current_id` (the track they were chosen from), the chosen candidate's index and its logged probability."""
    track_at = log.set_index(["session_id", "position"])["track_id"]
    steps = log[log["position"] > 0].sort_values(["session_id", "position"]).reset_index(drop=True)
    previous = pd.MultiIndex.from_arrays([steps["session_id"], steps["position"] - 1])
    steps["current_id"] = track_at.reindex(previous).to_numpy()
    steps = steps[steps["current_id"].notna()].reset_index(drop=True)
    steps["action"] = [candidates.index(track) for candidates, track in zip(steps["candidates"], steps["track_id"])]
    steps["logged_prob"] = [probs[a] for probs, a in zip(steps["probs"], steps["action"])]
    steps["steps_left"] = (playlist_length - steps["position"]) / (playlist_length - 1)
    return steps


def target_probabilities(run: TrainingRun, steps: pd.DataFrame, catalogue: Catalogue) -> np.ndarray:
    """π_new(· | logged state) over each logged step's candidates, shape (n_steps, n_candidates).

    The state is rebuilt from the catalogue; a step with fewer candidates is padded with zeros.
    """
    rows = candidate_rows(steps, catalogue, run.config.n_candidates)
    padded = np.vstack([catalogue.latents, np.zeros((1, catalogue.latent_dim), np.float32)])
    obs = Observations(current=torch.from_numpy(catalogue.latents[catalogue.rows_of(steps["current_id"])]),
                       candidates=torch.from_numpy(padded[rows]), mask=torch.from_numpy(rows >= 0),
                       steps_left=torch.tensor(steps["steps_left"].to_numpy(np.float32)))
    with torch.no_grad():
        return run.agent.policy(obs).probs.numpy()


def candidate_rows(steps: pd.DataFrame, catalogue: Catalogue, n_candidates: int) -> np.ndarray:
    """Catalogue rows of each logged step's candidates, shape (n_steps, n_candidates), padded with -1."""
    counts = steps["candidates"].str.len().to_numpy()
    rows = np.full((len(steps), n_candidates), -1)
    slots = np.arange(n_candidates) < counts[:, None]  # row-major, like the flattened lists
    rows[slots] = catalogue.rows_of(np.concatenate([*steps["candidates"], []]))
    return rows


def off_policy_estimates(run: TrainingRun, log: pd.DataFrame, catalogue: Catalogue,
                         weights: RewardWeights = RewardWeights()) -> dict[str, float]:
    """Per-decision IPS, self-normalised IPS and doubly-robust estimates of `run`'s playlist value
    (the sum of the picks' rewards) on the logged sessions.

    With ρ_{1:t} = Π_{s<=t} π_new(a_s|x_s) / π_log(a_s|x_s) over a session's steps, r_t the
    observed reward (notebook 05's formula on the logged interaction) and r̂(x, a) the reward
    model (`catalogue`'s rewards, which should be the ones the new policy was trained on):

        IPS   = (1/N) Σ_sessions Σ_t ρ_{1:t} r_t
        SNIPS = Σ_t [Σ_sessions ρ_{1:t} r_t / Σ_sessions ρ_{1:t}]
        DR    = (1/N) Σ_sessions Σ_t [ρ_{1:t} (r_t - r̂(x_t, a_t)) + ρ_{1:t-1} Σ_a π_new(a|x_t) r̂(x_t, a)]

    DR is unbiased whatever r̂ (given correct logged probabilities); a good r̂ cuts its variance.
    """
    steps = logged_steps(log, run.config.playlist_length)
    probs = target_probabilities(run, steps, catalogue)
    actions = steps["action"].to_numpy()
    ratio = probs[np.arange(len(steps)), actions] / steps["logged_prob"].to_numpy()
    sessions = steps["session_id"]
    cumulative = pd.Series(ratio).groupby(sessions.to_numpy()).cumprod()
    cumulative_ratio = cumulative.to_numpy()
    previous_ratio = cumulative.groupby(sessions.to_numpy()).shift(fill_value=1.0).to_numpy()  # ρ_{1:t-1}
    proximity = catalogue.table.set_index("id").loc[steps["track_id"], "proximity_score"].to_numpy()
    observed = reward(interaction_score(steps["percentage_listened"], steps["liked"], weights), proximity, weights)
    rows = candidate_rows(steps, catalogue, run.config.n_candidates)
    predicted = np.where(rows >= 0, catalogue.rewards[rows], 0.0)  # the reward model r̂(x, a)
    direct = (probs * predicted).sum(axis=1)
    n_sessions = sessions.nunique()
    weighted = cumulative_ratio * observed
    by_position = pd.DataFrame({"weighted": weighted, "ratio": cumulative_ratio}).groupby(steps["position"].to_numpy())
    doubly_robust = cumulative_ratio * (observed - predicted[np.arange(len(steps)), actions]) + previous_ratio * direct
    return {"ips": float(weighted.sum() / n_sessions),
            "snips": float((by_position["weighted"].sum() / by_position["ratio"].sum()).sum()),
            "dr": float(doubly_robust.sum() / n_sessions),
            "logged": float(observed.sum() / n_sessions), "n_sessions": int(n_sessions)}


def drifted_taste(table: pd.DataFrame, model: ListenerModel, n_loved: int = 2, loved_mean: float = 0.95,
                  seed: int = 42) -> tuple[pd.Series, np.ndarray]:
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
                 weights: RewardWeights = RewardWeights()) -> np.ndarray:
    """Each track's expected reward when a listener with `taste` hears it (notebook 05's formula on
    the expected listening and like probability of `SimulatedListener(taste=..., play_noise=...)`)."""
    listened, like_probability = expected_listening(taste.loc[table["id"]].to_numpy(), play_noise, like_threshold)
    expected_interaction_score = weights.listened_weight * listened + weights.liked_weight * like_probability
    return reward(expected_interaction_score, table["proximity_score"].to_numpy(), weights)


@dataclass(frozen=True)
class DriftTarget:
    """What a policy is measured against under a drifted taste: the held-out starts, the
    un-tuned policy's and the exact optimum's mean return there, under the true rewards."""

    true_catalogue: Catalogue
    neighbours: np.ndarray
    heldout_rows: np.ndarray
    untuned: float
    optimum: float

    @classmethod
    def build(cls, base_run: TrainingRun, table: pd.DataFrame, taste: pd.Series, neighbours: np.ndarray,
              play_noise: float, like_threshold: float, n_eval_starts: int, seed: int,
              weights: RewardWeights = RewardWeights()) -> "DriftTarget":
        """`n_eval_starts` of `base_run`'s held-out starts (seeded); `base_run` is the un-tuned policy."""
        if not base_run.heldout_ids:
            raise ValueError("the base checkpoint records no held-out start tracks to evaluate on")
        true_catalogue = Catalogue.from_table(table.assign(
            reward=true_rewards(table, taste, play_noise, like_threshold, weights)))
        heldout_rows = evaluation_starts(true_catalogue.rows_of(base_run.heldout_ids), n_eval_starts, seed)
        env = VectorPlaylistEnv(true_catalogue, neighbours, base_run.config.playlist_length,
                                base_run.config.n_candidates)
        optimum = float(exact_optimum(env, heldout_rows, progress=False)[1].sum(axis=1).mean())
        untuned = float(greedy_returns(base_run, true_catalogue, neighbours, heldout_rows).mean())
        return cls(true_catalogue, neighbours, heldout_rows, untuned, optimum)

    def mean_return(self, run: TrainingRun) -> float:
        """The greedy policy's mean return over the held-out starts, under the true rewards."""
        return float(greedy_returns(run, self.true_catalogue, self.neighbours, self.heldout_rows).mean())

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


def play_round(run: TrainingRun, catalogue: Catalogue, neighbours_path: Path, listener: SimulatedListener,
               start_ids: Sequence[str], log_path: Path, seed: int) -> None:
    """Sample one playlist per start from `run`'s policy and let `listener` play it, logging to `log_path`."""
    recommender = Recommender(run, catalogue, neighbours_path)
    for offset, start_id in enumerate(start_ids):
        entries = plan_playlist(recommender, start_id, run.config.playlist_length, greedy=False, seed=seed + offset)
        play_session(recommender, listener, entries, log_path, progress=False)


def run_drift_demo(base_models_dir: Path, demo_dir: Path, table: pd.DataFrame, prior_model: ListenerModel,
                   taste: pd.Series, neighbours: np.ndarray, neighbours_path: Path,
                   settings: DriftSettings = DriftSettings(), weights: RewardWeights = RewardWeights(),
                   progress: bool = True) -> pd.DataFrame:
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
    prior_catalogue = Catalogue.from_table(table)
    target = DriftTarget.build(base_run, table, taste, neighbours, settings.play_noise, prior_model.like_threshold,
                               settings.n_eval_starts, settings.seed, weights)
    train_ids = np.setdiff1d(prior_catalogue.ids.astype(str), np.asarray(base_run.heldout_ids, dtype=str))
    listener = SimulatedListener(prior_model, table.set_index("id")["cluster"], seed=settings.seed, taste=taste,
                                 play_noise=settings.play_noise)
    rng = np.random.default_rng(settings.seed)

    def row(round_number: int, run: TrainingRun, estimates: dict[str, float]) -> dict:
        tuned = target.mean_return(run)
        return {"round": round_number, "fine_tuned": tuned, "untuned": target.untuned, "optimum": target.optimum,
                "gap_closed": target.gap_closed(tuned), **estimates}

    rows, run = [row(0, base_run, {})], base_run
    for round_number in tqdm(range(1, settings.n_rounds + 1), desc="drift rounds", disable=not progress):
        start_ids = rng.choice(train_ids, settings.playlists_per_round, replace=False)
        before = len(read_interactions(log_path)) if log_path.exists() else 0
        play_round(run, prior_catalogue, neighbours_path, listener, start_ids, log_path,
                   seed=settings.seed + 1000 * round_number)
        log = read_interactions(log_path)
        updated, _ = update_rewards(table, log, prior_model, confidence_plays=settings.confidence_plays,
                                    prior_plays=settings.prior_plays, weights=weights)
        catalogue = Catalogue.from_table(updated)
        run = fine_tune(models_dir, catalogue, neighbours, settings.finetune_timesteps, settings.learning_rate,
                        settings.reset_policy_head)
        save_version(run, models_dir, updated, log_provenance(log))
        round_log = log.iloc[before:]
        estimates = off_policy_estimates(run, round_log, catalogue, weights)
        env = VectorPlaylistEnv(target.true_catalogue, neighbours, run.config.playlist_length, run.config.n_candidates)
        simulated = rollout(env, target.true_catalogue.rows_of(start_ids), sampling_policy(run.agent, settings.seed))[1]
        rows.append(row(round_number, run, {**estimates, "simulated": float(simulated.sum(axis=1).mean())}))
    return pd.DataFrame(rows)


def cluster_shares(run: TrainingRun, catalogue: Catalogue, neighbours: np.ndarray, start_rows: np.ndarray) -> pd.Series:
    """Share of the greedy policy's picks that fall in each cluster, over playlists from `start_rows`."""
    env = VectorPlaylistEnv(catalogue, neighbours, run.config.playlist_length, run.config.n_candidates)
    playlists, _ = rollout(env, start_rows, greedy_policy(run.agent))
    clusters = catalogue.table["cluster"].to_numpy(np.int64)[playlists[:, 1:]].ravel()
    n_clusters = int(catalogue.table["cluster"].max()) + 1
    return pd.Series(np.bincount(clusters, minlength=n_clusters) / clusters.size, name="share").rename_axis("cluster")
