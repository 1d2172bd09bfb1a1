"""A listener's own history as real feedback: Spotify's data export and, with a sign-in, the Web API's lists.

`python -m helpers.history PATH…` reads the export as it arrives: the zip, the unzipped folder
or single files, of either kind Spotify sends:

- the account data, `StreamingHistory_music_N.json` (older exports: `StreamingHistoryN.json`):
  `endTime`, `artistName`, `trackName`, `msPlayed`, for the last year; no track id;
- the extended streaming history, `Streaming_History_Audio_*.json`: one play per entry, with
  `ts`, `ms_played`, `spotify_track_uri`, the track and album-artist names, `reason_end`,
  `skipped`, for the life of the account.

`YourLibrary.json` (saved tracks) marks its songs liked. `--spotify` adds the Web API's lists
with the person's sign-in: top tracks (short, medium and long term), the last 50 plays and the
saved tracks. Only the fields above are read from an entry: IP addresses, user agents, user
names, platform and country are never copied into memory beyond the parser, let alone a file.

Each play is matched to a song of the chain: by track id through notebook 01's aliases (another
release of a song still matches), then by the normalised title and artist
(`helpers.songs.normalise_titles`, `helpers.data.normalise_names`: notebook 01's merge). A
matched play becomes a record of the feedback log (`helpers.feedback`) in a log of its own,
`data/feedback/history_interactions.jsonl` (0600), which the learning step reads with the live
plays:

    percentage_listened = clip(ms_played / duration_ms, 0, 1)

with the song's `duration_ms` from the catalogue (notebook 01 keeps it where the file has it) or,
where the catalogue has none, from the export itself: the longest play of the song heard to its
end (`reason_end` trackdone). A song with neither has no share to measure, and none is invented:
its record holds the evidence the export has (`share_from_evidence`), 1 for a play heard to its
end, 0 for a skip (`skipped`, `reason_end` fwdbtn, or under 30 s), and a play with neither is
left out (counted). The listener model learns from such evidence which songs are heard more than
others, not how much (`helpers.taste`: a free offset). The API's lists say which songs are played
or kept, not how much of each: their records are heard in full (1). `liked` is 1 for a saved track, else
null; `skipped` is kept. A record's key is its minute and its song (`session_id`), so importing
the same export again, or the account data beside the extended history, adds nothing.
Podcasts, audiobooks and videos are counted and left out.

Files are bounded (`MAX_FILE_BYTES`, streamed, never loaded whole; zip members by size and
compression ratio) and validated: a file that is not a JSON list of objects is an error naming
it; an entry without a valid `ms_played` or time is skipped with one warning naming the file,
the entry and the field. Zip members are read in memory, never extracted: a member whose path
leaves the archive's folder or that is a symbolic link is refused, and nothing is executed.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import stat
import sys
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from helpers.data import arrow_array, normalise_names
from helpers.feedback import (HISTORY_LOG_NAME, HISTORY_SOURCES, Interaction, LogNotWritable, append_interactions,
                              read_interactions)
from helpers.live import LiveLearner, records_reader
from helpers.paths import ProjectPaths
from helpers.recommend import load_chain
from helpers.songs import normalise_titles
from helpers.spotify import HISTORY_SCOPES, SpotifyError, SpotifyPlayer, SpotifySettings
from helpers.validation import shorten

EXPORT_SOURCE, API_SOURCE = HISTORY_SOURCES
MAX_FILE_BYTES = 4 << 30  # a history file is streamed: a 1 GB file is read entry by entry
MAX_LIBRARY_BYTES = 256 << 20  # YourLibrary.json is one JSON object, read whole
MAX_ENTRY_CHARS = 1 << 20  # one play is a few hundred characters
MAX_MEMBERS = 100_000
MAX_COMPRESSION_RATIO = 200  # JSON deflates about 10 times; a bomb thousands of times
MAX_MS_PLAYED = 24 * 3_600_000  # a single play of more than a day is no play
COUNTED_MS = 30_000  # Spotify counts a play after 30 s: a shorter one is a skip
READ_CHARS = 1 << 20
TRACK_URI = "spotify:track:"
MODEL_VERSION = "history import"
TOP_UNMATCHED = 10
SHOWN_PROBLEMS = 5

EXTENDED, ACCOUNT, PODCAST, VIDEO, LIBRARY = "extended", "account", "podcast", "video", "library"
FILE_KINDS = (  # file name -> what it holds
    (re.compile(r"Streaming_History_Audio_.*\.json"), EXTENDED),
    (re.compile(r"Streaming_History_Video_.*\.json"), VIDEO),
    (re.compile(r"StreamingHistory(?:_music_)?\d+\.json"), ACCOUNT),
    (re.compile(r"StreamingHistory_podcast_\d+\.json"), PODCAST),
    (re.compile(r"YourLibrary\.json"), LIBRARY),
)
# What is read of an entry: the export's field -> the play's column. Nothing else is kept.
FIELDS = {
    EXTENDED: {"ts": "ended", "ms_played": "ms_played", "spotify_track_uri": "uri",
               "master_metadata_track_name": "name", "master_metadata_album_artist_name": "artist",
               "reason_end": "reason_end", "skipped": "skipped"},
    ACCOUNT: {"endTime": "ended", "msPlayed": "ms_played", "trackName": "name", "artistName": "artist"},
}
TIME_FORMATS = {EXTENDED: "ISO8601", ACCOUNT: "%Y-%m-%d %H:%M"}
PODCAST_FIELDS = ("spotify_episode_uri", "episode_name", "episode_show_name")
AUDIOBOOK_FIELDS = ("audiobook_uri", "audiobook_title", "audiobook_chapter_uri", "audiobook_chapter_title")
PLAY_COLUMNS = ("ended", "ms_played", "track_id", "name", "artist", "reason_end", "skipped", "share", "source")


class HistoryFormatError(ValueError):
    """A file or archive that is not a Spotify listening history as expected; the message names it."""


class HistoryEntryWarning(UserWarning):
    """Entries of a history file that are not valid plays: skipped, named by file, entry and field."""


@dataclass
class History:
    """What was read: the plays (`PLAY_COLUMNS`), the saved tracks (`track_id`, `name`, `artist`)
    and the counts of entries that are no music or no valid play."""

    plays: pd.DataFrame
    saved: pd.DataFrame
    files: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def combine(cls, parts: Iterable["History"]) -> "History":
        parts = list(parts)
        counts: dict[str, int] = {}
        for part in parts:
            for name, value in part.counts.items():
                counts[name] = counts.get(name, 0) + value
        return cls(_concat([part.plays for part in parts], PLAY_COLUMNS),
                   _concat([part.saved for part in parts], ("track_id", "name", "artist")),
                   [name for part in parts for name in part.files], counts)


def _concat(frames: list[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    frames = [frame for frame in frames if len(frame)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns))


def file_kind(name: str) -> str | None:
    """What the export file called `name` holds (`FILE_KINDS`), None for any other file."""
    base = PurePosixPath(name).name
    return next((kind for pattern, kind in FILE_KINDS if pattern.fullmatch(base)), None)


# -- reading files ---------------------------------------------------------------------------------

def iter_entries(stream: IO[bytes], label: str) -> Iterator[dict]:
    """The objects of the JSON list in `stream`, one at a time, never holding the whole file.

    Raises HistoryFormatError naming `label` when the file is not UTF-8 JSON, not a list, or
    holds something else than objects."""
    with io.TextIOWrapper(stream, encoding="utf-8") as text:
        yield from _entries(text, label)


def _entries(text: IO[str], label: str) -> Iterator[dict]:
    """`iter_entries` on decoded text."""
    decoder = json.JSONDecoder()
    buffer, position, number, ended = "", 0, 0, False

    def more() -> bool:
        nonlocal buffer, position, ended
        try:
            chunk = text.read(READ_CHARS)
        except UnicodeDecodeError as error:
            raise HistoryFormatError(f"{label}: not UTF-8 text ({error.reason}): expected Spotify's JSON") from None
        buffer, position, ended = buffer[position:] + chunk, 0, not chunk
        return bool(chunk)

    def next_character() -> str:
        nonlocal position
        while True:
            while position < len(buffer) and buffer[position] in " \t\r\n":
                position += 1
            if position < len(buffer):
                return buffer[position]
            if not more():
                return ""

    if next_character() != "[":
        raise HistoryFormatError(f"{label}: expected a JSON list of plays ([{{...}}, ...]), got "
                                 f"{shorten(buffer[position:position + 40], 40)!r}")
    position += 1
    while True:
        character = next_character()
        if character == "]":
            position += 1
            if next_character():
                raise HistoryFormatError(f"{label}: text after the end of the JSON list")
            return
        if number:
            if character != ",":
                raise HistoryFormatError(f"{label}: not JSON: expected ',' or ']' after entry {number}")
            position += 1
            character = next_character()
        if character != "{":
            raise HistoryFormatError(f"{label}: entry {number + 1} is not a JSON object (a play), got "
                                     f"{shorten(buffer[position:position + 40], 40)!r}")
        while True:
            try:
                entry, end = decoder.raw_decode(buffer, position)
                break
            except json.JSONDecodeError as error:
                if len(buffer) - position > MAX_ENTRY_CHARS:
                    raise HistoryFormatError(f"{label}: entry {number + 1} is not JSON or longer than "
                                             f"{MAX_ENTRY_CHARS} characters ({error.msg})") from None
                if ended or not more():
                    raise HistoryFormatError(f"{label}: not JSON ({error.msg} in entry {number + 1})") from None
        position, number = end, number + 1
        yield entry


def _entry_kind(entry: dict) -> str:
    """music, podcast, audiobook or other, for one entry of the extended history."""
    uri = entry.get("spotify_track_uri")
    if isinstance(uri, str) and uri.startswith(TRACK_URI):
        return "music"
    if any(entry.get(name) for name in PODCAST_FIELDS):
        return PODCAST
    if any(entry.get(name) for name in AUDIOBOOK_FIELDS):
        return "audiobook"
    return "music" if entry.get("master_metadata_track_name") else "other"


def read_plays(stream: IO[bytes], label: str, kind: str) -> History:
    """The plays of one history file of `kind` (EXTENDED, ACCOUNT, PODCAST or VIDEO: only counted),
    validated: entries without a valid time or `ms_played` are skipped with a warning."""
    wanted = FIELDS.get(kind, {})
    columns: dict[str, list] = {column: [] for column in wanted.values()}
    counts = {"entries": 0, PODCAST: 0, "audiobook": 0, VIDEO: 0, "other": 0}
    entries: list[int] = []
    for number, entry in enumerate(iter_entries(stream, label), start=1):
        counts["entries"] += 1
        what = _entry_kind(entry) if kind == EXTENDED else {ACCOUNT: "music"}.get(kind, kind)
        if what != "music":
            counts[what] += 1
            continue
        for name, column in wanted.items():
            columns[column].append(entry.get(name))
        entries.append(number)
    frame = pd.DataFrame(columns)
    if not wanted:
        return History(pd.DataFrame(columns=list(PLAY_COLUMNS)), pd.DataFrame(), [label], counts)
    ended = pd.to_datetime(frame["ended"].where(frame["ended"].map(type) == str), utc=True,
                           format=TIME_FORMATS[kind], errors="coerce")
    numeric = frame["ms_played"].map(lambda value: isinstance(value, (int, float)) and not isinstance(value, bool))
    ms_played = pd.to_numeric(frame["ms_played"].where(numeric), errors="coerce").astype(np.float64)
    problems = {"ms_played": ~ms_played.between(0, MAX_MS_PLAYED), "ended": ended.isna()}
    bad = problems["ms_played"] | problems["ended"]
    counts["bad"] = int(bad.sum())
    if bad.any():
        _warn_bad_entries(label, frame, problems, np.asarray(entries), export_names={v: k for k, v in wanted.items()})
    uri = frame["uri"] if "uri" in frame else pd.Series(None, index=frame.index, dtype=object)
    plays = pd.DataFrame({
        "ended": ended, "ms_played": ms_played,
        "track_id": uri.where(uri.str.startswith(TRACK_URI, na=False)).str.removeprefix(TRACK_URI),
        "name": _text(frame["name"]), "artist": _text(frame["artist"]),
        "reason_end": _text(frame["reason_end"]) if "reason_end" in frame else None,
        "skipped": frame["skipped"].where(frame["skipped"].map(type) == bool) if "skipped" in frame else None,
        "share": np.nan, "source": EXPORT_SOURCE})[~bad.to_numpy()]
    return History(plays.reset_index(drop=True), pd.DataFrame(), [label], counts)


def _text(values: pd.Series) -> pd.Series:
    return values.where(values.map(type) == str)


def _warn_bad_entries(label: str, frame: pd.DataFrame, problems: dict[str, pd.Series], entries: np.ndarray, *,
                      export_names: dict[str, str]) -> None:
    """One warning for the entries of `label` that are no valid play, naming the first few and their field."""
    expected = {"ms_played": f"milliseconds from 0 to {MAX_MS_PLAYED}", "ended": "a time"}
    shown = []
    for column, wrong in problems.items():
        for row in np.flatnonzero(wrong.to_numpy())[:SHOWN_PROBLEMS]:
            shown.append(f"entry {entries[row]}: {export_names[column]} must be {expected[column]}, got "
                         f"{shorten(repr(frame[column].iloc[row]), 60)}")
    count = int((problems["ms_played"] | problems["ended"]).sum())
    warnings.warn(f"{label}: skipped {count} entr{'y' if count == 1 else 'ies'} that are no valid play "
                  "(nothing else of the file is lost):\n  " + "\n  ".join(shown), HistoryEntryWarning, stacklevel=3)


def read_library(stream: IO[bytes], label: str) -> History:
    """The saved tracks of `YourLibrary.json` (`tracks`: `artist`, `track`, `uri`)."""
    try:
        library = json.loads(stream.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HistoryFormatError(f"{label}: not JSON ({error}): expected Spotify's YourLibrary.json") from None
    tracks = library.get("tracks") if isinstance(library, dict) else None
    if not isinstance(tracks, list) or not all(isinstance(track, dict) for track in tracks):
        raise HistoryFormatError(f"{label}: expected an object whose 'tracks' is a list of saved tracks")
    frame = pd.DataFrame({"uri": [track.get("uri") for track in tracks],
                          "name": [track.get("track") for track in tracks],
                          "artist": [track.get("artist") for track in tracks]}, dtype=object)
    saved = pd.DataFrame({"track_id": _text(frame["uri"]).str.removeprefix(TRACK_URI),
                          "name": _text(frame["name"]), "artist": _text(frame["artist"])})
    return History(pd.DataFrame(columns=list(PLAY_COLUMNS)), saved, [label], {})


def _read_file(opener: Callable[[], IO[bytes]], label: str, kind: str) -> History:
    with opener() as stream:
        if kind == LIBRARY:
            return read_library(stream, label)
        return read_plays(stream, label, kind)


def _detect_kind(path: Path) -> str:
    """The kind of a history file given by a name Spotify does not use: from its first entry's fields."""
    with path.open("rb") as stream:
        first = next(iter_entries(stream, str(path)), {})
    if "ts" in first or "spotify_track_uri" in first:
        return EXTENDED
    if "endTime" in first:
        return ACCOUNT
    raise HistoryFormatError(f"{path}: neither kind of Spotify history: its entries have no 'ts' (extended "
                             "streaming history) or 'endTime' (account data)")


