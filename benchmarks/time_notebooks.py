"""Time each notebook of the chain and measure its peak memory.

    python benchmarks/time_notebooks.py                         # embedded catalogue, defaults
    python benchmarks/time_notebooks.py --quick
    python benchmarks/time_notebooks.py -p catalogue_path big.csv --output-dir /tmp/bench

Each notebook runs in its own kernel; peak memory is the largest resident set size of that
kernel (sampled every 0.1 s), which is what a user's machine must hold. Prints a Markdown
table and writes it to `<output-dir>/runs/benchmark.md`.
"""
from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import psutil

from helpers import pipeline
from helpers.paths import ProjectPaths


class PeakMemory:
    """Samples the resident memory of this process's children (the notebook kernels)."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process(os.getpid())
        while not self._stop.is_set():
            total = 0
            for child in me.children(recursive=True):
                try:
                    total = max(total, child.memory_info().rss)
                except psutil.Error:
                    continue
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def time_notebooks(parameters: dict[str, object], quick: bool, output_dir: str | None,
                   only: list[str] | None = None) -> list[dict[str, object]]:
    """Run the selected notebooks one at a time; return name, seconds and peak MiB of each."""
    rows = []
    for notebook in pipeline.select_notebooks(pipeline.discover_notebooks(), only):
        number = notebook.name[:2]
        given = {k: v for k, v in parameters.items() if k in pipeline.declared_parameters(notebook)}
        with PeakMemory() as memory:
            started = time.perf_counter()
            pipeline.run_chain(given, quick=quick, only=[number], output_dir=output_dir, progress=False)
            seconds = time.perf_counter() - started
        rows.append({"notebook": notebook.stem, "seconds": seconds, "peak_mib": memory.peak_bytes / 2**20})
        print(f"{notebook.stem:<16} {seconds:7.1f} s  {memory.peak_bytes / 2**20:8.0f} MiB", flush=True)
    return rows


def markdown_table(rows: list[dict[str, object]]) -> str:
    lines = ["| notebook | time (s) | peak memory (MiB) |", "|---|---:|---:|"]
    lines += [f"| {r['notebook']} | {r['seconds']:.1f} | {r['peak_mib']:.0f} |" for r in rows]
    lines.append(f"| **total** | {sum(r['seconds'] for r in rows):.1f} | {max(r['peak_mib'] for r in rows):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("--only", action="append", metavar="NN")
    parser.add_argument("--output-dir")
    args = parser.parse_args()
    parameters = {name: pipeline.parse_value(value) for name, value in args.parameter}
    rows = time_notebooks(parameters, args.quick, args.output_dir, args.only)
    table = markdown_table(rows)
    print(table)
    report = ProjectPaths.at(args.output_dir).runs / "benchmark.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(table + "\n")
    print(f"written to {Path(report)}")


if __name__ == "__main__":
    main()
