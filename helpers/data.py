"""The track catalogue: read it from its files, validate it, and filter it by artist and year.

Six layouts are recognised from the header (see `helpers.layouts`): the embedded catalogue,
Kaggle's `tracks_features.csv`, TidyTuesday's `spotify_songs.csv`, Kaggle's
`SpotifyFeatures.csv`, the Hit Predictor's `dataset-of-NNs.csv` and the 1921-2020 `data.csv`;
any other table is read through a column mapping. Files may be `.csv`, `.csv.gz` or `.zip`
(one CSV inside), and several files of one layout are read as one catalogue.

The files are read with pyarrow, only the needed columns and with explicit types; artist lists,
pitch names and release dates are converted with vectorised kernels (per distinct value where
the values repeat), so the 1.2M-row file loads in seconds.
"""
from __future__ import annotations

import csv
import glob
import gzip
import io
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, overload

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from helpers.layouts import (
    FEATURES, TEXT_FIELDS, Layout, LayoutError, decade_from_file_name, detect_layout,
    mapped_layout, mode_numbers, pitch_classes, years_from_release_dates,
)
from helpers.paths import DEFAULT_CATALOGUE, REPO_ROOT, TIDYTUESDAY_CATALOGUE, save_parquet

# The popular artists of 2000-2020 that the original design's step 1 kept.
ORIGINAL_DESIGN_ARTISTS = (
    "Bruno Mars", "Justin Timberlake", "Ed Sheeran", "Drake", "Usher", "Adele", "Taylor Swift",
    "Rihanna", "Lady Gaga", "Alicia Keys", "Kanye West", "Eminem", "Nicki Minaj", "Justin Bieber",
    "The Weeknd", "P!nk", "Maroon 5", "Ariana Grande", "Chris Brown", "Post Malone", "John Legend",
    "Sia", "Miley Cyrus", "Sam Smith", "Demi Lovato",
)
# The embedded catalogue also holds 233 tracks by Beyoncé: its list had her.
DEFAULT_ARTISTS = (*ORIGINAL_DESIGN_ARTISTS, "Beyonce")

EMBEDDED_COLUMNS = ("id", *FEATURES, "artist")
KAGGLE_COLUMNS = (
    "id", "name", "album", "album_id", "artists", "artist_ids", "track_number", "disc_number",
    "explicit", *FEATURES, "duration_ms", "time_signature", "year", "release_date",
)
# Columns of tracks.parquet, in order; `name`, `album`, `genre` and `year` only when known.
TRACKS_COLUMNS = ("id", "artist", "name", "album", "genre", *FEATURES, "year")
# Columns of a loaded catalogue, in order, each when known.
CATALOGUE_COLUMNS = ("id", "artist", "name", "album", "genre", "popularity", "year", "artists", *FEATURES)

# Between two quoted names of a stringified list: `', '`, `", "`, `', "` or `", '`.
_LIST_SEPARATOR = r"""['"], ['"]"""
# Python's repr escapes a quote or a backslash inside a name with a backslash.
_ESCAPED_CHARACTER = r"""\\(['"\\])"""
_GLOB_CHARACTERS = set("*?[")


class CatalogueError(ValueError):
    """A catalogue that cannot be used as it is: a missing column, a bad value, no tracks left."""


@dataclass(frozen=True)
class BuiltinCatalogue:
    """A catalogue shipped in `data/`, with the filter that suits it."""

    path: Path
    artists: tuple[str, ...] | None
    year_min: int | None
    year_max: int | None


BUILTIN_CATALOGUES = {
    "embedded": BuiltinCatalogue(DEFAULT_CATALOGUE, DEFAULT_ARTISTS, 2000, 2020),
    # 28,356 tracks of six genres: an artist list would keep almost nothing of it.
    "tidytuesday": BuiltinCatalogue(TIDYTUESDAY_CATALOGUE, None, None, None),
}
# The filter of a catalogue file the user brings: the original design's.
FILE_FILTER = BuiltinCatalogue(Path(), DEFAULT_ARTISTS, 2000, 2020)


@dataclass(frozen=True)
class LoadReport:
    """What `load_catalogue` read and what it dropped."""

    paths: tuple[Path, ...]
    layout: str
    rows_read: int
    rows_missing_values: int
    duplicate_ids: int

    @property
    def rows_kept(self) -> int:
        return self.rows_read - self.rows_missing_values - self.duplicate_ids

    def __str__(self) -> str:
        files = str(self.paths[0]) if len(self.paths) == 1 else (
            f"{len(self.paths)} files ({', '.join(p.name for p in self.paths)})")
        return (
            f"{files} ({self.layout} layout): {self.rows_read:,} rows read, "
            f"{self.rows_missing_values:,} dropped for a missing id or feature, "
            f"{self.duplicate_ids:,} repeated ids merged into their first row, {self.rows_kept:,} tracks kept."
        )


