"""The file layouts of public Spotify track tables, and the conversions their values need.

A layout names, for each field the chain uses, the column of the file that holds it. Fields:
`id`, `artist` (one name) or `artists` (a stringified Python list of names), `name`, `album`,
`genre`, `popularity`, `year` or `release_date`, `duration_ms` (the song's length, which turns an
imported play's milliseconds into a share), and the 11 audio `FEATURES` (spelled alike in every
known layout). A file's layout is recognised from its header (`detect_layout`); any other
table is read through a column mapping (`mapped_layout`).
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from helpers.validation import ValueRange

FEATURES = (
    "danceability", "energy", "key", "loudness", "mode", "speechiness",
    "acousticness", "instrumentalness", "liveness", "valence", "tempo",
)
SHARES = ("danceability", "energy", "speechiness", "acousticness", "instrumentalness", "liveness", "valence")
# What Spotify's audio features can be. Tempo 0 is Spotify's "no beat found" (silences, spoken
# intros: 3 tracks of the embedded catalogue, 1 of TidyTuesday's).
FEATURE_RANGES = {
    **{share: ValueRange(0.0, 1.0, "a share in [0, 1]") for share in SHARES},
    "key": ValueRange(-1, 11, "a pitch class: a whole number from -1 (no key found) to 11", whole=True),
    "mode": ValueRange(0, 1, "0 (minor) or 1 (major)", whole=True),
    "loudness": ValueRange(-100.0, 10.0, "a loudness in dB between -100 and 10"),
    "tempo": ValueRange(0.0, 500.0, "a tempo in beats per minute between 0 (no beat found) and 500"),
}
# A song's length: more than 0 ms and at most a day (the longest tracks on Spotify run a few hours).
DURATION_RANGE = ValueRange(1.0, 86_400_000.0, "a duration in milliseconds, more than 0 and at most a day")
TEXT_FIELDS = ("id", "artist", "artists", "name", "album", "genre", "release_date")
NUMBER_FIELDS = ("popularity", "year", "duration_ms")
FIELDS = (*TEXT_FIELDS, *NUMBER_FIELDS, *FEATURES)

# Spotify's pitch classes: C = 0, C♯/D♭ = 1, …, B = 11.
PITCH_CLASSES = {
    "C": 0, "B#": 0, "C#": 1, "Db": 1, "D": 2, "D#": 3, "Eb": 3, "E": 4, "Fb": 4, "E#": 5, "F": 5,
    "F#": 6, "Gb": 6, "G": 7, "G#": 8, "Ab": 8, "A": 9, "A#": 10, "Bb": 10, "B": 11, "Cb": 11,
}
MODES = {"major": 1, "minor": 0}

COLUMN_MAP_HELP = ("pass column_map, a dict from field to your column, e.g. "
                   "column_map={'id': 'song_id', 'artist': 'performer', 'name': 'title'} in notebook "
                   "01 or -p column_map \"{'id': 'song_id'}\" to python -m helpers.pipeline")


@dataclass(frozen=True)
class Layout:
    """Where each field sits in one kind of file, and how its values are written."""

    name: str
    title: str
    required: Mapping[str, str]  # field -> column; the features are always required as well
    optional: Mapping[str, str] = field(default_factory=dict)  # read when the file has them
    id_prefix: str = ""  # stripped from every id (the Hit Predictor's `spotify:track:`)
    missing_text: tuple[str, ...] = ()  # texts that mean "unknown" in text fields (R's NA)
    words_for_key_and_mode: bool = False  # `key` as pitch names, `mode` as Major/Minor
    decade_in_file_name: bool = False  # the year comes from 'dataset-of-60s.csv'

    @property
    def required_columns(self) -> list[str]:
        return [*self.required.values(), *(c for c in FEATURES if c not in self.required)]

    def columns(self, header: Sequence[str]) -> dict[str, str]:
        """Field -> column for this file: the required ones and the optional ones it has."""
        found = {f: c for f, c in self.optional.items() if c in header}
        return {**{f: f for f in FEATURES}, **self.required, **found}

    def describe(self) -> str:
        return f"{self.title} ({', '.join(self.required.values())}, the 11 features)"


KNOWN_LAYOUTS = (
    Layout("embedded", "the embedded catalogue", {"id": "id", "artist": "artist"},
           {"name": "name", "year": "year", "album": "album", "genre": "genre", "duration_ms": "duration_ms"}),
    Layout("kaggle", "Kaggle's 'Spotify 1.2M+ Songs' tracks_features.csv",
           {"id": "id", "name": "name", "album": "album", "artists": "artists", "year": "year"},
           {"duration_ms": "duration_ms"}),
    Layout("tidytuesday", "TidyTuesday's spotify_songs.csv",
           {"id": "track_id", "name": "track_name", "artist": "track_artist",
            "release_date": "track_album_release_date", "genre": "playlist_genre"},
           {"album": "track_album_name", "popularity": "track_popularity", "duration_ms": "duration_ms"},
           missing_text=("NA",)),
    Layout("spotify_features", "Kaggle's 'Ultimate Spotify Tracks DB' SpotifyFeatures.csv",
           {"id": "track_id", "name": "track_name", "artist": "artist_name", "genre": "genre"},
           {"popularity": "popularity", "duration_ms": "duration_ms"}, words_for_key_and_mode=True),
    Layout("hit_predictor", "Kaggle's 'Spotify Hit Predictor' dataset-of-NNs.csv",
           {"id": "uri", "name": "track", "artist": "artist"}, {"duration_ms": "duration_ms"},
           id_prefix="spotify:track:",
           decade_in_file_name=True),
    Layout("spotify_1921_2020", "Kaggle's 'Spotify Dataset 1921-2020' data.csv",
           {"id": "id", "name": "name", "artists": "artists", "year": "year", "popularity": "popularity"},
           {"duration_ms": "duration_ms"}),
)


class LayoutError(ValueError):
    """A header that fits no known layout, or a column mapping that does not fit the file."""


def detect_layout(header: Sequence[str], path: Path | str) -> Layout:
    """The known layout whose columns the header has (the most specific one if several do).

    Raises LayoutError naming the closest layout's missing columns, every known layout and
    the mapping parameter.
    """
    present = set(header)
    missing = {layout.name: [c for c in layout.required_columns if c not in present]
               for layout in KNOWN_LAYOUTS}
    fitting = [layout for layout in KNOWN_LAYOUTS if not missing[layout.name]]
    if fitting:
        return max(fitting, key=lambda layout: len(layout.required))
    closest = min(KNOWN_LAYOUTS, key=lambda layout: len(missing[layout.name]))
    known = "; ".join(layout.describe() for layout in KNOWN_LAYOUTS)
    raise LayoutError(
        f"{path}: its columns fit no known layout. The closest, {closest.title}, lacks the "
        f"column(s) {', '.join(repr(c) for c in missing[closest.name])}. Known layouts: {known}. "
        f"For another table {COLUMN_MAP_HELP}."
    )


def mapped_layout(column_map: Mapping[str, str], header: Sequence[str], path: Path | str) -> Layout:
    """A layout from a mapping field -> column; unmapped fields use a column of their own name.

    `id`, `artist` or `artists`, and the 11 features are required. `key` and `mode` may be
    numbers or words. Raises LayoutError for an unknown field, a column the file lacks or a
    required field without a column.
    """
    if not isinstance(column_map, Mapping):
        raise LayoutError(f"column_map must be a dict from field to column, got {column_map!r}.")
    unknown = [f for f in column_map if f not in FIELDS]
    if unknown:
        raise LayoutError(f"column_map names unknown field(s) {unknown}; the fields are {list(FIELDS)}.")
    absent = {f: c for f, c in column_map.items() if c not in header}
    if absent:
        raise LayoutError(
            f"{path} has no column {', '.join(repr(c) for c in absent.values())} (mapped by column_map "
            f"to {', '.join(absent)}); its columns are {list(header)}.")
    shared = [c for c, count in Counter(column_map.values()).items() if count > 1]
    if shared:
        fields_of = {c: [f for f, mapped in column_map.items() if mapped == c] for c in shared}
        raise LayoutError(f"column_map maps several fields to one column: "
                          f"{'; '.join(f'{fields_of[c]} to {c!r}' for c in shared)}; give each field a column "
                          "of its own.")
    # A column that column_map gives to a field is not also read as the field of its own name.
    mapped = set(column_map.values())
    columns = {f: f for f in FIELDS if f in header and f not in mapped} | dict(column_map)
    if "artist" in column_map and "artists" not in column_map:
        columns.pop("artists", None)
    if "year" in columns:
        columns.pop("release_date", None)
    lacking = [f for f in ("id", *FEATURES) if f not in columns]
    if not {"artist", "artists"} & set(columns):
        lacking.append("artist")
    if lacking:
        raise LayoutError(
            f"{path}: no column for the field(s) {lacking} (neither mapped by column_map nor a column "
            f"of that name); its columns are {list(header)}.")
    required = {f: c for f, c in columns.items() if f in ("id", "artist", "artists", *FEATURES)}
    optional = {f: c for f, c in columns.items() if f not in required}
    return Layout("mapped", "your column_map", required, optional, words_for_key_and_mode=True)


def _encoded_map(texts: pa.Array | pa.ChunkedArray, convert: Callable[[str], float]
                 ) -> tuple[np.ndarray, int | None]:
    """Convert each distinct text with `convert` (NaN: not convertible); the values as float64
    and the row of the first text that could not be converted, if any."""
    texts = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    encoded = pc.dictionary_encode(texts)
    values = np.array([convert(t) for t in encoded.dictionary.to_pylist()] + [np.nan], dtype=np.float64)
    indices = encoded.indices.fill_null(len(encoded.dictionary)).to_numpy()
    converted = values[indices]
    bad = np.isnan(converted) & texts.is_valid().to_numpy(zero_copy_only=False)
    return converted, (int(np.flatnonzero(bad)[0]) if bad.any() else None)


def _number_or(words: Mapping[str, int], normalise: Callable[[str], str]) -> Callable[[str], float]:
    """A converter of one text: its number if it is one, else the number of its `normalise`d
    form in `words`, else NaN."""
    def convert(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return words.get(normalise(text.strip()), np.nan)
    return convert


def pitch_classes(texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, int | None]:
    """Keys as Spotify's numbers: numbers stay, pitch names (C, C#, Db, C♯, D♭ …, any case)
    become 0 … 11. Returns the values and the row of the first unknown text (None if none)."""
    lookup = {name.lower(): number for name, number in PITCH_CLASSES.items()}
    return _encoded_map(texts, _number_or(lookup, lambda t: t.replace("♯", "#").replace("♭", "b").lower()))


def mode_numbers(texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, int | None]:
    """Modes as Spotify's numbers: numbers stay, Major → 1, Minor → 0 (any case)."""
    return _encoded_map(texts, _number_or(MODES, str.lower))


def years_from_release_dates(dates: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, int | None]:
    """The year of each `YYYY-MM-DD`, `YYYY-MM` or `YYYY` date (NaN when missing), and the row of
    the first date in another form (None if none)."""
    dates = dates.combine_chunks() if isinstance(dates, pa.ChunkedArray) else dates
    ok = pc.match_substring_regex(dates, r"^\d{4}(-\d{2}(-\d{2})?)?$")
    bad = pc.and_(dates.is_valid(), pc.invert(pc.fill_null(ok, False))).to_numpy(zero_copy_only=False)
    years = pc.cast(pc.if_else(ok, pc.utf8_slice_codeunits(dates, 0, 4), None), pa.float64())
    return years.to_numpy(zero_copy_only=False), (int(np.flatnonzero(bad)[0]) if bad.any() else None)


def decade_from_file_name(path: Path | str) -> int | None:
    """The first year of the decade a file name such as 'dataset-of-60s.csv' names: 60s → 1960,
    00s → 2000, 10s → 2010 (two digits below 20 are this century); None without one."""
    match = re.search(r"(?<!\d)(\d{2})s(?![a-z])", Path(path).name.lower())
    if not match:
        return None
    decade = int(match.group(1))
    return (2000 if decade < 20 else 1900) + decade
