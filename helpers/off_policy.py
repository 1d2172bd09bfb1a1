"""Off-policy estimates: how a new policy would have done on sessions logged by an older one.

A logged step holds the candidates the logging policy was offered, the probabilities it gave
them and the track it chose. Re-weighting each observed reward by how much more (or less)
likely the new policy is to make the same choices gives an estimate of the new policy's value
without playing it (Precup et al. 2000; Jiang & Li 2016 for the doubly-robust form).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from helpers.env import TrackPool
from helpers.ppo import Observations, TrainingRun, make_env
from helpers.rewards import RewardWeights, interaction_score, reward


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


def target_probabilities(run: TrainingRun, steps: pd.DataFrame, log: pd.DataFrame, pool: TrackPool,
                         *, neighbours: np.ndarray) -> np.ndarray:
    """π_new(· | logged state) over each logged step's candidates, shape (n_steps, n_candidates).

    The state (latents, the tracks played before it, the candidates' reward inputs from
    `pool`) is rebuilt from the log; a step with fewer candidates is padded with zeros.
    """
    rows = candidate_rows(steps, pool, run.config.n_candidates)
    env = make_env(run.config, pool, neighbours)
    padded = np.vstack([pool.latents, np.zeros((1, pool.latent_dim), np.float32)])
    played = played_before(steps, log, pool, run.config.playlist_length)
    obs = Observations(current=torch.from_numpy(pool.latents[pool.rows_of(steps["current_id"])]),
                       candidates=torch.from_numpy(padded[rows]), mask=torch.from_numpy(rows >= 0),
                       steps_left=torch.tensor(steps["steps_left"].to_numpy(np.float32)),
                       candidate_rewards=torch.from_numpy(env.candidate_rewards(rows, rows >= 0, played)))
    with torch.no_grad():
        return run.agent.policy(obs).probs.numpy()


def played_before(steps: pd.DataFrame, log: pd.DataFrame, pool: TrackPool, playlist_length: int) -> np.ndarray:
    """Pool rows of the tracks each step's session played before it, (n_steps, playlist_length), -1 padded."""
    played = log.assign(row=pool.rows_of(log["track_id"])).pivot_table(
        index="session_id", columns="position", values="row", aggfunc="first")
    played = played.reindex(columns=range(playlist_length)).reindex(steps["session_id"]).to_numpy()
    before = (np.arange(playlist_length) < steps["position"].to_numpy()[:, None]) & ~np.isnan(played)
    return np.where(before, np.nan_to_num(played, nan=-1), -1).astype(np.int64)


def candidate_rows(steps: pd.DataFrame, pool: TrackPool, n_candidates: int) -> np.ndarray:
    """Pool rows of each logged step's candidates, shape (n_steps, n_candidates), padded with -1."""
    counts = steps["candidates"].str.len().to_numpy()
    rows = np.full((len(steps), n_candidates), -1)
    slots = np.arange(n_candidates) < counts[:, None]  # row-major, like the flattened lists
    rows[slots] = pool.rows_of(np.concatenate([*steps["candidates"], []]))
    return rows


def observed_rewards(steps: pd.DataFrame, pool: TrackPool, weights: RewardWeights,
                     predicted: np.ndarray) -> np.ndarray:
    """Notebook 05's reward of each logged step; where `liked` is unknown (<NA>) the reward is
    missing and the reward model's prediction `predicted` stands in (never a like of 0)."""
    observed = np.asarray(predicted, dtype=np.float64).copy()
    known = steps["liked"].notna().to_numpy()
    proximity = pool.table.set_index("id").loc[steps["track_id"][known], "proximity_score"].to_numpy()
    liked = steps["liked"][known].to_numpy(np.int64)
    observed[known] = reward(interaction_score(steps["percentage_listened"][known], liked, weights), proximity, weights)
    return observed


def off_policy_estimates(run: TrainingRun, log: pd.DataFrame, pool: TrackPool, neighbours: np.ndarray,
                         *, weights: RewardWeights) -> dict[str, float]:
    """Per-decision IPS, self-normalised IPS and doubly-robust estimates of `run`'s playlist value
    (the sum of the picks' rewards) on the logged sessions.

    With ρ_{1:t} = Π_{s<=t} π_new(a_s|x_s) / π_log(a_s|x_s) over a session's steps, r_t the
    observed reward (notebook 05's formula on the logged interaction) and r̂(x, a) the reward
    model (`pool`'s rewards, which should be the ones the new policy was trained on; it also
    stands in for r_t where the logged `liked` is unknown):

        IPS   = (1/N) Σ_sessions Σ_t ρ_{1:t} r_t
        SNIPS = Σ_t [Σ_sessions ρ_{1:t} r_t / Σ_sessions ρ_{1:t}]
        DR    = (1/N) Σ_sessions Σ_t [ρ_{1:t} (r_t - r̂(x_t, a_t)) + ρ_{1:t-1} Σ_a π_new(a|x_t) r̂(x_t, a)]

    DR is unbiased whatever r̂ (given correct logged probabilities); a good r̂ cuts its variance.
    """
    steps = logged_steps(log, run.config.playlist_length)
    probs = target_probabilities(run, steps, log, pool, neighbours=neighbours)
    actions = steps["action"].to_numpy()
    ratio = probs[np.arange(len(steps)), actions] / steps["logged_prob"].to_numpy()
    sessions = steps["session_id"]
    cumulative = pd.Series(ratio).groupby(sessions.to_numpy()).cumprod()
    cumulative_ratio = cumulative.to_numpy()
    previous_ratio = cumulative.groupby(sessions.to_numpy()).shift(fill_value=1.0).to_numpy()  # ρ_{1:t-1}
    rows = candidate_rows(steps, pool, run.config.n_candidates)
    predicted = np.where(rows >= 0, pool.rewards[rows], 0.0)  # the reward model r̂(x, a)
    observed = observed_rewards(steps, pool, weights, predicted[np.arange(len(steps)), actions])
    direct = (probs * predicted).sum(axis=1)
    n_sessions = sessions.nunique()
    weighted = cumulative_ratio * observed
    by_position = pd.DataFrame({"weighted": weighted, "ratio": cumulative_ratio}).groupby(steps["position"].to_numpy())
    doubly_robust = cumulative_ratio * (observed - predicted[np.arange(len(steps)), actions]) + previous_ratio * direct
    return {"ips": float(weighted.sum() / n_sessions),
            "snips": float((by_position["weighted"].sum() / by_position["ratio"].sum()).sum()),
            "dr": float(doubly_robust.sum() / n_sessions),
            "logged": float(observed.sum() / n_sessions), "n_sessions": int(n_sessions)}
