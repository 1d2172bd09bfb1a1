"""Serving a trained chain: what it left, loaded in one call, and playlists from its policy.

    chain = load_chain()                      # the repository's run; load_chain(output_dir) for another
    recommender = chain.recommender()         # or Recommender.load(output_dir)
    for step in recommender.playlist(start_id="2cQ9D0cQjUJmLs8rWFkcRH"):
        print(step["track_id"], step["candidates"], step["probs"], step["chosen"], step["chosen_name"])

`load_chain` is the one place that reads a trained chain's files (the rewards table a version
serves, its policy, the reward weights, the listener model, the aliases, the neighbour index):
the Recommender, `python -m helpers.play`, notebooks 06-08 and the benchmarks use it.

Each step reads the prebuilt neighbour index and runs the policy once on the 4 candidates:
nothing scans the catalogue, so a 10-song playlist takes milliseconds even at 1.2M tracks.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd
import torch

from helpers.env import (BatchPlaylistEnv, PlaylistBatch, TrackPool, load_neighbour_index, local_env, local_rows,
                         neighbours_needed)
from helpers.listeners import ListenerModel
from helpers.paths import ARTEFACTS, ProjectPaths, missing_artefact, read_parquet, save_parquet, write_text_atomic
from helpers.ppo import ARCHITECTURES, NETWORK_THREADS, Observations, TrainingRun, torch_threads
from helpers.rewards import RewardWeights
from helpers.songs import resolve_song_ids

DEFAULT_ARCHITECTURE = "candidate"


def checkpoint_path(models_dir: str | Path, architecture: str = DEFAULT_ARCHITECTURE) -> Path:
    """Where notebook 06 saves the trained policy of `architecture` (`ARTEFACTS["policy"]`)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}.")
    return Path(models_dir) / ARTEFACTS["policy"].name.format(architecture=architecture)


def version_path(models_dir: str | Path, version: int, architecture: str = DEFAULT_ARCHITECTURE) -> Path:
    """Checkpoint of fine-tuned `version` (>= 1); version 0 is notebook 06's `checkpoint_path`."""
    if version < 0:
        raise ValueError(f"version must be >= 0, got {version}")
    if version == 0:
        return checkpoint_path(models_dir, architecture)
    checkpoint_path(models_dir, architecture)  # checks the architecture
    return Path(models_dir) / ARTEFACTS["policy_version"].name.format(architecture=architecture, version=version)


def versions(models_dir: str | Path, architecture: str = DEFAULT_ARCHITECTURE) -> list[int]:
    """The saved versions of `architecture`'s policy in `models_dir`, oldest first (0: notebook 06's)."""
    found = [0] if checkpoint_path(models_dir, architecture).exists() else []
    prefix, suffix = ARTEFACTS["policy_version"].name.format(architecture=architecture, version="|").split("|")
    for path in Path(models_dir).glob(f"{prefix}*{suffix}"):
        number = path.name.removeprefix(prefix).removesuffix(suffix)
        if number.isdigit():
            found.append(int(number))
    return sorted(found)


def version_rewards_path(models_dir: str | Path, version: int, architecture: str = DEFAULT_ARCHITECTURE) -> Path:
    """The rewards table fine-tuned `version` (>= 1) was trained on (saved next to its checkpoint)."""
    version_path(models_dir, version, architecture)  # checks the version and the architecture
    return Path(models_dir) / ARTEFACTS["version_rewards"].name.format(architecture=architecture, version=version)


def version_record_path(models_dir: str | Path, version: int, architecture: str = DEFAULT_ARCHITECTURE) -> Path:
    """The JSON record of the log a fine-tuned `version` (>= 1) learnt from."""
    version_path(models_dir, version, architecture)
    return Path(models_dir) / ARTEFACTS["version_record"].name.format(architecture=architecture, version=version)


def taste_file(models_dir: str | Path, artefact: str, version: int) -> Path:
    """The `artefact` ("taste_rewards" or "taste_record") of taste `version` (see `helpers.live`)."""
    return Path(models_dir) / ARTEFACTS[artefact].name.format(version=version)


def taste_versions(models_dir: str | Path) -> list[int]:
    """The saved taste versions in `models_dir`, oldest first (those whose JSON record exists)."""
    prefix, suffix = ARTEFACTS["taste_record"].name.split("{version}")
    numbers = (path.name.removeprefix(prefix).removesuffix(suffix) for path in Path(models_dir).glob(f"{prefix}*{suffix}"))
    return sorted(int(number) for number in numbers if number.isdigit())


