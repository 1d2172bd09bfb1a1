"""The playlist MDP: the gymnasium `PlaylistEnv` and the batched `BatchPlaylistEnv` training uses.

An episode builds a playlist of `playlist_length` tracks: a start track, then
`playlist_length - 1` picks. At every step the agent sees the current track and picks one of
its `n_candidates` nearest tracks in latent space (Euclidean distance over `latent_*`) among
the tracks not yet in the playlist, so no track ever repeats. The reward is the picked
track's `reward` from `rewards.parquet`.

Nearest neighbours come from a prebuilt index, never from a scan of the catalogue: row `i`
holds the `n_candidates + playlist_length - 2` nearest other tracks of track `i`. At pick `t`
the playlist holds `t` tracks besides the current one, so at most `t` entries of that row are
taken and the first `n_candidates` free entries of the row are the exact candidates.
Ties in distance (identical latents) are broken by row order in the table.

Besides the latents, the agent observes what its reward table says about each candidate
(`REWARD_FEATURES`, in the table's units): the candidate's own reward, the best and mean
reward among the candidate's `n_candidates` nearest tracks, and the best and mean reward of
the candidates that choosing it would offer at the next pick (its first `n_candidates`
neighbours not yet in the playlist), and a plan value: the best return of the picks left
after it, searched exactly over the real offers (no repeats) for `look_ahead_depth` picks and,
beyond them, for paths that never go straight back to the track they just left
(`plan_values`, a dynamic programme over the neighbour index).
They are always computed from the environment's own
`TrackPool`, so a policy serving an updated reward table sees the updated values at once.
"""
from __future__ import annotations

import hashlib
import warnings
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors
from tqdm.auto import tqdm

from helpers.paths import atomic_write, read_parquet
from helpers.validation import check_columns, check_unique_ids, latent_columns

OBSERVATIONS = ("latent", "candidates")
LATENT_DTYPE = np.float32  # the precision the environment holds latents in: its neighbours are computed on these
REWARD_FEATURES = ("reward", "neighbour_best", "neighbour_mean", "next_best", "next_mean", "plan_value")


@dataclass(frozen=True)
class TrackPool:
    """The pool of tracks a policy picks from: the rewards table served, as validated arrays.

    The catalogue (the songs a chain is run on, notebook 01) becomes a pool once notebooks
    02-05 gave each track a latent state and a reward; a fine-tuned version serves another pool
    of the same tracks (its updated rewards). Rows keep the rewards table's order.
    `ids` are the track ids, `latents` the (n_tracks, latent_dim) states in [0, 1] and
    `rewards` the reward of playing each track. `table` keeps every column for display.
    """

    ids: np.ndarray
    latents: np.ndarray
    rewards: np.ndarray
    table: pd.DataFrame

    @classmethod
    def from_table(cls, table: pd.DataFrame, source: str = "the rewards table") -> "TrackPool":
        """Validate `table` (columns `id`, `reward`, `latent_*`) and build the catalogue."""
        check_columns(table, ["reward"], source, hint="Run notebook 05_rewards.")
        columns = latent_columns(table, source)
        if len(table) < 2:
            raise ValueError(f"{source} has {len(table)} track(s): a playlist needs at least 2.")
        check_unique_ids(table, source)
        latents = table[columns].to_numpy(LATENT_DTYPE)
        rewards = table["reward"].to_numpy(np.float64)
        for name, values in (("latent_*", latents), ("reward", rewards)):
            if not np.isfinite(values).all():
                raise ValueError(f"{source}: column(s) {name} hold NaN or infinite values.")
        if latents.min() < 0 or latents.max() > 1:
            raise ValueError(
                f"{source}: the latent_* columns must lie in [0, 1], found "
                f"[{latents.min():.3g}, {latents.max():.3g}]."
            )
        latents.flags.writeable = False  # read-only: inputs derived from them can never go stale
        rewards.flags.writeable = False
        return cls(table["id"].astype(str).to_numpy(object), latents, rewards, table.reset_index(drop=True))

    @classmethod
    def from_parquet(cls, path: str | Path) -> "TrackPool":
        """Read and validate a rewards table (notebook 05's, or one saved with a fine-tuned
        version by notebook 08); a damaged file names the notebook that writes it."""
        return cls.from_table(read_parquet(path, expected="rewards"), source=str(path))

    @property
    def n_tracks(self) -> int:
        return len(self.ids)

    @property
    def latent_dim(self) -> int:
        return self.latents.shape[1]

    @cached_property
    def latent_fingerprint(self) -> str:
        """Identifies the ids and latents: the neighbour index depends on nothing else."""
        digest = hashlib.sha256("\n".join(self.ids).encode())
        digest.update(np.ascontiguousarray(self.latents).tobytes())
        return digest.hexdigest()[:16]

    @cached_property
    def fingerprint(self) -> str:
        """Identifies ids, latents and rewards: what a trained policy was trained on."""
        digest = hashlib.sha256(self.latent_fingerprint.encode())
        digest.update(np.ascontiguousarray(self.rewards).tobytes())
        return digest.hexdigest()[:16]

    @cached_property
    def _row_of(self) -> pd.Index:
        return pd.Index(self.ids)

    def rows_of(self, track_ids: Any) -> np.ndarray:
        """Row numbers of `track_ids`; a KeyError names the ids that are not in the catalogue."""
        rows = self._row_of.get_indexer(np.atleast_1d(np.asarray(track_ids, dtype=object)))
        if (rows < 0).any():
            unknown = np.atleast_1d(track_ids)[rows < 0][:5].tolist()
            raise KeyError(f"track id(s) not in the catalogue: {unknown}")
        return rows


