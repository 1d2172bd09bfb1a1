"""The interaction log: how each recommended track was heard, one JSON line per finished track.

A record is written the moment a track finishes, appended, flushed and synced to disk, so a
crash or an interrupt loses nothing already logged. The log is a person's listening history:
it is created readable and writable by its owner only (mode 0600). Writers only ever append;
the reader never rewrites the file. It skips a malformed line (bad JSON, bytes that are not
UTF-8, a bad value, anything that fails to parse) with a short warning naming the line, and
keeps only the first record of a (`session_id`, `position`), warning about the others, so
reading is idempotent even if a record was written twice.

Real plays (`source` = `spotify` or `embed`) go to `user_song_interactions.jsonl`, simulated ones to
`simulated_interactions.jsonl`, and a person's imported listening history (`source` = `export` or
`spotify-api`, `helpers.history`) to `history_interactions.jsonl` (all in `data/feedback/`), so
that a simulated listener never enters a person's history. Each record holds, in this order:

| key | meaning |
|---|---|
| `timestamp` | when the track finished, ISO 8601 with time zone (UTC) |
| `session_id` | one playlist played from start to stop |
| `track_id`, `position` | the track and its place in the playlist (0 = the start track) |
| `latent` | the track's state vector, as the policy saw it |
| `percentage_listened` | share of the track heard, in [0, 1] |
| `liked` | 1 if the listener liked the track (on Spotify: it is in their library), 0 if not, `null` when unknown (Spotify's library check failed); fine-tuning treats `null` as missing, never as 0 |
| `source` | `spotify` (a person, on their Spotify device), `embed` (a person, in Spotify's embed player: `helpers.embed`), `simulated` (the listener model of notebook 04), `export` (a play of the person's Spotify data export) or `spotify-api` (their top, recent or saved tracks from the Web API) |
| `model_version` | the policy that recommended the playlist |
| `candidates`, `probs` | the step that chose this track: the candidates and the policy's probabilities, same order; empty lists for the start track, which no step chose |
| `played_id` | the id Spotify actually played when it relinked the track (the requested id was not playable in the listener's market), else `null`; `track_id` is always the catalogue's id. Older logs lack the key: it reads as `null` |
| `preview`, `preview_duration_ms` | `true` when what played was a preview (the embed player plays 30-second previews to visitors not logged in to Spotify), with the preview's duration in ms; then `percentage_listened` is the share of the preview, not of the song. Else `false` and `null`; older logs lack both keys and read so |
| `skipped` | `true` when the listener skipped the track (an imported play Spotify marked skipped), `false` when they did not, `null` when unknown; older logs lack the key: it reads as `null` |
| `share_from_evidence` | `true` when `percentage_listened` is no measured share but what an imported play says without the song's length (1 heard to its end, 0 skipped): the listener model then learns from it which songs are heard more than others, not how much; else `false`, as older logs read |
"""
from __future__ import annotations

import errno
import json
import math
import os
import stat
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from numbers import Integral, Real
from pathlib import Path
from typing import BinaryIO

import pandas as pd

from helpers.validation import shorten

DEFAULT_LOG_NAME = "user_song_interactions.jsonl"
SIMULATED_LOG_NAME = "simulated_interactions.jsonl"
HISTORY_LOG_NAME = "history_interactions.jsonl"
LOG_FILE_MODE = 0o600
PROBE_BYTES = 64 << 10  # written and synced beside the log before anything plays
WARNING_LINE_CHARS = 200
SOURCES = ("spotify", "embed", "simulated", "export", "spotify-api")
REAL_SOURCES = ("spotify", "embed")  # a person listening: their plays go to DEFAULT_LOG_NAME
HISTORY_SOURCES = ("export", "spotify-api")  # a person's imported history: HISTORY_LOG_NAME
PROBS_SUM_TOLERANCE = 1e-3
TIMESTAMP_DTYPE = "datetime64[us, UTC]"
# liked is a nullable integer: <NA> where the liked check failed.
COLUMN_DTYPES = {"timestamp": TIMESTAMP_DTYPE, "position": "int64", "percentage_listened": "float64",
                 "liked": "Int64", "preview": "bool", "preview_duration_ms": "Int64", "skipped": "boolean",
                 "share_from_evidence": "bool"}


class MalformedLineWarning(UserWarning):
    """Lines of an interaction log that are not valid records (they are skipped, not deleted)."""


class LogNotWritable(OSError):
    """The interaction log cannot be appended to; the message names the path and the reason."""