def catalogue_files(catalogue_path: str | Path | Sequence[str | Path] | None) -> list[Path]:
    """The files of a catalogue: None or a built-in name ('embedded', 'tidytuesday') gives the
    shipped file; otherwise a path, a glob pattern or a list of them (relative: from the
    repository). Raises FileNotFoundError naming what matched nothing."""
    if catalogue_path is None or (isinstance(catalogue_path, str) and catalogue_path in BUILTIN_CATALOGUES):
        return [BUILTIN_CATALOGUES[catalogue_path or "embedded"].path]
    items = [catalogue_path] if isinstance(catalogue_path, (str, Path)) else list(catalogue_path)
    if not items:
        raise FileNotFoundError("catalogue_path is an empty list: give at least one file.")
    files: list[Path] = []
    for item in items:
        path = REPO_ROOT / Path(item).expanduser()
        if _GLOB_CHARACTERS & set(str(item)):
            matches = sorted(Path(p) for p in glob.glob(str(path)))
            if not matches:
                raise FileNotFoundError(f"no catalogue file matches {str(item)!r} (looked in {path.parent}).")
            files.extend(matches)
        elif not path.is_file():
            raise FileNotFoundError(
                f"catalogue file {path} does not exist; pass a file, a glob, a list of files or a "
                f"built-in catalogue name ({', '.join(BUILTIN_CATALOGUES)}).")
        else:
            files.append(path)
    return files


def filter_settings(catalogue_path: object, artists: object = "default", year_min: object = "default",
                    year_max: object = "default") -> tuple[Sequence[str] | None, int | None, int | None]:
    """Artists and year bounds for `filter_catalogue`: each "default" becomes the catalogue's own
    (a built-in catalogue's; for files the 26 default artists and 2000-2020)."""
    name = catalogue_path or "embedded"
    own = BUILTIN_CATALOGUES.get(name, FILE_FILTER) if isinstance(name, str) else FILE_FILTER
    return (own.artists if artists == "default" else artists,
            own.year_min if year_min == "default" else year_min,
            own.year_max if year_max == "default" else year_max)


def _zip_member(archive: zipfile.ZipFile, path: Path) -> str:
    """The one CSV file inside a zip archive."""
    members = [m for m in archive.namelist() if not m.endswith("/") and not m.startswith("__MACOSX/")]
    csvs = [m for m in members if m.lower().endswith(".csv")] or members
    if len(csvs) != 1:
        raise CatalogueError(f"{path} holds {len(csvs)} files ({', '.join(csvs[:5])}); expected one CSV file.")
    return csvs[0]


def _open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed (.gz, .zip)."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")
    if path.suffix.lower() == ".zip":
        archive = zipfile.ZipFile(path)
        return archive.open(_zip_member(archive, path))
    return path.open("rb")


def _arrow_source(path: Path) -> str | pa.BufferReader:
    """What pyarrow's CSV reader reads: the path (it decompresses .gz itself) or a zip's CSV."""
    if path.suffix.lower() == ".zip":
        with _open_binary(path) as member:
            return pa.BufferReader(member.read())
    return str(path)


def _not_utf8_error(path: Path) -> CatalogueError:
    """Where a file stops being UTF-8, as an error that says how to fix it."""
    with _open_binary(path) as file:
        data = file.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        return CatalogueError(
            f"{path} is not UTF-8 text: line {line} holds the byte 0x{data[error.start]:02x}. "
            "Save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`).")
    return CatalogueError(f"{path} could not be read as UTF-8 text.")


def read_header(path: Path) -> list[str]:
    """The column names on the first line of a CSV file; an error for a repeated name."""
    try:
        with io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", newline="") as file:
            header = next(csv.reader(file), None)
    except UnicodeDecodeError:
        raise _not_utf8_error(path) from None
    except (OSError, zipfile.BadZipFile) as error:
        raise CatalogueError(f"{path} cannot be read: {error}.") from None
    if not header:
        raise CatalogueError(f"{path} is empty: expected a CSV header line with the column names.")
    repeated = [name for name, count in Counter(header).items() if count > 1]
    if repeated:
        where = "; ".join(f"{name!r} at columns {[i + 1 for i, c in enumerate(header) if c == name]}"
                          for name in repeated)
        raise CatalogueError(f"{path} has repeated column names: {where}. Rename them so that each "
                             "column has a name of its own.")
    return header


