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

import codecs
import csv
import glob
import gzip
import io
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, overload

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from helpers.layouts import (
    DURATION_RANGE, FEATURE_RANGES, FEATURES, TEXT_FIELDS, Layout, LayoutError, decade_from_file_name, detect_layout,
    mapped_layout, mode_numbers, pitch_classes, years_from_release_dates,
)
from helpers.paths import DEFAULT_CATALOGUE, REPO_ROOT, TIDYTUESDAY_CATALOGUE, save_parquet
from helpers.validation import check_value_ranges, shorten

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
# Columns of tracks.parquet, in order; `name`, `album`, `genre`, `year` and `duration_ms` only when known.
TRACKS_COLUMNS = ("id", "artist", "name", "album", "genre", *FEATURES, "year", "duration_ms")
# Columns of a loaded catalogue, in order, each when known.
CATALOGUE_COLUMNS = ("id", "artist", "name", "album", "genre", "popularity", "year", "duration_ms", "artists",
                     *FEATURES)

# Between two quoted names of a stringified list: `', '`, `", "`, `', "` or `", '`.
_LIST_SEPARATOR = r"""['"], ['"]"""
# Python's repr escapes a quote or a backslash inside a name with a backslash.
_ESCAPED_CHARACTER = r"""\\(['"\\])"""
_GLOB_CHARACTERS = set("*?[")