def neighbours_needed(playlist_length: int, n_candidates: int) -> int:
    """Index width that makes the candidates exact for every pick of a playlist."""
    if playlist_length < 2 or n_candidates < 1:
        raise ValueError(
            f"playlist_length must be >= 2 and n_candidates >= 1, got {playlist_length} and {n_candidates}."
        )
    return n_candidates + playlist_length - 2


def build_neighbour_index(latents: np.ndarray, n_neighbours: int, batch_size: int = 65_536,
                          show_progress: bool = True) -> np.ndarray:
    """The `n_neighbours` nearest other tracks of every track, nearest first.

    Returns an int32 array (n_tracks, n_neighbours); row `i` never contains `i`; ties in
    distance are ordered by row number; entries are -1 when the catalogue is too small.
    A KD-tree answers the queries in batches, so memory stays small at a million tracks.
    """
    latents = np.asarray(latents, dtype=np.float64)
    n_tracks = len(latents)
    tree = NearestNeighbors(algorithm="kd_tree").fit(latents)
    width = min(n_neighbours, n_tracks - 1)
    index = np.full((n_tracks, n_neighbours), -1, dtype=np.int32)
    starts = range(0, n_tracks, batch_size)
    for start in tqdm(starts, desc="neighbour index", disable=not show_progress or len(starts) < 2):
        rows = np.arange(start, min(start + batch_size, n_tracks))
        index[rows, :width] = _nearest_others(tree, latents, rows, width)
    return index