def _read_csv(path: Path, convert_options: pa_csv.ConvertOptions) -> pa.Table:
    """Read with pyarrow's parallel parser; if a row breaks (a line break inside a quoted
    value, as a track name may hold), read again with the slower parser that allows them."""
    try:
        try:
            return pa_csv.read_csv(_arrow_source(path), convert_options=convert_options)
        except pa.ArrowInvalid as error:
            if "CSV parse error" not in str(error):
                raise
            return pa_csv.read_csv(_arrow_source(path), convert_options=convert_options,
                                   parse_options=pa_csv.ParseOptions(newlines_in_values=True))
    except pa.ArrowInvalid as error:
        if "UTF8" in str(error):
            raise _not_utf8_error(path) from None
        raise


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


def _column_types(layout: Layout, columns: Mapping[str, str]) -> dict[str, pa.DataType]:
    """The pyarrow type of each file column to read."""
    words = ("key", "mode") if layout.words_for_key_and_mode else ()
    text = {*TEXT_FIELDS, *words}
    return {column: pa.string() if field in text else pa.float64() for field, column in columns.items()}


def _read_fields(path: Path, header: Sequence[str], layout: Layout) -> pa.Table:
    """The layout's columns of one file, named by field, with explicit types; a clear error on
    a non-numeric value. Empty cells and the usual spellings of a missing number become nulls."""
    columns = layout.columns(header)
    types = _column_types(layout, columns)
    try:
        table = _read_csv(path, pa_csv.ConvertOptions(include_columns=list(types), column_types=types))
    except pa.ArrowInvalid as error:
        numeric = [c for c, t in types.items() if t == pa.float64()]
        problem = _first_bad_number(path, numeric, header) or str(error)
        raise CatalogueError(f"{path}: {problem}.") from None
    return pa.table({field: table[column] for field, column in columns.items()})


def _bad_value(path: Path, column: str, table: pa.Table, field: str, row: int, expected: str) -> CatalogueError:
    """The error for the value of `field` (the file's `column`) in data row `row` (from 0)."""
    return CatalogueError(f"{path}: column '{column}' has the value {table[field][row].as_py()!r} "
                          f"in data row {row + 1}; expected {expected}.")


def _missing_texts(text: pa.ChunkedArray, missing: Sequence[str]) -> pa.ChunkedArray:
    """Empty strings and the layout's words for "unknown" as nulls (rebuilt only if any)."""
    unknown = pc.is_in(text, value_set=pa.array(["", *missing], type=pa.string()))
    return pc.if_else(unknown, pa.scalar(None, pa.string()), text) if pc.any(unknown).as_py() else text


def _convert_fields(table: pa.Table, layout: Layout, header: Sequence[str], path: Path) -> pa.Table:
    """Values in the chain's form: ids without their prefix, missing texts as nulls, keys and
    modes as numbers, a `year` from the year, the release date or the file's decade."""
    columns = layout.columns(header)
    fields = {name: table[name] for name in table.column_names}
    for name in TEXT_FIELDS:
        if name in fields:
            fields[name] = _missing_texts(fields[name], layout.missing_text)
    if layout.id_prefix:
        ids = fields["id"]
        ok = pc.fill_null(pc.starts_with(ids, layout.id_prefix), True).to_numpy(zero_copy_only=False)
        if not ok.all():
            raise _bad_value(path, columns["id"], table, "id", int(np.flatnonzero(~ok)[0]),
                             f"a Spotify URI such as '{layout.id_prefix}4uLU6hMCjMI75M1A2tKUQC'")
        fields["id"] = pc.utf8_slice_codeunits(ids, len(layout.id_prefix))
    if layout.words_for_key_and_mode:
        for name, convert, expected in (("key", pitch_classes, "a number or a pitch name (C, C#, Db, …, B)"),
                                        ("mode", mode_numbers, "a number, Major or Minor")):
            values, bad = convert(fields[name])
            if bad is not None:
                raise _bad_value(path, columns[name], table, name, bad, expected)
            fields[name] = pa.chunked_array([values])
    if "year" not in fields and "release_date" in fields:
        years, bad = years_from_release_dates(fields["release_date"])
        if bad is not None:
            raise _bad_value(path, columns["release_date"], table, "release_date", bad,
                             "a date written YYYY-MM-DD, YYYY-MM or YYYY")
        fields["year"] = pa.chunked_array([years])
    decade = decade_from_file_name(path) if layout.decade_in_file_name else None
    if decade is not None:
        fields["year"] = pa.chunked_array([np.full(table.num_rows, float(decade))])
    fields.pop("release_date", None)
    if "year" in fields:
        years = fields["year"].to_numpy()
        whole = np.isnan(years) | (years % 1 == 0)
        if not whole.all():
            row = int(np.flatnonzero(~whole)[0])
            raise CatalogueError(f"{path}: column '{columns.get('year', 'year')}' has the value "
                                 f"{years[row]} in data row {row + 1}; expected whole numbers.")
    return pa.table(fields)


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


