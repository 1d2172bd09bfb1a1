"""The synthetic catalogue generator (benchmarks/synthetic_catalogue.py): Kaggle's schema, seeded."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.data import FEATURES, KAGGLE_COLUMNS, ORIGINAL_DESIGN_ARTISTS, filter_catalogue, read_catalogue_files
from helpers.paths import DEFAULT_CATALOGUE
from tests.conftest import benchmark_module

synthetic = benchmark_module("synthetic_catalogue")

N_ROWS = 5_000
TEXT_COLUMNS = ("id", "name", "album", "album_id", "artists", "artist_ids", "release_date")
INTEGER_COLUMNS = ("track_number", "disc_number", "key", "mode", "duration_ms", "year")


@pytest.fixture(scope="module")
def catalogue_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "tracks_features.csv"
    return synthetic.write_synthetic_catalogue(path, N_ROWS, seed=7, chunk_rows=1_500, progress=False)


@pytest.fixture(scope="module")
def as_read(catalogue_file) -> pd.DataFrame:
    return pd.read_csv(catalogue_file)


def test_columns_and_types_are_kaggles(as_read):
    assert list(as_read.columns) == list(KAGGLE_COLUMNS) and len(as_read) == N_ROWS
    for column in as_read.columns:
        dtype = as_read[column].dtype
        if column in TEXT_COLUMNS:
            assert pd.api.types.is_string_dtype(dtype), column
        elif column in INTEGER_COLUMNS:
            assert dtype == np.int64, column
        elif column == "explicit":
            assert dtype == bool
        else:
            assert dtype == np.float64, column


def test_values_are_plausible_and_labelled_synthetic(as_read):
    assert as_read["id"].str.fullmatch(r"[0-9A-Za-z]{22}").all() and as_read["id"].is_unique
    assert as_read["name"].str.startswith("Synthetic track ").all()
    assert as_read["album"].str.startswith("Synthetic album ").all()
    assert as_read["year"].between(1950, 2020).all()
    assert (pd.to_datetime(as_read["release_date"]).dt.year == as_read["year"]).all()
    for feature, (low, high) in synthetic.FEATURE_RANGES.items():
        assert as_read[feature].between(low, high).all(), feature
    artists = as_read["artists"].map(ast.literal_eval)
    ids = as_read["artist_ids"].map(ast.literal_eval)
    assert artists.map(len).between(1, 3).all() and (artists.map(len) == ids.map(len)).all()
    assert (artists.map(lambda names: len(set(names))) == artists.map(len)).all(), "no artist twice on a track"
    assert artists.map(lambda names: any("'" in name for name in names)).any()


def test_features_are_resampled_from_the_embedded_catalogue(as_read):
    embedded = read_catalogue_files(DEFAULT_CATALOGUE)[list(FEATURES)]
    drift = (as_read[list(FEATURES)].mean() - embedded.mean()).abs() / embedded.std()
    assert (drift < 0.1).all(), drift
    assert set(as_read["key"]) <= set(range(12)) and set(as_read["mode"]) == {0, 1}


def test_loader_reads_it_and_the_default_filter_finds_tracks(catalogue_file):
    catalogue, report = read_catalogue_files(catalogue_file, return_report=True)
    assert (report.layout, report.rows_kept) == ("kaggle", N_ROWS)
    tracks = filter_catalogue(catalogue, [*ORIGINAL_DESIGN_ARTISTS, "Beyonce"], 2000, 2020)
    assert len(tracks) > 0 and tracks["year"].between(2000, 2020).all()
    first_listed = tracks["artists"].map(lambda names: names[0])
    assert (first_listed != tracks["artist"]).any(), "some tracks match only by a featured artist"


def test_same_seed_same_file_other_seed_other_file(catalogue_file, tmp_path):
    again = synthetic.write_synthetic_catalogue(tmp_path / "again.csv", N_ROWS, seed=7, progress=False)
    other = synthetic.write_synthetic_catalogue(tmp_path / "other.csv", N_ROWS, seed=8, progress=False)
    assert again.read_bytes() == catalogue_file.read_bytes()
    assert other.read_bytes() != catalogue_file.read_bytes()


def test_written_text_matches_pandas_csv_writer(as_read, catalogue_file, tmp_path):
    """The hand-built CSV lines are what pandas (which wrote Kaggle's file) would write."""
    pandas_file = tmp_path / "pandas.csv"
    synthetic.synthetic_catalogue(N_ROWS, seed=7).to_csv(pandas_file, index=False)
    assert pandas_file.read_bytes() == catalogue_file.read_bytes()


def test_command_line(tmp_path, capsys):
    synthetic.main([str(tmp_path / "cli.csv"), "--rows", "10", "--seed", "1"])
    assert "wrote 10 synthetic tracks" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "cli.csv")) == 10


@pytest.mark.parametrize("n_rows", [0, -5, 2.5, True])
def test_bad_row_count(n_rows):
    with pytest.raises(ValueError, match="n_rows must be a positive integer"):
        synthetic.synthetic_catalogue(n_rows)
