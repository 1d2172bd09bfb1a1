"""The live loop's listener model: learned from the log between two playlists, saved as versions.

`LiveLearner` fits the taste posterior (`helpers.taste.TasteModel`, from the population prior
`TastePrior()`) to every record the learning step reads (`helpers.feedback.learning_log`: a
person's real plays, or the simulated ones offline; previews left out), mapped to their songs
through notebook 01's aliases, one session after the other; a person's imported history
(`helpers.history`) is one session of old plays, before the others, so a first playlist already
starts from it. Each time that log has changed it
saves the model as a new **taste version** n, two files in `models/`:

- `taste_v{n}.rewards.parquet` (`ARTEFACTS["taste_rewards"]`): `id`, `reward`: the posterior
  mean reward of every song of the catalogue (what `Recommender.load()` serves), written first;
- `taste_v{n}.json` (`ARTEFACTS["taste_record"]`): the version, when it was made, the policy it
  is served with, the prior, the sha256 of the rewards file and the provenance of the records it
  learnt from (`helpers.finetune.log_provenance`: count, sessions, first/last timestamp, sha256),
  written last, atomically. A version exists only once its JSON does, and its rewards file is
  checked against the digest there: an update interrupted anywhere leaves the previous version
  served.

Playlists that are played are planned on a Thompson draw of the posterior (`exploring`), over
only the songs the playlist can reach (`Recommender.serving`), so switching to a new model does
not rebuild the catalogue's environment.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.feedback import HISTORY_SOURCES, REAL_SOURCES, default_log_name, learning_log, read_interactions
from helpers.finetune import log_provenance
from helpers.paths import ProjectPaths
from helpers.recommend import (Recommender, TrainedChain, save_taste_version, taste_model_version, taste_record,
                              taste_versions)
from helpers.taste import THOMPSON_SCALE, TastePrior, TasteModel

TASTE_SEED = 0  # the model's random Fourier features: one fixed basis, so versions compare
RecordsReader = Callable[[], tuple[pd.DataFrame, str]]


def records_reader(paths: ProjectPaths, simulated: bool, log_path: Path | None = None) -> RecordsReader:
    """What the learner reads: `learning_log` of the run (its simulated plays when `simulated`,
    else the person's), or, when the command was given a log of its own, that log's records of
    the same kind, previews left out."""
    if log_path is None or log_path.resolve() == (paths.feedback / default_log_name(
            "simulated" if simulated else REAL_SOURCES[0])).resolve():
        return lambda: learning_log(paths.feedback, "simulated" if simulated else None)

    def read() -> tuple[pd.DataFrame, str]:
        records = read_interactions(log_path, sources="simulated" if simulated else REAL_SOURCES)
        records = records[~records["preview"]].reset_index(drop=True)
        if not len(records):
            raise FileNotFoundError(f"no records (previews aside) in {log_path}")
        return records, f"learning from {len(records)} records of {log_path}"
    return read


class LiveLearner:
    """The listener model of the live loop over a trained chain, refitted from the log after each session."""

    def __init__(self, chain: TrainedChain, read_records: RecordsReader, prior: TastePrior = TastePrior(),
                 exploration: float = THOMPSON_SCALE) -> None:
        self.chain = chain
        self.read_records = read_records
        self.prior = prior
        self.exploration = exploration
        table = chain.table
        self.proximity = table["proximity_score"].to_numpy(np.float64)
        self.like_threshold = chain.listener_model.like_threshold
        self.base = Recommender(chain.run, chain.pool, chain.neighbours_path, chain.weights, aliases=chain.aliases)
        self.prior_model = TasteModel(chain.pool.latents, table["cluster"].to_numpy(np.int64), prior, seed=TASTE_SEED)
        self.model = self.prior_model
        saved = taste_versions(chain.paths.models)
        self.version = saved[-1] if saved else 0  # 0: the population prior, no plays
        self.message = ""

    @cached_property
    def _song_of_alias(self) -> pd.Series | None:
        """Notebook 01's id -> song id, each id once (built once: a pass over every alias)."""
        aliases = self.chain.aliases
        if aliases is None:
            return None
        songs = pd.Series(aliases["song_id"].to_numpy(), index=aliases["id"].to_numpy())
        return songs[~songs.index.duplicated()]

    @cached_property
    def _song_index(self) -> pd.Index:
        return pd.Index(self.chain.pool.ids)

    def song_rows(self, track_ids: pd.Series) -> np.ndarray:
        """The catalogue row of each logged track's song (through the aliases), -1 when not in it."""
        ids = pd.Index(track_ids.astype(str))
        if self._song_of_alias is not None:
            ids = pd.Index(self._song_of_alias.reindex(ids).fillna(pd.Series(ids, index=ids)).to_numpy())
        return self._song_index.get_indexer(ids)

    def update(self) -> int:
        """Refit the model to the whole learning log and, when the log changed since the newest
        version, save a new one. Returns the version now learnt (0: no plays yet)."""
        try:
            records, sentence = self.read_records()
        except FileNotFoundError:
            self.message = "no plays yet: the population prior"
            return self.version
        rows = self.song_rows(records["track_id"])
        known = rows >= 0
        model = copy.copy(self.prior_model)  # no plays yet; observing replaces, never mutates, its arrays
        history = known & records["source"].isin(HISTORY_SOURCES).to_numpy()
        live = known & ~history
        order = records[live].groupby("session_id", sort=False)["timestamp"].min().sort_values().index
        sessions = [history] if history.any() else []  # the imported history: one session before the live ones
        sessions += [live & (records["session_id"] == session).to_numpy() for session in order]
        listened = records["percentage_listened"].to_numpy(np.float64)
        evidence = records["share_from_evidence"].to_numpy(bool)
        model.observe_sessions([(rows[mask], listened[mask], evidence[mask]) for mask in sessions])
        self.model = model
        left_out = f"; {int((~known).sum())} record(s) of songs not in the catalogue left out" if (~known).any() else ""
        self.message = sentence + left_out
        provenance = log_provenance(records[known])
        newest = taste_record(self.chain.paths.models, self.version) if self.version else None
        if provenance["n_records"] == 0 or (newest and newest["provenance"]["sha256"] == provenance["sha256"]):
            return self.version
        rewards = model.expected_rewards(self.proximity, self.chain.weights, self.like_threshold)
        self.version = save_taste_version(self.chain.paths.models, self.chain.pool.ids, rewards, {
            "created": pd.Timestamp.now(tz="UTC").isoformat(), "model_version": self.model_version(self.version + 1),
            "prior": dataclasses.asdict(self.prior), "learned_from": self.message, "provenance": provenance})
        return self.version

    def model_version(self, version: int) -> str:
        return taste_model_version(self.base.run.model_version(), version)

    def exploring(self, seed: int | None, session: int) -> Recommender:
        """The recommender planning on one Thompson draw of the current model (seeded from
        `seed` and the `session` number; fresh entropy when `seed` is None)."""
        rng = np.random.default_rng(None if seed is None else [seed, session])
        model = self.model

        def drawn(rows: np.ndarray) -> np.ndarray:
            return model.expected_rewards(self.proximity, self.chain.weights, self.like_threshold, rows=rows,
                                          rng=rng, scale=self.exploration)
        return self.base.serving(drawn, self.version)
