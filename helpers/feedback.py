"""The interaction log: how each recommended track was heard, one JSON line per finished track.

A record is written the moment a track finishes, appended, flushed and synced to disk, so a
crash or an interrupt loses nothing already logged. Writers only ever append; the reader
reports a malformed line (its number and what is wrong with it) and skips it, and never
rewrites the file. Each record holds:

| key | meaning |
|---|---|
| `timestamp` | when the track finished, ISO 8601 with time zone (UTC) |
| `session_id` | one playlist played from start to stop |
| `track_id`, `position` | the track and its place in the playlist (0 = the start track) |
| `latent` | the track's state vector, as the policy saw it |
| `percentage_listened` | share of the track heard, in [0, 1] |
| `liked` | 1 if the listener liked the track (on Spotify: it is in their library), else 0 |
| `source` | `spotify` (a person) or `simulated` (the listener model of notebook 04) |
| `model_version` | the policy that recommended the playlist |
| `candidates`, `probs` | the step that chose this track: the candidates and the policy's probabilities, same order; empty lists for the start track, which no step chose |
"""
from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from numbers import Integral, Real
from pathlib import Path

import pandas as pd

DEFAULT_LOG_NAME = "user_song_interactions.jsonl"
SOURCES = ("spotify", "simulated")
PROBS_SUM_TOLERANCE = 1e-3
TIMESTAMP_DTYPE = "datetime64[us, UTC]"


class MalformedLineWarning(UserWarning):
    """Lines of an interaction log that are not valid records (they are skipped, not deleted)."""


def utc_timestamp() -> str:
    """The current time as ISO 8601 in UTC, to the millisecond."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _items(name: str, value: object) -> list:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a list, got {value!r}")
    return list(value)


@dataclass(frozen=True)
class Interaction:
    """One finished track, validated on creation: a bad value raises ValueError naming the key."""

    timestamp: str
    session_id: str
    track_id: str
    position: int
    latent: list[float]
    percentage_listened: float
    liked: int
    source: str
    model_version: str
    candidates: list[str]
    probs: list[float]

    def __post_init__(self) -> None:
        try:
            moment = datetime.fromisoformat(_text("timestamp", self.timestamp))
        except ValueError as error:
            raise ValueError(f"timestamp must be ISO 8601, got {self.timestamp!r}") from error
        if moment.tzinfo is None:
            raise ValueError(f"timestamp must carry a time zone, got {self.timestamp!r}")
        _text("session_id", self.session_id)
        _text("track_id", self.track_id)
        _text("model_version", self.model_version)
        if isinstance(self.position, bool) or not isinstance(self.position, Integral) or self.position < 0:
            raise ValueError(f"position must be an integer >= 0, got {self.position!r}")
        latent = [_number("latent", value) for value in _items("latent", self.latent)]
        if not latent:
            raise ValueError("latent must not be empty")
        percentage = _number("percentage_listened", self.percentage_listened)
        if not 0.0 <= percentage <= 1.0:
            raise ValueError(f"percentage_listened must be in [0, 1], got {percentage}")
        if not isinstance(self.liked, Integral) or self.liked not in (0, 1):
            raise ValueError(f"liked must be 0 or 1, got {self.liked!r}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        candidates = [_text("candidates", value) for value in _items("candidates", self.candidates)]
        probs = [_number("probs", value) for value in _items("probs", self.probs)]
        if len(candidates) != len(probs):
            raise ValueError(f"candidates and probs differ in length ({len(candidates)} vs {len(probs)})")
        if candidates:
            if self.track_id not in candidates:
                raise ValueError(f"track_id {self.track_id!r} is not among the candidates of its step")
            if min(probs) < 0 or abs(sum(probs) - 1) > PROBS_SUM_TOLERANCE:
                raise ValueError(f"probs must be >= 0 and sum to 1, got {probs}")
        # Plain Python types (not numpy scalars or tuples), as JSON writes and reads them.
        for name, value in (("position", int(self.position)), ("latent", latent),
                            ("percentage_listened", percentage), ("liked", int(self.liked)),
                            ("candidates", candidates), ("probs", probs)):
            object.__setattr__(self, name, value)

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> "Interaction":
        """An interaction from a parsed JSON object that has exactly the documented keys."""
        if not isinstance(record, Mapping):
            raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
        missing = [name for name in INTERACTION_KEYS if name not in record]
        unexpected = sorted(set(record) - set(INTERACTION_KEYS))
        if missing or unexpected:
            raise ValueError(f"keys differ from the log's: missing {missing}, unexpected {unexpected}")
        return cls(**record)

    def to_json_line(self) -> str:
        """The record as one line of JSON (no newline)."""
        return json.dumps(asdict(self), ensure_ascii=False, allow_nan=False)


INTERACTION_KEYS = tuple(field.name for field in fields(Interaction))


def append_interaction(path: str | Path, interaction: Interaction) -> None:
    """Append one record to the log at `path`, then flush and sync it to disk.

    The file is opened in append mode only, so existing lines are never touched. If the last
    line lacks its newline (a writer died mid-line), a newline is added first so that the new
    record stays a line of its own.
    """
    if not isinstance(interaction, Interaction):
        raise TypeError(f"expected an Interaction, got {type(interaction).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = interaction.to_json_line().encode("utf-8") + b"\n"
    with open(path, "a+b") as log:
        if log.seek(0, os.SEEK_END) > 0:
            log.seek(-1, os.SEEK_END)
            if log.read(1) != b"\n":
                line = b"\n" + line
        log.write(line)
        log.flush()
        os.fsync(log.fileno())


def _empty_interactions() -> pd.DataFrame:
    frame = pd.DataFrame({name: pd.Series(dtype=object) for name in INTERACTION_KEYS})
    return frame.astype({"timestamp": TIMESTAMP_DTYPE, "position": "int64",
                         "percentage_listened": "float64", "liked": "int64"})


def read_interactions(path: str | Path, sources: str | Iterable[str] | None = None) -> pd.DataFrame:
    """The valid records of the log at `path`, in file order, as a DataFrame.

    Columns are the record keys; `timestamp` is a UTC datetime, `latent`, `candidates` and
    `probs` hold lists. `sources` keeps only records from those sources (default: all).
    Malformed lines are skipped and reported in one `MalformedLineWarning` that names each
    line number and the reason; the file itself is only read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no interaction log at {path}: play a playlist first (notebook 07 or `python -m helpers.play`)"
        )
    wanted = set(SOURCES if sources is None else [sources] if isinstance(sources, str) else sources)
    if not wanted or wanted - set(SOURCES):
        raise ValueError(f"sources must be among {SOURCES}, got {sorted(wanted)}")

    records, problems = [], []
    with open(path, encoding="utf-8", errors="replace") as log:
        for number, line in enumerate(log, start=1):
            if not line.strip():
                continue
            try:
                records.append(Interaction.from_record(json.loads(line)))
            except (ValueError, TypeError) as error:
                problems.append(f"line {number}: {error}")
    if problems:
        warnings.warn(f"{path}: skipped {len(problems)} malformed line(s) (the file is left as it is):\n  "
                      + "\n  ".join(problems), MalformedLineWarning, stacklevel=2)

    kept = [asdict(record) for record in records if record.source in wanted]
    if not kept:
        return _empty_interactions()
    frame = pd.DataFrame(kept, columns=list(INTERACTION_KEYS))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601").astype(TIMESTAMP_DTYPE)
    return frame
