"""Where every artefact of the chain lives.

All outputs sit under one root (the repository by default), so a test or a user can run the
whole chain in another folder by passing `output_dir` to the notebooks or `--output-dir` to
`python -m helpers.pipeline`.
"""
from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

    def read_table(self, name: str, produced_by: str, columns: list[str] | None = None) -> pd.DataFrame:
        """A parquet table produced by an earlier notebook; a clear error naming that notebook when
        it is missing, truncated or not a parquet file."""
        return read_parquet(self.processed_file(name, produced_by), produced_by, columns)

    def ensure(self) -> "ProjectPaths":
        """Create the output folders."""
        for folder in (self.processed, self.feedback, self.figures, self.models):
            folder.mkdir(parents=True, exist_ok=True)
        return self


class DamagedArtefact(ValueError):
    """An artefact exists but cannot be read (truncated, or not what it should be); the message
    names the notebook that writes it again."""


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one step (`os.replace`).

    The temporary file is synced to disk before the rename, so a crash or an error while
    writing leaves `path` as it was (or absent), never truncated. The new file keeps the mode of
    the one it replaces (0644 for a new one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        yield Path(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically (see `atomic_write`)."""
    with atomic_write(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_write`)."""
    with atomic_write(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def read_parquet(path: str | Path, produced_by: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The parquet table at `path`; DamagedArtefact naming the notebook `produced_by` to re-run when
    the file is truncated or not a parquet table."""
    import pandas as pd
    import pyarrow as pa

    try:
        return pd.read_parquet(path, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        message = " ".join(str(error).split())[:200]
        raise DamagedArtefact(f"{path} cannot be read, it is truncated or not a parquet table ({message}): "
                              f"re-run notebook {produced_by}.") from None


def save_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write `frame` (without its index) to the parquet file `path` atomically (see `atomic_write`)."""
    with atomic_write(path) as temporary:
        frame.to_parquet(temporary, index=False)
    return Path(path)


def load_checkpoint(path: str | Path, keys: Iterable[str], produced_by: str) -> dict:
    """A torch checkpoint (a dict holding `keys`), loaded with `weights_only`; DamagedArtefact,
    naming the notebook `produced_by` to re-run, when it is truncated or not such a checkpoint."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    try:
        checkpoint = torch.load(path, weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        message = " ".join(str(error).split())[:200]
        raise DamagedArtefact(f"{path} cannot be read, it is truncated or not a checkpoint ({type(error).__name__}: "
                              f"{message}): re-run notebook {produced_by}.") from None
    missing = sorted(set(keys) - set(checkpoint)) if isinstance(checkpoint, dict) else sorted(keys)
    if missing:
        raise DamagedArtefact(f"{path} is not a checkpoint of notebook {produced_by} (it lacks {missing}): "
                              f"re-run notebook {produced_by}.")
    return checkpoint
