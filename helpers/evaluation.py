"""Honest evaluation of playlist policies: held-out starts, baselines and the exact optimum.

A policy is a function from a `PlaylistBatch` to one action per playlist. Every policy is
run on the same held-out start tracks (never used as training starts), for several seeds;
returns are sums of the picked tracks' rewards in the table's units. The exact optimum is
found by branch-and-bound with the true rewards, so "share of the optimum" is exact.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.env import BatchPlaylistEnv, PlaylistBatch, TrackPool

Policy = Callable[[PlaylistBatch], np.ndarray]
PolicyFactory = Callable[[int], Policy]
HELDOUT_FRACTION = 0.1  # share of the tracks kept out of the training starts (notebook 06's default)


def split_start_tracks(n_tracks: int, heldout_fraction: float = HELDOUT_FRACTION,
                       seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Rows of training starts and of held-out starts: a seeded random partition of the catalogue."""
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must lie strictly between 0 and 1, got {heldout_fraction}.")
    n_heldout = int(round(heldout_fraction * n_tracks))
    if not 0 < n_heldout < n_tracks:
        raise ValueError(f"a held-out fraction of {heldout_fraction} of {n_tracks} tracks leaves one side empty.")
    permutation = np.random.default_rng(seed).permutation(n_tracks)
    return np.sort(permutation[n_heldout:]), np.sort(permutation[:n_heldout])


