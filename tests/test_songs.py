"""Songs, not ids: the title normalisation, merging the ids of one recording, the alias table,
and no playlist that ever plays one recording twice."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.env import BatchPlaylistEnv, TrackPool, build_neighbour_index, neighbours_needed
from helpers.layouts import FEATURES
from helpers.songs import (
    log_with_song_ids, merge_recordings, normalise_titles, recording_groups, resolve_song_ids, save_aliases,
)

# (title as catalogues write it, normalised form)
TITLES = [
    ("Halo", "halo"),
    ("HALO ", "halo"),
    ("Halo - 2011 Remaster", "halo"),
    ("Pour Some Sugar On Me - Remastered 2017", "pour some sugar on me"),
    ("Another Brick In The Wall, Pt. 2 - 2011 Remastered Version", "another brick in the wall pt 2"),
    ("Jet Airliner - 2003 Digital Remaster", "jet airliner"),
    ("Wizard - Radio Edit", "wizard"),
    ("Payphone - Edit", "payphone"),
    ("Pinball Wizard - Original Album Version", "pinball wizard"),
    ("Typhoon - Original Mix", "typhoon"),
    ("Crazy In Love - Single Version", "crazy in love"),
    ("Sexy Bitch (feat. Akon)", "sexy bitch"),
    ("I Don't Care (with Justin Bieber)", "i don t care"),
    ("Writing on the Wall (feat. Post Malone, Cardi B & Rvssian)", "writing on the wall"),
    ("Hello [Live]", "hello"),
    ("Lola - Live at Providence Civic Center, Providence, RI", "lola"),
    ("Hello (Live) - Remastered", "hello"),
    ("Lo Que Pasó, Pasó", "lo que paso paso"),
    ("Beyoncé’s Song", "beyonce s song"),
    ("Dude (Looks Like A Lady)", "dude looks like a lady"),   # not a version tag: kept
    ("Memories - Dillon Francis Remix", "memories dillon francis remix"),  # another recording
    ("Hallelujah - Acoustic", "hallelujah acoustic"),
    ("Live And Let Die", "live and let die"),  # 'live' only as a tag
    ("Edit the World", "edit the world"),
]


def test_title_normalisation_table():
    titles = pa.array([title for title, _ in TITLES])
    assert normalise_titles(titles).to_pylist() == [expected for _, expected in TITLES]


def features(seed: int, n: int) -> np.ndarray:
    """`n` distinct feature rows."""
    return np.random.default_rng(seed).uniform(0, 1, (n, len(FEATURES))).round(4)


def table(ids, values, names=None, artists=None, **columns) -> pd.DataFrame:
    frame = pd.DataFrame({"id": ids, "artist": artists or ["Band"] * len(ids)})
    if names is not None:
        frame["name"] = names
    for key, value in columns.items():
        frame[key] = value
    frame[list(FEATURES)] = values
    return frame


def test_identical_features_and_same_titles_merge_transitively():
    base = features(0, 5)
    values = base[[0, 0, 1, 2, 3, 4]].copy()  # a and b: identical features
    names = ["Song A", "Compilation cut", "Song A - Remastered 2009", "Other", "Other", "Song B"]
    artists = ["Band", "Band", "Band", "Band", "Someone else", "Band"]
    catalogue = table(list("abcdef"), values, names, artists)
    labels, by_features = recording_groups(catalogue)
    # a = b by features, a ~ c by title: one song; d and e share a title but not their artists.
    assert labels.tolist() == [0, 0, 0, 1, 2, 3] and by_features.tolist() == [0, 0, 1, 2, 3, 4]
    songs, aliases, report = merge_recordings(catalogue)
    assert songs["id"].tolist() == ["a", "d", "e", "f"], "the first row in file order represents its song"
    assert aliases.values.tolist() == [["a", "a"], ["b", "a"], ["c", "a"], ["d", "d"], ["e", "e"], ["f", "f"]]
    assert (report.ids, report.songs, report.merged_by_features, report.merged_by_title) == (6, 4, 1, 1)
    assert "6 ids became 4 songs: 1 merged because all 11 features equal" in str(report)


def test_without_names_only_identical_features_merge():
    values = features(1, 3)[[0, 1, 0, 2]]
    songs, aliases, report = merge_recordings(table(list("abcd"), values))
    assert songs["id"].tolist() == ["a", "b", "d"] and aliases["song_id"].tolist() == ["a", "b", "a", "d"]
    assert (report.merged_by_features, report.merged_by_title) == (1, 0)


def test_negative_zero_equals_zero_and_missing_names_stay_apart():
    values = features(2, 2)[[0, 0, 1, 1]]
    values[1, 3] = values[0, 3] = 0.0
    values[1, 3] = -0.0
    values[3, 0] += 1e-9
    catalogue = table(list("abcd"), values, ["x", "y", None, None])
    assert recording_groups(catalogue)[0].tolist() == [0, 0, 1, 2]


def test_the_most_popular_kept_row_represents_and_genres_are_joined():
    values = features(3, 2)[[0, 0, 0, 1]]
    catalogue = table(list("abcd"), values, ["S", "S", "S", "T"], popularity=[10.0, 70.0, np.nan, 5.0],
                      genre=["pop", "rock", "pop, edm", "rap"])
    songs, aliases, _ = merge_recordings(catalogue)
    assert songs["id"].tolist() == ["b", "d"] and aliases["song_id"].tolist() == ["b", "b", "b", "d"]
    assert songs["genre"].tolist() == ["pop, rock, edm", "rap"]


def test_an_id_the_filter_dropped_still_resolves_to_its_kept_song(tmp_path):
    values = features(4, 3)[[0, 1, 0, 2]]
    catalogue = table(list("abcd"), values, ["x", "y", "x (2015 compilation)", "z"])
    kept = catalogue.iloc[[1, 2, 3]]  # the filter dropped a, the twin of c
    songs, aliases, report = merge_recordings(catalogue, kept)
    assert songs["id"].tolist() == ["b", "c", "d"] and report.ids == 3
    path = save_aliases(aliases, tmp_path / "aliases.parquet")
    assert resolve_song_ids(["a", "c", "b"], path) == ["c", "c", "b"]
    assert resolve_song_ids("a", aliases) == "c"
    with pytest.raises(ValueError, match=r"1 track id\(s\) are not in the catalogue .* e\.g\. 'nope'"):
        resolve_song_ids(["a", "nope"], aliases)


# --- no recording twice in a playlist ----------------------------------------------------------

VERSION_TAGS = [" - Remastered 2011", " - Radio Edit", " (feat. Someone)", " [Live]", " - Single Version",
                " - 2009 Remaster", "", " (with A & B)"]


@st.composite
def planted_catalogues(draw):
    """A shuffled catalogue of recordings, each under 1-4 ids: feature twins with unrelated
    titles and same-titled versions with other features, each linked to an earlier id of its
    recording. Returns the table and each row's true recording."""
    n_recordings = draw(st.integers(12, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows = []
    for recording in range(n_recordings):
        copies = [(rng.uniform(0, 1, len(FEATURES)).round(4), f"Song {recording}")]
        for copy in range(draw(st.integers(0, 3))):
            values, _ = copies[draw(st.integers(0, len(copies) - 1))]
            if draw(st.booleans()):
                copies.append((values, f"Alternative cut {recording}.{copy}"))
            else:
                tag = draw(st.sampled_from(VERSION_TAGS))
                copies.append((rng.uniform(0, 1, len(FEATURES)).round(4), f"song {recording}{tag}".upper()))
        rows += [(f"id{recording}-{i}", name, f"Artist {recording % 4}", values, recording)
                 for i, (values, name) in enumerate(copies)]
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    catalogue = table([r[0] for r in rows], np.array([r[3] for r in rows]), [r[1] for r in rows],
                      [r[2] for r in rows])
    return catalogue, np.array([r[4] for r in rows]), n_recordings


def random_playlists(songs: pd.DataFrame, seed: int, n_playlists: int = 200, length: int = 10) -> np.ndarray:
    """Playlists of the chain's environment on `songs` (features as states), random picks."""
    latents = songs[list(FEATURES)].to_numpy(dtype=np.float32)
    frame = pd.DataFrame(latents, columns=[f"latent_{i}" for i in range(latents.shape[1])])
    frame.insert(0, "id", songs["id"].to_numpy())
    frame["reward"] = 1.0
    pool = TrackPool.from_table(frame)
    length = min(length, pool.n_tracks)
    neighbours = build_neighbour_index(pool.latents, neighbours_needed(length, 4))
    env = BatchPlaylistEnv(pool, neighbours, playlist_length=length, n_candidates=4)
    rng = np.random.default_rng(seed)
    observation = env.reset(rng.integers(0, pool.n_tracks, n_playlists))
    done = False
    while not done:
        choice = rng.random(observation.mask.shape) * observation.mask
        observation, _, done = env.step(choice.argmax(axis=1))
    return pool.ids[env.playlists]


@settings(max_examples=40, deadline=None)
@given(planted_catalogues(), st.integers(0, 1000))
def test_no_playlist_ever_holds_two_ids_of_one_recording(planted, seed):
    catalogue, recording, n_recordings = planted
    songs, aliases, _ = merge_recordings(catalogue)
    assert len(songs) == n_recordings, "every planted recording is one song, and no two are merged"
    recording_of = dict(zip(catalogue["id"], recording))
    assert all(recording_of[a] == recording_of[s] for a, s in aliases[["id", "song_id"]].itertuples(index=False))
    playlists = random_playlists(songs, seed)
    heard = np.vectorize(recording_of.get)(playlists)
    assert all(len(set(row)) == len(row) for row in heard)


def test_without_the_merge_playlists_do_repeat_a_recording():
    """The check above can fail: on the raw ids, twins at distance 0 follow each other."""
    catalogue, recording, _ = _fixed_planted()
    recording_of = dict(zip(catalogue["id"], recording))
    heard = np.vectorize(recording_of.get)(random_playlists(catalogue, seed=0))
    assert any(len(set(row)) < len(row) for row in heard)


def _fixed_planted():
    values = features(5, 15)
    twins = values[np.repeat(np.arange(15), 2)]
    catalogue = table([f"id{i}" for i in range(30)], twins, [f"Song {i // 2}" for i in range(30)])
    return catalogue, np.arange(30) // 2, 15


def test_listed_artists_match_as_a_set_ignoring_case_and_accents():
    values = features(6, 4)
    catalogue = table(list("abcd"), values, ["Umbrella", "Umbrella (feat. JAY-Z)", "Umbrella", "Umbrella"])
    catalogue["artists"] = pd.Series([["Rihanna", "JAY-Z"], ["jay-z", "Rihannà"], ["Rihanna"], []],
                                     dtype=pd.ArrowDtype(pa.list_(pa.string())))
    assert recording_groups(catalogue)[0].tolist() == [0, 0, 1, 2]


def test_a_logs_ids_become_song_ids():
    aliases = pd.DataFrame({"id": ["a", "a2", "b", "c"], "song_id": ["a", "a", "b", "c"]})
    log = pd.DataFrame({"track_id": ["a2", "b", "a"], "position": [0, 1, 2],
                        "candidates": [[], ["b", "c"], ["c", "a2"]]}, index=[5, 6, 7])
    resolved = log_with_song_ids(log, aliases)
    assert resolved["track_id"].tolist() == ["a", "b", "a"]
    assert resolved["candidates"].tolist() == [[], ["b", "c"], ["c", "a"]]
    assert log["track_id"].tolist() == ["a2", "b", "a"], "the log given is left as it was"
    with pytest.raises(ValueError, match="e.g. 'zzz'"):
        log_with_song_ids(log.assign(track_id=["zzz", "a", "b"]), aliases)


def test_rows_that_share_a_feature_hash_are_still_compared_whole(monkeypatch):
    def colliding(frame: pd.DataFrame, index: bool) -> pd.Series:
        return pd.Series(np.zeros(len(frame), dtype=np.uint64))

    values = features(7, 3)[[0, 1, 0, 2]]
    monkeypatch.setattr(pd.util, "hash_pandas_object", colliding)
    labels, by_features = recording_groups(table(list("abcd"), values))
    assert len(set(by_features)) == 3 and by_features[0] == by_features[2]
    assert labels.tolist() == [0, 1, 0, 2]


def test_an_alias_table_without_its_columns_is_named(tmp_path):
    path = tmp_path / "aliases.parquet"
    pd.DataFrame({"id": ["a"], "song": ["a"]}).to_parquet(path)
    with pytest.raises(ValueError, match=r"aliases\.parquet: missing column\(s\) \['song_id'\]"):
        resolve_song_ids(["a"], path)
