"""Drift benchmark: how much of the drift gap notebook 08's fine-tuning closes, and why not more.

    .venv/bin/python benchmarks/drift_benchmark.py                        # the repository's run
    .venv/bin/python benchmarks/drift_benchmark.py --drift-seeds 42 1 2 --jobs 2 --prepare --catalogues \\
        embedded tidytuesday=/tmp/tt synthetic-100k=/tmp/s100k synthetic-1.2M=/tmp/s1m

Needs a finished chain (notebooks 01-06) per catalogue (`NAME=DIR`, see `catalogues.py`;
`--prepare` runs a missing embedded or synthetic one and trains notebook 06's default policy).
Measures on each, on the same held-out starts and under the drifted listener's true rewards
(see `helpers.drift.drifted_taste`):

- the drift demo of notebook 08 (rounds of playlists, a reward update and a fine-tune after
  each) for every drift seed, with the default settings and without the policy-head reset;
- ceilings that skip the estimation (`--ceilings`): PPO given the **true** rewards for the same
  number of steps as one round's fine-tune, continued from notebook 06's policy with and without
  the head reset, and trained from scratch;
- what a reward table allows (`--knowledge`): notebook 05's table, that table with the loved
  clusters' new means known exactly (the best the cluster step of the reward update can learn),
  the table that puts every loved song at its cluster's mean true reward (the best guess for a
  song never heard, whose taste is a fresh draw) and the true table, each served by the
  un-tuned policy and read by an exact planner.

Writes `drift_benchmark.md` and `drift_benchmark.csv` to `--results-dir` (default: the first
catalogue's runs/).
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.drift import DriftSettings, DriftTarget, drifted_taste, run_drift_demo
from helpers.env import TrackPool
from helpers.finetune import fine_tune, shift_through_clusters
from helpers.listeners import ListenerModel
from helpers.paths import ProjectPaths
from helpers.ppo import TrainingRun, make_env, train
from helpers.recommend import load_chain, version_path
from helpers.rewards import RewardWeights
from catalogues import ChainRun, add_catalogue_arguments, results_folder
from tables import markdown_table

VARIANTS = {"default": {}, "no head reset": {"reset_policy_head": False}}


@dataclasses.dataclass(frozen=True)
class Chain:
    """The inputs every measurement reads from a finished chain (`helpers.recommend.load_chain`)."""

    paths: ProjectPaths
    table: pd.DataFrame
    prior_model: ListenerModel
    neighbours: np.ndarray
    weights: RewardWeights

    @classmethod
    def at(cls, output_dir: str | None) -> "Chain":
        chain = load_chain(output_dir, version=0)
        return cls(chain.paths, chain.table, chain.listener_model, chain.neighbours(), chain.weights)

    def drift_target(self, drift_seed: int,
                     settings: DriftSettings) -> tuple[TrainingRun, DriftTarget, pd.Series, np.ndarray]:
        """Notebook 06's policy, the target it is measured against, the drifted taste and the loved clusters."""
        taste, loved = drifted_taste(self.table, self.prior_model, seed=drift_seed)
        base_run = TrainingRun.load(version_path(self.paths.models, 0))
        target = DriftTarget.build(base_run, self.table, taste, self.neighbours, play_noise=settings.play_noise,
                                   like_threshold=self.prior_model.like_threshold,
                                   n_eval_starts=settings.n_eval_starts, seed=drift_seed, weights=self.weights)
        return base_run, target, taste, loved


def demo_row(source: ChainRun, variant: str, drift_seed: int, settings: DriftSettings) -> dict:
    """Run notebook 08's drift demo once; the share of the gap closed after each round."""
    chain = Chain.at(source.output_dir)
    taste, _ = drifted_taste(chain.table, chain.prior_model, seed=drift_seed)
    settings = dataclasses.replace(settings, seed=drift_seed, **VARIANTS[variant])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as demo_dir:
        rounds = run_drift_demo(chain.paths.models, Path(demo_dir), chain.table, chain.prior_model, taste=taste,
                                neighbours=chain.neighbours, neighbours_path=chain.paths.file("neighbours"),
                                weights=chain.weights, settings=settings, progress=False)
    print(f"{source.name}, {variant}, drift seed {drift_seed}: {rounds['gap_closed'].iloc[-1]:.0%}", flush=True)
    return {"catalogue": source.name, "kind": "drift demo", "variant": variant, "drift_seed": drift_seed,
            "seconds": time.perf_counter() - start, "untuned": rounds["untuned"].iloc[0],
            "optimum": rounds["optimum"].iloc[0],
            **{f"gap_round_{r}": gap for r, gap in zip(rounds["round"], rounds["gap_closed"])}}


