"""Where every artefact of the chain lives.

All outputs sit under one root (the repository by default), so a test or a user can run the
whole chain in another folder by passing `output_dir` to the notebooks or `--output-dir` to
`python -m helpers.pipeline`.
"""
from __future__ import annotations

import os
import re
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
class Artefact:
    """A file one notebook writes and later steps read: its folder below a run's root, its name
    (a pattern with {architecture} / {version} for the policies) and the notebook that writes it."""

    folder: str
    name: str
    produced_by: str

    def pattern(self) -> re.Pattern:
        """Matches the file names of this artefact (any architecture, any version)."""
        return re.compile(re.escape(self.name).replace(r"\{architecture\}", r"[a-z]+").replace(r"\{version\}", r"\d+"))


# The file contract between the notebooks: artefact -> file -> the notebook that writes it.
# Every path and every "run notebook NN" message of the project comes from this table.
ARTEFACTS: dict[str, Artefact] = {
    "tracks": Artefact("data/processed", "tracks.parquet", "01_filter"),
    "aliases": Artefact("data/processed", "aliases.parquet", "01_filter"),
    "latents": Artefact("data/processed", "latents.parquet", "02_vae"),
    "vae": Artefact("models", "vae.pt", "02_vae"),
    "clusters": Artefact("data/processed", "clusters.parquet", "03_clusters"),
    "listeners": Artefact("data/processed", "listeners.parquet", "04_listeners"),
    "listener_model": Artefact("data/processed", "listener_model.json", "04_listeners"),
    "rewards": Artefact("data/processed", "rewards.parquet", "05_rewards"),
    "reward_weights": Artefact("data/processed", "reward_weights.json", "05_rewards"),
    "neighbours": Artefact("data/processed", "neighbours.npz", "06_ppo"),
    "policy_comparison": Artefact("data/processed", "policy_comparison.csv", "06_ppo"),
    "policy": Artefact("models", "ppo_{architecture}.pt", "06_ppo"),
    "policy_version": Artefact("models", "ppo_{architecture}_v{version}.pt", "08_adaptation"),
    "version_rewards": Artefact("models", "ppo_{architecture}_v{version}.rewards.parquet", "08_adaptation"),
    "version_record": Artefact("models", "ppo_{architecture}_v{version}.json", "08_adaptation"),
    # The live loop's listener model versions (helpers.live): the table first, the JSON (the version) last.
    "taste_rewards": Artefact("models", "taste_v{version}.rewards.parquet", "07_spotify"),
    "taste_record": Artefact("models", "taste_v{version}.json", "07_spotify"),
}


def produced_by(path: str | Path, expected: str | None = None) -> str | None:
    """The notebook that writes the file at `path`: found by its name in `ARTEFACTS`, else the
    writer of the `expected` artefact (what the caller reads); None when neither is known."""
    name = Path(path).name
    found = next((artefact.produced_by for artefact in ARTEFACTS.values() if artefact.pattern().fullmatch(name)), None)
    return found or (ARTEFACTS[expected].produced_by if expected else None)


def rerun_hint(path: str | Path, expected: str | None = None) -> str:
    """What to do about a damaged artefact: re-run the notebook that writes it."""
    notebook = produced_by(path, expected)
    return f"re-run notebook {notebook}" if notebook else "write it again"


def missing_artefact(path: Path, notebook: str) -> FileNotFoundError:
    """The error for an artefact that does not exist yet: which notebook writes it."""
    return FileNotFoundError(f"{path} does not exist: run notebook {notebook} first "
                             f"(or `python -m helpers.pipeline --from {notebook[:2]}`).")


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

    def file(self, artefact: str, **fields: object) -> Path:
        """Where `artefact` of `ARTEFACTS` lives in this run (`fields` fill its name's pattern)."""
        entry = ARTEFACTS[artefact]
        return self.root / entry.folder / entry.name.format(**fields)

    def existing(self, artefact: str, **fields: object) -> Path:
        """`file(artefact)`, or a FileNotFoundError naming the notebook that writes it."""
        path = self.file(artefact, **fields)
        if not path.exists():
            raise missing_artefact(path, ARTEFACTS[artefact].produced_by)
        return path

    def read_table(self, artefact: str, columns: list[str] | None = None) -> pd.DataFrame:
        """A parquet artefact; a clear error naming the notebook that writes it when it is missing,
        truncated or not a parquet file."""
        return read_parquet(self.existing(artefact), columns)

    def ensure(self) -> "ProjectPaths":
        """Create the output folders."""
        for folder in (self.processed, self.feedback, self.figures, self.models):
            folder.mkdir(parents=True, exist_ok=True)
        return self


class DamagedArtefact(ValueError):
    """An artefact exists but cannot be read (truncated, or not what it should be); the message
    names the notebook that writes it again."""


@contextmanager
def atomic_write(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one step (`os.replace`).

    The temporary file is synced to disk before the rename, so a crash or an error while
    writing leaves `path` as it was (or absent), never truncated. The new file gets `mode`, or
    keeps the mode of the one it replaces (0644 for a new one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        yield Path(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, mode if mode is not None else stat.S_IMODE(path.stat().st_mode) if path.exists()
                 else 0o644)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


PRIVATE_FILE_MODE = 0o600
# Set to "0" (`python -m helpers.pipeline --no-png`), figures are saved as interactive HTML only.
PNG_ENVIRONMENT = "RECOMMENDER_FIGURES_PNG"


def create_private(path: str | Path) -> Path:
    """Create `path` readable and writable by its owner only (an existing file is made so and kept),
    before anything writes into it: for files that hold a person's listening data (executed
    notebooks, feedback figures). A symbolic link is not followed."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        os.fchmod(descriptor, PRIVATE_FILE_MODE)
    finally:
        os.close(descriptor)
    return Path(path)


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


def read_parquet(path: str | Path, columns: list[str] | None = None, expected: str | None = None) -> pd.DataFrame:
    """The parquet artefact at `path` (`expected`: which one, when its name does not say);
    DamagedArtefact naming the notebook that writes it when the file is truncated or not a
    parquet table."""
    import pandas as pd
    import pyarrow as pa

    try:
        return pd.read_parquet(path, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        message = " ".join(str(error).split())[:200]
        raise DamagedArtefact(f"{path} cannot be read, it is truncated or not a parquet table ({message}): "
                              f"{rerun_hint(path, expected)}.") from None


def save_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write `frame` (without its index) to the parquet file `path` atomically (see `atomic_write`)."""
    with atomic_write(path) as temporary:
        frame.to_parquet(temporary, index=False)
    return Path(path)


def load_checkpoint(path: str | Path, keys: Iterable[str], expected: str) -> dict:
    """A torch checkpoint (a dict holding `keys`) of the `expected` artefact, loaded with
    `weights_only`; DamagedArtefact, naming the notebook that writes it, when it is truncated or
    not such a checkpoint."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    try:
        checkpoint = torch.load(path, weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        message = " ".join(str(error).split())[:200]
        raise DamagedArtefact(f"{path} cannot be read, it is truncated or not a checkpoint ({type(error).__name__}: "
                              f"{message}): {rerun_hint(path, expected)}.") from None
    missing = sorted(set(keys) - set(checkpoint)) if isinstance(checkpoint, dict) else sorted(keys)
    if missing:
        raise DamagedArtefact(f"{path} is not a checkpoint of notebook {produced_by(path, expected)} (it lacks "
                              f"{missing}): {rerun_hint(path, expected)}.")
    return checkpoint