def _check_artist_lists(texts: pa.ChunkedArray, path: Path, column: str = "artists") -> None:
    """Every non-missing value of the artist lists must look like a Python list: `[...]`."""
    ok = pc.fill_null(pc.and_(pc.starts_with(texts, "["), pc.ends_with(texts, "]")), True)
    if not pc.all(ok).as_py():
        row = int(np.flatnonzero(~ok.to_numpy(zero_copy_only=False))[0])
        raise CatalogueError(
            f"{path}: column '{column}' has the value {texts[row].as_py()!r} in data row {row + 1}; "
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


def _check_has_values(table: pa.Table, columns: Mapping[str, str], path: Path) -> None:
    """A file with no rows, or a required column without a single value, is an error."""
    if table.num_rows == 0:
        raise CatalogueError(f"{path} has a header but no rows; expected at least one track.")
    artist_field = "artists" if "artists" in table.column_names else "artist"
    for field in ("id", artist_field, *FEATURES):
        values = table[field]
        if values.null_count == len(values) or (
            field in FEATURES and not np.isfinite(values.to_numpy()).any()
        ):
            kind = "numbers" if field in FEATURES else "text"
            raise CatalogueError(f"{path}: every value of column '{columns[field]}' is missing; "
                                 f"expected {kind}.")


def _to_frame(table: pa.Table) -> pd.DataFrame:
    """A DataFrame with the `CATALOGUE_COLUMNS` that `table` has (artist: the first listed)."""
    frame = pd.DataFrame({"id": table["id"].to_pandas()})
    if "artists" in table.column_names:
        artists = parse_artist_lists(table["artists"])
        first = first_of_each_row(pc.list_parent_indices(artists).to_numpy(), len(artists))
        frame["artist"] = pc.list_flatten(artists).take(pa.array(first, mask=first < 0)).to_pandas()
    else:
        frame["artist"] = table["artist"].to_pandas()
    for field in ("name", "album", "genre"):
        if field in table.column_names:
            frame[field] = table[field].to_pandas()
    if "popularity" in table.column_names:
        frame["popularity"] = table["popularity"].to_numpy()
    if "year" in table.column_names:
        frame["year"] = pd.array(table["year"].to_numpy(), dtype="Float64").astype("Int64")
    if "artists" in table.column_names:
        frame["artists"] = pd.Series(artists, dtype=pd.ArrowDtype(artists.type))
    for feature in FEATURES:
        frame[feature] = table[feature].to_numpy()
    return frame


def joined_per_group(values: pd.Series, groups: np.ndarray, separator: str = ", ") -> pd.Series:
    """Per group label, its distinct non-missing values joined in order of first appearance."""
    pairs = pd.DataFrame({"group": groups, "value": values.to_numpy()}).dropna().drop_duplicates()
    return pairs.groupby("group", sort=False)["value"].agg(separator.join)


def _layouts(files: Sequence[Path], column_map: Mapping[str, str] | None) -> tuple[list[list[str]], Layout]:
    """Each file's header and the one layout they share; an error naming each file's layout."""
    headers = [read_header(path) for path in files]
    layouts = [mapped_layout(column_map, header, path) if column_map else detect_layout(header, path)
               for header, path in zip(headers, files)]
    if len({layout.name for layout in layouts}) > 1:
        described = "; ".join(f"{path} ({layout.title}: {', '.join(header)})"
                              for path, layout, header in zip(files, layouts, headers))
        raise CatalogueError(f"the catalogue files have different layouts: {described}. Give files "
                             "of one layout (or convert them to one).")
    return headers, layouts[0]


@overload
def load_catalogue(path: str | Path | Sequence[str | Path], column_map: Mapping[str, str] | None = None,
                   return_report: Literal[False] = False) -> pd.DataFrame: ...


@overload
def load_catalogue(path: str | Path | Sequence[str | Path], column_map: Mapping[str, str] | None = None, *,
                   return_report: Literal[True]) -> tuple[pd.DataFrame, LoadReport]: ...


def load_catalogue(path: str | Path | Sequence[str | Path], column_map: Mapping[str, str] | None = None,
                   return_report: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, LoadReport]:
    """Read a catalogue (one file, a glob or a list of files of one layout) and validate it.

    `path` goes through `catalogue_files` (built-in names, globs, paths from the repository).
    The layout is recognised from the header (`helpers.layouts.KNOWN_LAYOUTS`) unless
    `column_map` maps fields to columns. Returns a DataFrame with the `CATALOGUE_COLUMNS` the
    files have: `id`, `artist` (for a list of artists the first), `name`, `album`, `genre`,
    `popularity`, `year`, `artists` (the parsed list) and the 11 `FEATURES` as float64. Rows
    without an id or with a missing or non-finite feature are dropped, then repeated ids (keeping
    the first row, with every genre of the id's rows); with `return_report=True` the counts come
    back in a `LoadReport` as a second value.

    Raises FileNotFoundError for a missing file and CatalogueError (a ValueError) naming the
    file and the column or line for: an unknown layout, a column mapping that does not fit,
    files of different layouts, repeated column names, a file that is not UTF-8, a bad value, a
    column without any value or a file without a usable row.
    """
    files = catalogue_files(path)
    try:
        headers, layout = _layouts(files, column_map)
    except LayoutError as error:
        raise CatalogueError(str(error)) from None
    tables = []
    for file, header in zip(files, headers):
        table = _convert_fields(_read_fields(file, header, layout), layout, header, file)
        _check_has_values(table, layout.columns(header), file)
        if "artists" in table.column_names:
            _check_artist_lists(table["artists"], file, layout.columns(header)["artists"])
        tables.append(table)
    # A file without a decade in its name has no year: its rows get a missing one.
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    frame = _to_frame(table)

    complete = np.isfinite(frame[list(FEATURES)].to_numpy()).all(axis=1) & frame["id"].notna().to_numpy()
    if not complete.all():
        frame = frame.loc[complete].reset_index(drop=True)
    duplicate = frame["id"].duplicated(keep="first").to_numpy()
    if duplicate.any():
        if "genre" in frame.columns:
            first_row = pd.factorize(frame["id"])[0]
            frame["genre"] = joined_per_group(frame["genre"], first_row).reindex(first_row).to_numpy()
        frame = frame.loc[~duplicate].reset_index(drop=True)
    report = LoadReport(tuple(files), layout.name, table.num_rows, int((~complete).sum()),
                        int(duplicate.sum()))
    if frame.empty:
        raise CatalogueError(
            f"{', '.join(map(str, files))}: none of its {table.num_rows:,} rows has an id and all 11 "
            f"features ({', '.join(FEATURES)})."
        )
    return (frame, report) if return_report else frame


def normalise_names(names: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Names in a case- and accent-insensitive form: 'Beyoncé ' and 'beyonce' both give 'beyonce'."""
    decomposed = pc.utf8_normalize(names, form="NFKD")
    without_accents = pc.replace_substring_regex(decomposed, pattern=r"\p{Mn}", replacement="")
    return pc.utf8_lower(pc.utf8_trim_whitespace(without_accents))


def arrow_array(values: pd.Series, type: pa.DataType) -> pa.Array:
    """A column as one contiguous pyarrow array."""
    array = pa.array(values, type=type)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def artist_lists(tracks: pd.DataFrame) -> pa.ListArray:
    """Each track's artists: the parsed `artists` lists, or one-name lists from `artist`."""
    if "artists" in tracks.columns:
        return arrow_array(tracks["artists"], pa.list_(pa.string()))
    names = arrow_array(tracks["artist"], pa.string())
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
    lists = artist_lists(tracks)
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
    """Write the tracks table (`TRACKS_COLUMNS` that `tracks` has, in order) to parquet, atomically."""
    missing = [c for c in ("id", "artist", *FEATURES) if c not in tracks.columns]
    if missing:
        raise ValueError(f"tracks table has no column {missing}; expected {list(TRACKS_COLUMNS)}.")
    return save_parquet(tracks[[c for c in TRACKS_COLUMNS if c in tracks.columns]], path)
