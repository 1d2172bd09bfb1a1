"""The track catalogue: read it from a CSV file, validate it, and filter it by artist and year.

Two CSV schemas are recognised from their header:

* the embedded catalogue `data/filtered_artist_data.csv`: `id`, the 11 audio features and
  `artist` (one name per track);
* Kaggle's full `tracks_features.csv` ("Spotify 1.2M+ Songs", 24 columns), where `artists`
  is a stringified Python list such as `['Artist A', "Guns N' Roses"]` and `year` is an integer.

The file is read with pyarrow, only the needed columns and with explicit types, and the
artist lists are parsed with vectorised string kernels, so the 1.2M-row file loads in seconds.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from helpers.paths import save_parquet

FEATURES = (
    "danceability", "energy", "key", "loudness", "mode", "speechiness",
    "acousticness", "instrumentalness", "liveness", "valence", "tempo",
)

# The popular artists of 2000-2020 that the original design's step 1 kept.
ORIGINAL_DESIGN_ARTISTS = (
    "Bruno Mars", "Justin Timberlake", "Ed Sheeran", "Drake", "Usher", "Adele", "Taylor Swift",
    "Rihanna", "Lady Gaga", "Alicia Keys", "Kanye West", "Eminem", "Nicki Minaj", "Justin Bieber",
    "The Weeknd", "P!nk", "Maroon 5", "Ariana Grande", "Chris Brown", "Post Malone", "John Legend",
    "Sia", "Miley Cyrus", "Sam Smith", "Demi Lovato",
)

EMBEDDED_COLUMNS = ("id", *FEATURES, "artist")
KAGGLE_COLUMNS = (
    "id", "name", "album", "album_id", "artists", "artist_ids", "track_number", "disc_number",
    "explicit", *FEATURES, "duration_ms", "time_signature", "year", "release_date",
)
# Columns of tracks.parquet, in order; `name` and `year` only when the catalogue has them.
TRACKS_COLUMNS = ("id", "artist", "name", *FEATURES, "year")

_OPTIONAL_COLUMNS = ("name", "year")
# Between two quoted names of a stringified list: `', '`, `", "`, `', "` or `", '`.
_LIST_SEPARATOR = r"""['"], ['"]"""
# Python's repr escapes a quote or a backslash inside a name with a backslash.
_ESCAPED_CHARACTER = r"""\\(['"\\])"""


class CatalogueError(ValueError):
    """A catalogue that cannot be used as it is: a missing column, a bad value, no tracks left."""


@dataclass(frozen=True)
class LoadReport:
    """What `load_catalogue` read and what it dropped."""

    path: Path
    schema: Literal["embedded", "kaggle"]
    rows_read: int
    rows_missing_values: int
    duplicate_ids: int

    @property
    def rows_kept(self) -> int:
        return self.rows_read - self.rows_missing_values - self.duplicate_ids

    def __str__(self) -> str:
        return (
            f"{self.path} ({self.schema} schema): {self.rows_read:,} rows read, "
            f"{self.rows_missing_values:,} dropped for a missing id or feature, "
            f"{self.duplicate_ids:,} dropped as duplicate ids, {self.rows_kept:,} tracks kept."
        )


def schema_description(schema: Literal["embedded", "kaggle"]) -> str:
    """The columns of a schema, for error messages."""
    if schema == "embedded":
        return f"the embedded schema ({', '.join(EMBEDDED_COLUMNS)})"
    return f"Kaggle's tracks_features.csv schema ({', '.join(KAGGLE_COLUMNS)})"


def read_header(path: Path) -> list[str]:
    """The column names on the first line of a CSV file."""
    with path.open(newline="", encoding="utf-8-sig") as file:
        header = next(csv.reader(file), None)
    if not header:
        raise CatalogueError(f"{path} is empty: expected a CSV header line with the column names.")
    return header


def detect_schema(header: Sequence[str], path: Path) -> Literal["embedded", "kaggle"]:
    """'kaggle' when the file has an `artists` list column, 'embedded' when it has `artist`."""
    if "artists" in header:
        schema, required = "kaggle", ("id", "artists", *FEATURES)
    elif "artist" in header:
        schema, required = "embedded", EMBEDDED_COLUMNS
    else:
        raise CatalogueError(
            f"{path} has neither an 'artist' nor an 'artists' column; expected "
            f"{schema_description('embedded')} or {schema_description('kaggle')}."
        )
    missing = [column for column in required if column not in header]
    if missing:
        raise CatalogueError(
            f"{path} has no column {', '.join(repr(c) for c in missing)}; "
            f"expected {schema_description(schema)}."
        )
    return schema


def _read_csv(path: Path, convert_options: pa_csv.ConvertOptions) -> pa.Table:
    """Read with pyarrow's parallel parser; if a row breaks (a line break inside a quoted
    value, as a track name may hold), read again with the slower parser that allows them."""
    try:
        return pa_csv.read_csv(path, convert_options=convert_options)
    except pa.ArrowInvalid as error:
        if "CSV parse error" not in str(error):
            raise
        return pa_csv.read_csv(path, convert_options=convert_options,
                               parse_options=pa_csv.ParseOptions(newlines_in_values=True))


def _first_bad_number(path: Path, columns: Sequence[str], header: Sequence[str]) -> str | None:
    """Describe the first value of `columns` that is neither a number nor missing, if any."""
    try:
        table = _read_csv(path, pa_csv.ConvertOptions(
            include_columns=list(columns), column_types={c: pa.string() for c in columns},
            strings_can_be_null=True,
        ))
    except pa.ArrowInvalid:
        return None
    for column in columns:
        text = table[column].to_pandas()
        bad = (text.notna() & pd.to_numeric(text, errors="coerce").isna()).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            return (f"column '{column}' (column {header.index(column) + 1}) has the value "
                    f"{text.iloc[row]!r} in data row {row + 1}; expected numbers")
    return None


def _read_columns(path: Path, header: Sequence[str], schema: str) -> pa.Table:
    """The needed columns, with explicit types; a clear error on a non-numeric value.

    Empty cells and the usual spellings of a missing number (NA, nan, null, ...) become nulls.
    """
    artist_column = "artists" if schema == "kaggle" else "artist"
    types = {"id": pa.string(), artist_column: pa.string(), **{f: pa.float64() for f in FEATURES}}
    types |= {c: (pa.float64() if c == "year" else pa.string()) for c in _OPTIONAL_COLUMNS if c in header}
    try:
        table = _read_csv(path, pa_csv.ConvertOptions(include_columns=list(types), column_types=types))
    except pa.ArrowInvalid as error:
        numeric = [c for c, t in types.items() if t == pa.float64()]
        problem = _first_bad_number(path, numeric, header) or str(error)
        raise CatalogueError(f"{path}: {problem}.") from None
    return pa.table({c: _empty_as_missing(table[c]) if t == pa.string() else table[c]
                     for c, t in types.items()})


def _empty_as_missing(text: pa.ChunkedArray) -> pa.ChunkedArray:
    """Empty strings as nulls (only rebuilt when there are any)."""
    empty = pc.equal(text, "")
    return pc.if_else(empty, pa.scalar(None, pa.string()), text) if pc.any(empty).as_py() else text


def parse_artist_lists(texts: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """Parse stringified Python lists of names, as in Kaggle's `artists` column, vectorised.

    `"['A', "Guns N' Roses"]"` becomes `["A", "Guns N' Roses"]`, `"[]"` an empty list and a
    missing value a missing list; the backslash escapes that Python's repr puts before quotes
    and backslashes are undone. A name that itself holds a quote next to ", " would be split
    there: no such artist name is known.
    """
    texts = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    body = pc.utf8_slice_codeunits(pc.utf8_trim(texts, characters="[]"), start=1, stop=-1)
    lists = pc.split_pattern_regex(body, pattern=_LIST_SEPARATOR)
    names = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy()
    present = pc.not_equal(names, "").to_numpy(zero_copy_only=False)
    counts = np.bincount(parents[present], minlength=len(texts))
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]), type=pa.int32())
    names = pc.replace_substring_regex(names.filter(present), pattern=_ESCAPED_CHARACTER,
                                       replacement=r"\1")
    return pa.ListArray.from_arrays(offsets, names, mask=texts.is_null())


