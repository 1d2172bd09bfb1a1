"""Real catalogues in their own layouts: each read from a small file with its quirks, the column
mapping, several files at once, compressed files, and one clear error for each bad input."""
from __future__ import annotations

import csv
import gzip
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.data import BUILTIN_CATALOGUES, CatalogueError, catalogue_files, filter_settings, read_catalogue_files
from helpers.layouts import FEATURES, KNOWN_LAYOUTS, decade_from_file_name, mode_numbers, pitch_classes
from helpers.pipeline import parse_value

TIDYTUESDAY_HEADER = [
    "track_id", "track_name", "track_artist", "track_popularity", "track_album_id", "track_album_name",
    "track_album_release_date", "playlist_name", "playlist_id", "playlist_genre", "playlist_subgenre",
    "danceability", "energy", "key", "loudness", "mode", "speechiness", "acousticness",
    "instrumentalness", "liveness", "valence", "tempo", "duration_ms",
]
SPOTIFY_FEATURES_HEADER = [
    "genre", "artist_name", "track_name", "track_id", "popularity", "acousticness", "danceability",
    "duration_ms", "energy", "instrumentalness", "key", "liveness", "loudness", "mode", "speechiness",
    "tempo", "time_signature", "valence",
]
HIT_PREDICTOR_HEADER = [
    "track", "artist", "uri", "danceability", "energy", "key", "loudness", "mode", "speechiness",
    "acousticness", "instrumentalness", "liveness", "valence", "tempo", "duration_ms", "time_signature",
    "chorus_hit", "sections", "target",
]
DATA_1921_HEADER = [
    "acousticness", "artists", "danceability", "duration_ms", "energy", "explicit", "id",
    "instrumentalness", "key", "liveness", "loudness", "mode", "name", "popularity", "release_date",
    "speechiness", "tempo", "valence", "year",
]
# Feature values as the files write them, some in exponent notation.
FEATURE_TEXT = dict(danceability="0.748", energy="0.916", key="6", loudness="-2.634", mode="1",
                    speechiness="0.0583", acousticness="1.02e-01", instrumentalness="2.33e-5",
                    liveness="0.0653", valence="0.518", tempo="122.036")


def write_csv(path: Path, header: list[str], rows: list[dict], encoding: str = "utf-8") -> Path:
    """Rows as dicts; a column a row does not give takes its FEATURE_TEXT value (or '1')."""
    with path.open("w", newline="", encoding=encoding) as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(c, FEATURE_TEXT.get(c, "1")) for c in header])
    return path


def tidytuesday_file(path: Path) -> Path:
    return write_csv(path, TIDYTUESDAY_HEADER, [
        dict(track_id="t1", track_name="I Don't Care (with Justin Bieber)", track_artist="Ed Sheeran",
             track_popularity="66", track_album_name="No.6", track_album_release_date="2019-06-14",
             playlist_genre="pop"),
        dict(track_id="t2", track_name="NA", track_artist="NA", track_popularity="0",
             track_album_name="NA", track_album_release_date="2012-05", playlist_genre="rock", energy="0.3"),
        dict(track_id="t1", track_name="I Don't Care (with Justin Bieber)", track_artist="Ed Sheeran",
             track_popularity="66", track_album_name="No.6", track_album_release_date="2019-06-14",
             playlist_genre="edm"),
        dict(track_id="t3", track_name="Old one", track_artist="Queen", track_popularity="80",
             track_album_name="A", track_album_release_date="1975", playlist_genre="rock", energy="0.5"),
    ])


# --- each known layout, with its quirks -------------------------------------------------------

def test_tidytuesday_repeated_ids_na_texts_dates_and_exponents(tmp_path):
    catalogue, report = read_catalogue_files(tidytuesday_file(tmp_path / "spotify_songs.csv"), return_report=True)
    assert report.layout == "tidytuesday" and (report.rows_read, report.duplicate_ids) == (4, 1)
    assert list(catalogue.columns) == ["id", "artist", "name", "album", "genre", "popularity", "year", "duration_ms",
                                       *FEATURES]
    assert catalogue["id"].tolist() == ["t1", "t2", "t3"]
    assert catalogue["genre"].tolist() == ["pop, edm", "rock", "rock"], "a repeated id keeps every genre"
    assert catalogue["year"].tolist() == [2019, 2012, 1975]
    assert catalogue.loc[1, ["name", "artist", "album"]].isna().all(), "the text NA is a missing name"
    assert catalogue["instrumentalness"].iloc[0] == 2.33e-5 and catalogue["acousticness"].iloc[0] == 0.102


