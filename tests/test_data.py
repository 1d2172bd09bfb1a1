"""The catalogue loader and filter: both schemas, validation at the boundary, the matching rule."""
from __future__ import annotations

import ast
import csv
import gzip
import io
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import papermill
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.data import (
    FEATURES, KAGGLE_COLUMNS, ORIGINAL_DESIGN_ARTISTS, TRACKS_COLUMNS, CatalogueError,
    filter_catalogue, filter_settings, parse_artist_lists, read_catalogue_files, save_tracks,
)
from helpers.paths import DEFAULT_CATALOGUE, NOTEBOOKS_DIR, REPO_ROOT

FEATURE_VALUES = dict(danceability=0.5, energy=0.6, key=5, loudness=-6.0, mode=1, speechiness=0.05,
                      acousticness=0.2, instrumentalness=0.0, liveness=0.1, valence=0.4, tempo=120.0)


def embedded_row(track_id: str, artist: str = "Adele", **features: object) -> dict:
    return {"id": track_id, **FEATURE_VALUES, **features, "artist": artist}


def write_embedded(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def kaggle_row(track_id: str, name: str, artists: list[str], year: int, **features: object) -> dict:
    """A row as in tracks_features.csv: the artist lists written by Python's str()."""
    return {"id": track_id, "name": name, "album": "An album", "album_id": "album0", "artists": str(artists),
            "artist_ids": str([f"artist{i}" for i in range(len(artists))]), "track_number": 1,
            "disc_number": 1, "explicit": False, **FEATURE_VALUES, **features, "duration_ms": 200000,
            "time_signature": 4.0, "year": year, "release_date": f"{year}-01-01"}


def write_kaggle(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=KAGGLE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def kaggle_file(tmp_path) -> Path:
    return write_kaggle(tmp_path / "tracks_features.csv", [
        kaggle_row("t1", "Don't Stop", ["Beyoncé", "Guns N' Roses"], 2008),
        kaggle_row("t2", 'A "quoted", title', ["Calvin Harris", "Rihanna"], 2012),
        kaggle_row("t3", "Too early", ["Sia"], 1999),
        kaggle_row("t4", "Not Sia", ["Siamese Dream"], 2005),
        kaggle_row("t5", "Nobody", [], 2010),
        kaggle_row("t6", "Last", ["Drake"], 2020),
    ])


# --- the embedded catalogue -------------------------------------------------------------------

def test_embedded_catalogue_loads_whole():
    catalogue, report = read_catalogue_files(DEFAULT_CATALOGUE, return_report=True)
    assert list(catalogue.columns) == ["id", "artist", *FEATURES]
    assert len(catalogue) == 1478 and catalogue["id"].is_unique
    assert (catalogue[list(FEATURES)].dtypes == np.float64).all()
    assert (report.layout, report.rows_read, report.rows_missing_values, report.duplicate_ids) == \
        ("embedded", 1478, 0, 0)


def test_notebook_default_filter_keeps_the_embedded_catalogue_whole():
    declared = papermill.inspect_notebook(str(NOTEBOOKS_DIR / "01_filter.ipynb"))
    defaults = [ast.literal_eval(declared[name]["default"]) for name in ("artists", "year_min", "year_max")]
    artists, year_min, year_max = filter_settings(None, *defaults)
    assert (list(artists), year_min, year_max) == ([*ORIGINAL_DESIGN_ARTISTS, "Beyonce"], 2000, 2020)
    catalogue = read_catalogue_files(DEFAULT_CATALOGUE)
    tracks = filter_catalogue(catalogue, artists)
    pd.testing.assert_frame_equal(tracks, catalogue)
    without_beyonce = filter_catalogue(catalogue, ORIGINAL_DESIGN_ARTISTS)
    assert len(catalogue) - len(without_beyonce) == (catalogue["artist"] == "Beyonce").sum() == 233


# --- Kaggle's schema --------------------------------------------------------------------------

def test_kaggle_schema_is_parsed(kaggle_file):
    catalogue, report = read_catalogue_files(kaggle_file, return_report=True)
    assert report.layout == "kaggle" and report.rows_kept == 6
    assert list(catalogue.columns) == ["id", "artist", "name", "album", "year", "duration_ms", "artists", *FEATURES]
    assert catalogue["artists"].tolist() == [["Beyoncé", "Guns N' Roses"], ["Calvin Harris", "Rihanna"],
                                             ["Sia"], ["Siamese Dream"], [], ["Drake"]]
    assert catalogue["artist"].iloc[:4].tolist() == ["Beyoncé", "Calvin Harris", "Sia", "Siamese Dream"]
    assert pd.isna(catalogue["artist"].iloc[4])
    assert catalogue["name"].iloc[:2].tolist() == ["Don't Stop", 'A "quoted", title']
    assert catalogue["year"].dtype == "Int64"
    assert catalogue["year"].tolist() == [2008, 2012, 1999, 2005, 2010, 2020]
    assert (catalogue[list(FEATURES)].dtypes == np.float64).all()


def test_filter_matches_any_artist_whole_name_ignoring_case_and_accents(kaggle_file):
    catalogue = read_catalogue_files(kaggle_file)
    tracks = filter_catalogue(catalogue, ["beyonce", "Rihanna", "Sia", "DRAKE"], 2000, 2020)
    # t1 by its accented first artist, t2 by its second; t3 is from 1999; 'Siamese Dream' is not 'Sia'.
    assert tracks["id"].tolist() == ["t1", "t2", "t6"]
    assert tracks["artist"].tolist() == ["beyonce", "Rihanna", "DRAKE"]


def test_first_listed_match_names_the_track(kaggle_file):
    tracks = filter_catalogue(read_catalogue_files(kaggle_file), ["Guns N' Roses", "Beyonce"], None, None)
    assert tracks["artist"].tolist() == ["Beyonce"]


def test_year_bounds_are_inclusive_and_optional(kaggle_file):
    catalogue = read_catalogue_files(kaggle_file)
    assert filter_catalogue(catalogue, None, 2008, 2012)["id"].tolist() == ["t1", "t2", "t5"]
    assert filter_catalogue(catalogue, None, None, 2005)["id"].tolist() == ["t3", "t4"]
    assert len(filter_catalogue(catalogue, None, None, None)) == 6


def test_save_tracks_writes_the_documented_columns(kaggle_file, tmp_path):
    tracks = filter_catalogue(read_catalogue_files(kaggle_file), None, None, None)
    written = pd.read_parquet(save_tracks(tracks.assign(genre="pop"), tmp_path / "tracks.parquet"))
    assert list(written.columns) == list(TRACKS_COLUMNS)
    pd.testing.assert_frame_equal(written, tracks.assign(genre="pop")[list(TRACKS_COLUMNS)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tracks.parquet", "tracks_features.csv"], \
        "no temporary file is left behind"


def test_line_break_inside_a_quoted_name(tmp_path):
    path = write_kaggle(tmp_path / "k.csv", [kaggle_row("t1", "Two\nlines", ["Adele"], 2010),
                                             kaggle_row("t2", "One line", ["Adele"], 2011)])
    assert read_catalogue_files(path)["name"].tolist() == ["Two\nlines", "One line"]


# Printable names, rich in the characters Python's repr quotes or escapes. A quote next to ", "
# would read as the separator between two names: no artist is called that.
NAMES = st.text(st.characters(exclude_categories=("C", "Zl", "Zp", "Zs")) | st.sampled_from(" '\"\\,[]"),
                min_size=1, max_size=12).filter(lambda name: not re.search(r"""['"], |, ['"]""", name))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(NAMES, max_size=4), min_size=1, max_size=5))
def test_artist_lists_parse_back_to_what_python_printed(lists):
    assert parse_artist_lists(pa.array([str(names) for names in lists])).to_pylist() == lists


# --- validation at the boundary ----------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        read_catalogue_files(tmp_path / "nowhere.csv")


@pytest.mark.parametrize("layout", ["embedded", "kaggle"])
def test_missing_column_is_named_with_the_closest_layout(tmp_path, layout):
    if layout == "embedded":
        path = write_embedded(tmp_path / "c.csv", [embedded_row("a")])
        expected = "the embedded catalogue"
    else:
        path = write_kaggle(tmp_path / "c.csv", [kaggle_row("a", "x", ["Adele"], 2010)])
        expected = "Kaggle's 'Spotify 1.2M\\+ Songs' tracks_features.csv"
    pd.read_csv(path).drop(columns="energy").to_csv(path, index=False)
    with pytest.raises(CatalogueError, match=rf"c\.csv: .* The closest, {expected}, lacks the column\(s\) 'energy'"):
        read_catalogue_files(path)


@pytest.mark.parametrize("writer, row", [
    (write_embedded, lambda **features: embedded_row("b", **features)),
    (write_kaggle, lambda **features: kaggle_row("b", "x", ["Adele"], 2010, **features)),
])
def test_non_numeric_feature_names_file_column_value_and_row(tmp_path, writer, row):
    path = writer(tmp_path / "c.csv", [row(), row(loudness="very loud"), row()])
    expected = r"c\.csv: column 'loudness' .* 'very loud' in data row 2; expected numbers"
    with pytest.raises(CatalogueError, match=expected):
        read_catalogue_files(path)


def test_column_without_any_value(tmp_path):
    path = write_embedded(tmp_path / "c.csv", [embedded_row("a", valence=None),
                                               embedded_row("b", valence=np.nan)])
    with pytest.raises(CatalogueError, match=r"c\.csv: every value of column 'valence' is missing"):
        read_catalogue_files(path)


def test_header_only_and_empty_file(tmp_path):
    path = write_embedded(tmp_path / "c.csv", [embedded_row("a")])
    path.write_text(path.read_text().splitlines()[0] + "\n")
    with pytest.raises(CatalogueError, match="has a header but no rows"):
        read_catalogue_files(path)
    path.write_text("")
    with pytest.raises(CatalogueError, match="is empty"):
        read_catalogue_files(path)


def test_no_complete_row(tmp_path):
    path = write_embedded(tmp_path / "c.csv", [embedded_row("a", energy=None), embedded_row("b", tempo=None)])
    with pytest.raises(CatalogueError, match=r"none of its 2 rows has an id and all 11 features"):
        read_catalogue_files(path)


def test_artists_that_are_not_a_list(tmp_path):
    row = kaggle_row("a", "x", [], 2010)
    path = write_kaggle(tmp_path / "c.csv", [kaggle_row("b", "y", ["Adele"], 2010),
                                             {**row, "artists": "Adele"}])
    with pytest.raises(CatalogueError, match=r"column 'artists' has the value 'Adele' in data row 2"):
        read_catalogue_files(path)


def test_fractional_year(tmp_path):
    path = write_kaggle(tmp_path / "c.csv", [kaggle_row("a", "x", ["Adele"], 2010)])
    pd.read_csv(path).assign(year=2010.5).to_csv(path, index=False)
    with pytest.raises(CatalogueError, match="'year' has the value 2010.5 in data row 1; expected whole"):
        read_catalogue_files(path)


def test_rows_with_missing_values_and_duplicate_ids_are_dropped_and_counted(tmp_path):
    path = write_embedded(tmp_path / "c.csv", [
        embedded_row("a", tempo=100.0),
        embedded_row("b", energy=None),
        embedded_row("c", tempo="NA"),
        embedded_row("d", loudness="nan"),
        embedded_row(None),
        embedded_row("a", tempo=200.0),
        embedded_row("e"),
    ])
    catalogue, report = read_catalogue_files(path, return_report=True)
    assert catalogue["id"].tolist() == ["a", "e"]
    assert catalogue["tempo"].iloc[0] == 100.0, "the first of two rows with the same id is kept"
    counts = (report.rows_read, report.rows_missing_values, report.duplicate_ids, report.rows_kept)
    assert counts == (7, 4, 1, 2)
    assert "4 dropped for a missing id or feature, 1 repeated ids merged into their first row" in str(report)


def test_empty_after_the_filter_names_source_and_filters(kaggle_file):
    catalogue = read_catalogue_files(kaggle_file)
    with pytest.raises(CatalogueError, match=r"no track of my source .* 5 released in 2000-2020, "
                                             r"then 0 by one of the artists \['Sia'\]"):
        filter_catalogue(catalogue, ["Sia"], 2000, 2020, source="my source")


@pytest.mark.parametrize("artists, error", [("Adele", TypeError), ([], ValueError), (["Adele", 3], TypeError)])
def test_artists_must_be_a_list_of_names(kaggle_file, artists, error):
    with pytest.raises(error):
        filter_catalogue(read_catalogue_files(kaggle_file), artists)


def test_year_range_must_not_be_reversed(kaggle_file):
    with pytest.raises(ValueError, match=r"year_min \(2020\) is after year_max \(2000\)"):
        filter_catalogue(read_catalogue_files(kaggle_file), None, 2020, 2000)


# --- hostile and careless files: every row accounted for, sizes bounded, values in range ----------

def seven_rows(tmp_path) -> tuple[Path, list[str]]:
    path = write_embedded(tmp_path / "c.csv", [embedded_row(f"t{i}", artist=f"Artist {i}") for i in range(7)])
    return path, path.read_text().splitlines()


@pytest.mark.parametrize("edits, expected", [
    # the last value opens a quote that runs to the end of the file
    ({3: (",Artist 2", ',"Artist 2')}, r"c\.csv: the row at line 4 is not well-formed CSV \(unexpected end of data"),
    # a number opens one: the row has too few fields
    ({3: (",0.6,", ',"0.6,')}, r"c\.csv: the row at line 4 is not well-formed CSV .*quote"),
    # it closes at a later quote followed by text
    ({3: (",Artist 2", ',"Artist 2'), 6: (",Artist 5", ',"Artist 5"')},
     r"line 4 is not well-formed CSV \(',' expected after"),
    # it pairs with a later quote: valid CSV, but the value holds whole rows
    ({3: (",Artist 2", ',"Artist 2'), 5: ("Artist 4", 'Artist 4"')},
     r"the value of 'artist' in data row 3 holds whole rows of the file"),
])
def test_a_stray_quote_is_an_error_naming_its_line_never_rows_lost(tmp_path, edits, expected):
    path, lines = seven_rows(tmp_path)
    for line, (before, after) in edits.items():
        lines[line] = lines[line].replace(before, after, 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CatalogueError, match=expected):
        read_catalogue_files(path)


def test_the_slower_parser_is_reported_and_its_rows_counted(tmp_path):
    """Line breaks inside names over more than one pyarrow block (1 MiB) need the slower parser."""
    rows = [embedded_row(f"t{i}", artist=f"Artist\n{i}") for i in range(20_000)]
    catalogue, report = read_catalogue_files(write_embedded(tmp_path / "c.csv", rows), return_report=True)
    assert report.newlines_in_values and report.rows_read == report.rows_expected == len(catalogue) == 20_000
    assert "read with the parser that allows them, 20,000 rows as a strict CSV parser counts 20,000" in str(report)
    assert catalogue["artist"].iloc[-1] == "Artist\n19999"


def test_header_field_over_the_csv_limit_and_a_huge_header(tmp_path):
    path, lines = seven_rows(tmp_path)
    path.write_text("x" * 200_000 + "," + "\n".join(lines) + "\n")
    with pytest.raises(CatalogueError, match=r"c\.csv: the header line is not valid CSV \(field larger than "
                                             r"field limit .*131,072 characters per field"):
        read_catalogue_files(path)
    path.write_text(",".join(f"c{i}" for i in range(200_000)) + "\n1\n")
    with pytest.raises(CatalogueError, match=r"the header line is longer than 1,048,576 bytes, the limit"):
        read_catalogue_files(path)
    path.write_text(",".join(f"c{i}" for i in range(20_000)) + "\n1\n")
    with pytest.raises(CatalogueError, match=r"the header has 20,000 columns, more than the 10,000"):
        read_catalogue_files(path)


def zipped(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_zip_members_are_checked_before_they_are_inflated(tmp_path, monkeypatch):
    csv_bytes = seven_rows(tmp_path)[0].read_bytes()
    assert len(read_catalogue_files(zipped(tmp_path / "ok.zip", {"c.csv": csv_bytes, "README.txt": b"hi"}))) == 7
    for members, expected in [({"inner.zip": zipped(tmp_path / "i.zip", {"c.csv": csv_bytes}).read_bytes()},
                               r"holds another archive \(inner\.zip\); archives inside archives are not read"),
                              ({"c.csv.gz": gzip.compress(csv_bytes)}, r"holds another archive \(c\.csv\.gz\)"),
                              ({"c.txt": csv_bytes}, r"holds 0 \.csv files \(it holds c\.txt\)")]:
        with pytest.raises(CatalogueError, match=expected):
            read_catalogue_files(zipped(tmp_path / "a.zip", members))
    bomb = zipped(tmp_path / "bomb.zip", {"c.csv": csv_bytes + b"0" * (40 << 20)})
    with pytest.raises(CatalogueError, match=r"bomb\.zip: c\.csv inflates [\d,]+ bytes to [\d,]+, more than 50 times"):
        read_catalogue_files(bomb)
    monkeypatch.setattr("helpers.data.MAX_UNCOMPRESSED_BYTES", 100)
    with pytest.raises(CatalogueError, match=r"ok\.zip: c\.csv declares [\d,]+ bytes, more than the 100 bytes"):
        read_catalogue_files(tmp_path / "ok.zip")


def test_a_gzip_bomb_stops_while_it_inflates(tmp_path):
    path = tmp_path / "c.csv.gz"
    with gzip.open(path, "wb", compresslevel=1) as file:
        file.write(seven_rows(tmp_path)[0].read_bytes())
        file.write(b"\n" * (40 << 20) + b"\xff")
    with pytest.raises(CatalogueError, match=r"c\.csv\.gz inflates [\d,]+ bytes to more than 50 times as many"):
        read_catalogue_files(path)


def test_peak_memory_on_decompression_bombs_and_huge_headers():
    """Bombs of 64 MiB (zip, and gzip with a bad byte at its end) and a 10M-column header: each is
    refused early, by a process whose peak resident memory stays far below 2 GB
    (`benchmarks/hostile_catalogues.py` measures the 1 GiB ones)."""
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "hostile_catalogues.py"),
                             "--size-mib", "64"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr  # once failed under make test: say why
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["bomb.zip", "bomb.csv.gz", "wide.csv"]
    for line, expected in zip(lines, ["more than 50 times", "more than 50 times", "longer than 1,048,576 bytes"]):
        assert expected in line and float(line.split(" MiB")[0].split()[-1]) < 1024, line


def test_features_out_of_range_are_one_error_naming_each_column_and_row(tmp_path):
    path = write_embedded(tmp_path / "c.csv", [embedded_row("a", tempo=-5.0), embedded_row("b", key=99),
                                               embedded_row("c", tempo=1e308), embedded_row("d", mode=7),
                                               embedded_row("e", key=3.5), embedded_row("f", loudness=-1e308)])
    with pytest.raises(CatalogueError) as error:
        read_catalogue_files(path)
    message = str(error.value)
    for expected in ["column 'key' has the value 99.0 in data row 2 (and 1 more row(s)); expected a pitch class",
                     "column 'mode' has the value 7.0 in data row 4; expected 0 (minor) or 1 (major)",
                     "column 'loudness' has the value -1e+308 in data row 6",
                     "column 'tempo' has the value -5.0 in data row 1 (and 1 more row(s)); expected a tempo"]:
        assert expected in message
    path = write_embedded(tmp_path / "c.csv", [embedded_row("a", tempo="inf"), embedded_row("b", danceability=1.5)])
    with pytest.raises(CatalogueError, match=r"'danceability' has the value 1.5 in data row 2; expected a share"
                                             r".*'tempo' has the value inf in data row 1"):
        read_catalogue_files(path)


def test_durations_pass_through_to_tracks_and_bad_ones_are_named(tmp_path):
    path = write_embedded(tmp_path / "c.csv", [embedded_row("a", duration_ms=215_000), embedded_row("b")])
    frame = pd.read_csv(path)
    frame.loc[1, "duration_ms"] = np.nan
    frame.to_csv(path, index=False)
    tracks = read_catalogue_files(path)
    assert tracks["duration_ms"].tolist()[0] == 215_000 and np.isnan(tracks["duration_ms"].iloc[1]), \
        "a missing duration is unknown, and the row stays"
    written = pd.read_parquet(save_tracks(tracks, tmp_path / "tracks.parquet"))
    assert written["duration_ms"].iloc[0] == 215_000
    for bad in (0, -3_000, 2e8):
        write_embedded(path, [embedded_row("a"), embedded_row("b", duration_ms=bad)])
        with pytest.raises(CatalogueError, match=rf"column 'duration_ms' has the value {float(bad)!r} in data row 2; "
                                                 r"expected a duration in milliseconds"):
            read_catalogue_files(path)


def test_column_map_giving_two_fields_one_column(tmp_path):
    path, _ = seven_rows(tmp_path)
    with pytest.raises(CatalogueError, match=r"column_map maps several fields to one column: \['artist', 'name'\] "
                                             r"to 'artist'"):
        read_catalogue_files(path, {"artist": "artist", "name": "artist"})


def test_duplicate_ids_with_different_features_are_reported(tmp_path):
    path = write_embedded(tmp_path / "c.csv", [embedded_row("a"), embedded_row("b"), embedded_row("a", tempo=99.0),
                                               embedded_row("b"), embedded_row("a", energy=0.1)])
    catalogue, report = read_catalogue_files(path, return_report=True)
    assert catalogue["tempo"].tolist() == [120.0, 120.0]
    assert (report.duplicate_ids, report.duplicates_differing) == (3, 2)
    assert ("3 repeated ids merged into their first row (2 of them with other features than the first row, "
            "e.g. id 'a' has tempo 120 in its first row and 99 in a later one") in str(report)


# The property: random bytes and random mutations of a well-formed catalogue either load exactly
# the rows a strict reading finds well formed, or raise CatalogueError; never anything else.
HEADER = ["id", *FEATURES, "artist"]
MUTATION_BYTES = b'",\n\r\t 09.-e+x\x00\xff\xc3'
NULL_TEXTS = {"", "NA", "N/A", "NaN", "nan", "null", "NULL", "-nan", "-NaN", "n/a", "#N/A", "#NA"}


def feature_value(feature: str) -> st.SearchStrategy:
    if feature in ("key", "mode"):
        return st.integers(-1 if feature == "key" else 0, 11 if feature == "key" else 1)
    low, high = {"loudness": (-60.0, 5.0), "tempo": (0.0, 250.0)}.get(feature, (0.0, 1.0))
    return st.floats(low, high, allow_nan=False)


CATALOGUE_ROWS = st.lists(st.tuples(st.text("abc123", min_size=1, max_size=4),
                                    st.tuples(*(feature_value(f) for f in FEATURES)),
                                    st.text('ab ,"\n', max_size=6)), min_size=1, max_size=8)
MUTATIONS = st.lists(st.tuples(st.floats(0, 1), st.sampled_from(["insert", "delete", "replace"]),
                               st.sampled_from(list(MUTATION_BYTES))), max_size=3)


def mutated_csv(rows, mutations) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows([track_id, *features, artist] for track_id, features, artist in rows)
    data = bytearray(text.getvalue().encode())
    for where, kind, byte in mutations:
        at = min(int(where * len(data)), len(data) - 1)
        if kind == "insert":
            data.insert(at, byte)
        elif kind == "delete" and len(data) > 1:
            del data[at]
        else:
            data[at] = byte
    return bytes(data)


def strict_reading(data: bytes) -> tuple[pd.DataFrame | None, bool]:
    """The rows a strict reading keeps (well formed, complete), or None if the file must be refused;
    and whether the artists can be compared. Text after a closing quote (`"a" b`) breaks no row:
    pyarrow reads it leniently, so such a file is read leniently here, without comparing artists,
    if each record is one line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, False
    try:
        records, lenient = list(csv.reader(io.StringIO(text, newline=""), strict=True)), False
    except csv.Error:
        records, lenient = list(csv.reader(io.StringIO(text, newline=""), strict=False)), True
        if len(records) != len(re.findall(r"\r\n|\r|\n", text)) + (not text.endswith(("\n", "\r"))):
            return None, False
    if not records or records[0] != HEADER or any(record and len(record) != len(HEADER) for record in records):
        return None, False
    kept = []
    for track_id, *values, artist in (record for record in records[1:] if record):
        try:
            numbers = [np.nan if value in NULL_TEXTS else float(value) for value in values]
        except ValueError:
            return None, False
        if any(out_of_range(feature, number) for feature, number in zip(FEATURES, numbers)):
            return None, False
        if track_id and np.isfinite(numbers).all():
            kept.append({"id": track_id, "artist": artist or None, **dict(zip(FEATURES, numbers))})
    frame = pd.DataFrame(kept, columns=["id", "artist", *FEATURES])
    return frame.drop_duplicates("id").reset_index(drop=True), not lenient


def out_of_range(feature: str, number: float) -> bool:
    from helpers.layouts import FEATURE_RANGES

    return bool(FEATURE_RANGES[feature].outside(np.array([number]))[0])


def check_reader_on(data: bytes, folder: Path, suffix: str) -> None:
    path = folder / f"catalogue.{suffix}"
    path.write_bytes(gzip.compress(data) if suffix == "csv.gz" else data)
    expected, with_artists = strict_reading(data)
    try:
        catalogue = read_catalogue_files(path)
    except CatalogueError:
        return
    assert expected is not None, "a file that a strict reading refuses was loaded"
    columns = ["id", "artist", *FEATURES] if with_artists else ["id", *FEATURES]
    assert plain_records(catalogue, columns) == plain_records(expected, columns)


def plain_records(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    return [tuple(None if pd.isna(value) else value for value in row)
            for row in frame[columns].itertuples(index=False)]


@settings(max_examples=150, deadline=5_000)
@given(CATALOGUE_ROWS, MUTATIONS, st.sampled_from(["csv", "csv.gz"]))
def test_property_the_reader_loads_exactly_the_well_formed_rows_or_refuses(tmp_path_factory, rows, mutations, suffix):
    check_reader_on(mutated_csv(rows, mutations), tmp_path_factory.mktemp("mutated"), suffix)


@settings(max_examples=100, deadline=5_000)
@given(st.binary(max_size=600), st.booleans())
def test_property_random_bytes_are_refused_or_read_exactly(tmp_path_factory, data, with_header):
    prefix = (",".join(HEADER) + "\n").encode() if with_header else b""
    check_reader_on(prefix + data, tmp_path_factory.mktemp("random"), "csv")
