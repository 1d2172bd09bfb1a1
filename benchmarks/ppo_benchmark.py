"""PPO benchmark: every policy on every catalogue size, side by side, and throughput.

    .venv/bin/python benchmarks/ppo_benchmark.py                      # the repository's run (embedded)
    .venv/bin/python benchmarks/ppo_benchmark.py --prepare --catalogues embedded \\
        tidytuesday=/tmp/tt synthetic-100k=/tmp/s100k synthetic-1.2M=/tmp/s1m --ablation embedded tidytuesday

Measures, on each catalogue (a finished chain 01-05, see `catalogues.py`) and on the same
held-out starts for every policy:
- the default (candidate-aware) PPO with notebook 06's defaults and the original
  architecture trained by our PPO, each with its training time; optionally the default
  policy after `--budgets` seconds, and the ablation of its inputs (`--ablation`);
- the baselines: uniform random, always nearest, the greedy oracle and the exact optimum;
- the strongest hand-written planners at a policy's serving cost (`planner_policies`: reward +
  plan value, and an exact 2-, 3- and 4-level look-ahead), each with its time for a playlist
  beside the default policy's;
- environment steps per second during training: ours against Stable-Baselines3's PPO on the
  same `PlaylistEnv` (first catalogue; needs the optional `bench` extra);
- the Recommender's time for a 10-song playlist on each catalogue (optionally also on random
  latents of `--latency-tracks` tracks).

Writes `ppo_benchmark.md` and `ppo_benchmark.csv` to `--results-dir` (default: the first
catalogue's runs/). Timings depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from catalogues import HELDOUT_FRACTION, ChainRun, add_catalogue_arguments, results_folder

from helpers.env import REWARD_FEATURES, BatchPlaylistEnv, PlaylistBatch, PlaylistEnv, TrackPool
from helpers.evaluation import (PLANNER_DEPTHS, Policy, baseline_policies, build_playlists, compare_policies,
                                lookahead_policy, planner_policies, split_start_tracks)
from helpers.ppo import PPOConfig, TrainingRun, greedy_policy, make_env, train
from helpers.recommend import Recommender
from tables import markdown_table


def without(*names: str) -> tuple[str, ...]:
    """The reward inputs of the default policy except `names`."""
    return tuple(name for name in REWARD_FEATURES if name not in names)


def greedy_policy_in(env: BatchPlaylistEnv, agent) -> Policy:
    """The agent's greedy policy reading its reward inputs from `env` (its own look-ahead depth), whatever
    environment over the same table and index builds the playlists."""
    def choose(batch: PlaylistBatch) -> np.ndarray:
        own = env.candidate_rewards(batch.candidate_rows, batch.mask, batch.playlists)
        return greedy_policy(agent)(dataclasses.replace(batch, candidate_rewards=own))
    return choose


def sb3_policy(model) -> Policy:
    """A batch policy from a Stable-Baselines3 model trained on PlaylistEnv(observation="candidates")."""
    def choose(batch: PlaylistBatch) -> np.ndarray:
        observation = {"current": batch.current, "candidates": batch.candidates,
                       "mask": batch.mask.astype(np.int8), "steps_left": batch.steps_left[:, None],
                       "candidate_rewards": batch.candidate_rewards}
        return model.predict(observation, deterministic=True)[0]
    return choose


def train_sb3(pool: TrackPool, neighbours: np.ndarray, train_rows: np.ndarray, timesteps: int,
              *, reward_scale: float, seed: int, look_ahead_depth: int):
    """SB3's PPO (default hyperparameters) on the same environment; returns the model and its steps/s."""
    from stable_baselines3 import PPO

    env = PlaylistEnv(pool, neighbours, observation="candidates", reward_scale=reward_scale,
                      start_rows=train_rows, look_ahead_depth=look_ahead_depth)
    model = PPO("MultiInputPolicy", env, seed=seed, device="cpu", verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=timesteps)
    return model, timesteps / (time.perf_counter() - start)


