"""The catalogue loader and filter: both schemas, validation at the boundary, the matching rule."""
from __future__ import annotations

import ast
import csv
import re
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
    filter_catalogue, filter_settings, load_catalogue, parse_artist_lists, save_tracks,
)
from helpers.paths import DEFAULT_CATALOGUE, NOTEBOOKS_DIR

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
    catalogue, report = load_catalogue(DEFAULT_CATALOGUE, return_report=True)
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
    catalogue = load_catalogue(DEFAULT_CATALOGUE)
    tracks = filter_catalogue(catalogue, artists)
    pd.testing.assert_frame_equal(tracks, catalogue)
    without_beyonce = filter_catalogue(catalogue, ORIGINAL_DESIGN_ARTISTS)
    assert len(catalogue) - len(without_beyonce) == (catalogue["artist"] == "Beyonce").sum() == 233


# --- Kaggle's schema --------------------------------------------------------------------------

def test_kaggle_schema_is_parsed(kaggle_file):
    catalogue, report = load_catalogue(kaggle_file, return_report=True)
    assert report.layout == "kaggle" and report.rows_kept == 6
    assert list(catalogue.columns) == ["id", "artist", "name", "album", "year", "artists", *FEATURES]
    assert catalogue["artists"].tolist() == [["Beyoncé", "Guns N' Roses"], ["Calvin Harris", "Rihanna"],
                                             ["Sia"], ["Siamese Dream"], [], ["Drake"]]
    assert catalogue["artist"].iloc[:4].tolist() == ["Beyoncé", "Calvin Harris", "Sia", "Siamese Dream"]
    assert pd.isna(catalogue["artist"].iloc[4])
    assert catalogue["name"].iloc[:2].tolist() == ["Don't Stop", 'A "quoted", title']
    assert catalogue["year"].dtype == "Int64"
    assert catalogue["year"].tolist() == [2008, 2012, 1999, 2005, 2010, 2020]
    assert (catalogue[list(FEATURES)].dtypes == np.float64).all()


def test_filter_matches_any_artist_whole_name_ignoring_case_and_accents(kaggle_file):
    catalogue = load_catalogue(kaggle_file)
    tracks = filter_catalogue(catalogue, ["beyonce", "Rihanna", "Sia", "DRAKE"], 2000, 2020)
    # t1 by its accented first artist, t2 by its second; t3 is from 1999; 'Siamese Dream' is not 'Sia'.
    assert tracks["id"].tolist() == ["t1", "t2", "t6"]
    assert tracks["artist"].tolist() == ["beyonce", "Rihanna", "DRAKE"]


def test_first_listed_match_names_the_track(kaggle_file):
    tracks = filter_catalogue(load_catalogue(kaggle_file), ["Guns N' Roses", "Beyonce"], None, None)
    assert tracks["artist"].tolist() == ["Beyonce"]


def test_year_bounds_are_inclusive_and_optional(kaggle_file):
    catalogue = load_catalogue(kaggle_file)
    assert filter_catalogue(catalogue, None, 2008, 2012)["id"].tolist() == ["t1", "t2", "t5"]
    assert filter_catalogue(catalogue, None, None, 2005)["id"].tolist() == ["t3", "t4"]
    assert len(filter_catalogue(catalogue, None, None, None)) == 6