class DuplicateRecordWarning(UserWarning):
    """Records of a (session_id, position) already read: only the first one is kept."""


def default_log_name(source: str) -> str:
    """The log file records of `source` go to: real plays, imported history and simulated plays are kept apart."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if source in HISTORY_SOURCES:
        return HISTORY_LOG_NAME
    return DEFAULT_LOG_NAME if source in REAL_SOURCES else SIMULATED_LOG_NAME


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
    liked: int | None
    source: str
    model_version: str
    candidates: list[str]
    probs: list[float]
    played_id: str | None = None
    preview: bool = False
    preview_duration_ms: int | None = None
    skipped: bool | None = None
    share_from_evidence: bool = False

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
        if self.liked is not None and (not isinstance(self.liked, Integral) or self.liked not in (0, 1)):
            raise ValueError(f"liked must be 0, 1 or null (unknown), got {self.liked!r}")
        if self.played_id is not None:
            _text("played_id", self.played_id)
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if not isinstance(self.preview, bool):
            raise ValueError(f"preview must be true or false, got {self.preview!r}")
        duration = self.preview_duration_ms
        if self.preview != (duration is not None) or duration is not None and (
                isinstance(duration, bool) or not isinstance(duration, Integral) or duration <= 0):
            raise ValueError("preview_duration_ms must be a number of milliseconds > 0 for a preview and null "
                             f"otherwise, got preview={self.preview!r}, preview_duration_ms={duration!r}")
        if self.skipped is not None and not isinstance(self.skipped, bool):
            raise ValueError(f"skipped must be true, false or null (unknown), got {self.skipped!r}")
        if not isinstance(self.share_from_evidence, bool):
            raise ValueError(f"share_from_evidence must be true or false, got {self.share_from_evidence!r}")
        if self.share_from_evidence and (self.source != "export" or percentage not in (0.0, 1.0)):
            raise ValueError("share_from_evidence is for an exported play's 0 (skipped) or 1 (heard to its end), got "
                             f"source {self.source!r} and percentage_listened {percentage}")
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
                            ("percentage_listened", percentage),
                            ("liked", None if self.liked is None else int(self.liked)),
                            ("candidates", candidates), ("probs", probs)):
            object.__setattr__(self, name, value)

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> "Interaction":
        """An interaction from a parsed JSON object that has exactly the documented keys
        (`played_id`, `preview`, `preview_duration_ms`, `skipped` and `share_from_evidence` may be absent:
        logs written before them)."""
        if not isinstance(record, Mapping):
            raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
        missing = [name for name in INTERACTION_KEYS if name not in record and name not in OPTIONAL_KEYS]
        unexpected = sorted(set(record) - set(INTERACTION_KEYS))
        if missing or unexpected:
            raise ValueError(f"keys differ from the log's: missing {missing}, unexpected {unexpected}")
        return cls(**record)

    def as_dict(self) -> dict[str, object]:
        """The record's keys and values, in order (the values are plain Python types already:
        no deep copy, which costs more than the rest of a 100,000-play import)."""
        return {name: getattr(self, name) for name in INTERACTION_KEYS}

    def to_json_line(self) -> str:
        """The record as one line of JSON (no newline)."""
        return json.dumps(self.as_dict(), ensure_ascii=False, allow_nan=False)

    @property
    def moment(self) -> pd.Timestamp:
        """The timestamp as a UTC pandas Timestamp."""
        return pd.Timestamp(datetime.fromisoformat(self.timestamp)).tz_convert("UTC")


INTERACTION_KEYS = tuple(field.name for field in fields(Interaction))
OPTIONAL_KEYS = ("played_id", "preview", "preview_duration_ms", "skipped", "share_from_evidence")


def open_log(path: str | Path) -> BinaryIO:
    """The log at `path` opened to append and read, readable by its owner only: created with mode
    0600, and a log file that others could read (written before this rule) is made 0600.

    A symbolic link is not followed (`O_NOFOLLOW`: the records would go wherever it points) and
    the log must be a regular file (not a device such as /dev/full, a pipe or a folder); either
    is a LogNotWritable naming the path, as is any other reason the file cannot be opened."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                             | os.O_CLOEXEC, LOG_FILE_MODE)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise LogNotWritable(f"the interaction log {path} is a symbolic link, which is not followed (the "
                                 "records would go wherever it points): give the path of a regular file") from None
        raise LogNotWritable(f"cannot append to the interaction log {path} ({error.strerror or error}): "
                             "choose another log path") from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise LogNotWritable(f"the interaction log {path} is not a regular file (a device, a pipe or a "
                                 "socket): give the path of a regular file")
        os.set_blocking(descriptor, True)
        if status.st_mode & 0o077:
            os.fchmod(descriptor, LOG_FILE_MODE)
    except OSError as error:
        os.close(descriptor)
        if isinstance(error, LogNotWritable):
            raise
        raise LogNotWritable(f"cannot append to the interaction log {path} ({error.strerror or error}): "
                             "choose another log path") from None
    return os.fdopen(descriptor, "a+b")