def _check_artist_lists(texts: pa.ChunkedArray, path: Path) -> None:
    """Every non-missing value of `artists` must look like a Python list: `[...]`."""
    ok = pc.fill_null(pc.and_(pc.starts_with(texts, "["), pc.ends_with(texts, "]")), True)
    if not pc.all(ok).as_py():
        row = int(np.flatnonzero(~ok.to_numpy(zero_copy_only=False))[0])
        raise CatalogueError(
            f"{path}: column 'artists' has the value {texts[row].as_py()!r} in data row {row + 1}; "
            "expected a stringified Python list such as \"['Artist A', 'Artist B']\"."
        )


def first_of_each_row(parents: np.ndarray, n_rows: int) -> np.ndarray:
    """For each of `n_rows` rows, the position of its first entry in `parents`, or -1.

    `parents[i]` is the row of entry i, in non-decreasing order (as `pc.list_parent_indices`).
    """
    first = np.full(n_rows, -1, dtype=np.int64)
    starts = np.flatnonzero(np.diff(parents, prepend=-1) != 0)
    first[parents[starts]] = starts
    return first


def _check_has_values(table: pa.Table, path: Path) -> None:
    """A file with no rows, or a required column without a single value, is an error."""
    if table.num_rows == 0:
        raise CatalogueError(f"{path} has a header but no rows; expected at least one track.")
    artist_column = "artists" if "artists" in table.column_names else "artist"
    for column in ("id", artist_column, *FEATURES):
        values = table[column]
        if values.null_count == len(values) or (
            column in FEATURES and not np.isfinite(values.to_numpy()).any()
        ):
            kind = "numbers" if column in FEATURES else "text"
            raise CatalogueError(f"{path}: every value of column '{column}' is missing; expected {kind}.")


