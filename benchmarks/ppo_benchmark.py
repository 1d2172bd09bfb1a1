"""PPO benchmark on the chain's rewards table: quality against training time, and throughput.

    .venv/bin/python benchmarks/ppo_benchmark.py                      # the repository's data/processed
    .venv/bin/python benchmarks/ppo_benchmark.py --output-dir /tmp/run --budgets 15 30 60

Measures, in one process and on the same held-out starts:
- the candidate-aware PPO's share of the exact optimum after 15/30/60 s of training (one
  fresh run per budget and training seed, the learning rate annealed over each budget);
- the original architecture trained by our PPO, and the baselines (random, nearest, greedy
  oracle, exact optimum);
- environment steps per second during training: ours against Stable-Baselines3's PPO on the
  same `PlaylistEnv` (needs the optional `bench` extra), and SB3's share of the optimum;
- the Recommender's time for a 10-song playlist, optionally on a synthetic catalogue of
  `--latency-tracks` tracks (e.g. 1200000, the full Kaggle size).

Writes `ppo_benchmark.md` and `ppo_benchmark.csv` to `--results-dir` (default: the run's runs/).
Timings depend on the machine and on what else runs on it; the report says how many cores.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers.env import (
    Catalogue,
    PlaylistBatch,
    PlaylistEnv,
    VectorPlaylistEnv,
    load_neighbour_index,
    neighbours_needed,
)
from helpers.evaluation import Policy, baseline_policies, compare_policies, split_start_tracks
from helpers.paths import ProjectPaths
from helpers.ppo import PPOConfig, TrainingRun, greedy_policy, train
from helpers.recommend import NEIGHBOURS_FILE, Recommender
from tables import markdown_table


def sb3_policy(model) -> Policy:
    """A batch policy from a Stable-Baselines3 model trained on PlaylistEnv(observation="candidates")."""
    def choose(batch: PlaylistBatch) -> np.ndarray:
        observation = {"current": batch.current, "candidates": batch.candidates,
                       "mask": batch.mask.astype(np.int8), "steps_left": batch.steps_left[:, None],
                       "candidate_rewards": batch.candidate_rewards}
        return model.predict(observation, deterministic=True)[0]
    return choose


def train_sb3(catalogue: Catalogue, neighbours: np.ndarray, train_rows: np.ndarray, timesteps: int,
              reward_scale: float, seed: int):
    """SB3's PPO (default hyperparameters) on the same environment; returns the model and its steps/s."""
    from stable_baselines3 import PPO

    env = PlaylistEnv(catalogue, neighbours, observation="candidates", reward_scale=reward_scale,
                      start_rows=train_rows)
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


