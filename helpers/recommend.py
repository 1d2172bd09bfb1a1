"""Inference: playlists from the trained policy, for the notebooks and the Spotify player.

    recommender = Recommender.load()          # models/ppo_candidate.pt + data/processed/
    for step in recommender.playlist(start_id="2cQ9D0cQjUJmLs8rWFkcRH"):
        print(step["track_id"], step["candidates"], step["probs"], step["chosen"], step["chosen_name"])

Each step reads the prebuilt neighbour index and runs the policy once on the 4 candidates:
nothing scans the catalogue, so a 10-song playlist takes milliseconds even at 1.2M tracks.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd
import torch

from helpers.env import BatchPlaylistEnv, TrackPool, load_neighbour_index, neighbours_needed
from helpers.paths import ProjectPaths
from helpers.ppo import ARCHITECTURES, Observations, TrainingRun
from helpers.rewards import REWARD_WEIGHTS_FILE, RewardWeights
from helpers.songs import ALIASES_FILE, resolve_song_ids

DEFAULT_ARCHITECTURE = "candidate"
NEIGHBOURS_FILE = "neighbours.npz"


def checkpoint_path(models_dir: str | Path, architecture: str = DEFAULT_ARCHITECTURE) -> Path:
    """Where notebook 06 saves the trained policy of `architecture`."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}.")
    return Path(models_dir) / f"ppo_{architecture}.pt"


def version_path(models_dir: str | Path, version: int, architecture: str = DEFAULT_ARCHITECTURE) -> Path:
    """Checkpoint of fine-tuned `version` (>= 1); version 0 is notebook 06's `checkpoint_path`."""
    if version < 0:
        raise ValueError(f"version must be >= 0, got {version}")
    base = checkpoint_path(models_dir, architecture)
    return base if version == 0 else base.with_name(f"{base.stem}_v{version}.pt")


def versions(models_dir: str | Path, architecture: str = DEFAULT_ARCHITECTURE) -> list[int]:
    """The saved versions of `architecture`'s policy in `models_dir`, oldest first (0: notebook 06's)."""
    base = checkpoint_path(models_dir, architecture)
    found = [0] if base.exists() else []
    for path in base.parent.glob(f"{base.stem}_v*.pt"):
        suffix = path.stem.removeprefix(f"{base.stem}_v")
        if suffix.isdigit():
            found.append(int(suffix))
    return sorted(found)


def version_rewards_path(models_dir: str | Path, version: int, architecture: str = DEFAULT_ARCHITECTURE) -> Path:
    """The rewards table fine-tuned `version` was trained on (saved next to its checkpoint)."""
    return version_path(models_dir, version, architecture).with_suffix(".rewards.parquet")


class PlaylistStep(TypedDict):
    """One step of a playlist: the current track, its candidates with their probabilities, the pick.

    The first four keys are the contract every consumer relies on; the names and artists of the
    current and the chosen track are there for people (None when the catalogue has no names).
    """

    track_id: str
    candidates: list[str]
    probs: list[float]
    chosen: str
    track_name: str | None
    track_artist: str | None
    chosen_name: str | None
    chosen_artist: str | None