def playlist_latency(recommender: Recommender, repeats: int = 100) -> float:
    """Mean seconds for a 10-song greedy playlist from a random start."""
    recommender.playlist(seed=0)
    start = time.perf_counter()
    for seed in range(repeats):
        recommender.playlist(seed=seed)
    return (time.perf_counter() - start) / repeats


def planning_latency(env: BatchPlaylistEnv, policy: Policy, start_rows: np.ndarray) -> float:
    """Mean seconds for one 10-song playlist built by `policy` in `env`, one start at a time (as served)."""
    build_playlists(env, start_rows[:1], policy)
    start = time.perf_counter()
    for row in start_rows:
        build_playlists(env, np.array([row]), policy)
    return (time.perf_counter() - start) / len(start_rows)


def synthetic_recommender(run: TrainingRun, n_tracks: int, folder: Path, seed: int) -> Recommender:
    """The trained candidate-aware policy over a synthetic catalogue of `n_tracks` random tracks."""
    rng = np.random.default_rng(seed)
    latents = rng.random((n_tracks, run.latent_dim), dtype=np.float32)
    table = pd.DataFrame(latents, columns=[f"latent_{i}" for i in range(run.latent_dim)])
    table.insert(0, "id", [f"synthetic{i:07d}" for i in range(n_tracks)])
    table["reward"] = rng.uniform(0, 120, n_tracks)
    return Recommender(run, TrackPool.from_table(table, "synthetic catalogue"), folder / "synthetic_neighbours.npz")


ABLATION = {
    "every input": {},
    "no reward inputs (latents only)": {"reward_inputs": (), "planner_weight": 0.0},
    "without the planner prior (the MLP alone scores)": {"planner_weight": 0.0},
    "plan value one pick deep (look_ahead_depth 1)": {"look_ahead_depth": 1},
    "without the candidate's reward": {"reward_inputs": without("reward")},
    "without its neighbourhood's best and mean": {"reward_inputs": without("neighbour_best", "neighbour_mean")},
    "without the next offer's best and mean": {"reward_inputs": without("next_best", "next_mean")},
    "without the plan value": {"reward_inputs": without("plan_value")},
    "without Fourier features": {"n_fourier_features": 0},
}