def _to_frame(table: pa.Table, path: Path) -> pd.DataFrame:
    """A DataFrame with id, artist, name, year, artists (each when known) and the features."""
    frame = pd.DataFrame({"id": table["id"].to_pandas()})
    if "artists" in table.column_names:
        _check_artist_lists(table["artists"], path)
        artists = parse_artist_lists(table["artists"])
        first = first_of_each_row(pc.list_parent_indices(artists).to_numpy(), len(artists))
        frame["artist"] = pc.list_flatten(artists).take(pa.array(first, mask=first < 0)).to_pandas()
    else:
        frame["artist"] = table["artist"].to_pandas()
    if "name" in table.column_names:
        frame["name"] = table["name"].to_pandas()
    if "year" in table.column_names:
        years = table["year"].to_numpy()
        whole = np.isnan(years) | (years % 1 == 0)
        if not whole.all():
            row = int(np.flatnonzero(~whole)[0])
            raise CatalogueError(f"{path}: column 'year' has the value {years[row]} in data row "
                                 f"{row + 1}; expected whole numbers.")
        frame["year"] = pd.array(years, dtype="Float64").astype("Int64")
    if "artists" in table.column_names:
        frame["artists"] = pd.Series(artists, dtype=pd.ArrowDtype(artists.type))
    for feature in FEATURES:
        frame[feature] = table[feature].to_numpy()
    return frame


@overload
def load_catalogue(path: str | Path, return_report: Literal[False] = False) -> pd.DataFrame: ...


@overload
def load_catalogue(path: str | Path, return_report: Literal[True]) -> tuple[pd.DataFrame, LoadReport]: ...


def load_catalogue(path: str | Path, return_report: bool = False
                   ) -> pd.DataFrame | tuple[pd.DataFrame, LoadReport]:
    """Read a catalogue CSV in the embedded or in Kaggle's schema, and validate it.

    Returns a DataFrame with columns `id`, `artist` (for Kaggle's schema the first listed
    artist), `name` and `year` when the file has them, `artists` (Kaggle's schema: the parsed
    list) and the 11 `FEATURES` as float64. Rows without an id or with a missing or non-finite
    feature are dropped, then duplicate ids (keeping the first); with `return_report=True` the
    counts come back in a `LoadReport` as a second value.

    Raises FileNotFoundError for a missing file and CatalogueError (a ValueError) for a missing
    column, a non-numeric value, a column without any value or a file without a usable row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"catalogue file {path} does not exist; pass the embedded catalogue "
            "(data/filtered_artist_data.csv) or Kaggle's tracks_features.csv."
        )
    header = read_header(path)
    schema = detect_schema(header, path)
    table = _read_columns(path, header, schema)
    _check_has_values(table, path)
    frame = _to_frame(table, path)

    complete = np.isfinite(frame[list(FEATURES)].to_numpy()).all(axis=1) & frame["id"].notna().to_numpy()
    if not complete.all():
        frame = frame.loc[complete].reset_index(drop=True)
    duplicate = frame["id"].duplicated(keep="first").to_numpy()
    if duplicate.any():
        frame = frame.loc[~duplicate].reset_index(drop=True)
    report = LoadReport(path, schema, table.num_rows, int((~complete).sum()), int(duplicate.sum()))
    if frame.empty:
        raise CatalogueError(
            f"{path}: none of its {table.num_rows:,} rows has an id and all 11 features "
            f"({', '.join(FEATURES)})."
        )
    return (frame, report) if return_report else frame


def normalise_names(names: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Names in a case- and accent-insensitive form: 'Beyoncé ' and 'beyonce' both give 'beyonce'."""
    decomposed = pc.utf8_normalize(names, form="NFKD")
    without_accents = pc.replace_substring_regex(decomposed, pattern=r"\p{Mn}", replacement="")
    return pc.utf8_lower(pc.utf8_trim_whitespace(without_accents))


