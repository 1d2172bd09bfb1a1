"""Where every artefact of the chain lives.

All outputs sit under one root (the repository by default), so a test or a user can run the
whole chain in another folder by passing `output_dir` to the notebooks or `--output-dir` to
`python -m helpers.pipeline`.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATALOGUE = REPO_ROOT / "data" / "filtered_artist_data.csv"
TIDYTUESDAY_CATALOGUE = REPO_ROOT / "data" / "spotify_songs.csv.gz"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


@dataclass(frozen=True)
class ProjectPaths:
    """The folders of one run of the chain, all below `root`."""

    root: Path

    @classmethod
    def at(cls, output_dir: str | Path | None = None) -> "ProjectPaths":
        """Paths below `output_dir`, or below the repository when it is None or empty."""
        return cls(Path(output_dir).resolve() if output_dir else REPO_ROOT)

    @property
    def processed(self) -> Path:
        return self.root / "data" / "processed"

    @property
    def feedback(self) -> Path:
        return self.root / "data" / "feedback"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def processed_file(self, name: str, produced_by: str) -> Path:
        """An input produced by an earlier notebook; a clear error if that notebook has not run."""
        path = self.processed / name
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist: run notebook {produced_by} first "
                f"(or `python -m helpers.pipeline --from {produced_by[:2]}`)."
            )
        return path

    def ensure(self) -> "ProjectPaths":
        """Create the output folders."""
        for folder in (self.processed, self.feedback, self.figures, self.models):
            folder.mkdir(parents=True, exist_ok=True)
        return self


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one step (`os.replace`).

    A crash or an error while writing leaves `path` as it was (or absent), never truncated.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically (see `atomic_write`)."""
    with atomic_write(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write `frame` (without its index) to parquet atomically (see `atomic_write`)."""
    with atomic_write(path) as temporary:
        frame.to_parquet(temporary, index=False)
    return Path(path)