def measure(source: ChainRun, args: argparse.Namespace, with_sb3: bool) -> tuple[pd.DataFrame, float, TrainingRun]:
    """Every policy on one catalogue: one row per policy (share of the optimum, training time, ...),
    SB3's steps per second (NaN unless `with_sb3`) and the default PPO run."""
    pool = source.pool()
    base = PPOConfig()
    neighbours = source.neighbours(pool, base)
    train_rows, heldout_rows = split_start_tracks(pool.n_tracks, HELDOUT_FRACTION, args.seed)
    envs: dict[int, BatchPlaylistEnv] = {}

    def env_searching(depth: int) -> BatchPlaylistEnv:
        """The environment whose plan value is searched `depth` picks deep, built once (a pass over the catalogue)."""
        if depth not in envs:
            envs[depth] = make_env(dataclasses.replace(base, look_ahead_depth=depth), pool, neighbours)
        return envs[depth]

    env = env_searching(base.look_ahead_depth)
    rows: list[dict] = []
    policies = baseline_policies(pool) | planner_policies(env)

    def trained(kind: str, name: str, config: PPOConfig) -> TrainingRun:
        own = env_searching(config.look_ahead_depth)
        run = train(TrainingRun.start(config, pool), own, train_rows, progress=False)
        policies[name] = lambda eval_seed, agent=run.agent: greedy_policy_in(own, agent)
        rows.append({"kind": kind, "policy": name, "training_seed": config.seed, "train_seconds": run.elapsed_seconds,
                     "env_steps": run.global_step, "steps_per_second": run.global_step / run.elapsed_seconds})
        print(f"{source.name}: {name}: {run.elapsed_seconds:.0f} s", flush=True)
        return run

    for seed in args.training_seeds:
        default_run = trained("default", f"PPO default (seed {seed})", PPOConfig(seed=seed))
        trained("original", f"PPO original (seed {seed})",
                PPOConfig.original(total_timesteps=args.original_timesteps, seed=seed))
        for budget in args.budgets:
            trained("budget", f"PPO default {budget:g} s (seed {seed})",
                    PPOConfig(total_timesteps=None, train_seconds=budget, seed=seed))
    if source.name in args.ablation:
        for name, overrides in list(ABLATION.items())[1:]:
            trained("ablation", f"PPO {name}", PPOConfig(seed=args.training_seeds[0], **overrides))
    sb3_steps_per_second = np.nan
    if with_sb3 and args.sb3_timesteps:
        torch.set_num_threads(base.torch_threads)
        model, sb3_steps_per_second = train_sb3(pool, neighbours, train_rows, args.sb3_timesteps,
                                                reward_scale=default_run.reward_scale, seed=args.training_seeds[0],
                                                look_ahead_depth=base.look_ahead_depth)
        rows.append({"kind": "sb3", "policy": f"SB3 PPO {args.sb3_timesteps // 1000}k steps",
                     "training_seed": args.training_seeds[0],
                     "train_seconds": args.sb3_timesteps / sb3_steps_per_second,
                     "env_steps": args.sb3_timesteps, "steps_per_second": sb3_steps_per_second})
        policies[rows[-1]["policy"]] = lambda eval_seed, model=model: sb3_policy(model)
        print(f"SB3: {sb3_steps_per_second:,.0f} steps/s", flush=True)

    quality = compare_policies(env, policies, heldout_rows, args.n_eval_starts, eval_seeds=tuple(args.eval_seeds),
                               progress=False)
    latency_starts = heldout_rows[:: max(1, len(heldout_rows) // args.latency_starts)][: args.latency_starts]
    # A planner is timed in the cheapest environment (its observation searches one pick deep), the policy in its own.
    cheapest = env_searching(1)
    rows += [{"policy": name, "playlist_ms": 1000 * planning_latency(cheapest, lookahead_policy(cheapest, depth),
                                                                     latency_starts)}
             for name, depth in PLANNER_DEPTHS.items()]
    rows += [{"policy": name, "playlist_ms": 1000 * planning_latency(env, policies[name](0), latency_starts)}
             for name in policies if name.startswith("PPO default (seed")]
    table = quality.reset_index().merge(pd.DataFrame(rows).groupby("policy", sort=False).first().reset_index(),
                                        on="policy", how="left")
    table["kind"] = table["kind"].fillna(table["policy"])
    table = table.astype({"env_steps": "Int64", "training_seed": "Int64"})
    table["steps_per_second"] = table["steps_per_second"].round().astype("Int64")
    return table.assign(catalogue=source.name, n_tracks=pool.n_tracks), sb3_steps_per_second, default_run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_catalogue_arguments(parser, "ppo_benchmark", "01-05")
    parser.add_argument("--budgets", type=float, nargs="*", default=[], help="also train for these seconds")
    parser.add_argument("--training-seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--original-timesteps", type=int, default=PPOConfig.original().total_timesteps)
    parser.add_argument("--ablation", nargs="*", default=[], metavar="NAME",
                        help="on these catalogues, also train without each input (notebook 06)")
    parser.add_argument("--sb3-timesteps", type=int, default=100_000, help="on the first catalogue (0: skip)")
    parser.add_argument("--n-eval-starts", type=int, default=150)
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--latency-starts", type=int, default=50,
                        help="held-out starts each policy and planner builds a playlist from, one at a time")
    parser.add_argument("--latency-tracks", type=int, default=0,
                        help="also time playlists on a synthetic catalogue this large (0: skip)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the train/held-out split")
    args = parser.parse_args(argv)

    results_dir = results_folder(args)
    tables, latency, sb3_steps_per_second = [], {}, np.nan
    for position, source in enumerate(args.catalogues):
        if args.prepare:
            source.prepare(args.seed)
        table, sb3, default_run = measure(source, args, with_sb3=position == 0)
        tables.append(table)
        sb3_steps_per_second = sb3 if position == 0 else sb3_steps_per_second
        recommender = Recommender(default_run, source.pool(), source.paths.file("neighbours"))
        latency[f"{source.name}, {table['n_tracks'].iloc[0]:,} tracks"] = playlist_latency(recommender)
        pd.concat(tables).to_csv(results_dir / "ppo_benchmark.csv", index=False)  # kept as each size finishes
    if args.latency_tracks:
        large = synthetic_recommender(default_run, args.latency_tracks, results_dir, args.seed)
        large.playlist(seed=0)  # builds (and caches) the neighbour index
        latency[f"random latents, {args.latency_tracks:,} tracks"] = playlist_latency(large)
    write_report(results_dir / "ppo_benchmark.md", pd.concat(tables, ignore_index=True), sb3_steps_per_second,
                 latency, args)
    print((results_dir / "ppo_benchmark.md").read_text())


def side_by_side(table: pd.DataFrame) -> pd.DataFrame:
    """Share of the optimum (and training seconds) of each kind of policy, one column per catalogue."""
    def cell(group: pd.DataFrame) -> str:
        share, seconds, latency = (group[c].mean() for c in ("share_of_optimum", "train_seconds", "playlist_ms"))
        low, high = group["share_of_optimum"].min(), group["share_of_optimum"].max()
        spread = f" ({low:.4f}–{high:.4f})" if len(group) > 1 else ""
        return (f"{share:.4f}{spread}" + ("" if np.isnan(seconds) else f", {seconds:.0f} s")
                + ("" if np.isnan(latency) else f", {latency:.1f} ms"))
    kinds = ["uniform random", "always nearest", "greedy oracle", *PLANNER_DEPTHS, "original", "default",
             "exact optimum"]
    grouped = table[table["kind"].isin(kinds)].groupby(["kind", "catalogue"], sort=False).apply(cell, include_groups=False)
    columns = [f"{name} ({n:,})" for name, n in table.groupby("catalogue", sort=False)["n_tracks"].first().items()]
    frame = grouped.unstack("catalogue").reindex(kinds)
    frame.columns = columns
    return frame.rename_axis("policy").reset_index()


def write_report(path: Path, table: pd.DataFrame, sb3_steps_per_second: float, latency: dict[str, float],
                 args: argparse.Namespace) -> None:
    """The benchmark's markdown report: every size side by side, ablation, throughput, latency, every policy."""
    ours = table.loc[table["kind"] == "default", "steps_per_second"].astype(float)
    ablation = table[table["kind"].isin(["ablation", "default"])].pivot_table(
        index="policy", columns="catalogue", values="share_of_optimum", sort=False)
    columns = ["catalogue", "policy", "mean_return", "ci95", "share_of_optimum", "repeats_per_episode", "diversity",
               "distinct_tracks", "train_seconds", "env_steps", "steps_per_second", "playlist_ms"]
    lines = [
        "# PPO benchmark",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}. {args.n_eval_starts} held-out starts × seeds {args.eval_seeds}; "
        f"training seeds {args.training_seeds}.",
        "",
        "## Share of the exact optimum, training seconds, milliseconds per playlist (greedy playlists on held-out "
        "starts; PPO: mean and range over the training seeds; a playlist's time is one start at a time)",
        "",
        markdown_table(side_by_side(table)),
        "",
        *(["## Ablation: the default policy without each input (training seed "
           f"{args.training_seeds[0]})", "", markdown_table(ablation.reset_index()), ""] if args.ablation else []),
        "## Throughput during training (environment steps per second)",
        "",
        f"- ours, default policy: {ours.mean():,.0f} (min {ours.min():,.0f})",
        f"- Stable-Baselines3 PPO on the same PlaylistEnv ({args.catalogues[0].name}): {sb3_steps_per_second:,.0f}",
        f"- ratio: {ours.mean() / sb3_steps_per_second:.1f}x",
        "",
        "## Playlist latency (Recommender.playlist, 10 songs, greedy)",
        "",
        *(f"- {name}: {seconds * 1000:.1f} ms" for name, seconds in latency.items()),
        "",
        "## Every policy",
        "",
        markdown_table(table[[c for c in columns if c in table.columns]]),
        "",
    ]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