# Bounds on what a catalogue file can make the reader hold. The largest public table (Kaggle's
# 1.2M tracks) is 350 MB of CSV that deflates about 3 times (TidyTuesday: 2.5); a decompression bomb inflates 1000 times.
MAX_UNCOMPRESSED_BYTES = 1 << 30
MAX_COMPRESSION_RATIO = 50
RATIO_CHECK_AFTER_BYTES = 16 << 20  # a small file may compress better than any table
MAX_HEADER_BYTES = 1 << 20
MAX_COLUMNS = 10_000
ARCHIVE_SUFFIXES = (".zip", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".tar")
READ_CHUNK = 1 << 20


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
    """What `read_catalogue_files` read and what it dropped."""

    paths: tuple[Path, ...]
    layout: str
    rows_read: int
    rows_missing_values: int
    duplicate_ids: int
    rows_expected: int  # data rows a strict CSV parser counts: equal to rows_read, or the load fails
    newlines_in_values: bool = False  # the parser that allows line breaks inside quoted values ran
    duplicates_differing: int = 0  # repeated ids whose features differ from their first row's
    duplicate_example: str = ""

    @property
    def rows_kept(self) -> int:
        return self.rows_read - self.rows_missing_values - self.duplicate_ids

    def __str__(self) -> str:
        files = str(self.paths[0]) if len(self.paths) == 1 else (
            f"{len(self.paths)} files ({', '.join(p.name for p in self.paths)})")
        parser = (f" (line breaks inside quoted values: read with the parser that allows them, "
                  f"{self.rows_read:,} rows as a strict CSV parser counts {self.rows_expected:,})"
                  if self.newlines_in_values else "")
        differing = (f" ({self.duplicates_differing:,} of them with other features than the first row, e.g. "
                     f"{self.duplicate_example}: the first row's are kept)" if self.duplicates_differing else "")
        return (
            f"{files} ({self.layout} layout): {self.rows_read:,} rows read{parser}, "
            f"{self.rows_missing_values:,} dropped for a missing id or feature, "
            f"{self.duplicate_ids:,} repeated ids merged into their first row{differing}, "
            f"{self.rows_kept:,} tracks kept."
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


def _zip_member(archive: zipfile.ZipFile, path: Path) -> zipfile.ZipInfo:
    """The one CSV file inside a zip archive, checked before anything is inflated: no archive
    inside it, a declared size within `MAX_UNCOMPRESSED_BYTES` and a sane compression ratio."""
    members = [m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
    nested = [m.filename for m in members if m.filename.lower().endswith(ARCHIVE_SUFFIXES)]
    if nested:
        raise CatalogueError(f"{path} holds another archive ({', '.join(nested[:5])}); archives inside "
                             "archives are not read: extract it and give the CSV file.")
    csvs = [m for m in members if m.filename.lower().endswith(".csv")]
    if len(csvs) != 1:
        found = ", ".join(m.filename for m in members[:5]) or "nothing"
        raise CatalogueError(f"{path} holds {len(csvs)} .csv files (it holds {found}); expected one CSV file.")
    member = csvs[0]
    if member.file_size > MAX_UNCOMPRESSED_BYTES:
        raise CatalogueError(f"{path}: {member.filename} declares {member.file_size:,} bytes, more than the "
                             f"{MAX_UNCOMPRESSED_BYTES:,} bytes a catalogue may inflate to.")
    if member.file_size > RATIO_CHECK_AFTER_BYTES and \
            member.file_size > MAX_COMPRESSION_RATIO * max(member.compress_size, 1):
        raise CatalogueError(f"{path}: {member.filename} inflates {member.compress_size:,} bytes to "
                             f"{member.file_size:,}, more than {MAX_COMPRESSION_RATIO} times: "
                             "not a table of tracks (a decompression bomb?).")
    return member


class _CountedStream(io.RawIOBase):
    """The (decompressed) bytes of a catalogue file, counted as they are read: their line breaks,
    to check the parser's row count, and their size, an error past `MAX_UNCOMPRESSED_BYTES` or
    `MAX_COMPRESSION_RATIO` times `compressed_size` (None: a plain file, not bounded)."""

    def __init__(self, raw: IO[bytes], path: Path, compressed_size: int | None, *, end_at_bound: bool = False) -> None:
        super().__init__()
        self._raw, self.path, self._compressed_size = raw, path, compressed_size
        self._end_at_bound = end_at_bound
        self.refused: CatalogueError | None = None
        self.size = self._lf = self._cr = self._crlf = 0
        self._last = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.refused is not None:
            return 0
        data = self._raw.read(len(buffer))
        buffer[:len(data)] = data
        if data:
            try:
                self._count(data)
            except CatalogueError as error:
                if not self._end_at_bound:
                    raise
                # pyarrow reads on its own threads: an error raised there can leave a read running while
                # the process exits (an abort). The stream ends instead, and its reader raises `refused`.
                self.refused = error
                return 0
        return len(data)

    def _count(self, data: bytes) -> None:
        self.size += len(data)
        if self._compressed_size is not None:
            if self.size > MAX_UNCOMPRESSED_BYTES:
                raise CatalogueError(f"{self.path} inflates to more than {MAX_UNCOMPRESSED_BYTES:,} bytes, the "
                                     "most a catalogue may: not read further.")
            if self.size > RATIO_CHECK_AFTER_BYTES and self.size > MAX_COMPRESSION_RATIO * self._compressed_size:
                raise CatalogueError(f"{self.path} inflates {self._compressed_size:,} bytes to more than "
                                     f"{MAX_COMPRESSION_RATIO} times as many: not a table of tracks (a "
                                     "decompression bomb?).")
        self._lf += data.count(b"\n")
        self._cr += data.count(b"\r")
        self._crlf += data.count(b"\r\n") + (self._last == b"\r" and data[:1] == b"\n")
        self._last = data[-1:]

    @property
    def lines(self) -> int:
        """Lines read so far, ended by \\n, \\r\\n or \\r (a last line without its line break counts)."""
        return self._lf + self._cr - self._crlf + (self.size > 0 and self._last not in (b"\n", b"\r"))

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open_binary(path: Path, *, end_at_bound: bool = False) -> _CountedStream:
    """The file's bytes, decompressed (.gz, .zip) and counted; compressed ones bounded in size (past
    the bound an error, or with `end_at_bound` the stream's end and the error in its `refused`)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".gz":
            return _CountedStream(gzip.open(path, "rb"), path, path.stat().st_size, end_at_bound=end_at_bound)
        if suffix == ".zip":
            archive = zipfile.ZipFile(path)
            member = _zip_member(archive, path)
            return _CountedStream(archive.open(member), path, member.compress_size, end_at_bound=end_at_bound)
        return _CountedStream(path.open("rb"), path, None, end_at_bound=end_at_bound)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError) as error:  # damaged, encrypted, unknown method
        raise CatalogueError(f"{path} cannot be read as a zip archive: {error}.") from None


@contextmanager
def _damage_as_catalogue_error(path: Path) -> Iterator[None]:
    """A damaged archive, an unreadable file or bytes that are not UTF-8, found while reading it,
    as a CatalogueError."""
    try:
        yield
    except UnicodeDecodeError:
        raise _not_utf8_error(path) from None
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise CatalogueError(f"{path} cannot be read: {error}.") from None


def _not_utf8_error(path: Path) -> CatalogueError:
    """Where a file stops being UTF-8, as an error that says how to fix it; read a chunk at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with _damage_as_catalogue_error(path), _open_binary(path) as file:
        while chunk := file.read(READ_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                start = min(max(error.start, 0), len(chunk) - 1)
                line += chunk.count(b"\n", 0, start)
                return CatalogueError(
                    f"{path} is not UTF-8 text: line {line} holds the byte "
                    f"0x{chunk[start]:02x}. Save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in.csv > "
                    "out.csv`).")
            line += chunk.count(b"\n")
    return CatalogueError(f"{path} could not be read as UTF-8 text.")


def read_header(path: Path) -> list[str]:
    """The column names on the first line of a CSV file; an error for a repeated name, a line
    longer than `MAX_HEADER_BYTES`, more than `MAX_COLUMNS` names or a field the CSV module refuses."""
    with _damage_as_catalogue_error(path), io.BufferedReader(_open_binary(path), READ_CHUNK) as file:
        line = file.readline(MAX_HEADER_BYTES + 1)
    if len(line) > MAX_HEADER_BYTES:
        raise CatalogueError(f"{path}: the header line is longer than {MAX_HEADER_BYTES:,} bytes, the limit; "
                             "expected a CSV header line with the column names.")
    try:
        header = next(csv.reader([line.decode("utf-8-sig")], strict=True), None)
    except UnicodeDecodeError:
        raise _not_utf8_error(path) from None
    except csv.Error as error:
        raise CatalogueError(f"{path}: the header line is not valid CSV ({error}; the limit is "
                             f"{csv.field_size_limit():,} characters per field).") from None
    if not header:
        raise CatalogueError(f"{path} is empty: expected a CSV header line with the column names.")
    if len(header) > MAX_COLUMNS:
        raise CatalogueError(f"{path}: the header has {len(header):,} columns, more than the {MAX_COLUMNS:,} "
                             "a catalogue may have.")
    repeated = [name for name, count in Counter(header).items() if count > 1]
    if repeated:
        where = "; ".join(f"{name!r} at columns {[i + 1 for i, c in enumerate(header) if c == name]}"
                          for name in repeated[:5])
        raise CatalogueError(f"{path} has repeated column names: {where}. Rename them so that each "
                             "column has a name of its own.")
    return header


@dataclass(frozen=True)
class _Parsed:
    """A table as pyarrow parsed it, the lines of the file and whether the slower parser ran."""

    table: pa.Table
    lines: int
    newlines_in_values: bool


def _parse(path: Path, convert_options: pa_csv.ConvertOptions, newlines_in_values: bool) -> _Parsed:
    parse_options = pa_csv.ParseOptions(newlines_in_values=newlines_in_values)
    with _damage_as_catalogue_error(path), _open_binary(path, end_at_bound=True) as stream:
        try:
            table = pa_csv.read_csv(io.BufferedReader(stream, READ_CHUNK), convert_options=convert_options,
                                    parse_options=parse_options)
        finally:
            if stream.refused is not None:  # the cause of whatever the parser made of the cut stream
                raise stream.refused
        return _Parsed(table, stream.lines, newlines_in_values)


def _read_csv(path: Path, convert_options: pa_csv.ConvertOptions) -> _Parsed:
    """Read with pyarrow's parallel parser; if a row breaks (a line break inside a quoted
    value, as a track name may hold), read again with the slower parser that allows them."""
    try:
        try:
            return _parse(path, convert_options, newlines_in_values=False)
        except pa.ArrowInvalid as error:
            if "CSV parse error" not in str(error):
                raise
            return _parse(path, convert_options, newlines_in_values=True)
    except pa.ArrowInvalid as error:
        if "UTF8" in str(error):
            raise _not_utf8_error(path) from None
        raise


def _strict_csv(path: Path) -> Iterator[csv.reader]:
    """Python's CSV module reading the file strictly (what `_check_rows_add_up` compares with)."""
    return csv.reader(io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", newline=""), strict=True)


def _not_well_formed(path: Path, line: int, error: csv.Error) -> CatalogueError:
    return CatalogueError(
        f"{path}: the row at line {line} is not well-formed CSV ({error}; at most {csv.field_size_limit():,} "
        "characters per field). A quote (\") that opens a value and does not close it before the next "
        "delimiter runs the value over the rows after it: remove the quote, or double it inside a quoted value.")


def _record_starts(path: Path, column: int) -> tuple[list[str], list[int], list[int]]:
    """The value of `column`, the first line and the number of fields of each data record, as
    Python's CSV module reads the file strictly; CatalogueError naming the line where the first
    record that is not well-formed CSV starts. A loop per record: only called to locate an error."""
    values, starts, lengths = [], [], []
    with _damage_as_catalogue_error(path):
        reader = _strict_csv(path)
        try:
            next(reader, None)
            line = reader.line_num
            for record in reader:
                if record:
                    values.append(record[column] if column < len(record) else "")
                    starts.append(line + 1)
                    lengths.append(len(record))
                line = reader.line_num
        except csv.Error as error:
            raise _not_well_formed(path, line + 1, error) from None
    return values, starts, lengths


def _locate_bad_row(path: Path, header: Sequence[str], id_column: str, ids: list[str] | None = None,
                    *, line_count: int = 0) -> CatalogueError | None:
    """The error for the first row that a strict CSV reading finds not well-formed, with another
    number of fields than the header, or (given the `ids` the parser read) where the two readings
    first differ; None if the strict reading agrees."""
    values, starts, lengths = _record_starts(path, list(header).index(id_column))
    wrong = [i for i, length in enumerate(lengths) if length != len(header)]
    if wrong:
        return CatalogueError(f"{path}: the row at line {starts[wrong[0]]} has {lengths[wrong[0]]} fields; "
                              f"expected {len(header)}, as the header.")
    if ids is None or ids == values:
        return None
    diverge = next((i for i, (a, b) in enumerate(zip(values, ids)) if a != b), min(len(values), len(ids)))
    line = starts[diverge] if diverge < len(starts) else line_count
    return CatalogueError(f"{path}: the parser read {len(ids):,} rows where the file holds {len(values):,}; "
                          f"they first differ at line {line}. Check that line's quotes (\").")


def _check_rows_add_up(path: Path, parsed: _Parsed, header: Sequence[str], id_column: str) -> int:
    """The number of data rows a strict CSV parser finds, checked to equal the rows pyarrow read.

    When every row is one line (the common case) the line count settles it. Otherwise (line
    breaks inside quoted values, blank lines) Python's CSV module reads the file strictly; an
    unmatched quote, a row with another number of fields, a value holding what looks like whole
    rows, or a count that differs is a CatalogueError naming the line.
    """
    if parsed.table.num_rows + 1 == parsed.lines:
        return parsed.table.num_rows
    with _damage_as_catalogue_error(path):
        reader = _strict_csv(path)
        try:
            lengths = np.fromiter(map(len, reader), dtype=np.int64)[1:]
        except csv.Error:
            lengths = None
    rows = None if lengths is None else int((lengths > 0).sum())
    if lengths is None or rows != parsed.table.num_rows or ((lengths > 0) & (lengths != len(header))).any():
        error = _locate_bad_row(path, header, id_column, parsed.table[id_column].to_pylist(), line_count=parsed.lines)
        if error is not None:
            raise error
    _check_no_merged_rows(path, parsed.table, len(header))
    return rows


def _check_no_merged_rows(path: Path, table: pa.Table, n_columns: int) -> None:
    """A text value holding a line break followed by a line with a whole row's delimiters is rows
    that a stray quote merged into one value: an error naming the data row."""
    merged = rf"[\r\n][^\r\n]*(,[^\r\n]*){{{max(n_columns - 1, 1)}}}"
    for name in table.column_names:
        column = table[name]
        if not pa.types.is_string(column.type):
            continue
        hit = pc.fill_null(pc.match_substring_regex(column, merged), False)
        if pc.any(hit).as_py():
            row = int(np.flatnonzero(hit.to_numpy(zero_copy_only=False))[0])
            raise CatalogueError(f"{path}: the value of '{name}' in data row {row + 1} holds whole rows of the "
                                 "file (a quote that opens a value and never closes it merged them): "
                                 f"{shorten(column[row].as_py(), 120)!r}.")


def _first_bad_number(path: Path, columns: Sequence[str], header: Sequence[str]) -> str | None:
    """Describe the first value of `columns` that is neither a number nor missing, if any."""
    try:
        table = _read_csv(path, pa_csv.ConvertOptions(
            include_columns=list(columns), column_types={c: pa.string() for c in columns},
            strings_can_be_null=True,
        )).table
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


@dataclass(frozen=True)
class _FileFields:
    """One file's fields, and how its rows were counted."""

    table: pa.Table
    rows_expected: int
    newlines_in_values: bool


def _read_fields(path: Path, header: Sequence[str], layout: Layout) -> _FileFields:
    """The layout's columns of one file, named by field, with explicit types; a clear error on
    a non-numeric value or on rows that do not add up (`_check_rows_add_up`). Empty cells and the
    usual spellings of a missing number become nulls."""
    columns = layout.columns(header)
    types = _column_types(layout, columns)
    try:
        parsed = _read_csv(path, pa_csv.ConvertOptions(include_columns=list(types), column_types=types))
    except pa.ArrowInvalid as error:
        if "CSV parse error" in str(error):
            raise _locate_bad_row(path, header, columns["id"]) or CatalogueError(
                f"{path}: {shorten(error, 300)}.") from None
        numeric = [c for c, t in types.items() if t == pa.float64()]
        problem = _first_bad_number(path, numeric, header) or shorten(error, 300)
        raise CatalogueError(f"{path}: {problem}.") from None
    rows_expected = _check_rows_add_up(path, parsed, header, columns["id"])
    table = pa.table({field: parsed.table[column] for field, column in columns.items()})
    return _FileFields(table, rows_expected, parsed.newlines_in_values)


def _bad_value(path: Path, column: str, table: pa.Table, field: str, *, row: int, expected: str) -> CatalogueError:
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
            raise _bad_value(path, columns["id"], table, "id", row=int(np.flatnonzero(~ok)[0]),
                             expected=f"a Spotify URI such as '{layout.id_prefix}4uLU6hMCjMI75M1A2tKUQC'")
        fields["id"] = pc.utf8_slice_codeunits(ids, len(layout.id_prefix))
    if layout.words_for_key_and_mode:
        for name, convert, expected in (("key", pitch_classes, "a number or a pitch name (C, C#, Db, …, B)"),
                                        ("mode", mode_numbers, "a number, Major or Minor")):
            values, bad = convert(fields[name])
            if bad is not None:
                raise _bad_value(path, columns[name], table, name, row=bad, expected=expected)
            fields[name] = pa.chunked_array([values])
    if "year" not in fields and "release_date" in fields:
        years, bad = years_from_release_dates(fields["release_date"])
        if bad is not None:
            raise _bad_value(path, columns["release_date"], table, "release_date", row=bad,
                             expected="a date written YYYY-MM-DD, YYYY-MM or YYYY")
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
    if "duration_ms" in table.column_names:
        frame["duration_ms"] = table["duration_ms"].to_numpy()
    if "artists" in table.column_names:
        frame["artists"] = pd.Series(artists, dtype=pd.ArrowDtype(artists.type))
    for feature in FEATURES:
        frame[feature] = table[feature].to_numpy()
    return frame


def _differing_duplicates(frame: pd.DataFrame, first_row: np.ndarray, duplicate: np.ndarray) -> tuple[int, str]:
    """How many repeated ids have other features than their id's first row, and one example."""
    values = frame[list(FEATURES)].to_numpy()
    firsts = np.flatnonzero(~duplicate)[first_row]
    differs = values != values[firsts]
    rows = np.flatnonzero(duplicate & differs.any(axis=1))
    if not len(rows):
        return 0, ""
    row, feature = int(rows[0]), int(np.flatnonzero(differs[rows[0]])[0])
    return len(rows), (f"id {frame['id'].iloc[row]!r} has {FEATURES[feature]} {values[firsts[row], feature]:g} "
                       f"in its first row and {values[row, feature]:g} in a later one")


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
def read_catalogue_files(path: str | Path | Sequence[str | Path], column_map: Mapping[str, str] | None = None,
                         return_report: Literal[False] = False) -> pd.DataFrame: ...


@overload
def read_catalogue_files(path: str | Path | Sequence[str | Path], column_map: Mapping[str, str] | None = None, *,
                         return_report: Literal[True]) -> tuple[pd.DataFrame, LoadReport]: ...


def read_catalogue_files(path: str | Path | Sequence[str | Path], column_map: Mapping[str, str] | None = None,
                         return_report: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, LoadReport]:
    """Read a catalogue (one file, a glob or a list of files of one layout) and validate it.

    `path` goes through `catalogue_files` (built-in names, globs, paths from the repository).
    The layout is recognised from the header (`helpers.layouts.KNOWN_LAYOUTS`) unless
    `column_map` maps fields to columns. Returns a DataFrame with the `CATALOGUE_COLUMNS` the
    files have: `id`, `artist` (for a list of artists the first), `name`, `album`, `genre`,
    `popularity`, `year`, `duration_ms`, `artists` (the parsed list) and the 11 `FEATURES` as float64. Rows
    without an id or with a missing feature are dropped, then repeated ids (keeping the first
    row, with every genre of the id's rows; ids whose features differ are counted, with an
    example); with `return_report=True` the counts come back in a `LoadReport` as a second value.
    Every row of the file is accounted for: the parser's row count is checked against a strict
    CSV reading (`_check_rows_add_up`), and compressed files are bounded in size
    (`MAX_UNCOMPRESSED_BYTES`, `MAX_COMPRESSION_RATIO`; no archive inside an archive).

    Raises FileNotFoundError for a missing file and CatalogueError (a ValueError) naming the
    file and the column or line for: an unknown layout, a column mapping that does not fit,
    files of different layouts, repeated column names, a file that is not UTF-8, a bad value, a
    feature outside its range (`helpers.layouts.FEATURE_RANGES`), rows that do not add up, a file
    too large or a line too long, a column without any value or a file without a usable row.
    """
    files = catalogue_files(path)
    try:
        headers, layout = _layouts(files, column_map)
    except LayoutError as error:
        raise CatalogueError(str(error)) from None
    tables, rows_expected, newlines_in_values = [], 0, False
    for file, header in zip(files, headers):
        fields = _read_fields(file, header, layout)
        rows_expected += fields.rows_expected
        newlines_in_values |= fields.newlines_in_values
        table = _convert_fields(fields.table, layout, header, file)
        _check_has_values(table, layout.columns(header), file)
        columns = layout.columns(header)
        try:
            checked = [*FEATURES, *(["duration_ms"] if "duration_ms" in table.column_names else [])]
            check_value_ranges({f: table[f].to_numpy() for f in checked},
                               {**FEATURE_RANGES, "duration_ms": DURATION_RANGE}, str(file),
                               {f: columns[f] for f in checked})
        except ValueError as error:
            raise CatalogueError(str(error)) from None
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
    conflicts, example = 0, ""
    if duplicate.any():
        first_row = pd.factorize(frame["id"])[0]
        conflicts, example = _differing_duplicates(frame, first_row, duplicate)
        if "genre" in frame.columns:
            frame["genre"] = joined_per_group(frame["genre"], first_row).reindex(first_row).to_numpy()
        frame = frame.loc[~duplicate].reset_index(drop=True)
    report = LoadReport(tuple(files), layout.name, table.num_rows, int((~complete).sum()),
                        int(duplicate.sum()), rows_expected, newlines_in_values, conflicts, example)
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
                     *, source: str = "the catalogue") -> pd.DataFrame:
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