class Recommender:
    """A trained policy over its catalogue. Build it with `Recommender.load()`."""

    def __init__(self, run: TrainingRun, pool: TrackPool, neighbours_path: Path,
                 reward_weights: RewardWeights | None = None, aliases: pd.DataFrame | None = None):
        self.run = run
        self.pool = pool
        self.neighbours_path = neighbours_path
        self.reward_weights = reward_weights  # notebook 05's, read by `load`; None when not known
        self.aliases = aliases  # notebook 01's id -> song_id; None: only the songs' own ids
        self.model_version: str = run.model_version()
        self.n_candidates: int = run.config.n_candidates
        self._envs: dict[int, BatchPlaylistEnv] = {}
        run.agent.eval()

    @classmethod
    def load(cls, models_dir: str | Path | None = None, data_dir: str | Path | None = None,
             architecture: str = DEFAULT_ARCHITECTURE, version: int | None = None) -> "Recommender":
        """The trained policy in `models_dir` (default: the repository's models/) over the
        rewards table in `data_dir` (default: data/processed/). `architecture` is "candidate"
        (the default policy) or "original". `version` picks a saved version (0: notebook 06's;
        1, 2, ...: fine-tuned by notebook 08, over the rewards table saved with it); the default
        is the newest."""
        paths = ProjectPaths.at(None)
        models_dir = Path(models_dir) if models_dir else paths.models
        data_dir = Path(data_dir) if data_dir else paths.processed
        rewards = data_dir / "rewards.parquet"
        if not rewards.exists():
            raise FileNotFoundError(f"{rewards} does not exist: run the chain up to notebook 05_rewards first.")
        saved = versions(models_dir, architecture)
        version = (saved[-1] if saved else 0) if version is None else version
        if version > 0:
            if version not in saved:
                raise FileNotFoundError(f"no version {version} of the {architecture} policy in {models_dir}; "
                                        f"saved versions: {saved}")
            rewards = version_rewards_path(models_dir, version, architecture)
        pool = TrackPool.from_parquet(rewards)
        run = TrainingRun.load(version_path(models_dir, version, architecture), pool)
        weights = RewardWeights.load(data_dir / REWARD_WEIGHTS_FILE)
        aliases = pd.read_parquet(data_dir / ALIASES_FILE) if (data_dir / ALIASES_FILE).exists() else None
        recommender = cls(run, pool, data_dir / NEIGHBOURS_FILE, weights, aliases)
        recommender._env(run.config.playlist_length)
        return recommender

    @cached_property
    def track_table(self) -> pd.DataFrame:
        """The rewards table indexed by track id (artist, name when known, cluster, latent_*, ...)."""
        return self.pool.table.set_index("id")

    def song_id(self, track_id: str) -> str:
        """The id of the song `track_id` is one of (any id of notebook 01's catalogue: another
        release of the song, an id Spotify relinked); a ValueError when the catalogue lacks it."""
        try:
            song = resolve_song_ids(track_id, self.aliases) if self.aliases is not None else track_id
        except ValueError:
            song = None
        if song not in self.track_table.index:
            raise ValueError(f"track {track_id!r} is not in the recommender's catalogue"
                             + (f" (its song {song!r} is not in the rewards table)" if song else ""))
        return song

    def aliases_of(self, track_ids: list[str]) -> dict[str, str]:
        """The other ids of the songs `track_ids` (id -> song id), e.g. for following playback."""
        if self.aliases is None:
            return {}
        other = self.aliases[self.aliases["song_id"].isin(track_ids) & (self.aliases["id"] != self.aliases["song_id"])]
        return dict(zip(other["id"], other["song_id"]))

    @cached_property
    def _labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Each track's name and artist in catalogue order (None where unknown)."""
        table = self.pool.table
        labels = [table[c].astype(object).where(table[c].notna(), None).to_numpy() if c in table.columns
                  else np.full(len(table), None, dtype=object) for c in ("name", "artist")]
        return labels[0], labels[1]

    def latent(self, track_id: str) -> list[float]:
        """The latent vector (the state) of `track_id`."""
        return self.pool.latents[self.pool.rows_of(track_id)[0]].tolist()

    def playlist(self, start_id: str | None = None, length: int = 10, greedy: bool = True,
                 seed: int | None = None) -> list[PlaylistStep]:
        """A playlist of `length` tracks as `length - 1` steps.

        Starts at `start_id`, any id of notebook 01's catalogue (resolved to its song with
        `song_id`; default: a random track drawn with `seed`). `greedy` picks the most probable
        candidate; otherwise candidates are sampled from the policy with `seed`.
        """
        env = self._env(length)
        rng = np.random.default_rng(seed)
        start = (self.pool.rows_of(self.song_id(start_id))[0] if start_id is not None
                 else rng.integers(self.pool.n_tracks))
        generator = torch.Generator().manual_seed(int(rng.integers(2**32))) if not greedy else None
        ids = self.pool.ids
        names, artists = self._labels
        batch = env.reset(np.array([start]))
        steps: list[PlaylistStep] = []
        with torch.no_grad():
            while batch is not None:
                probs = self.run.agent.policy(Observations.from_batch(batch)).probs[0]
                action = int(probs.argmax()) if greedy else int(torch.multinomial(probs, 1, generator=generator))
                real = batch.mask[0]
                current, chosen = batch.current_rows[0], batch.candidate_rows[0][action]
                steps.append(PlaylistStep(
                    track_id=ids[current],
                    candidates=ids[batch.candidate_rows[0][real]].tolist(),
                    probs=probs[torch.from_numpy(real)].tolist(),
                    chosen=ids[chosen],
                    track_name=names[current], track_artist=artists[current],
                    chosen_name=names[chosen], chosen_artist=artists[chosen],
                ))
                batch, _, _ = env.step(np.array([action]))
        return steps

    def _env(self, length: int) -> BatchPlaylistEnv:
        """A one-playlist environment for playlists of `length` (its neighbour index read once)."""
        if length not in self._envs:
            width = neighbours_needed(length, self.n_candidates)
            neighbours = load_neighbour_index(self.pool, width, self.neighbours_path)
            self._envs[length] = BatchPlaylistEnv(self.pool, neighbours, length, self.n_candidates)
        return self._envs[length]