def synthetic_recommender(run: TrainingRun, n_tracks: int, folder: Path, seed: int) -> Recommender:
    """The trained candidate-aware policy over a synthetic catalogue of `n_tracks` random tracks."""
    rng = np.random.default_rng(seed)
    latents = rng.random((n_tracks, run.latent_dim), dtype=np.float32)
    table = pd.DataFrame(latents, columns=[f"latent_{i}" for i in range(run.latent_dim)])
    table.insert(0, "id", [f"synthetic{i:07d}" for i in range(n_tracks)])
    table["reward"] = rng.uniform(0, 120, n_tracks)
    return Recommender(run, Catalogue.from_table(table, "synthetic catalogue"), folder / "synthetic_neighbours.npz")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", help="root of the chain's run (default: the repository)")
    parser.add_argument("--results-dir", help="where to write ppo_benchmark.md/.csv (default: <root>/runs)")
    parser.add_argument("--budgets", type=float, nargs="+", default=[15, 30, 60], help="training seconds")
    parser.add_argument("--training-seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--original-timesteps", type=int, default=PPOConfig.original().total_timesteps)
    parser.add_argument("--sb3-timesteps", type=int, default=100_000)
    parser.add_argument("--n-eval-starts", type=int, default=150)
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--latency-tracks", type=int, default=0,
                        help="also time playlists on a synthetic catalogue this large (0: skip)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the train/held-out split")
    args = parser.parse_args(argv)

    paths = ProjectPaths.at(args.output_dir)
    results_dir = Path(args.results_dir) if args.results_dir else paths.runs
    results_dir.mkdir(parents=True, exist_ok=True)
    catalogue = Catalogue.from_parquet(paths.processed_file("rewards.parquet", produced_by="05_rewards"))
    base = PPOConfig()
    neighbours = load_neighbour_index(catalogue, neighbours_needed(base.playlist_length, base.n_candidates),
                                      cache_path=paths.processed / NEIGHBOURS_FILE)
    train_rows, heldout_rows = split_start_tracks(catalogue.n_tracks, 0.1, args.seed)
    env = VectorPlaylistEnv(catalogue, neighbours, base.playlist_length, base.n_candidates)
    rows: list[dict] = []
    policies = baseline_policies(catalogue)

    def record(kind: str, name: str, seed: int | None, seconds: float, steps: int, agent_policy) -> None:
        policies[name] = lambda eval_seed, policy=agent_policy: policy
        rows.append({"kind": kind, "policy": name, "training_seed": seed, "train_seconds": seconds,
                     "env_steps": steps, "steps_per_second": steps / seconds if seconds else np.nan})

    for seed in args.training_seeds:
        for budget in args.budgets:
            config = PPOConfig(total_timesteps=None, train_seconds=budget, seed=seed)
            run = train(TrainingRun.start(config, catalogue), env, train_rows, progress=False)
            record("candidate-aware", f"PPO candidate-aware {budget:g} s (seed {seed})", seed,
                   run.elapsed_seconds, run.global_step, greedy_policy(run.agent))
            print(f"candidate-aware, seed {seed}, {budget:g} s: {run.global_step:,} steps", flush=True)
        config = PPOConfig.original(total_timesteps=args.original_timesteps, seed=seed)
        original = train(TrainingRun.start(config, catalogue), env, train_rows, progress=False)
        record("original", f"PPO original (seed {seed})", seed, original.elapsed_seconds, original.global_step,
               greedy_policy(original.agent))
        print(f"original, seed {seed}: {original.elapsed_seconds:.0f} s", flush=True)
    config = PPOConfig.original(learning_rate=1e-4, gamma=0.95, total_timesteps=args.original_timesteps,
                                seed=args.training_seeds[0])
    as_designed = train(TrainingRun.start(config, catalogue), env, train_rows, progress=False)
    record("original", "PPO original, the original lr 1e-4 and gamma 0.95", config.seed,
           as_designed.elapsed_seconds, as_designed.global_step, greedy_policy(as_designed.agent))
    default_run = train(TrainingRun.start(PPOConfig(seed=args.training_seeds[0]), catalogue), env, train_rows,
                        progress=False)
    record("candidate-aware", "PPO candidate-aware, default timesteps", args.training_seeds[0],
           default_run.elapsed_seconds, default_run.global_step, greedy_policy(default_run.agent))

    sb3_steps_per_second = np.nan
    if args.sb3_timesteps:
        torch.set_num_threads(base.torch_threads)
        model, sb3_steps_per_second = train_sb3(catalogue, neighbours, train_rows, args.sb3_timesteps,
                                                default_run.reward_scale, args.training_seeds[0])
        rows.append({"kind": "sb3", "policy": f"SB3 PPO {args.sb3_timesteps // 1000}k steps",
                     "training_seed": args.training_seeds[0],
                     "train_seconds": args.sb3_timesteps / sb3_steps_per_second,
                     "env_steps": args.sb3_timesteps, "steps_per_second": sb3_steps_per_second})
        policies[rows[-1]["policy"]] = lambda eval_seed, model=model: sb3_policy(model)
        print(f"SB3: {sb3_steps_per_second:,.0f} steps/s", flush=True)

    quality = compare_policies(env, policies, heldout_rows, args.n_eval_starts, tuple(args.eval_seeds),
                               progress=False)
    table = quality.reset_index().merge(pd.DataFrame(rows), on="policy", how="left")
    table["kind"] = table["kind"].fillna("baseline")
    table = table.astype({"env_steps": "Int64", "training_seed": "Int64"})
    table["steps_per_second"] = table["steps_per_second"].round().astype("Int64")
    table.to_csv(results_dir / "ppo_benchmark.csv", index=False)

    recommender = Recommender(default_run, catalogue, paths.processed / NEIGHBOURS_FILE)
    latency = {"embedded catalogue": playlist_latency(recommender)}
    if args.latency_tracks:
        large = synthetic_recommender(default_run, args.latency_tracks, results_dir, args.seed)
        large.playlist(seed=0)  # builds (and caches) the neighbour index
        latency[f"synthetic, {args.latency_tracks:,} tracks"] = playlist_latency(large)

    write_report(results_dir / "ppo_benchmark.md", table, rows, sb3_steps_per_second, latency, catalogue, args)
    print((results_dir / "ppo_benchmark.md").read_text())


def write_report(path: Path, table: pd.DataFrame, rows: list[dict], sb3_steps_per_second: float,
                 latency: dict[str, float], catalogue: Catalogue, args: argparse.Namespace) -> None:
    """The benchmark's markdown report: quality by training budget, throughput, latency."""
    candidate = table[table["kind"] == "candidate-aware"].copy()
    candidate["budget"] = candidate["policy"].str.extract(r"aware (\S+) s")[0]
    by_budget = (candidate.dropna(subset=["budget"]).groupby("budget", sort=False)
                 .agg(share_mean=("share_of_optimum", "mean"), share_min=("share_of_optimum", "min"),
                      share_max=("share_of_optimum", "max"), env_steps=("env_steps", "mean"),
                      steps_per_second=("steps_per_second", "mean")).round({"env_steps": 0, "steps_per_second": 0})
                 .astype({"env_steps": int, "steps_per_second": int}))
    ours = pd.DataFrame(rows)
    ours = ours[ours["kind"] == "candidate-aware"]["steps_per_second"].mean()
    columns = ["policy", "kind", "mean_return", "ci95", "share_of_optimum", "repeats_per_episode", "diversity",
               "distinct_tracks", "distinct_clusters", "train_seconds", "env_steps", "steps_per_second"]
    lines = [
        "# PPO benchmark",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch threads outside training. "
        f"Catalogue: {catalogue.n_tracks:,} tracks (fingerprint {catalogue.fingerprint}); "
        f"{args.n_eval_starts} held-out starts × seeds {args.eval_seeds}; training seeds {args.training_seeds}.",
        "",
        "## Candidate-aware PPO: share of the exact optimum by training budget",
        "",
        markdown_table(by_budget.reset_index()),
        "",
        "## Throughput during training (environment steps per second)",
        "",
        f"- ours, candidate-aware: {ours:,.0f}",
        f"- Stable-Baselines3 PPO on the same PlaylistEnv: {sb3_steps_per_second:,.0f}",
        f"- ratio: {ours / sb3_steps_per_second:.1f}x",
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