def size_limit(kind: str) -> int:
    """The most bytes a history file of `kind` may hold: the library is read whole, plays are streamed."""
    return MAX_LIBRARY_BYTES if kind == LIBRARY else MAX_FILE_BYTES


def _check_size(label: str, size: int, limit: int) -> None:
    if size > limit:
        raise HistoryFormatError(f"{label}: {size} bytes, more than the {limit} a history file may have")


def _zip_files(path: Path) -> Iterator[tuple[Callable[[], IO[bytes]], str, str]]:
    """The history files of the zip at `path`: refuses members that leave its folder or are links."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise HistoryFormatError(f"{path}: not a zip archive ({error})") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise HistoryFormatError(f"{path}: {len(members)} members, more than the {MAX_MEMBERS} an export has")
        for member in members:
            name = PurePosixPath(member.filename.replace("\\", "/"))
            label = f"{path}:{member.filename}"
            if name.is_absolute() or ".." in name.parts or re.match(r"[A-Za-z]:", member.filename):
                raise HistoryFormatError(f"{label}: the member's path leaves the export's folder: refused")
            kind = None if member.is_dir() else file_kind(member.filename)
            if kind is None:
                continue
            if stat.S_ISLNK(member.external_attr >> 16):
                raise HistoryFormatError(f"{label}: a symbolic link, which is not followed: refused")
            _check_size(label, member.file_size, size_limit(kind))
            if member.file_size > MAX_COMPRESSION_RATIO * max(member.compress_size, 1 << 10):
                raise HistoryFormatError(f"{label}: inflates {member.file_size / max(member.compress_size, 1):.0f} "
                                         f"times, more than the {MAX_COMPRESSION_RATIO} of any real export: refused")
            yield (lambda member=member: archive.open(member)), label, kind


def _folder_files(path: Path) -> Iterator[tuple[Callable[[], IO[bytes]], str, str]]:
    """The history files below the folder `path`, symbolic links not followed."""
    for folder, _, names in sorted(os.walk(path, followlinks=False)):
        for name in sorted(names):
            file = Path(folder) / name
            kind = file_kind(name)
            if kind is None:
                continue
            if file.is_symlink() or not file.is_file():
                raise HistoryFormatError(f"{file}: not a regular file (a symbolic link is not followed): refused")
            _check_size(str(file), file.stat().st_size, size_limit(kind))
            yield (lambda file=file: file.open("rb")), str(file), kind


def read_export(sources: Iterable[str | Path]) -> History:
    """Every play and saved track of the export at `sources`: zips, unzipped folders or single files.

    A zip or folder holding no history file, or a file that is no history, is a HistoryFormatError
    naming it."""
    parts = []
    for source in map(Path, sources):
        if not source.exists():
            raise FileNotFoundError(f"no export at {source}: give the zip, its folder or its JSON files")
        if source.is_dir() or zipfile.is_zipfile(source):
            kinds = []
            for opener, label, kind in _folder_files(source) if source.is_dir() else _zip_files(source):
                parts.append(_read_file(opener, label, kind))
                kinds.append(kind)
            if not set(kinds) & {EXTENDED, ACCOUNT}:
                raise HistoryFormatError(
                    f"{source}: holds no Spotify listening history (no StreamingHistory_music_N.json nor "
                    "Streaming_History_Audio_*.json): is it the export of Spotify's privacy page?")
        else:
            kind = file_kind(source.name) or _detect_kind(source)
            _check_size(str(source), source.stat().st_size, size_limit(kind))
            parts.append(_read_file(lambda source=source: source.open("rb"), str(source), kind))
    return History.combine(parts)


# -- the Web API's lists -----------------------------------------------------------------------------

def api_history(top: dict[str, list[dict]], recent: list[dict], saved: list[dict], now: pd.Timestamp) -> History:
    """The Web API's lists as plays: `top` (time range -> track objects), `recent` (play history
    objects: `played_at`, `track`) and `saved` (saved track objects: `added_at`, `track`).

    Top tracks have no time: they count at `now`'s day, so a second import that day adds nothing."""
    day = now.floor("D")
    rows = [(day, track) for tracks in top.values() for track in tracks]
    rows += [(item.get("played_at"), item.get("track")) for item in recent]
    rows += [(item.get("added_at"), item.get("track")) for item in saved]
    tracks = [track if isinstance(track, dict) else {} for _, track in rows]
    frame = pd.DataFrame({
        "ended": pd.to_datetime(pd.Series([moment for moment, _ in rows], dtype=object), utc=True, format="ISO8601",
                                errors="coerce"),
        "ms_played": np.nan,
        "track_id": pd.Series([track.get("id") for track in tracks], dtype=object),
        "name": pd.Series([track.get("name") for track in tracks], dtype=object),
        "artist": pd.Series([(track.get("artists") or [{}])[0].get("name") for track in tracks], dtype=object),
        "reason_end": None, "skipped": None, "share": 1.0, "source": API_SOURCE})
    plays = frame[frame["ended"].notna() & frame["track_id"].map(type).eq(str)].reset_index(drop=True)
    liked = frame.iloc[len(rows) - len(saved):][["track_id", "name", "artist"]].reset_index(drop=True)
    return History(plays, liked, ["the Spotify Web API"], {"entries": len(rows), "bad": len(frame) - len(plays)})