def check_appendable(path: str | Path, min_free_bytes: int = 1 << 20) -> Path:
    """Check, before anything plays, that records can be appended to the log at `path`.

    Opens it to append (see `open_log`) and syncs it, then writes and syncs a probe of
    `PROBE_BYTES` in its folder (removed again), so a full disk, an exceeded quota or a file size
    limit shows now, not after playback has started; a log that did not exist is created,
    owner-only, and removed again (the first record creates it). Refuses a log on a disk with
    less than `min_free_bytes` free. Raises LogNotWritable, naming the path and the reason.
    """
    path = Path(path)
    folder = next(parent for parent in path.parents if parent.exists())
    if not folder.is_dir():
        raise LogNotWritable(f"cannot append to the interaction log {path}: {folder} is a file, not a folder; "
                             "choose another log path")
    existed = os.path.lexists(path)
    try:
        with open_log(path) as log:
            os.fsync(log.fileno())
            stats = os.fstatvfs(log.fileno())
        if not existed:
            path.unlink()
        _write_probe(path.parent)
    except LogNotWritable:
        raise
    except OSError as error:
        raise LogNotWritable(f"cannot append to the interaction log {path} ({error.strerror or error}): "
                             "choose another log path") from None
    if stats.f_bavail * stats.f_frsize < min_free_bytes:
        raise LogNotWritable(f"the disk holding the interaction log {path} is full: free some space or "
                             "choose another log path")
    return path


def _write_probe(folder: Path) -> None:
    """Write `PROBE_BYTES` to a new owner-only file in `folder`, sync it and remove it."""
    descriptor, probe = tempfile.mkstemp(dir=folder, prefix=".log-probe-")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(bytes(PROBE_BYTES))
            file.flush()
            os.fsync(file.fileno())
    finally:
        os.unlink(probe)


def append_interaction(path: str | Path, interaction: Interaction) -> None:
    """Append one record to the log at `path`, then flush and sync it to disk (see `append_interactions`)."""
    append_interactions(path, [interaction])


def append_interactions(path: str | Path, interactions: Iterable[Interaction]) -> None:
    """Append records to the log at `path` in one write, then flush and sync it to disk.

    The file is opened in append mode only (see `open_log`), so existing lines are never
    touched. If the last line lacks its newline (a writer died mid-line), a newline is added
    first so that the new records stay lines of their own. A failed write or sync raises
    LogNotWritable naming the path and the first record.
    """
    interactions = list(interactions)
    for interaction in interactions:
        if not isinstance(interaction, Interaction):
            raise TypeError(f"expected an Interaction, got {type(interaction).__name__}")
    if not interactions:
        return
    interaction = interactions[0]
    line = "".join(f"{record.to_json_line()}\n" for record in interactions).encode("utf-8")
    log = open_log(path)
    try:
        with log:
            if log.seek(0, os.SEEK_END) > 0:
                log.seek(-1, os.SEEK_END)
                if log.read(1) != b"\n":
                    line = b"\n" + line
            log.write(line)
            log.flush()
            os.fsync(log.fileno())
    except OSError as error:
        raise LogNotWritable(f"could not write the record of track {interaction.track_id!r} (position "
                                 f"{interaction.position}) to the interaction log {path} "
                                 f"({error.strerror or error})") from None


def _empty_interactions() -> pd.DataFrame:
    frame = pd.DataFrame({name: pd.Series(dtype=object) for name in INTERACTION_KEYS})
    return frame.astype(COLUMN_DTYPES)


