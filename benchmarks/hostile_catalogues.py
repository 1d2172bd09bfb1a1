"""Peak memory and time of the catalogue reader on hostile files (each must be refused early).

    python benchmarks/hostile_catalogues.py                  # 1 GiB bombs, a 10M-column header
    python benchmarks/hostile_catalogues.py --size-mib 64    # smaller bombs (what the test runs)

Writes into a temporary folder: a zip whose CSV inflates `--size-mib` MiB from about 1/1000 of
that, a gzip of as many line breaks with one byte that is not UTF-8 at its end, and a header of
10 million columns. Each one is read in a fresh process and must raise CatalogueError; prints one
line per file: its name, the reader's seconds and the peak resident memory of that process.
"""
from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from helpers.layouts import FEATURES

HEADER = ",".join(["id", *FEATURES, "artist"]).encode() + b"\n"
CHUNK = 1 << 20


def write_bombs(folder: Path, size_mib: int) -> list[Path]:
    """The three hostile files in `folder`."""
    with zipfile.ZipFile(folder / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("c.csv", "w", force_zip64=True) as member:
        member.write(HEADER)
        for _ in range(size_mib):
            member.write(b"0" * CHUNK)
    with gzip.open(folder / "bomb.csv.gz", "wb", compresslevel=1) as file:
        file.write(HEADER)
        for _ in range(size_mib):
            file.write(b"\n" * CHUNK)
        file.write(b"\xff")
    (folder / "wide.csv").write_bytes(b"c," * 10_000_000 + b"\n1\n")
    return [folder / "bomb.zip", folder / "bomb.csv.gz", folder / "wide.csv"]


def measure(path: Path) -> tuple[float, float, str]:
    """Seconds, peak resident MiB and the error of reading `path` in a fresh process."""
    code = ("import resource, sys, time\nfrom helpers.data import CatalogueError, read_catalogue_files\n"
            "started = time.perf_counter()\ntry:\n    read_catalogue_files(sys.argv[1])\n    sys.exit('loaded')\n"
            "except CatalogueError as error:\n    message = str(error)\n"
            "print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
            "print(message)")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"reading {path.name} exited with {result.returncode}: {result.stdout}{result.stderr}")
    seconds, peak, message = result.stdout.split(maxsplit=2)
    return float(seconds), float(peak), message.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="what each bomb inflates to (MiB)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        for path in write_bombs(Path(folder), args.size_mib):
            seconds, peak, message = measure(path)
            print(f"{path.name:<12} {path.stat().st_size:>12,} bytes  {seconds:6.2f} s  {peak:7.0f} MiB  {message[:160]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