# -- matching, shares, records -------------------------------------------------------------------------

def _name_keys(names: pd.Series, artists: pd.Series) -> pd.Series:
    """normalised title + normalised artist, NA where either is missing or empty."""
    title = normalise_titles(arrow_array(names.astype(object).where(names.notna(), None), pa.string()))
    artist = normalise_names(arrow_array(artists.astype(object).where(artists.notna(), None), pa.string()))
    frame = pd.DataFrame({"title": title.to_pandas(), "artist": artist.to_pandas()}, dtype=object)
    frame = frame.mask(frame == "")
    return (frame["title"] + "\x1f" + frame["artist"]).astype(object)


def _unique_keys(names: pd.Series, artists: pd.Series) -> pd.Series:
    """`_name_keys` computed once per distinct (name, artist) pair: a history repeats its songs."""
    pairs = pd.DataFrame({"name": names.to_numpy(object), "artist": artists.to_numpy(object)})
    codes = pairs.groupby(["name", "artist"], dropna=False, sort=False).ngroup().to_numpy()
    unique = pairs.drop_duplicates()
    return pd.Series(_name_keys(unique["name"], unique["artist"]).to_numpy()[codes], index=names.index, dtype=object)


def match_songs(tracks: pd.DataFrame, aliases: pd.DataFrame | None, plays: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each play's song id in `tracks` (NA when none) and how it matched ("id", "name" or NA).

    By the play's `track_id` through `aliases` (`id` -> `song_id`) first, then by its normalised
    `name` and `artist` against every artist of a song (`artist` may list several, comma-separated)."""
    track_ids, names, artists = plays["track_id"], plays["name"], plays["artist"]
    songs = pd.Index(tracks["id"].astype(str))
    lookup = pd.Series(songs, index=songs)
    if aliases is not None and len(aliases):
        lookup = pd.concat([lookup, pd.Series(aliases["song_id"].astype(str).to_numpy(),
                                              index=aliases["id"].astype(str).to_numpy())])
        lookup = lookup[~lookup.index.duplicated()]
    by_id = pd.Series(track_ids.map(lookup).to_numpy(), index=track_ids.index, dtype=object)
    by_id = by_id.where(by_id.isin(songs))
    if "name" in tracks.columns:
        catalogue = pd.DataFrame({"id": tracks["id"].astype(str), "name": tracks["name"],
                                  "artist": tracks["artist"].astype(str).str.split(", ")}).explode("artist")
        whole = pd.DataFrame({"id": tracks["id"].astype(str), "name": tracks["name"], "artist": tracks["artist"]})
        catalogue = pd.concat([whole, catalogue], ignore_index=True)
        catalogue["key"] = _unique_keys(catalogue["name"], catalogue["artist"])
        by_key = catalogue.dropna(subset="key").drop_duplicates("key").set_index("key")["id"]
        wanted = by_id.isna()
        by_name = pd.Series(pd.NA, index=track_ids.index, dtype=object)
        by_name[wanted] = _unique_keys(names[wanted], artists[wanted]).map(by_key)
    else:
        by_name = pd.Series(pd.NA, index=track_ids.index, dtype=object)
    how = pd.Series(np.where(by_id.notna(), "id", np.where(by_name.notna(), "name", None)), index=track_ids.index)
    return by_id.fillna(by_name), how


def play_shares(plays: pd.DataFrame, durations: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Each play's percentage listened, and whether it came from the export's evidence.

    ms_played / the song's `durations` (ms, by song id) clipped to [0, 1]; where the catalogue has
    no duration: 1 for a play heard to its end (`reason_end` trackdone), 0 for a skip (`skipped`,
    `reason_end` fwdbtn or under 30 s), NaN (no share known) otherwise. A play with a `share`
    already (the API's) keeps it."""
    duration = plays["song_id"].map(durations).astype(np.float64)
    measured = (plays["ms_played"] / duration.where(duration > 0)).clip(0, 1)
    done = plays["reason_end"].eq("trackdone")
    skipped = plays["skipped"].eq(True) | plays["reason_end"].eq("fwdbtn") | (plays["ms_played"] < COUNTED_MS)
    evidence = pd.Series(np.where(done, 1.0, np.where(skipped, 0.0, np.nan)), index=plays.index)
    given = plays["share"].astype(np.float64)
    share = given.fillna(measured).fillna(evidence)
    return share, given.isna() & measured.isna() & share.notna()


def export_durations(plays: pd.DataFrame) -> pd.Series:
    """Each matched song's length as the export shows it, by song id: its longest play heard to its
    end (`reason_end` trackdone, at least 30 s; the account data has no reason, so none)."""
    done = plays["song_id"].notna() & plays["reason_end"].eq("trackdone") & (plays["ms_played"] >= COUNTED_MS)
    return plays[done].groupby("song_id")["ms_played"].max().astype(np.float64)


def history_key(ended: pd.Series, song_ids: pd.Series) -> pd.Series:
    """A record's key: the minute the play ended and its song (the account data has minutes only)."""
    return "history " + ended.dt.floor("min").dt.strftime("%Y-%m-%dT%H:%MZ") + " " + song_ids.astype(str)


@dataclass
class ImportReport:
    """What an import read, matched and wrote (counts of plays unless named otherwise)."""

    files: list[str]
    counts: dict[str, int]
    music_plays: int
    matched_plays: int
    matched_tracks: int
    unmatched_plays: int
    unmatched_tracks: int
    by_name: int
    top_unmatched_artists: list[tuple[str, int]]
    no_share: int
    evidence_shares: int
    durations_known: bool
    export_durations: int  # songs whose length came from a play of the export heard to its end
    new_records: int
    already_imported: int
    log: Path

    def describe(self) -> str:
        """The report as a few lines for the terminal or a notebook."""
        counts = self.counts
        left_out = ", ".join(f"{counts.get(name, 0)} {label}" for name, label in (
            (PODCAST, "podcast episodes"), ("audiobook", "audiobook chapters"), (VIDEO, "videos"),
            ("other", "entries without a track"), ("bad", "invalid entries")))
        lines = [f"read {counts.get('entries', 0)} entries from {len(self.files)} file(s); left out: {left_out}",
                 f"{self.music_plays} music plays: {self.matched_plays} matched ({self.matched_tracks} distinct "
                 f"tracks; {self.by_name} plays by title and artist, the rest by track id), {self.unmatched_plays} "
                 f"not in the catalogue ({self.unmatched_tracks} distinct tracks)"]
        if self.top_unmatched_artists:
            lines.append("artists most played and not in the catalogue (bring a catalogue that has them): "
                         + ", ".join(f"{artist} ({plays})" for artist, plays in self.top_unmatched_artists))
        if not self.durations_known:
            lines.append("the catalogue has no durations: a share is measured against the song's length where "
                         "the export has a play of it heard to its end")
        if self.export_durations:
            lines.append(f"{self.export_durations} songs' lengths taken from the export (plays heard to their end)")
        if self.evidence_shares:
            lines.append(f"{self.evidence_shares} plays of songs without a known length: recorded as the export's "
                         "evidence (1 heard to its end, 0 skipped or under 30 s), which tells the model which songs "
                         "are heard more, not how much")
        if self.no_share:
            lines.append(f"{self.no_share} matched plays left out: no duration and neither finished nor skipped")
        lines.append(f"{self.new_records} new records in {self.log} ({self.already_imported} already imported)")
        return "\n".join(lines)


def import_history(history: History, paths: ProjectPaths) -> ImportReport:
    """Match `history` to the chain at `paths` and append its new records to the history log.

    Reads notebook 01's `tracks.parquet` (its `duration_ms` where the catalogue had one) and
    `aliases.parquet`, and notebook 02's latents; writes `data/feedback/history_interactions.jsonl`."""
    tracks = paths.read_table("tracks")
    aliases = paths.read_table("aliases") if paths.file("aliases").exists() else None
    latents = paths.read_table("latents").set_index("id")
    plays = history.plays.reset_index(drop=True)
    plays["song_id"], how = match_songs(tracks, aliases, plays)
    plays["song_id"] = plays["song_id"].where(plays["song_id"].isin(latents.index))
    matched = plays["song_id"].notna()
    catalogue = (tracks.set_index("id")["duration_ms"].dropna() if "duration_ms" in tracks.columns
                 else pd.Series(dtype=np.float64))
    from_export = export_durations(plays).drop(catalogue.index, errors="ignore")
    plays["share"], plays["evidence"] = play_shares(plays, pd.concat([catalogue, from_export]))
    saved = history.saved
    liked_songs = set(match_songs(tracks, aliases, saved)[0].dropna())
    unmatched = plays[~matched]
    distinct = (unmatched["track_id"].fillna(unmatched["name"] + "\x1f" + unmatched["artist"])).nunique()
    top = unmatched["artist"].value_counts().head(TOP_UNMATCHED)

    kept = plays[matched & plays["share"].notna()].copy()
    kept["key"] = history_key(kept["ended"], kept["song_id"])
    kept = kept.sort_values(["source", "reason_end"], na_position="last", kind="stable").drop_duplicates("key")
    kept = kept.sort_values("ended", kind="stable")
    log = paths.feedback / HISTORY_LOG_NAME
    known = set(read_interactions(log, sources=HISTORY_SOURCES)["session_id"]) if log.is_file() else set()
    new = kept[~kept["key"].isin(known)]
    append_interactions(log, history_records(new, latents, liked_songs))
    return ImportReport(
        files=history.files, counts=history.counts, music_plays=len(plays), matched_plays=int(matched.sum()),
        matched_tracks=int(plays.loc[matched, "song_id"].nunique()), unmatched_plays=len(unmatched),
        unmatched_tracks=int(distinct), by_name=int((how == "name").sum()),
        top_unmatched_artists=list(zip(top.index, top.astype(int).tolist())),
        no_share=int((matched & plays["share"].isna()).sum()),
        evidence_shares=int((matched & plays["evidence"]).sum()),
        durations_known=bool(len(catalogue)), export_durations=len(from_export), new_records=len(new),
        already_imported=len(kept) - len(new), log=log)


def history_records(plays: pd.DataFrame, latents: pd.DataFrame, liked_songs: set[str]) -> list[Interaction]:
    """The feedback-log records of matched plays (`song_id`, `key`, `ended`, `share`, `evidence`, `skipped`,
    `source`)."""
    vectors = latents.loc[plays["song_id"]].to_numpy(np.float64).tolist()
    skipped = plays["skipped"].astype(object).where(plays["skipped"].notna(), None)
    return [Interaction(timestamp=ended.isoformat(), session_id=key, track_id=song, position=0, latent=latent,
                        percentage_listened=float(share), liked=1 if song in liked_songs else None, source=source,
                        model_version=MODEL_VERSION, candidates=[], probs=[],
                        skipped=None if was_skipped is None else bool(was_skipped), share_from_evidence=bool(evidence))
            for ended, key, song, latent, share, source, was_skipped, evidence in zip(
                plays["ended"], plays["key"], plays["song_id"], vectors, plays["share"], plays["source"], skipped,
                plays["evidence"])]


# -- the command -----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers.history", description=(
        "Import your Spotify listening history (the data export of Spotify's privacy page: the zip, its folder "
        "or its JSON files; --spotify: your top, recent and saved tracks) as real feedback, then save the "
        "listener model learnt from it as a new taste version."))
    parser.add_argument("paths", nargs="*", metavar="PATH", help="the export's zip, folder or JSON files")
    parser.add_argument("--spotify", action="store_true",
                        help="also read your top, recently played and saved tracks (sign-in as for helpers.play)")
    parser.add_argument("--pkce", action="store_true", help="sign in with PKCE (no client secret)")
    parser.add_argument("--output-dir", metavar="DIR", help="root of the chain to import into (default: the repository)")
    return parser