def test_save_tracks_writes_the_documented_columns(kaggle_file, tmp_path):
    tracks = filter_catalogue(load_catalogue(kaggle_file), None, None, None)
    written = pd.read_parquet(save_tracks(tracks.assign(genre="pop"), tmp_path / "tracks.parquet"))
    assert list(written.columns) == list(TRACKS_COLUMNS)
    pd.testing.assert_frame_equal(written, tracks.assign(genre="pop")[list(TRACKS_COLUMNS)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tracks.parquet", "tracks_features.csv"], \
        "no temporary file is left behind"


def test_line_break_inside_a_quoted_name(tmp_path):
    path = write_kaggle(tmp_path / "k.csv", [kaggle_row("t1", "Two\nlines", ["Adele"], 2010),
                                             kaggle_row("t2", "One line", ["Adele"], 2011)])
    assert load_catalogue(path)["name"].tolist() == ["Two\nlines", "One line"]


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
        load_catalogue(tmp_path / "nowhere.csv")


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
        load_catalogue(path)


@pytest.mark.parametrize("writer, row", [
    (write_embedded, lambda **features: embedded_row("b", **features)),
    (write_kaggle, lambda **features: kaggle_row("b", "x", ["Adele"], 2010, **features)),
])
def test_non_numeric_feature_names_file_column_value_and_row(tmp_path, writer, row):
    path = writer(tmp_path / "c.csv", [row(), row(loudness="very loud"), row()])
    expected = r"c\.csv: column 'loudness' .* 'very loud' in data row 2; expected numbers"
    with pytest.raises(CatalogueError, match=expected):
        load_catalogue(path)


def test_column_without_any_value(tmp_path):
    path = write_embedded(tmp_path / "c.csv", [embedded_row("a", valence=None),
                                               embedded_row("b", valence=np.nan)])
    with pytest.raises(CatalogueError, match=r"c\.csv: every value of column 'valence' is missing"):
        load_catalogue(path)


def test_header_only_and_empty_file(tmp_path):
    path = write_embedded(tmp_path / "c.csv", [embedded_row("a")])
    path.write_text(path.read_text().splitlines()[0] + "\n")
    with pytest.raises(CatalogueError, match="has a header but no rows"):
        load_catalogue(path)
    path.write_text("")
    with pytest.raises(CatalogueError, match="is empty"):
        load_catalogue(path)


def test_no_complete_row(tmp_path):
    path = write_embedded(tmp_path / "c.csv", [embedded_row("a", energy=None), embedded_row("b", tempo=None)])
    with pytest.raises(CatalogueError, match=r"none of its 2 rows has an id and all 11 features"):
        load_catalogue(path)


def test_artists_that_are_not_a_list(tmp_path):
    row = kaggle_row("a", "x", [], 2010)
    path = write_kaggle(tmp_path / "c.csv", [kaggle_row("b", "y", ["Adele"], 2010),
                                             {**row, "artists": "Adele"}])
    with pytest.raises(CatalogueError, match=r"column 'artists' has the value 'Adele' in data row 2"):
        load_catalogue(path)


def test_fractional_year(tmp_path):
    path = write_kaggle(tmp_path / "c.csv", [kaggle_row("a", "x", ["Adele"], 2010)])
    pd.read_csv(path).assign(year=2010.5).to_csv(path, index=False)
    with pytest.raises(CatalogueError, match="'year' has the value 2010.5 in data row 1; expected whole"):
        load_catalogue(path)


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
    catalogue, report = load_catalogue(path, return_report=True)
    assert catalogue["id"].tolist() == ["a", "e"]
    assert catalogue["tempo"].iloc[0] == 100.0, "the first of two rows with the same id is kept"
    counts = (report.rows_read, report.rows_missing_values, report.duplicate_ids, report.rows_kept)
    assert counts == (7, 4, 1, 2)
    assert "4 dropped for a missing id or feature, 1 repeated ids merged into their first row" in str(report)


def test_empty_after_the_filter_names_source_and_filters(kaggle_file):
    catalogue = load_catalogue(kaggle_file)
    with pytest.raises(CatalogueError, match=r"no track of my source .* 5 released in 2000-2020, "
                                             r"then 0 by one of the artists \['Sia'\]"):
        filter_catalogue(catalogue, ["Sia"], 2000, 2020, source="my source")


@pytest.mark.parametrize("artists, error", [("Adele", TypeError), ([], ValueError), (["Adele", 3], TypeError)])
def test_artists_must_be_a_list_of_names(kaggle_file, artists, error):
    with pytest.raises(error):
        filter_catalogue(load_catalogue(kaggle_file), artists)


def test_year_range_must_not_be_reversed(kaggle_file):
    with pytest.raises(ValueError, match=r"year_min \(2020\) is after year_max \(2000\)"):
        filter_catalogue(load_catalogue(kaggle_file), None, 2020, 2000)