def test_spotify_features_bom_pitch_names_modes_and_genres(tmp_path):
    path = write_csv(tmp_path / "SpotifyFeatures.csv", SPOTIFY_FEATURES_HEADER, [
        dict(genre="Pop", artist_name="Adele", track_name="Hello", track_id="s1", key="C#", mode="Major",
             time_signature="4/4", popularity="80"),
        dict(genre="Soul", artist_name="Adele", track_name="Hello", track_id="s1", key="C#", mode="Major",
             time_signature="4/4", popularity="80"),
        dict(genre="Rock", artist_name="Queen", track_name="Bohemian Rhapsody", track_id="s2", key="Bb",
             mode="Minor", time_signature="3/4", popularity="90", energy="0.4"),
    ], encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    catalogue, report = read_catalogue_files(path, return_report=True)
    assert report.layout == "spotify_features"
    assert catalogue["id"].tolist() == ["s1", "s2"]
    assert catalogue["key"].tolist() == [1.0, 10.0] and catalogue["mode"].tolist() == [1.0, 0.0]
    assert catalogue["genre"].tolist() == ["Pop, Soul", "Rock"]
    assert catalogue["name"].tolist() == ["Hello", "Bohemian Rhapsody"] and "year" not in catalogue


def hit_predictor_file(path: Path, prefix: str = "spotify:track:") -> Path:
    return write_csv(path, HIT_PREDICTOR_HEADER, [
        dict(track="Song " + path.stem, artist="Band", uri=f"{prefix}{path.stem}A", target="1"),
        dict(track="Other " + path.stem, artist="Band", uri=f"{prefix}{path.stem}B", target="0", energy="0.2"),
    ])


def test_hit_predictor_decades_by_glob_and_by_list(tmp_path):
    for decade in ("60s", "00s", "10s"):
        hit_predictor_file(tmp_path / f"dataset-of-{decade}.csv")
    catalogue, report = read_catalogue_files(str(tmp_path / "dataset-of-*s.csv"), return_report=True)
    assert report.layout == "hit_predictor" and len(report.paths) == 3
    assert catalogue["id"].tolist() == ["dataset-of-00sA", "dataset-of-00sB", "dataset-of-10sA",
                                        "dataset-of-10sB", "dataset-of-60sA", "dataset-of-60sB"]
    assert catalogue["year"].tolist() == [2000, 2000, 2010, 2010, 1960, 1960]
    listed = read_catalogue_files([tmp_path / "dataset-of-60s.csv", tmp_path / "dataset-of-10s.csv"])
    assert listed["year"].tolist() == [1960, 1960, 2010, 2010]


def test_hit_predictor_without_a_decade_in_the_name_has_no_year(tmp_path):
    assert "year" not in read_catalogue_files(hit_predictor_file(tmp_path / "hits.csv")).columns
    mixed = read_catalogue_files([tmp_path / "hits.csv", hit_predictor_file(tmp_path / "dataset-of-80s.csv")])
    assert mixed["year"].tolist() == [pd.NA, pd.NA, 1980, 1980]


@pytest.mark.parametrize("name, year", [("dataset-of-60s.csv", 1960), ("dataset-of-00s.csv", 2000),
                                        ("dataset-of-10s.csv", 2010), ("hits.csv", None), ("2010.csv", None)])
def test_decade_from_file_name(name, year):
    assert decade_from_file_name(name) == year


def test_data_1921_2020_list_strings(tmp_path):
    path = write_csv(tmp_path / "data.csv", DATA_1921_HEADER, [
        dict(artists="['Sergei Rachmaninoff', 'James Levine']", id="d1", name="Piano Concerto", popularity="4",
             release_date="1921", year="1921", explicit="0"),
        dict(artists="[\"Guns N' Roses\"]", id="d2", name="Patience", popularity="70", release_date="1988-01-01",
             year="1988", explicit="0", energy="0.2"),
    ])
    catalogue, report = read_catalogue_files(path, return_report=True)
    assert report.layout == "spotify_1921_2020"
    assert catalogue["artists"].tolist() == [["Sergei Rachmaninoff", "James Levine"], ["Guns N' Roses"]]
    assert catalogue["artist"].tolist() == ["Sergei Rachmaninoff", "Guns N' Roses"]
    assert catalogue["year"].tolist() == [1921, 1988] and catalogue["popularity"].tolist() == [4.0, 70.0]


@pytest.mark.parametrize("compress", ["gz", "zip"])
def test_compressed_files_are_read_directly(tmp_path, compress):
    plain = tidytuesday_file(tmp_path / "spotify_songs.csv")
    if compress == "gz":
        path = tmp_path / "spotify_songs.csv.gz"
        path.write_bytes(gzip.compress(plain.read_bytes()))
    else:
        path = tmp_path / "spotify_songs.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.write(plain, "spotify_songs.csv")
    pd.testing.assert_frame_equal(read_catalogue_files(path), read_catalogue_files(plain))


def test_the_shipped_tidytuesday_catalogue():
    assert catalogue_files("tidytuesday") == [BUILTIN_CATALOGUES["tidytuesday"].path]
    catalogue, report = read_catalogue_files("tidytuesday", return_report=True)
    assert (report.layout, report.rows_read, len(catalogue)) == ("tidytuesday", 32833, 28356)
    # Five rows hold the text NA as name, artist and album: four ids (one sits on two playlists).
    assert catalogue["name"].isna().sum() == 4 and catalogue["genre"].notna().all()
    assert filter_settings("tidytuesday") == (None, None, None)


# --- pitch names and modes --------------------------------------------------------------------

PITCHES = [("C", 0), ("C#", 1), ("Db", 1), ("D", 2), ("D#", 3), ("Eb", 3), ("E", 4), ("F", 5),
           ("F#", 6), ("Gb", 6), ("G", 7), ("G#", 8), ("Ab", 8), ("A", 9), ("A#", 10), ("Bb", 10),
           ("B", 11), ("c#", 1), ("D♭", 1), ("7", 7), ("7.0", 7)]


def test_pitch_names_become_spotify_pitch_classes():
    values, bad = pitch_classes(pd.array([name for name, _ in PITCHES], dtype="string").__arrow_array__())
    assert bad is None and values.tolist() == [number for _, number in PITCHES]


def test_mode_words_become_numbers_and_unknown_words_are_found():
    values, bad = mode_numbers(pd.array(["Major", "Minor", "minor", "1", None], dtype="string").__arrow_array__())
    assert bad is None and values[:4].tolist() == [1, 0, 0, 1] and np.isnan(values[4])
    _, bad = pitch_classes(pd.array(["C", "H", "D"], dtype="string").__arrow_array__())
    assert bad == 1


def test_an_unknown_pitch_name_names_file_column_value_and_row(tmp_path):
    path = write_csv(tmp_path / "SpotifyFeatures.csv", SPOTIFY_FEATURES_HEADER, [
        dict(genre="Pop", artist_name="A", track_name="x", track_id="s1", key="C", mode="Major"),
        dict(genre="Pop", artist_name="A", track_name="y", track_id="s2", key="H", mode="Major")])
    with pytest.raises(CatalogueError, match=r"SpotifyFeatures\.csv: column 'key' has the value 'H' in data row 2"):
        read_catalogue_files(path)


# --- the column mapping -----------------------------------------------------------------------

def custom_file(path: Path) -> Path:
    header = ["song_id", "performer", "title", *FEATURES]
    return write_csv(path, header, [dict(song_id="c1", performer="Adele", title="Hello", key="F#", mode="Minor"),
                                    dict(song_id="c2", performer="Queen", title="Flash", energy="0.1")])


def test_column_map_reads_any_table(tmp_path):
    path = custom_file(tmp_path / "mine.csv")
    column_map = parse_value("{'id': 'song_id', 'artist': 'performer', 'name': 'title'}")
    catalogue, report = read_catalogue_files(path, column_map, return_report=True)
    assert report.layout == "mapped"
    assert catalogue[["id", "artist", "name"]].values.tolist() == [["c1", "Adele", "Hello"], ["c2", "Queen", "Flash"]]
    assert catalogue["key"].tolist() == [6.0, 6.0] and catalogue["mode"].tolist() == [0.0, 1.0]


def test_column_map_naming_a_missing_column(tmp_path):
    path = custom_file(tmp_path / "mine.csv")
    with pytest.raises(CatalogueError, match=r"mine\.csv has no column 'singer' \(mapped by column_map to artist\)"):
        read_catalogue_files(path, {"id": "song_id", "artist": "singer"})
    with pytest.raises(CatalogueError, match=r"unknown field\(s\) \['colour'\]"):
        read_catalogue_files(path, {"id": "song_id", "artist": "performer", "colour": "title"})
    with pytest.raises(CatalogueError, match=r"mine\.csv: no column for the field\(s\) \['artist'\]"):
        read_catalogue_files(path, {"id": "song_id"})


# --- one clear error for each bad input -------------------------------------------------------

def test_unknown_layout_names_missing_columns_known_layouts_and_the_mapping(tmp_path):
    path = custom_file(tmp_path / "mine.csv")
    with pytest.raises(CatalogueError) as error:
        read_catalogue_files(path)
    message = str(error.value)
    assert message.startswith(f"{path}: its columns fit no known layout")
    assert "The closest, the embedded catalogue, lacks the column(s) 'id', 'artist'" in message
    assert all(layout.title in message for layout in KNOWN_LAYOUTS)
    assert "column_map" in message and "-p column_map" in message


def test_files_of_different_layouts(tmp_path):
    first = tidytuesday_file(tmp_path / "spotify_songs.csv")
    second = hit_predictor_file(tmp_path / "dataset-of-60s.csv")
    with pytest.raises(CatalogueError, match=r"different layouts: .*spotify_songs\.csv \(TidyTuesday.*"
                                             r"dataset-of-60s\.csv \(Kaggle's 'Spotify Hit Predictor'"):
        read_catalogue_files([first, second])


def test_a_file_without_usable_rows(tmp_path):
    path = write_csv(tmp_path / "spotify_songs.csv", TIDYTUESDAY_HEADER, [
        dict(track_id="t1", track_artist="A", track_album_release_date="2001", energy=""),
        dict(track_id="t2", track_artist="A", track_album_release_date="2001", tempo="")])
    with pytest.raises(CatalogueError, match=r"spotify_songs\.csv: none of its 2 rows has an id and all 11 features"):
        read_catalogue_files(path)


def test_a_file_that_is_not_utf8_names_file_and_line(tmp_path):
    path = tidytuesday_file(tmp_path / "spotify_songs.csv")
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"NA,NA", "Beyoncé,NA".encode("latin-1"), 1)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(CatalogueError, match=r"spotify_songs\.csv is not UTF-8 text: line 3 holds the byte 0xe9"):
        read_catalogue_files(path)
    header = tmp_path / "latin.csv"
    header.write_bytes("idé,artist\n".encode("latin-1"))
    with pytest.raises(CatalogueError, match=r"latin\.csv is not UTF-8 text: line 1"):
        read_catalogue_files(header)


def test_repeated_column_names(tmp_path):
    path = tmp_path / "twice.csv"
    header = ["id", "artist", *FEATURES, "id"]
    write_csv(path, header, [dict(id="a", artist="Adele")])
    with pytest.raises(CatalogueError, match=r"twice\.csv has repeated column names: 'id' at columns \[1, 14\]"):
        read_catalogue_files(path)


def test_a_bad_uri(tmp_path):
    path = hit_predictor_file(tmp_path / "dataset-of-70s.csv", prefix="track/")
    with pytest.raises(CatalogueError, match=r"column 'uri' has the value 'track/dataset-of-70sA' in data row 1; "
                                             r"expected a Spotify URI"):
        read_catalogue_files(path)


def test_a_bad_release_date(tmp_path):
    path = tidytuesday_file(tmp_path / "spotify_songs.csv")
    path.write_text(path.read_text().replace("2012-05", "May 2012"))
    with pytest.raises(CatalogueError, match=r"column 'track_album_release_date' has the value 'May 2012' in "
                                             r"data row 2; expected a date"):
        read_catalogue_files(path)


def test_a_glob_matching_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no catalogue file matches .*nothing-\*\.csv"):
        read_catalogue_files(str(tmp_path / "nothing-*.csv"))