def nearest_others(latents: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
    """The `width` nearest other tracks of each of `rows`, ordered by (distance, row): the
    candidates the environment offers from a track at the first pick, for a few tracks (the
    gridworld figure). Pass latents at `LATENT_DTYPE` to get exactly the environment's."""
    latents = np.asarray(latents, dtype=np.float64)
    if not 1 <= width < len(latents):
        raise ValueError(f"width must be between 1 and the number of tracks minus one ({len(latents) - 1}), "
                         f"got {width}")
    tree = NearestNeighbors(algorithm="kd_tree").fit(latents)
    return _nearest_others(tree, latents, np.asarray(rows, dtype=np.int64), width)


def _nearest_others(tree: NearestNeighbors, latents: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
    """Nearest `width` tracks of `rows` other than themselves, ordered by (distance, row).

    One extra neighbour is fetched to detect a tie at the cut; the rare tied rows are
    queried again with more neighbours until the cut is unambiguous.
    """
    n_tracks = len(latents)
    result = np.empty((len(rows), width), dtype=np.int32)
    pending = np.arange(len(rows))
    fetch = min(width + 2, n_tracks)
    while len(pending):
        distances, neighbours = tree.kneighbors(latents[rows[pending]], n_neighbors=fetch)
        order = np.lexsort((neighbours, distances), axis=-1)
        distances = np.take_along_axis(distances, order, axis=1)
        neighbours = np.take_along_axis(neighbours, order, axis=1)
        is_self = neighbours == rows[pending, None]
        # Drop the row itself; if it tied out of the fetched set, drop the last entry instead.
        is_self[~is_self.any(axis=1), -1] = True
        distances = distances[~is_self].reshape(len(pending), fetch - 1)
        neighbours = neighbours[~is_self].reshape(len(pending), fetch - 1)
        tied = (fetch < n_tracks) & (distances[:, width - 1] == distances[:, -1])
        result[pending[~tied]] = neighbours[~tied, :width]
        pending = pending[tied]
        fetch = min(2 * fetch, n_tracks)
    return result


def load_neighbour_index(pool: TrackPool, n_neighbours: int, cache_path: str | Path | None = None,
                         show_progress: bool = True) -> np.ndarray:
    """The neighbour index of `pool`, read from `cache_path` when it fits, else built.

    A cached index is reused when it was built from the same ids and latents and is at least
    `n_neighbours` wide (the first columns of a wider index are a narrower one); a freshly
    built index is written to `cache_path` (atomically: a crash never leaves a truncated
    cache) so it is built once. A cache that cannot be read (truncated, or not an index) is
    rebuilt, with a warning.
    """
    if cache_path is not None and Path(cache_path).exists():
        cached = _read_neighbour_cache(Path(cache_path), pool.latent_fingerprint, n_neighbours)
        if cached is not None:
            return cached
    index = build_neighbour_index(pool.latents, n_neighbours, show_progress=show_progress)
    if cache_path is not None:
        with atomic_write(cache_path) as temporary, open(temporary, "wb") as cache:
            np.savez(cache, neighbours=index, fingerprint=np.array(pool.latent_fingerprint))
    return index


def _read_neighbour_cache(path: Path, fingerprint: str, n_neighbours: int) -> np.ndarray | None:
    """The cached index's first `n_neighbours` columns if it fits the catalogue; None if it does
    not fit or cannot be read (then it is rebuilt)."""
    try:
        with np.load(path) as cached:
            neighbours, cached_fingerprint = cached["neighbours"], str(cached["fingerprint"])
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as error:
        warnings.warn(f"the neighbour index {path} cannot be read ({type(error).__name__}: {error}); "
                      "rebuilding it", stacklevel=3)
        return None
    if neighbours.ndim != 2 or neighbours.shape[1] < n_neighbours or cached_fingerprint != fingerprint:
        return None
    return neighbours[:, :n_neighbours]


def free_neighbours(neighbour_rows: np.ndarray, playlists: np.ndarray,
                    n_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `n_candidates` tracks of each neighbour row that are not in its playlist.

    `neighbour_rows` is (batch, width) and `playlists` is (batch, length), both with -1 for
    empty entries. Returns the candidate rows (batch, n_candidates), -1 where fewer remain, and
    the mask of real candidates.
    """
    taken = neighbour_rows < 0
    for played in playlists.T[(playlists >= 0).any(axis=0)]:  # a loop over the playlist's length, not the batch
        taken |= neighbour_rows == played[:, None]
    return first_free(neighbour_rows, taken, n_candidates)


def first_free(neighbour_rows: np.ndarray, taken: np.ndarray, n_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `n_candidates` entries of each neighbour row (last axis) that are not `taken`, -1
    where fewer remain, and the mask of real ones."""
    width = neighbour_rows.shape[-1]
    # Unique keys, free entries first and nearest first: sorting them (5x faster than a stable sort of
    # `taken`) gives each entry's position (key % width) and whether it is free (key < width).
    keys = (taken * width + np.arange(width)).astype(np.min_scalar_type(2 * width))
    first = np.sort(keys, axis=-1)[..., :n_candidates]
    mask = first < width
    return np.where(mask, np.take_along_axis(neighbour_rows, first % width, axis=-1), -1), mask


def best_and_mean(rows: np.ndarray, mask: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """Best and mean reward over the real entries of each row of `rows`; shape (*rows.shape[:-1], 2).

    `mask` marks the real entries; a row without any gets (0, 0).
    """
    values = rewards[np.where(mask, rows, 0)]
    count = mask.sum(axis=-1)
    best = np.where(count > 0, np.where(mask, values, -np.inf).max(axis=-1, initial=-np.inf), 0.0)
    mean = np.where(mask, values, 0.0).sum(axis=-1) / np.maximum(count, 1)
    return np.stack([best, mean], axis=-1)


def neighbourhood_rewards(neighbours: np.ndarray, rewards: np.ndarray, n_candidates: int) -> np.ndarray:
    """(n_tracks, 2): the best and mean reward among each track's `n_candidates` nearest tracks.

    One vectorised pass over the neighbour index (about a second at 1.2M tracks).
    """
    rows = neighbours[:, :n_candidates]
    return best_and_mean(rows, rows >= 0, rewards)


def came_from(nearest: np.ndarray, rows: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Where `previous` stands in `nearest[row]` (0 nearest) for each of `rows`, `nearest.shape[1]`
    when it is not there; `rows` and `previous` broadcast together. `nearest` is the first
    `n_candidates` columns of the neighbour index, contiguous: gathering whole rows of it is
    nearly twice as fast as gathering a slice of the wide index."""
    hit = nearest[rows] == np.asarray(previous)[..., None]
    return np.where(hit.any(axis=-1), hit.argmax(axis=-1), nearest.shape[1])


def plan_values(neighbours: np.ndarray, rewards: np.ndarray, n_candidates: int, n_picks: int) -> np.ndarray:
    """(n_picks, n_tracks, n_candidates + 1): the best return of h more picks from track i when the
    playlist just came from the s-th of i's nearest tracks (`came_from`), never going straight back.

    Relaxing "no repeats" to "no immediate return" keeps the planner from counting a bounce
    between two good neighbours (A, B, A, B, ...), the common case in a nearest-neighbour graph.
    From track i with the s-th nearest excluded, the candidates are the first `n_candidates` of
    i's `n_candidates + 1` nearest other than the s-th, so

        values[h, i, s] = max over those j of (reward[j] + values[h - 1, j, came_from(j, i)])

    with values[0] = 0: h vectorised passes over the index (seconds at 1.2M tracks).
    """
    rows = neighbours[:, : n_candidates + 1]
    real = rows >= 0
    back = came_from(np.ascontiguousarray(neighbours[:, :n_candidates]), np.where(real, rows, 0),
                     np.arange(len(rewards))[:, None])
    values = np.zeros((n_picks, len(rewards), n_candidates + 1), dtype=np.float32)
    for h in range(1, n_picks):
        gains = np.where(real, rewards[rows] + values[h - 1][rows, back], -np.inf)
        for excluded in range(n_candidates + 1):
            kept = [m for m in range(n_candidates + 1) if m != excluded][:n_candidates]
            best = gains[:, kept].max(axis=1)
            values[h, :, excluded] = np.where(np.isfinite(best), best, 0.0)
    return values


@dataclass(frozen=True)
class PlaylistBatch:
    """What the agent observes for a batch of playlists at one step.

    `current` (batch, latent_dim) is the current track's latent; `candidates`
    (batch, n_candidates, latent_dim) the candidates' latents (zeros where missing); `mask`
    (batch, n_candidates) marks real candidates; `steps_left` (batch,) is the share of picks
    still to make, 1 at the first pick; `candidate_rewards` (batch, n_candidates,
    len(REWARD_FEATURES)) what the reward table says about each candidate, in its units (zeros
    where missing). `current_rows` and `candidate_rows` are catalogue rows; `playlists`
    (batch, playlist_length) the rows played so far, -1 for the picks to come.
    """

    current: np.ndarray
    candidates: np.ndarray
    mask: np.ndarray
    steps_left: np.ndarray
    candidate_rewards: np.ndarray
    current_rows: np.ndarray
    candidate_rows: np.ndarray
    playlists: np.ndarray


class BatchPlaylistEnv:
    """Many playlists built at once with numpy, in lock step: the training environment behind `PlaylistEnv`.

    Not a gymnasium `VectorEnv`: there is no auto-reset and `step` returns (observation,
    rewards, done) for the whole batch. Every episode has exactly `playlist_length - 1` picks,
    so the batch moves in lock step and no Python loop runs over episodes. Rewards are returned
    in the table's units. `look_ahead_depth` is how many picks after a candidate its plan value
    searches exactly (`look_ahead`) before it reads `plan_values`.
    """

    def __init__(self, pool: TrackPool, neighbours: np.ndarray, playlist_length: int = 10,
                 n_candidates: int = 4, *, look_ahead_depth: int = 1):
        if look_ahead_depth < 1:
            raise ValueError(f"look_ahead_depth must be >= 1, got {look_ahead_depth}")
        width = neighbours_needed(playlist_length, n_candidates)
        if pool.n_tracks < playlist_length:
            raise ValueError(
                f"the catalogue has {pool.n_tracks} tracks: a playlist of {playlist_length} "
                "tracks without repeats needs at least that many."
            )
        if neighbours.shape[0] != pool.n_tracks or neighbours.shape[1] < width:
            raise ValueError(
                f"neighbour index of shape {neighbours.shape} does not fit: expected "
                f"({pool.n_tracks}, >= {width}) for playlists of {playlist_length} and {n_candidates} candidates."
            )
        self.pool = pool
        self.neighbours = np.ascontiguousarray(neighbours[:, :width])
        self.playlist_length = playlist_length
        self.n_candidates = n_candidates
        self.n_picks = playlist_length - 1
        self.look_ahead_depth = look_ahead_depth
        self._padded_latents = np.vstack([pool.latents, np.zeros((1, pool.latent_dim), np.float32)])
        self._nearest = np.ascontiguousarray(self.neighbours[:, :n_candidates])  # for `came_from`
        self._neighbourhood = neighbourhood_rewards(self.neighbours, pool.rewards, n_candidates)
        self._plan_values = plan_values(self.neighbours, pool.rewards, n_candidates, self.n_picks)
        self.playlists = np.empty((0, playlist_length), dtype=np.int64)
        self.step_index = 0
        self._observation: PlaylistBatch | None = None

    def reset(self, start_rows: np.ndarray) -> PlaylistBatch:
        """Start one playlist per entry of `start_rows` (catalogue rows)."""
        start_rows = np.asarray(start_rows, dtype=np.int64)
        if start_rows.ndim != 1 or (start_rows < 0).any() or (start_rows >= self.pool.n_tracks).any():
            raise ValueError(f"start_rows must be a 1-D array of rows in [0, {self.pool.n_tracks}).")
        self.playlists = np.full((len(start_rows), self.playlist_length), -1, dtype=np.int64)
        self.playlists[:, 0] = start_rows
        self.step_index = 0
        self._observation = self._observe()
        return self._observation

    def step(self, actions: np.ndarray) -> tuple[PlaylistBatch | None, np.ndarray, bool]:
        """Pick candidate `actions[b]` in playlist `b`; return (observation, rewards, done).

        The observation is None once the playlists are complete (`done`).
        """
        observation = self._observation
        if observation is None:
            raise RuntimeError("call reset() before step(), and again after the playlists are done.")
        actions = np.asarray(actions, dtype=np.int64)
        batch = np.arange(len(self.playlists))
        if (actions.shape != batch.shape or (actions < 0).any() or (actions >= self.n_candidates).any()
                or not observation.mask[batch, actions].all()):
            raise ValueError("every action must index a real candidate (see the observation's mask).")
        picks = observation.candidate_rows[batch, actions]
        self.step_index += 1
        self.playlists[:, self.step_index] = picks
        done = self.step_index == self.n_picks
        self._observation = None if done else self._observe()
        return self._observation, self.pool.rewards[picks], done

    def resume(self, playlists: np.ndarray) -> PlaylistBatch:
        """Go on with partly built playlists (pool rows, -1 for the picks to come), all at
        the same step: e.g. after the reward table changed in the middle of a playlist."""
        playlists = np.asarray(playlists, dtype=np.int64)
        built = (playlists >= 0).sum(axis=1)
        if (playlists.ndim != 2 or playlists.shape[1] != self.playlist_length or len(set(built)) != 1
                or not 1 <= built[0] < self.playlist_length or (playlists[:, : built[0]] < 0).any()):
            raise ValueError(f"playlists must be (batch, {self.playlist_length}) rows, each with the same number "
                             "(1 or more, not all) of tracks first and -1 after")
        self.playlists = playlists.copy()
        self.step_index = int(built[0]) - 1
        self._observation = self._observe()
        return self._observation

    def _observe(self) -> PlaylistBatch:
        current = self.playlists[:, self.step_index]
        candidate_rows, mask = free_neighbours(self.neighbours[current], self.playlists, self.n_candidates)
        steps_left = np.full(len(current), (self.n_picks - self.step_index) / self.n_picks, dtype=np.float32)
        return PlaylistBatch(
            current=self.pool.latents[current],
            candidates=self._padded_latents[candidate_rows],
            mask=mask,
            steps_left=steps_left,
            candidate_rewards=self.candidate_rewards(candidate_rows, mask, self.playlists),
            current_rows=current,
            candidate_rows=candidate_rows,
            playlists=self.playlists.copy(),
        )

    def candidate_rewards(self, candidate_rows: np.ndarray, mask: np.ndarray, playlists: np.ndarray) -> np.ndarray:
        """`REWARD_FEATURES` of every candidate, from this environment's reward table (zeros where missing).

        `playlists` (batch, length, -1 where empty) are the tracks played so far, all at the
        same step. The next pick's offer after candidate c is the first `n_candidates` tracks of
        c's neighbour row outside the playlist and c; it is exact (the index is wide enough for
        every pick of the playlist), and costs one pass over the candidates' neighbour rows.
        """
        rows = np.where(mask, candidate_rows, 0)
        next_rows, next_mask, values = self._search_after(playlists, rows, depth=self.look_ahead_depth)
        features = np.concatenate([
            self.pool.rewards[rows][..., None],
            self._neighbourhood[rows],
            best_and_mean(next_rows, next_mask, self.pool.rewards),
            values[..., None],
        ], axis=-1)
        return np.where(mask[..., None], features, 0.0).astype(np.float32)

    def look_ahead(self, playlists: np.ndarray, candidate_rows: np.ndarray, mask: np.ndarray, *,
                   depth: int) -> np.ndarray:
        """(batch, n_candidates): each candidate's reward plus the best return of the picks after
        it, exact over the real offers (no repeats) for the `depth` picks after it and read from
        `plan_values` beyond them; -inf for missing candidates. `playlists` (batch, any length,
        -1 where empty) are the rows played so far, all at the same step."""
        rows = np.where(mask, candidate_rows, candidate_rows[:, :1])  # a missing one is searched, then dropped
        values = self.pool.rewards[rows] + self._search_after(playlists, rows, depth=depth)[2]
        return np.where(mask, values, -np.inf)

    def _search_after(self, playlists: np.ndarray, rows: np.ndarray, *,
                      depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The exact next offer (rows, mask) after each of `rows` (batch, n) played next in
        `playlists`, and the best return of the picks after it, searched `depth` picks deep."""
        # The played columns in the index's integer type: comparing mixed types converts every time.
        played = playlists[:, (playlists >= 0).any(axis=0)].astype(self.neighbours.dtype)
        next_rows, next_mask = self._offers(played, rows[:, :, None])
        return next_rows, next_mask, self._searched(played, rows[:, :, None], next_rows, next_mask, depth=depth)

    def _offers(self, played: np.ndarray, paths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The exact next offer (batch, branches, n_candidates) after each of `paths` (batch,
        branches, steps): rows picked after the playlist `played` (batch, length), the last one
        current. The playlist is shared by its branches, never copied for each."""
        neighbour_rows = self.neighbours[paths[..., -1]]
        taken = neighbour_rows < 0
        for column in played.T:  # loops over the playlist's and the path's length, not the batch
            taken |= neighbour_rows == column[:, None, None]
        for step in range(paths.shape[2]):
            taken |= neighbour_rows == paths[:, :, step, None]
        return first_free(neighbour_rows, taken, self.n_candidates)

    def _searched(self, played: np.ndarray, paths: np.ndarray, next_rows: np.ndarray, next_mask: np.ndarray, *,
                  depth: int) -> np.ndarray:
        """(batch, branches): the best return of the picks left after each of `paths` (see
        `_offers`), from its next offer: every branch of the next `depth - 1` picks expanded at
        once, then `plan_value`. Depth 1 is `plan_value`."""
        batch, branches, steps = paths.shape
        picks_left = self.n_picks - played.shape[1] - steps + 1  # the playlists move in lock step
        if picks_left <= 0:
            return np.zeros((batch, branches))
        if depth <= 1 or picks_left == 1:
            return self.plan_value(paths[..., -1].ravel(), next_rows.reshape(-1, self.n_candidates),
                                   next_mask.reshape(-1, self.n_candidates),
                                   np.full(batch * branches, picks_left)).reshape(batch, branches)
        children = np.where(next_mask, next_rows, next_rows[..., :1])
        child_paths = np.concatenate([np.repeat(paths, self.n_candidates, axis=1), children.reshape(batch, -1, 1)],
                                     axis=2)
        offers = self._offers(played, child_paths)
        deeper = self.pool.rewards[children] + self._searched(played, child_paths, *offers,
                                                              depth=depth - 1).reshape(children.shape)
        best = np.where(next_mask, deeper, -np.inf).max(axis=2, initial=-np.inf)
        return np.where(next_mask.any(axis=2), best, 0.0)

    def plan_value(self, rows: np.ndarray, next_rows: np.ndarray, next_mask: np.ndarray,
                   picks_left: np.ndarray) -> np.ndarray:
        """Best return of the `picks_left` picks after each of `rows`: its exact next offer
        (`next_rows`, `next_mask`, from `free_neighbours`), then `plan_values`."""
        offered = np.where(next_mask, next_rows, 0)
        later = np.maximum(picks_left - 1, 0)[:, None]
        gains = self.pool.rewards[offered] + self._plan_values[
            later, offered, came_from(self._nearest, offered, rows[:, None])]
        best = np.where(next_mask, gains, -np.inf).max(axis=1, initial=-np.inf)
        return np.where((picks_left > 0) & np.isfinite(best), best, 0.0)


class PlaylistEnv(gym.Env):
    """One playlist at a time, with the standard gymnasium API.

    `observation="latent"` observes the current track's latent only (the original design);
    `observation="candidates"` observes a dict with the current latent, the candidates'
    latents, their mask, the share of picks left and the candidates' `REWARD_FEATURES`. Either way `info` carries the candidate
    ids and latents. The action is the index of a candidate, nearest first. Rewards are
    multiplied by `reward_scale` (`info["table_reward"]` keeps the table's units).
    Starts are drawn from `start_rows` (default: every track) unless
    `reset(options={"start_id": ...})` names one. `look_ahead_depth` is the plan value's
    (see `BatchPlaylistEnv`).
    """

    metadata = {"render_modes": []}

    def __init__(self, pool: TrackPool, neighbours: np.ndarray | None = None, playlist_length: int = 10,
                 n_candidates: int = 4, *, observation: str = "latent", reward_scale: float = 1.0,
                 start_rows: np.ndarray | None = None, look_ahead_depth: int = 1):
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {OBSERVATIONS}, got {observation!r}.")
        if neighbours is None:
            neighbours = build_neighbour_index(
                pool.latents, neighbours_needed(playlist_length, n_candidates), show_progress=False
            )
        self.batch_env = BatchPlaylistEnv(pool, neighbours, playlist_length, n_candidates,
                                          look_ahead_depth=look_ahead_depth)
        self.pool = pool
        self.observation = observation
        self.reward_scale = float(reward_scale)
        self.start_rows = np.arange(pool.n_tracks) if start_rows is None else np.asarray(start_rows)
        latent = gym.spaces.Box(0.0, 1.0, shape=(pool.latent_dim,), dtype=np.float32)
        if observation == "latent":
            self.observation_space = latent
        else:
            self.observation_space = gym.spaces.Dict({
                "current": latent,
                "candidates": gym.spaces.Box(0.0, 1.0, shape=(n_candidates, pool.latent_dim), dtype=np.float32),
                "mask": gym.spaces.MultiBinary(n_candidates),
                "steps_left": gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32),
                "candidate_rewards": gym.spaces.Box(  # table units, plan values up to n_picks rewards; 0: missing
                    self.batch_env.n_picks * min(0.0, pool.rewards.min()),
                    self.batch_env.n_picks * max(0.0, pool.rewards.max()),
                    shape=(n_candidates, len(REWARD_FEATURES)), dtype=np.float32),
            })
        self.action_space = gym.spaces.Discrete(n_candidates)
        self._batch: PlaylistBatch | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and options.get("start_id") is not None:
            start = self.pool.rows_of(options["start_id"])[0]
        else:
            start = self.np_random.choice(self.start_rows)
        self._batch = self.batch_env.reset(np.array([start]))
        return self._observe(self._batch), self._info(self._batch)

    def step(self, action):
        if self._batch is None:
            raise RuntimeError("call reset() before step(), and again after the playlist is complete.")
        if not (0 <= int(action) < self.action_space.n and self._batch.mask[0, int(action)]):
            remaining = int(self._batch.mask[0].sum())
            raise ValueError(f"action {action} is not a real candidate: {remaining} candidate(s) remain.")
        batch, rewards, _ = self.batch_env.step(np.array([int(action)]))
        self._batch = batch
        table_reward = float(rewards[0])
        info = {"table_reward": table_reward, "playlist": self.playlist_ids()}
        if batch is not None:
            info |= self._info(batch)
        return self._observe(batch), table_reward * self.reward_scale, batch is None, False, info

    def playlist_ids(self) -> list[str]:
        """Ids of the tracks of the current playlist, start first."""
        rows = self.batch_env.playlists[0]
        return self.pool.ids[rows[rows >= 0]].tolist()

    def _observe(self, batch: PlaylistBatch | None):
        if batch is None:
            # The playlist is complete: the last pick is the current track and nothing is left to choose.
            n_candidates, latent_dim = self.action_space.n, self.pool.latent_dim
            latent = self.pool.latents[self.batch_env.playlists[0, -1]]
            candidates = np.zeros((n_candidates, latent_dim), dtype=np.float32)
            mask, steps_left = np.zeros(n_candidates, dtype=np.int8), np.zeros(1, dtype=np.float32)
            candidate_rewards = np.zeros((n_candidates, len(REWARD_FEATURES)), dtype=np.float32)
        else:
            latent, candidates = batch.current[0], batch.candidates[0]
            mask, steps_left = batch.mask[0].astype(np.int8), batch.steps_left[:1]
            candidate_rewards = batch.candidate_rewards[0]
        if self.observation == "latent":
            return latent.copy()
        return {"current": latent.copy(), "candidates": candidates.copy(), "mask": mask,
                "steps_left": steps_left.copy(), "candidate_rewards": candidate_rewards.copy()}

    def _info(self, batch: PlaylistBatch) -> dict[str, Any]:
        mask = batch.mask[0]
        return {
            "track_id": self.pool.ids[batch.current_rows[0]],
            "candidate_ids": self.pool.ids[batch.candidate_rows[0][mask]].tolist(),
            "candidate_latents": batch.candidates[0][mask],
            "mask": mask.copy(),
        }


def reachable_rows(neighbours: np.ndarray, start_rows: np.ndarray, hops: int) -> np.ndarray:
    """The sorted rows reachable from `start_rows` in at most `hops` steps along the neighbour index."""
    seen = np.zeros(len(neighbours), dtype=bool)
    frontier = np.unique(np.asarray(start_rows, dtype=np.int64))
    seen[frontier] = True
    for _ in range(hops):
        reached = neighbours[frontier].ravel()
        reached = np.unique(reached[reached >= 0])
        frontier = reached[~seen[reached]]
        if not len(frontier):
            break
        seen[frontier] = True
    return np.flatnonzero(seen)


def local_rows(neighbours: np.ndarray, playlists: np.ndarray, playlist_length: int = 10,
               n_candidates: int = 4) -> np.ndarray:
    """The sorted pool rows the rest of `playlists` can reach, with the tracks already in them.

    `playlists` (batch, playlist_length) are pool rows, -1 for the picks to come, all at
    the same step. Every input the policy sees (the candidates, their next offer, their
    neighbourhood and plan value) lies within picks_left + 1 steps of the current track along
    the index, so these rows are all an environment needs to plan the rest exactly.
    """
    playlists = np.asarray(playlists, dtype=np.int64)
    built = (playlists >= 0).sum(axis=1)
    current = playlists[np.arange(len(playlists)), built - 1]
    width = neighbours_needed(playlist_length, n_candidates)
    reached = reachable_rows(neighbours[:, :width], current, playlist_length - int(built[0]) + 1)
    return np.union1d(reached, playlists[playlists >= 0])


def local_env(pool: TrackPool, neighbours: np.ndarray, playlists: np.ndarray, rows: np.ndarray, *,
              rewards: np.ndarray | None = None, playlist_length: int = 10, n_candidates: int = 4,
              look_ahead_depth: int = 1) -> tuple[BatchPlaylistEnv, PlaylistBatch]:
    """An environment over the pool's `rows` only (`local_rows` of `playlists`), resumed at `playlists`.

    Its observations and rewards are exactly the whole pool's, at the cost of that
    neighbourhood: a playlist at 1.2M songs is planned without the catalogue-wide pass of
    `plan_values`. `rewards` (one per entry of `rows`) replaces the pool's rewards there.
    Local row r is pool row rows[r]. Returns the environment and its first observation.
    """
    width = neighbours_needed(playlist_length, n_candidates)
    local = np.full(len(neighbours), -1, dtype=np.int64)
    local[rows] = np.arange(len(rows))
    index = neighbours[rows, :width]
    # Rows at the edge point outside; they are never read (see local_rows), so -1 is safe there.
    local_index = np.where(index >= 0, local[np.maximum(index, 0)], -1).astype(np.int32)
    served = pool.rewards[rows] if rewards is None else np.asarray(rewards, dtype=np.float64)
    sub = TrackPool(pool.ids[rows], pool.latents[rows], served, pool.table.iloc[rows].reset_index(drop=True))
    env = BatchPlaylistEnv(sub, local_index, playlist_length, n_candidates, look_ahead_depth=look_ahead_depth)
    playlists = np.asarray(playlists, dtype=np.int64)
    return env, env.resume(np.where(playlists >= 0, local[np.maximum(playlists, 0)], -1))