def ceiling_rows(source: ChainRun, drift_seed: int, settings: DriftSettings) -> list[dict]:
    """PPO on the drifted listener's true rewards for `settings.finetune_timesteps` steps."""
    chain = Chain.at(source.output_dir)
    base_run, target, _, _ = chain.drift_target(drift_seed, settings)
    rows = []

    def record(variant: str, run: TrainingRun, seconds: float) -> None:
        gap = target.gap_closed(target.mean_return(run, target.true_pool))  # serving the true table: a ceiling
        print(f"{source.name}, true rewards, {variant}, drift seed {drift_seed}: {gap:.0%}", flush=True)
        rows.append({"catalogue": source.name, "kind": "true rewards", "variant": variant, "drift_seed": drift_seed, "seconds": seconds,
                     "untuned": target.untuned, "optimum": target.optimum, "gap_after_one_fine_tune": gap})

    for variant, reset in (("continued, head reset", True), ("continued, no head reset", False)):
        with tempfile.TemporaryDirectory() as models_dir:
            shutil.copy(version_path(chain.paths.models, 0), version_path(models_dir, 0))
            start = time.perf_counter()
            run = fine_tune(models_dir, target.true_pool, chain.neighbours, settings.finetune_timesteps,
                            learning_rate=settings.learning_rate, reset_policy_head=reset)
            record(variant, run, time.perf_counter() - start)
    config = dataclasses.replace(base_run.config, total_timesteps=settings.finetune_timesteps)
    scratch = TrainingRun.start(config, target.true_pool, base_run.heldout_ids)
    train_rows = np.setdiff1d(np.arange(target.true_pool.n_tracks),
                              target.true_pool.rows_of(base_run.heldout_ids))
    start = time.perf_counter()
    train(scratch, make_env(config, target.true_pool, chain.neighbours), train_rows, progress=False)
    record("from scratch", scratch, time.perf_counter() - start)
    return rows


def knowledge_rows(source: ChainRun, drift_seed: int, settings: DriftSettings) -> list[dict]:
    """How much of the gap each reward table allows: the un-tuned policy serving it, and an exact
    planner reading it (`DriftTarget.planned_return`), both scored under the true rewards."""
    chain = Chain.at(source.output_dir)
    base_run, target, taste, loved = chain.drift_target(drift_seed, settings)
    clusters = chain.table["cluster"].to_numpy(np.int64)
    loved_means = chain.prior_model.cluster_mean.copy()
    for cluster in loved:
        loved_means[cluster] = taste.to_numpy()[clusters == cluster].mean()
    knowing_means = dataclasses.replace(chain.prior_model, cluster_mean=loved_means)
    # What no play can beat for an unheard song whose taste is a fresh draw: its cluster's mean
    # true interaction score (plus its own proximity term).
    proximity = chain.weights.proximity_weight * chain.table["proximity_score"].to_numpy()
    interaction = pd.Series(target.true_pool.rewards - proximity).groupby(clusters).transform("mean").to_numpy()
    in_loved = np.isin(clusters, loved)
    tables = {
        "notebook 05's table (no feedback)": chain.table["reward"].to_numpy(),
        "the loved clusters' new means, exactly": shift_through_clusters(chain.table, chain.prior_model,
                                                                        knowing_means, chain.weights),
        "each loved song at its cluster's mean true reward": np.where(in_loved, interaction + proximity,
                                                                      chain.table["reward"].to_numpy()),
        "every song's true reward": target.true_pool.rewards,
    }
    rows = []
    for table_name, rewards in tables.items():
        served = TrackPool.from_table(chain.table.assign(reward=rewards))
        served_gap = target.gap_closed(target.mean_return(base_run, served))
        planned_gap = target.gap_closed(target.planned_return(base_run, served))
        print(f"{source.name}, {table_name}, drift seed {drift_seed}: served {served_gap:.0%}, "
              f"planned {planned_gap:.0%}", flush=True)
        rows.append({"catalogue": source.name, "kind": "knowledge", "variant": table_name, "drift_seed": drift_seed,
                     "untuned": target.untuned, "optimum": target.optimum,
                     "served_gap": served_gap, "planned_gap": planned_gap})
    return rows


