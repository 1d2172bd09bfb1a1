"""Adaptation benchmark: how fast each learner learns a new listener, every scenario, every size.

    .venv/bin/python benchmarks/adaptation_benchmark.py                      # the repository's run
    .venv/bin/python benchmarks/adaptation_benchmark.py --jobs 2 --prepare --catalogues embedded \\
        tidytuesday=/tmp/tt synthetic-100k=/tmp/s100k synthetic-1.2M=/tmp/s1m

For every catalogue (a finished chain 01-06, see `catalogues.py`), scenario
(`helpers.people.SCENARIOS`) and listener seed, each learner of `helpers.adaptation` plays
10 learning playlists of 10 songs to its own copy of the same simulated person, from the same
start songs, and is measured after 1, 3 and 10 of them on the same held-out starts (see
`helpers.adaptation.Study`): share of the full and of the knowable gap, the exact planner on
its own table, and the cumulative regret of what the person heard. The taste model's switch
time (last play of a playlist to the next playlist built) is recorded too.

Writes `adaptation_benchmark.md`, `adaptation_benchmark.csv` (one row per catalogue, scenario,
seed, learner and checkpoint) and the figure `adaptation_benchmark.html/.png` to
`--results-dir` (default: the first catalogue's runs/).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
from catalogues import ChainRun, add_catalogue_arguments, results_folder
from tables import markdown_table

from helpers.adaptation import (CHECKPOINTS, LEARNERS, REFERENCES, load_served_chain, measure_person, paired_regret,
                                summarise)
from helpers.paths import write_text_atomic
from helpers.people import SCENARIOS
from helpers.plots import adaptation_figure, save_figure


def measure(catalogue: ChainRun, scenario: str, seed: int, learners: list[str], n_eval_starts: int) -> pd.DataFrame:
    """Every learner on one person of `scenario` (seed `seed`) over one catalogue's chain."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)  # the jobs run side by side
    # numpy's BLAS too: two jobs of two BLAS threads each on 2 cores made a switch at 1.2M songs 5.4-5.9 s, not 0.21 s.
    with threadpool_limits(limits=1):
        return measure_person(load_served_chain(catalogue.paths), scenario, seed, learners,
                              n_eval_starts=n_eval_starts).assign(catalogue=catalogue.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_catalogue_arguments(parser, "adaptation_benchmark", "notebooks 01-06")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="listener seeds (default 0-4)")
    parser.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=LEARNERS)
    parser.add_argument("--eval-starts", type=int, default=100, help="held-out starts per measure (default 100)")
    parser.add_argument("--jobs", type=int, default=1, help="measures run side by side (default 1)")
    args = parser.parse_args()
    if args.prepare:
        for catalogue in args.catalogues:
            catalogue.prepare()
    tasks = [(catalogue, scenario, seed) for catalogue in args.catalogues for scenario in args.scenarios
             for seed in args.seeds]
    began = time.perf_counter()
    folder = results_folder(args)
    # Spawned workers: a forked torch thread pool can deadlock (see drift_benchmark.py).
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(measure, *task, args.learners, args.eval_starts) for task in tasks]
        frames = []
        for (catalogue, scenario, seed), future in zip(tasks, futures):
            frames.append(future.result())
            # Rewritten after every measure, so a long run that stops keeps what it finished.
            write_text_atomic(folder / "adaptation_benchmark.csv", pd.concat(frames).to_csv(index=False))
            print(f"{catalogue.name} / {scenario} / seed {seed}: done ({time.perf_counter() - began:.0f} s)", flush=True)
    results = pd.concat(frames, ignore_index=True)
    summary = summarise(results)
    report = [f"# Adaptation benchmark\n\n{len(args.seeds)} listener seeds, {args.eval_starts} held-out starts, "
              f"checkpoints after {', '.join(map(str, CHECKPOINTS))} playlists; {os.cpu_count()} CPUs, "
              f"{time.perf_counter() - began:.0f} s in all.\n", markdown_table(summary)]
    if "taste model" in args.learners and set(args.learners) - {"taste model", *REFERENCES}:
        report += ["\n## Regret of the taste model minus each other learner's, paired by person\n",
                   markdown_table(paired_regret(results))]
    write_text_atomic(folder / "adaptation_benchmark.md", "\n".join(report) + "\n")
    save_figure(adaptation_figure(summary), "adaptation_benchmark", folder)
    print("\n".join(report))


if __name__ == "__main__":
    main()