def build_playlists(env: BatchPlaylistEnv, start_rows: np.ndarray, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """Build one playlist per start with `policy`; return playlists (rows) and per-pick rewards."""
    return finish_playlists(env, env.reset(start_rows), policy)


def finish_playlists(env: BatchPlaylistEnv, batch: PlaylistBatch, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """Complete the playlists `env` is building, from its observation `batch` (of `reset` or
    `resume`), with `policy`; return playlists (rows) and per-pick rewards (0 for picks made before)."""
    rewards = np.zeros((len(env.playlists), env.n_picks))
    done = False
    while not done:
        step = env.step_index
        batch, rewards[:, step], done = env.step(policy(batch))
    return env.playlists.copy(), rewards


def random_policy(seed: int) -> Policy:
    """Uniformly random among the real candidates."""
    rng = np.random.default_rng(seed)
    return lambda batch: np.argmax(rng.random(batch.mask.shape) * batch.mask, axis=1)


def nearest_policy(seed: int = 0) -> Policy:
    """Always the nearest candidate (the first one is real whenever any is)."""
    return lambda batch: np.zeros(len(batch.mask), dtype=np.int64)


def greedy_oracle_policy(rewards: np.ndarray) -> Policy:
    """Knows every reward and picks the best candidate one step ahead."""
    def choose(batch: PlaylistBatch) -> np.ndarray:
        return np.argmax(np.where(batch.mask, rewards[batch.candidate_rows], -np.inf), axis=1)
    return choose


def lookahead_policy(env: BatchPlaylistEnv, depth: int) -> Policy:
    """A hand-written planner on `env`'s reward table: the candidate with the best
    `BatchPlaylistEnv.look_ahead` at `depth` (exact for `depth` picks after it). Depth 1 is
    "reward + plan value" (a policy's reward inputs, read by a rule); depth `n_picks` is the
    exact optimum."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")

    def choose(batch: PlaylistBatch) -> np.ndarray:
        return np.argmax(env.look_ahead(batch.playlists, batch.candidate_rows, batch.mask, depth=depth), axis=1)
    return choose


PLANNER_DEPTHS = {"reward + plan value": 1, "2-level look-ahead": 2, "3-level look-ahead": 3,
                  "4-level look-ahead": 4}


def planner_policies(env: BatchPlaylistEnv) -> dict[str, PolicyFactory]:
    """The strongest hand-written planners at a policy's serving cost, by name: they read the
    table `env` serves and nothing more."""
    return {name: (lambda seed, depth=depth: lookahead_policy(env, depth)) for name, depth in PLANNER_DEPTHS.items()}


def largest_gain(env: BatchPlaylistEnv, policy: Policy, reference: Policy,
                 start_rows: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """The start among `start_rows` where `policy`'s playlist returns the most more than
    `reference`'s: (its row, `policy`'s playlist, `reference`'s playlist), as catalogue rows."""
    playlists, rewards = build_playlists(env, start_rows, policy)
    reference_playlists, reference_rewards = build_playlists(env, start_rows, reference)
    best = int(np.argmax(rewards.sum(axis=1) - reference_rewards.sum(axis=1)))
    return int(start_rows[best]), playlists[best], reference_playlists[best]


def reward_to_go_bounds(neighbours: np.ndarray, rewards: np.ndarray, playlist_length: int,
                        n_candidates: int) -> np.ndarray:
    """Upper bounds (n_picks + 1, n_tracks) on the reward still to collect.

    `bounds[t, i]` bounds what picks t, t+1, ... can add when track i is current before pick t.
    The candidates of pick t lie among the first `n_candidates + t` entries of the current
    track's neighbour row (at most t of them are taken), so relaxing "no repeats" gives the
    recursion bounds[t, i] = max over those entries j of (reward[j] + bounds[t + 1, j]).
    """
    n_picks = playlist_length - 1
    bounds = np.zeros((n_picks + 1, len(rewards)))
    for t in range(n_picks - 1, -1, -1):
        rows = neighbours[:, : n_candidates + t]
        values = np.where(rows >= 0, rewards[rows] + bounds[t + 1, rows], -np.inf)
        bounds[t] = values.max(axis=1)
    return bounds


def exact_optimum(env: BatchPlaylistEnv, start_rows: np.ndarray,
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The best playlist from every start, by depth-first branch-and-bound with the true rewards.

    Children are explored best bound first and a branch is cut as soon as its reward so far plus
    `reward_to_go_bounds` cannot beat the best playlist found. Returns playlists (rows) and
    per-pick rewards, like `build_playlists`.
    """
    rewards, neighbours, k, n_picks = env.pool.rewards, env.neighbours, env.n_candidates, env.n_picks
    bounds = reward_to_go_bounds(neighbours, rewards, env.playlist_length, k)
    playlists = np.zeros((len(start_rows), env.playlist_length), dtype=np.int64)
    for b, start in enumerate(tqdm(start_rows, desc="exact optimum", disable=not progress)):
        best_total, best_playlist = -np.inf, None
        playlist = [int(start)]

        def search(total: float) -> None:
            nonlocal best_total, best_playlist
            t = len(playlist) - 1
            if t == n_picks:
                if total > best_total:
                    best_total, best_playlist = total, list(playlist)
                return
            row = neighbours[playlist[-1]].tolist()
            candidates = [j for j in row if j >= 0 and j not in playlist][:k]
            optimistic = rewards[candidates] + bounds[t + 1, candidates]
            for order in np.argsort(-optimistic, kind="stable"):
                if total + optimistic[order] <= best_total:
                    break
                playlist.append(candidates[order])
                search(total + rewards[candidates[order]])
                playlist.pop()

        search(0.0)
        playlists[b] = best_playlist
    return playlists, rewards[playlists[:, 1:]]


def mean_pairwise_distance(latents: np.ndarray) -> np.ndarray:
    """Mean distance between the tracks of each playlist; `latents` is (batch, length, dim)."""
    differences = latents[:, :, None, :] - latents[:, None, :, :]
    distances = np.linalg.norm(differences, axis=-1)
    length = latents.shape[1]
    return distances.sum(axis=(1, 2)) / (length * (length - 1))


def playlist_metrics(playlists: np.ndarray, returns: np.ndarray, pool: TrackPool) -> dict[str, float]:
    """Return, its 95% confidence interval, repeats, diversity and coverage of a set of playlists."""
    n_episodes, length = playlists.shape
    repeats = length - np.array([len(np.unique(p)) for p in playlists])
    metrics = {
        "episodes": n_episodes,
        "mean_return": float(returns.mean()),
        "ci95": float(1.96 * returns.std(ddof=1) / np.sqrt(n_episodes)) if n_episodes > 1 else float("nan"),
        "repeats_per_episode": float(repeats.mean()),
        "diversity": float(mean_pairwise_distance(pool.latents[playlists]).mean()),
        "distinct_tracks": int(len(np.unique(playlists[:, 1:]))),
    }
    if "cluster" in pool.table.columns:
        clusters = pool.table["cluster"].to_numpy()
        metrics["distinct_clusters"] = int(len(np.unique(clusters[playlists[:, 1:]])))
    return metrics


def baseline_policies(pool: TrackPool) -> dict[str, PolicyFactory]:
    """The reference policies every learned one is compared with, by name."""
    return {
        "uniform random": random_policy,
        "always nearest": nearest_policy,
        "greedy oracle": lambda seed: greedy_oracle_policy(pool.rewards),
    }


def evaluation_starts(heldout_rows: np.ndarray, n_starts: int, seed: int) -> np.ndarray:
    """`n_starts` of the held-out start rows, drawn without replacement with `seed` (all when fewer).

    Evaluation cost then does not grow with the catalogue: 10% of 1.2M tracks are held out.
    """
    if n_starts < 1:
        raise ValueError(f"n_starts must be >= 1, got {n_starts}")
    return np.random.default_rng(seed).choice(heldout_rows, min(n_starts, len(heldout_rows)), replace=False)


def compare_policies(env: BatchPlaylistEnv, policies: dict[str, PolicyFactory], heldout_rows: np.ndarray,
                     n_eval_starts: int = 150, *, eval_seeds: tuple[int, ...] = (0, 1, 2),
                     progress: bool = True) -> pd.DataFrame:
    """Evaluate every policy and the exact optimum on the same held-out starts.

    For each seed, `n_eval_starts` starts are drawn from `heldout_rows` and every policy
    factory is called with that seed. Returns one row per policy (episodes of all seeds pooled)
    with mean return ± 95% CI, share of the optimum, repeats, diversity and coverage.
    """
    heldout_rows = np.asarray(heldout_rows)
    if len(heldout_rows) == 0 or not eval_seeds:
        raise ValueError("compare_policies needs held-out start rows and at least one seed.")
    runs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"exact optimum": []} | {name: [] for name in policies}
    for seed in tqdm(eval_seeds, desc="evaluating policies", disable=not progress):
        starts = evaluation_starts(heldout_rows, n_eval_starts, seed)
        runs["exact optimum"].append(exact_optimum(env, starts, progress=False))
        for name, factory in policies.items():
            runs[name].append(build_playlists(env, starts, factory(seed)))
    rows = []
    for name, results in runs.items():
        playlists = np.concatenate([p for p, _ in results])
        returns = np.concatenate([r.sum(axis=1) for _, r in results])
        rows.append({"policy": name, **playlist_metrics(playlists, returns, env.pool)})
    table = pd.DataFrame(rows).set_index("policy")
    table.insert(2, "share_of_optimum", table["mean_return"] / table.loc["exact optimum", "mean_return"])
    return table.sort_values("mean_return")