def taste_record(models_dir: str | Path, version: int) -> dict:
    """The JSON record of taste `version`."""
    return json.loads(taste_file(models_dir, "taste_record", version).read_text())


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_taste_rewards(models_dir: str | Path, version: int, ids: np.ndarray) -> np.ndarray:
    """Taste `version`'s reward of each song of `ids` (the catalogue's order); a ValueError when its
    rewards file does not match its record's digest or lacks a song."""
    path = taste_file(models_dir, "taste_rewards", version)
    if file_digest(path) != taste_record(models_dir, version)["rewards_sha256"]:
        raise ValueError(f"{path} is not the file taste version {version} saved (its sha256 differs)")
    table = read_parquet(path, ["id", "reward"]).set_index("id")["reward"].reindex(pd.Index(ids))
    if table.isna().any():
        raise ValueError(f"{path} lacks {int(table.isna().sum())} song(s) of the catalogue, e.g. "
                         f"{table.index[table.isna()][:3].tolist()}: the catalogue changed since; play again")
    return table.to_numpy(np.float64)


def save_taste_version(models_dir: str | Path, ids: np.ndarray, rewards: np.ndarray, record: dict) -> int:
    """Save the next taste version: its rewards table first, its JSON `record` (with the version and
    the table's digest added) last; returns the version."""
    version = max(taste_versions(models_dir), default=0) + 1
    path = save_parquet(pd.DataFrame({"id": ids, "reward": rewards}), taste_file(models_dir, "taste_rewards", version))
    record = {"version": version, **record, "rewards_sha256": file_digest(path)}
    write_text_atomic(taste_file(models_dir, "taste_record", version), json.dumps(record, indent=2) + "\n")
    return version


def taste_model_version(policy: str, taste_version: int | None) -> str:
    """The `model_version` a log record names: the policy's, and the taste version when one is served."""
    return policy if taste_version is None else f"{policy}+taste-v{taste_version}"


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
    """A trained policy over its catalogue. Build it with `Recommender.load()`.

    `taste_version` is the listener model's version whose table the pool holds (None: notebook
    05's or a fine-tuned version's); `model_version` names the policy and that version.
    """

    def __init__(self, run: TrainingRun, pool: TrackPool, neighbours_path: Path,
                 reward_weights: RewardWeights | None = None, *, aliases: pd.DataFrame | None = None,
                 taste_version: int | None = None):
        self.run = run
        self.pool = pool
        self.neighbours_path = neighbours_path
        self.reward_weights = reward_weights  # notebook 05's, read by `load`; None when not known
        self.aliases = aliases  # notebook 01's id -> song_id; None: only the songs' own ids
        self.taste_version = taste_version
        self.model_version: str = taste_model_version(run.model_version(), taste_version)
        self.n_candidates: int = run.config.n_candidates
        self._envs: dict[int, BatchPlaylistEnv] = {}
        self._neighbours: dict[int, np.ndarray] = {}
        self._served: Callable[[np.ndarray], np.ndarray] | None = None
        run.agent.eval()

    def serving(self, rewards: Callable[[np.ndarray], np.ndarray], taste_version: int) -> "Recommender":
        """This recommender planning on another table: `rewards(rows)` gives the reward of the
        catalogue's `rows`, asked only for the songs a playlist can reach (`helpers.env.local_rows`),
        so a new table costs no pass over the catalogue. Its records name `taste_version`."""
        served = Recommender(self.run, self.pool, self.neighbours_path, self.reward_weights, aliases=self.aliases,
                             taste_version=taste_version)
        served.__dict__.update(_neighbours=self._neighbours, _served=rewards, track_table=self.track_table,
                               _labels=self._labels)
        return served

    @classmethod
    def load(cls, output_dir: str | Path | None = None, *, architecture: str = DEFAULT_ARCHITECTURE,
             version: int | None = None) -> "Recommender":
        """The recommender of the chain run at `output_dir` (default: the repository): see `load_chain`."""
        return load_chain(output_dir, architecture=architecture, version=version).recommender()

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
        rng = np.random.default_rng(seed)
        start = (self.pool.rows_of(self.song_id(start_id))[0] if start_id is not None
                 else rng.integers(self.pool.n_tracks))
        generator = torch.Generator().manual_seed(int(rng.integers(2**32))) if not greedy else None
        env, batch, rows = self._start(int(start), length)
        ids, (names, artists) = (self.pool.ids, self._labels) if rows is None else (
            self.pool.ids[rows], (labels[rows] for labels in self._labels))
        steps: list[PlaylistStep] = []
        with torch.no_grad(), torch_threads(NETWORK_THREADS):
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

    def _start(self, start: int, length: int) -> tuple[BatchPlaylistEnv, PlaylistBatch, np.ndarray | None]:
        """An environment at `start`, its first observation and its catalogue rows (None: all of them):
        the whole catalogue's for the pool's table, the reachable songs' for a `serving` table."""
        if self._served is None:
            env = self._env(length)
            return env, env.reset(np.array([start])), None
        playlists = np.full((1, length), -1, dtype=np.int64)
        playlists[0, 0] = start
        neighbours = self._index(length)
        rows = local_rows(neighbours, playlists, length, self.n_candidates)
        env, batch = local_env(self.pool, neighbours, playlists, rows, rewards=self._served(rows),
                               playlist_length=length, n_candidates=self.n_candidates,
                               look_ahead_depth=self.run.config.look_ahead_depth)
        return env, batch, rows

    def _index(self, length: int) -> np.ndarray:
        """The neighbour index wide enough for playlists of `length`, read once."""
        width = neighbours_needed(length, self.n_candidates)
        if width not in self._neighbours:
            self._neighbours[width] = load_neighbour_index(self.pool, width, self.neighbours_path)
        return self._neighbours[width]

    def _env(self, length: int) -> BatchPlaylistEnv:
        """A one-playlist environment for playlists of `length` over the whole catalogue."""
        if length not in self._envs:
            self._envs[length] = BatchPlaylistEnv(self.pool, self._index(length), length, self.n_candidates,
                                                  look_ahead_depth=self.run.config.look_ahead_depth)
        return self._envs[length]