def _arrow_array(values: pd.Series, type: pa.DataType) -> pa.Array:
    """A column as one contiguous pyarrow array."""
    array = pa.array(values, type=type)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _artist_lists(tracks: pd.DataFrame) -> pa.ListArray:
    """Each track's artists: the parsed `artists` lists, or one-name lists from `artist`."""
    if "artists" in tracks.columns:
        return _arrow_array(tracks["artists"], pa.list_(pa.string()))
    names = _arrow_array(tracks["artist"], pa.string())
    return pa.ListArray.from_arrays(pa.array(np.arange(len(names) + 1), type=pa.int32()), names)


def match_artists(tracks: pd.DataFrame, artists: Sequence[str]) -> pd.Series:
    """For each track, the first of its artists that is in `artists`, spelled as in `artists`.

    Names match whole, ignoring case and accents; a track without a match gets NA.
    """
    if isinstance(artists, str) or not all(isinstance(a, str) for a in artists):
        raise TypeError(f"artists must be a list of names, got {artists!r}.")
    if len(artists) == 0:
        raise ValueError("artists is empty: pass None to keep every artist.")
    spelling: dict[str, str] = {}
    for key, name in zip(normalise_names(pa.array(list(artists), type=pa.string())).to_pylist(), artists):
        spelling.setdefault(key, name)
    lists = _artist_lists(tracks)
    # Artists repeat across tracks: normalise each distinct name once.
    listed = pc.dictionary_encode(pc.list_flatten(lists))
    code = pc.index_in(normalise_names(listed.dictionary),
                       value_set=pa.array(list(spelling), type=pa.string())).take(listed.indices)
    hit = code.is_valid().to_numpy(zero_copy_only=False)
    first = first_of_each_row(pc.list_parent_indices(lists).to_numpy()[hit], len(tracks))
    matched = first >= 0
    match = np.full(len(tracks), None, dtype=object)
    spelled = np.array(list(spelling.values()), dtype=object)
    match[matched] = spelled[code.filter(hit).to_numpy()[first[matched]]]
    return pd.Series(match, index=tracks.index, dtype="str")


def filter_catalogue(tracks: pd.DataFrame, artists: Sequence[str] | None,
                     year_min: int | None = 2000, year_max: int | None = 2020,
                     source: str = "the catalogue") -> pd.DataFrame:
    """Keep the tracks released in [year_min, year_max] by one of `artists`.

    The year range applies only when `tracks` has a `year` column (a track without a year is
    then dropped); None for a bound or for `artists` switches that part of the filter off. A
    track matches when any of its artists is in the list, whole name, ignoring case and accents;
    `artist` becomes the first match, spelled as in `artists`. Rows keep their order.
    """
    if year_min is not None and year_max is not None and year_min > year_max:
        raise ValueError(f"year_min ({year_min}) is after year_max ({year_max}).")
    keep = np.ones(len(tracks), dtype=bool)
    steps = [f"{len(tracks):,} tracks"]
    if "year" in tracks.columns and (year_min is not None or year_max is not None):
        years = tracks["year"]
        low = years >= year_min if year_min is not None else years.notna()
        high = years <= year_max if year_max is not None else years.notna()
        keep &= (low & high).fillna(False).to_numpy(dtype=bool)
        steps.append(f"{int(keep.sum()):,} released in {year_min}-{year_max}")
    if artists is not None:
        matched = match_artists(tracks, artists)
        keep &= matched.notna().to_numpy()
        steps.append(f"{int(keep.sum()):,} by one of the artists {list(artists)}")
    if not keep.any():
        raise CatalogueError(
            f"no track of {source} is left after the filter: {', then '.join(steps)}. "
            "Check the artists' spelling and the year range."
        )
    filtered = tracks.loc[keep].copy()
    if artists is not None:
        filtered["artist"] = matched.loc[keep]
    return filtered.reset_index(drop=True)


def save_tracks(tracks: pd.DataFrame, path: str | Path) -> Path:
    """Write the tracks table (`TRACKS_COLUMNS` that `tracks` has, in order) to parquet."""
    missing = [c for c in ("id", "artist", *FEATURES) if c not in tracks.columns]
    if missing:
        raise ValueError(f"tracks table has no column {missing}; expected {list(TRACKS_COLUMNS)}.")
    path = Path(path)
    return save_parquet(tracks[[c for c in TRACKS_COLUMNS if c in tracks.columns]], path)