def as_percent(frame: pd.DataFrame) -> pd.DataFrame:
    """Shares as whole percentages, e.g. 0.634 -> "63 %"."""
    return frame.map(lambda share: f"{100 * share:.0f} %")


def by_seed(results: pd.DataFrame, column: str) -> pd.DataFrame:
    """`column` per catalogue and variant (rows) and drift seed (columns), with their mean."""
    table = results.pivot_table(index=["catalogue", "variant"], columns="drift_seed", values=column, sort=False)
    return table.rename(columns=lambda seed: f"drift seed {seed}").assign(mean=table.mean(axis=1))


def report(results: pd.DataFrame, settings: DriftSettings) -> str:
    """The Markdown report: gap closed per catalogue, round and variant (mean over drift seeds), the ceilings."""
    demo = results[results["kind"] == "drift demo"]
    rounds = [c for c in demo.columns if c.startswith("gap_round_")]
    per_seed = by_seed(demo, rounds[-1])
    per_seed["seconds per demo"] = (demo.groupby(["catalogue", "variant"], sort=False)["seconds"].mean()
                                   .round().astype(int))
    per_round = (demo.groupby(["catalogue", "variant"], sort=False)[rounds].mean()
                 .rename(columns=lambda c: f"round {c.split('_')[-1]}"))
    sections = [
        "# Drift benchmark",
        f"{os.cpu_count()} cores. {settings.n_rounds} rounds of {settings.playlists_per_round} playlists, "
        f"{settings.finetune_timesteps:,} PPO steps per fine-tune, {settings.n_eval_starts} held-out starts at most.",
        "## Share of the gap closed after the last round, per drift seed",
        markdown_table(as_percent(per_seed.drop(columns="seconds per demo")).join(
            per_seed["seconds per demo"]).reset_index()),
        "## Mean share of the gap closed after each round",
        markdown_table(as_percent(per_round).reset_index()),
    ]
    if (results["kind"] == "true rewards").any():
        ceilings = by_seed(results[results["kind"] == "true rewards"], "gap_after_one_fine_tune")
        sections += ["## PPO given the true rewards, one fine-tune's steps", markdown_table(as_percent(ceilings).reset_index())]
    if (results["kind"] == "knowledge").any():
        knowledge = results[results["kind"] == "knowledge"]
        shares = knowledge.groupby(["catalogue", "variant"], sort=False)[["served_gap", "planned_gap"]].mean()
        sections += ["## What each reward table allows (mean over drift seeds): the un-tuned policy serving it, "
                     "an exact planner reading it",
                     markdown_table(as_percent(shares.rename(columns={"served_gap": "served by the un-tuned policy",
                                                                      "planned_gap": "planned exactly"}))
                                    .reset_index().rename(columns={"variant": "reward table"}))]
    return "\n\n".join(sections) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_catalogue_arguments(parser, "drift_benchmark", "01-06")
    parser.add_argument("--drift-seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--ceilings", action="store_true", help="also train PPO on the true rewards (a bound)")
    parser.add_argument("--knowledge", action="store_true",
                        help="also measure what each reward table allows (served and planned exactly)")
    parser.add_argument("--jobs", type=int, default=1, help="measurements run in parallel (one core each)")
    args = parser.parse_args(argv)

    settings = DriftSettings()
    results_dir = results_folder(args)
    for source in args.catalogues if args.prepare else []:
        source.prepare()
    # spawn, not fork: --prepare may have trained in this process, and forked torch thread pools deadlock
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        demos = [pool.submit(demo_row, source, variant, seed, settings)
                 for source in args.catalogues for seed in args.drift_seeds for variant in args.variants]
        ceilings = [pool.submit(ceiling_rows, source, seed, settings)
                    for source in args.catalogues for seed in args.drift_seeds if args.ceilings]
        knowledge = [pool.submit(knowledge_rows, source, seed, settings)
                     for source in args.catalogues for seed in args.drift_seeds if args.knowledge]
        rows = [future.result() for future in demos] + [row for future in ceilings + knowledge
                                                        for row in future.result()]
    results = pd.DataFrame(rows)
    results.to_csv(results_dir / "drift_benchmark.csv", index=False)
    markdown = report(results, settings)
    (results_dir / "drift_benchmark.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