def read_interactions(path: str | Path, sources: str | Iterable[str] | None = None) -> pd.DataFrame:
    """The valid records of the log at `path`, in file order, as a DataFrame.

    Columns are the record keys; `timestamp` is a UTC datetime, `latent`, `candidates` and
    `probs` hold lists, `liked` is a nullable integer (<NA>: unknown). `sources` keeps only records from those sources (default: all).
    Malformed lines are skipped and reported in one `MalformedLineWarning` that names each
    line number and the reason (cut to 200 characters); a record whose (session_id, position)
    was already read is skipped with a `DuplicateRecordWarning`. The file itself is only read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no interaction log at {path}: play a playlist first (notebook 07 or `python -m helpers.play`)"
        )
    wanted = set(SOURCES if sources is None else [sources] if isinstance(sources, str) else sources)
    if not wanted or wanted - set(SOURCES):
        raise ValueError(f"sources must be among {SOURCES}, got {sorted(wanted)}")

    records, problems, duplicates = [], [], []
    first_line: dict[tuple[str, int], int] = {}
    with open(path, "rb") as log:
        for number, raw in enumerate(log, start=1):
            if not raw.strip():
                continue
            try:
                record = Interaction.from_record(json.loads(raw.decode("utf-8")))
                moment = record.moment
            except Exception as error:  # noqa: BLE001 - whatever breaks a line (RecursionError too) skips that line only
                reason = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
                problems.append(f"line {number}: {shorten(reason, WARNING_LINE_CHARS)}")
                continue
            key = (record.session_id, record.position)
            if key in first_line:
                duplicates.append(f"line {number}: session {shorten(record.session_id, WARNING_LINE_CHARS)} position "
                                  f"{record.position} is already at line {first_line[key]}")
                continue
            first_line[key] = number
            records.append((record, moment))
    if problems:
        warnings.warn(f"{path}: skipped {len(problems)} malformed line(s) (the file is left as it is):\n  "
                      + "\n  ".join(problems), MalformedLineWarning, stacklevel=2)
    if duplicates:
        warnings.warn(f"{path}: skipped {len(duplicates)} repeated record(s), keeping the first of each:\n  "
                      + "\n  ".join(duplicates), DuplicateRecordWarning, stacklevel=2)

    kept = [(record, moment) for record, moment in records if record.source in wanted]
    if not kept:
        return _empty_interactions()
    frame = pd.DataFrame([record.as_dict() for record, _ in kept], columns=list(INTERACTION_KEYS))
    frame["timestamp"] = pd.DatetimeIndex([moment for _, moment in kept])
    frame["played_id"] = pd.Series([record.played_id for record, _ in kept], dtype=object)
    frame["preview_duration_ms"] = pd.array([record.preview_duration_ms for record, _ in kept], dtype="Int64")
    frame["skipped"] = pd.array([record.skipped for record, _ in kept], dtype="boolean")
    return frame.astype(COLUMN_DTYPES)


def learning_log(feedback_dir: str | Path, source: str | None = None) -> tuple[pd.DataFrame, str]:
    """The records fine-tuning learns from, and a sentence saying which.

    With `source` None: a person's real plays (`spotify` and `embed` records of
    `user_song_interactions.jsonl`, and their imported history, `export` and `spotify-api`
    records of `history_interactions.jsonl`, first) when those logs hold any, else the simulated
    plays of `simulated_interactions.jsonl`, so that a simulated listener never mixes into a
    real listener's model. `source` forces one of them. Previews are left out (and counted in the
    sentence): their `percentage_listened` is a share of 30 seconds, so a whole preview is no
    whole listen of the song.
    """
    if source is not None and source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES} or None, got {source!r}")
    feedback_dir = Path(feedback_dir)
    for sources in ([(source,)] if source else [(*HISTORY_SOURCES, *REAL_SOURCES), ("simulated",)]):
        logs = [log for log in dict.fromkeys(feedback_dir / default_log_name(name) for name in sources) if log.is_file()]
        frames = [frame for frame in (read_interactions(log, sources=sources) for log in logs) if len(frame)]
        records = pd.concat(frames, ignore_index=True).astype(COLUMN_DTYPES) if frames else _empty_interactions()
        previews = int(records["preview"].sum())
        records = records[~records["preview"]].reset_index(drop=True)
        if len(records):
            what = " and ".join(sorted(set(records["source"]), key=SOURCES.index))
            path = " and ".join(str(log) for log in logs)
            why = "" if source or "simulated" not in sources else f" (no real plays in {feedback_dir / DEFAULT_LOG_NAME})"
            left_out = f"; {previews} preview(s) left out" if previews else ""
            return records, f"learning from {len(records)} {what} records of {path}{why}{left_out}"
    raise FileNotFoundError(f"no {source or 'real or simulated'} records (previews aside) in {feedback_dir}: "
                            "play a playlist first (notebook 07 or `python -m helpers.play`)")