def update_taste_version(paths: ProjectPaths) -> str:
    """Refit the live loop's listener model to the learning log and save it as a taste version
    (what `Recommender.load()`, notebook 07 and `python -m helpers.play` serve next); a sentence."""
    try:
        chain = load_chain(paths)
    except FileNotFoundError as error:
        return f"no trained chain yet, so no taste version ({error})"
    learner = LiveLearner(chain, records_reader(paths, simulated=False))
    version = learner.update()
    return f"taste version {version}: {learner.message}"


def import_and_learn(paths: ProjectPaths, sources: str | Path | Sequence[str | Path] | None = None,
                     spotify: bool = False, pkce: bool | None = None) -> str:
    """Import the export at `sources` (a path or a list of them; and, with `spotify`, the Web API's
    lists, signing in with PKCE when `pkce`) into the chain at `paths`, then save the taste version
    learnt from it: what `python -m helpers.history` and notebook 07 do. The import's report and
    the version, as text."""
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources or [])
    if not all(isinstance(source, (str, Path)) for source in sources):
        raise ValueError(f"the export must be given as a path or a list of paths, got {sources!r}")
    if not isinstance(spotify, bool):
        raise ValueError(f"spotify must be True or False, got {spotify!r}")
    if not sources and not spotify:
        raise ValueError("give the export (zip, folder or files) and/or the Spotify lists")
    parts = [read_export(sources)] if sources else []
    if spotify:
        parts.append(spotify_history(pkce))
    report = import_history(History.combine(parts), paths)
    return f"{report.describe()}\n{update_taste_version(paths)}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.paths and not args.spotify:
        parser.error("give the export (zip, folder or files) and/or --spotify")
    try:
        print(import_and_learn(ProjectPaths.at(args.output_dir), args.paths, args.spotify, args.pkce or None))
    except (HistoryFormatError, LogNotWritable, SpotifyError, OSError, ValueError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    return 0


def spotify_history(pkce: bool | None = None) -> History:
    """The Web API's lists of the signed-in person (`helpers.spotify.SpotifyPlayer`; `pkce` None:
    PKCE when there is no client secret)."""
    player = SpotifyPlayer.connect(SpotifySettings.from_environment(use_pkce=pkce, scopes=HISTORY_SCOPES))
    return api_history(player.top_tracks(), player.recently_played(), player.saved_tracks(), pd.Timestamp.now(tz="UTC"))


if __name__ == "__main__":
    sys.exit(main())
