"""The catalogues the benchmarks measure side by side, and how each one's chain is prepared.

A catalogue is given on the command line as `NAME=DIR`: the root of a chain run on it
(`python -m helpers.pipeline --output-dir DIR ...`). `DIR` may be left out for the embedded
catalogue (the repository's own run). With `--prepare`, a missing chain is run first:
notebooks 01-05 on a built-in catalogue (`embedded`, `tidytuesday`) or on a synthetic file of
`synthetic_catalogue.py` (run unfiltered); the default policy is then trained as notebook 06
trains it. Any other catalogue is prepared with the pipeline, as the README says.

    embedded  tidytuesday=/tmp/tt  synthetic-100k=/tmp/s100k  synthetic-1.2M=/tmp/s1m
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers.env import TrackPool, load_neighbour_index, neighbours_needed
from helpers.evaluation import HELDOUT_FRACTION, split_start_tracks
from helpers.paths import ProjectPaths
from helpers.pipeline import run_chain
from helpers.ppo import PPOConfig, TrainingRun, make_env, train
from helpers.recommend import checkpoint_path

SYNTHETIC_ROWS = {"synthetic-100k": 100_000, "synthetic-1.2M": 1_204_025}
BUILT_IN = ("embedded", "tidytuesday")  # helpers.data's built-in catalogue names
UNFILTERED = {"artists": None, "year_min": None, "year_max": None}


@dataclass(frozen=True)
class ChainRun:
    """A named catalogue and the root of its chain run (None: the repository)."""

    name: str
    output_dir: str | None

    @classmethod
    def parse(cls, spec: str) -> "ChainRun":
        """`NAME=DIR`, or `embedded` alone for the repository's run."""
        name, _, folder = spec.partition("=")
        if not folder and name != "embedded":
            raise ValueError(f"catalogue {spec!r}: write NAME=DIR (only `embedded` may omit its folder)")
        return cls(name, folder or None)

    @property
    def paths(self) -> ProjectPaths:
        return ProjectPaths.at(self.output_dir)

    def pool(self) -> TrackPool:
        return TrackPool.from_parquet(self.paths.existing("rewards"))

    def neighbours(self, pool: TrackPool, config: PPOConfig = PPOConfig()) -> np.ndarray:
        """The chain's cached neighbour index (built and cached when missing)."""
        return load_neighbour_index(pool, neighbours_needed(config.playlist_length, config.n_candidates),
                                    cache_path=self.paths.file("neighbours"), show_progress=False)

    def prepare(self, seed: int = 42) -> None:
        """Run notebooks 01-05 when the rewards table is missing, and train notebook 06's default
        policy when its checkpoint is missing (same held-out split and seed as notebook 06)."""
        if not self.paths.file("rewards").exists():
            self.run_chain()
        if not checkpoint_path(self.paths.models).exists():
            pool = self.pool()
            train_rows, heldout_rows = split_start_tracks(pool.n_tracks, HELDOUT_FRACTION, seed)
            config = PPOConfig(seed=seed)
            run = TrainingRun.start(config, pool, pool.ids[heldout_rows].tolist())
            train(run, make_env(config, pool, self.neighbours(pool, config)), train_rows, progress=False)
            run.save(checkpoint_path(self.paths.models))

    def run_chain(self) -> None:
        """Notebooks 01-05 on this catalogue (built-in or synthetic); other names must be run by hand."""
        if self.name in BUILT_IN:
            run_chain({"catalogue_path": self.name}, only=["01", "02", "03", "04", "05"], output_dir=self.output_dir,
                      progress=False, png=False)
        elif self.name in SYNTHETIC_ROWS:
            from synthetic_catalogue import write_synthetic_catalogue

            csv = write_synthetic_catalogue(Path(self.output_dir) / "catalogue.csv", SYNTHETIC_ROWS[self.name],
                                            progress=False)
            run_chain({"catalogue_path": str(csv), **UNFILTERED}, only=["01", "02", "03", "04", "05"],
                      output_dir=self.output_dir, progress=False, png=False)
        else:
            raise FileNotFoundError(
                f"{self.paths.file('rewards')} is missing: run the chain on the {self.name} catalogue "
                f"first (python -m helpers.pipeline --output-dir {self.output_dir} -p catalogue_path FILE ...)")


def add_catalogue_arguments(parser: argparse.ArgumentParser, report: str, notebooks: str) -> None:
    """The options every benchmark shares: `--catalogues NAME=DIR ...`, `--prepare`, `--results-dir`."""
    parser.add_argument("--catalogues", nargs="+", default=[ChainRun.parse("embedded")], type=ChainRun.parse,
                        help=f"NAME=DIR of finished chains ({notebooks}), side by side (default: the repository's)")
    parser.add_argument("--prepare", action="store_true", help="run a missing built-in or synthetic chain first")
    parser.add_argument("--results-dir", help=f"where to write {report}.md/.csv (default: the first's runs/)")


def results_folder(args: argparse.Namespace) -> Path:
    """`--results-dir`, or the first catalogue's runs/ folder; created."""
    folder = Path(args.results_dir) if args.results_dir else args.catalogues[0].paths.runs
    folder.mkdir(parents=True, exist_ok=True)
    return folder