@dataclass(frozen=True, eq=False)
class TrainedChain:
    """What a trained chain left for one version of its policy.

    `table` is the rewards table that version serves (notebook 05's for version 0, the one saved
    with a fine-tuned version otherwise) and `pool` the same as validated arrays.
    The listener model and the aliases are read when first asked for.
    """

    paths: ProjectPaths
    architecture: str
    version: int
    table: pd.DataFrame
    pool: TrackPool
    run: TrainingRun
    weights: RewardWeights
    taste_version: int | None = None  # the listener model's version whose rewards `table` holds

    @property
    def neighbours_path(self) -> Path:
        return self.paths.file("neighbours")

    def neighbours(self, playlist_length: int | None = None) -> np.ndarray:
        """The neighbour index, as wide as the policy's playlists need (its config's length and
        candidates; `playlist_length` for longer ones), read from the cache or built once."""
        config = self.run.config
        width = neighbours_needed(playlist_length or config.playlist_length, config.n_candidates)
        return load_neighbour_index(self.pool, width, self.neighbours_path)

    @cached_property
    def listener_model(self) -> ListenerModel:
        """Notebook 04's listener model."""
        return ListenerModel.from_json(self.paths.existing("listener_model"))

    @cached_property
    def aliases(self) -> pd.DataFrame | None:
        """Notebook 01's id -> song_id table; None for a chain without one."""
        path = self.paths.file("aliases")
        return read_parquet(path) if path.exists() else None

    def recommender(self) -> Recommender:
        """The Recommender serving this version, its neighbour index ready for its playlists."""
        recommender = Recommender(self.run, self.pool, self.neighbours_path, self.weights, aliases=self.aliases,
                                  taste_version=self.taste_version)
        recommender._env(self.run.config.playlist_length)
        return recommender


def load_chain(output_dir: str | Path | ProjectPaths | None = None, *, architecture: str = DEFAULT_ARCHITECTURE,
               version: int | None = None, taste: bool = True) -> TrainedChain:
    """What the chain run at `output_dir` (default: the repository) left: `version` of the
    `architecture` policy ("candidate", the default, or "original"; 0: notebook 06's, 1, 2, ...:
    fine-tuned by notebook 08; default: the newest) with the rewards table it serves: its own,
    with the rewards of the newest listener model version in place when the live loop saved one
    (`helpers.live`; `taste=False`: without).

    A missing or damaged file is an error naming the notebook that writes it.
    """
    paths = output_dir if isinstance(output_dir, ProjectPaths) else ProjectPaths.at(output_dir)
    saved = versions(paths.models, architecture)
    if not saved:
        raise missing_artefact(checkpoint_path(paths.models, architecture), ARTEFACTS["policy"].produced_by)
    version = saved[-1] if version is None else version
    if version not in saved:
        raise FileNotFoundError(f"no version {version} of the {architecture} policy in {paths.models}; "
                                f"saved versions: {saved}")
    table = paths.read_table("rewards") if version == 0 else read_parquet(
        version_rewards_path(paths.models, version, architecture))
    pool = TrackPool.from_table(table, source=str(paths.file("rewards")) if version == 0 else
                                str(version_rewards_path(paths.models, version, architecture)))
    run = TrainingRun.load(version_path(paths.models, version, architecture), pool)
    tastes = taste_versions(paths.models) if taste else []
    taste_version = tastes[-1] if tastes else None
    if taste_version is not None:  # the policy was checked against its own table; it serves the taste version's
        table = table.assign(reward=read_taste_rewards(paths.models, taste_version, table["id"].to_numpy()))
        pool = TrackPool.from_table(table, source=str(taste_file(paths.models, "taste_rewards", taste_version)))
    weights = RewardWeights.load(paths.file("reward_weights"))
    return TrainedChain(paths, architecture, version, table, pool, run, weights, taste_version)
