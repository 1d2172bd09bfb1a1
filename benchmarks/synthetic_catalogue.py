"""Write a SYNTHETIC catalogue in the exact schema of Kaggle's `tracks_features.csv`.

Nothing in it is a real track: it stands in for the 1.2M-row "Spotify 1.2M+ Songs" file in
tests and benchmarks, so the chain can be measured at that size without downloading it.

* The 24 columns, in Kaggle's order and format: stringified Python lists of artists and
  artist ids, `explicit` as True/False, `time_signature` as a float, `year` as an integer.
* Audio features are rows of the embedded catalogue drawn with replacement, plus Gaussian
  noise (a fraction of each feature's standard deviation), clipped to the feature's valid
  range; `key` and `mode` are copied, so they stay integers.
* Random 22-character base62 ids; tracks grouped into albums of 1-20 tracks, each album with
  one main artist, a year in 1950-2020 (more recent years more likely) and a release date.
* Artists: 1-3 per track. About 2% of artist slots hold one of the original design's popular
  artists (so the default filter finds tracks, some only by a featured artist); the others
  come from a pool of synthetic names, some with an apostrophe ("Synthetic Artist 7's Band").
* Labelled: tracks are named "Synthetic track N" and albums "Synthetic album N".

    python benchmarks/synthetic_catalogue.py /tmp/tracks_1m.csv --rows 1204025 --seed 42
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from helpers.data import FEATURES, KAGGLE_COLUMNS, ORIGINAL_DESIGN_ARTISTS, read_catalogue_files
from helpers.paths import DEFAULT_CATALOGUE

BASE62 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", dtype="S1")
ID_LENGTH = 22
FEATURE_RANGES = {
    "danceability": (0.0, 1.0), "energy": (0.0, 1.0), "key": (0, 11), "loudness": (-60.0, 0.0),
    "mode": (0, 1), "speechiness": (0.0, 1.0), "acousticness": (0.0, 1.0),
    "instrumentalness": (0.0, 1.0), "liveness": (0.0, 1.0), "valence": (0.0, 1.0),
    "tempo": (0.0, 250.0),
}
INTEGER_FEATURES = ("key", "mode")
FEATURE_NOISE = 0.05  # noise standard deviation, as a fraction of the feature's own
POPULAR_ARTIST_SHARE = 0.02
TRACKS_PER_SYNTHETIC_ARTIST = 8
ALBUM_SIZES = (1, 20)
ARTISTS_PER_TRACK_PROBABILITY = (0.75, 0.18, 0.07)  # 1, 2 or 3 artists
YEARS = (1950, 2020)
KAGGLE_SPELLING = {"Beyonce": "Beyoncé"}  # the embedded file dropped the accent


def random_ids(n: int, rng: np.random.Generator) -> pa.Array:
    """`n` random 22-character base62 ids, like Spotify's."""
    letters = BASE62[rng.integers(0, len(BASE62), size=(n, ID_LENGTH))]
    return pa.array(letters.view(f"S{ID_LENGTH}").ravel(), type=pa.binary(ID_LENGTH)).cast(pa.string())


def concatenate(*parts: pa.Array | str) -> pa.Array:
    """Element-wise concatenation of string arrays and constant strings."""
    return pc.binary_join_element_wise(*parts, "")


def numbered(prefix: str, numbers: np.ndarray) -> pa.Array:
    """`prefix` followed by each number: 'Synthetic album 0', 'Synthetic album 1', ..."""
    return concatenate(prefix, pc.cast(pa.array(numbers), pa.string()))


def python_repr(names: pa.Array) -> pa.Array:
    """Each name as Python's `repr` writes it, for names without a double quote or backslash:
    in single quotes, or in double quotes when it holds an apostrophe."""
    return pc.if_else(pc.match_substring(names, "'"), concatenate('"', names, '"'),
                      concatenate("'", names, "'"))


def stringified_lists(items: pa.Array, slots: np.ndarray, counts: np.ndarray) -> pa.Array:
    """Row i: `str(list)` of items `slots[i, :counts[i]]`, e.g. "['A', "Guns N' Roses"]"."""
    quoted = python_repr(items)
    pieces = [quoted.take(pa.array(slots[:, j], mask=counts <= j)) for j in range(slots.shape[1])]
    return concatenate("[", pc.binary_join_element_wise(*pieces, ", ", null_handling="skip"), "]")


@dataclass(frozen=True)
class ArtistPool:
    """Artist names and ids: first the `n_popular` real popular artists, then synthetic ones."""

    names: pa.Array
    ids: pa.Array
    n_popular: int

    @classmethod
    def build(cls, embedded: pd.DataFrame, n_synthetic: int, rng: np.random.Generator) -> "ArtistPool":
        """The original design's and the embedded catalogue's artists, then `n_synthetic` made up."""
        popular = dict.fromkeys([*ORIGINAL_DESIGN_ARTISTS, *embedded["artist"].unique()])
        popular = pa.array([KAGGLE_SPELLING.get(name, name) for name in popular], type=pa.string())
        synthetic = numbered("Synthetic Artist ", np.arange(n_synthetic))
        synthetic = pc.if_else(pa.array(np.arange(n_synthetic) % 10 == 7),
                               concatenate(synthetic, "'s Band"), synthetic)
        names = pa.concat_arrays([popular, synthetic])
        return cls(names, random_ids(len(names), rng), len(popular))

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` positions in the pool: a popular artist with probability POPULAR_ARTIST_SHARE."""
        popular = rng.random(n) < POPULAR_ARTIST_SHARE
        return np.where(popular, rng.integers(0, self.n_popular, n),
                        rng.integers(self.n_popular, len(self.names), n))


def distinct_slots(slots: np.ndarray, pool_size: int) -> np.ndarray:
    """Move each artist slot that repeats an earlier one of its row to the next artist of the pool."""
    slots = slots.copy()
    for j in range(1, slots.shape[1]):
        for _ in range(j):  # j earlier slots: j moves at most make slot j differ from all of them
            clash = (slots[:, [j]] == slots[:, :j]).any(axis=1)
            slots[clash, j] = (slots[clash, j] + 1) % pool_size
    return slots


def draw_features(embedded: pd.DataFrame, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Audio features resampled from the embedded catalogue, with noise, in valid ranges."""
    source = embedded[list(FEATURES)]
    rows = source.to_numpy()[rng.integers(0, len(source), n)]
    noise = rng.normal(0.0, 1.0, size=rows.shape) * (FEATURE_NOISE * source.std().to_numpy())
    continuous = np.array([f not in INTEGER_FEATURES for f in FEATURES])
    rows[:, continuous] += noise[:, continuous]
    low, high = np.array([FEATURE_RANGES[f] for f in FEATURES], dtype=float).T
    rows = np.clip(rows, low, high).round(4)
    return {f: rows[:, j].astype(np.int64) if f in INTEGER_FEATURES else rows[:, j]
            for j, f in enumerate(FEATURES)}


def synthetic_catalogue(n_rows: int, seed: int = 42) -> pd.DataFrame:
    """A synthetic catalogue of `n_rows` tracks with Kaggle's 24 columns, in order."""
    if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 1:
        raise ValueError(f"n_rows must be a positive integer, got {n_rows!r}.")
    rng = np.random.default_rng(seed)
    embedded = read_catalogue_files(DEFAULT_CATALOGUE)

    sizes = rng.integers(ALBUM_SIZES[0], ALBUM_SIZES[1] + 1, size=n_rows)
    n_albums = int(np.searchsorted(np.cumsum(sizes), n_rows)) + 1
    album = np.repeat(np.arange(n_albums), sizes[:n_albums])[:n_rows]
    album_start = np.flatnonzero(np.diff(album, prepend=-1) != 0)
    track_number = np.arange(n_rows) - album_start[album] + 1

    pool = ArtistPool.build(embedded, max(1, n_rows // TRACKS_PER_SYNTHETIC_ARTIST), rng)
    main_artist = pool.draw(n_albums, rng)[album]
    slots = distinct_slots(np.column_stack([main_artist, pool.draw(n_rows, rng), pool.draw(n_rows, rng)]),
                           len(pool.names))
    counts = rng.choice(len(ARTISTS_PER_TRACK_PROBABILITY), size=n_rows,
                        p=ARTISTS_PER_TRACK_PROBABILITY) + 1

    album_year = np.floor(rng.triangular(YEARS[0], YEARS[1] + 1, YEARS[1] + 1, n_albums)).astype(np.int64)
    album_year = np.minimum(album_year, YEARS[1])
    album_day = (album_year - 1970).astype("datetime64[Y]").astype("datetime64[D]") \
        + rng.integers(0, 365, n_albums)
    name = numbered("Synthetic track ", np.arange(n_rows))

    columns = {
        "id": random_ids(n_rows, rng),
        "name": pc.if_else(pa.array(np.arange(n_rows) % 10 == 3), concatenate(name, " (Don't Stop)"), name),
        "album": numbered("Synthetic album ", np.arange(n_albums)).take(album),
        "album_id": random_ids(n_albums, rng).take(album),
        "artists": stringified_lists(pool.names, slots, counts),
        "artist_ids": stringified_lists(pool.ids, slots, counts),
        "track_number": track_number,
        "disc_number": np.ones(n_rows, dtype=np.int64),
        "explicit": rng.random(n_rows) < 0.1,
        **draw_features(embedded, n_rows, rng),
        "duration_ms": np.clip(rng.lognormal(np.log(210_000), 0.35, n_rows), 30_000, 1_200_000
                               ).astype(np.int64),
        "time_signature": rng.choice([4.0, 3.0, 5.0, 1.0], size=n_rows, p=[0.9, 0.07, 0.02, 0.01]),
        "year": album_year[album],
        "release_date": pa.array(np.datetime_as_string(album_day, unit="D")).take(album),
    }
    return pa.table({name: columns[name] for name in KAGGLE_COLUMNS}).to_pandas()


def csv_field(column: pa.Array) -> pa.Array:
    """A column's values as CSV fields, written the way pandas wrote Kaggle's file.

    Booleans as True/False, whole floats with a trailing `.0`, and text quoted (inner quotes
    doubled) only when it holds a quote, a comma or a line break.
    """
    if pa.types.is_boolean(column.type):
        return pc.if_else(column, "True", "False")
    text = pc.cast(column, pa.string())
    if pa.types.is_floating(column.type):
        whole = pc.match_substring_regex(text, r"^-?\d+$")
        return pc.if_else(whole, concatenate(text, ".0"), text)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        quoted = concatenate('"', pc.replace_substring(text, '"', '""'), '"')
        return pc.if_else(pc.match_substring_regex(text, r'[",\r\n]'), quoted, text)
    return text


def write_synthetic_catalogue(path: str | Path, n_rows: int, seed: int = 42, *,
                              chunk_rows: int = 100_000, progress: bool = True) -> Path:
    """Write `synthetic_catalogue(n_rows, seed)` to the CSV file `path`; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(synthetic_catalogue(n_rows, seed), preserve_index=False)
    with path.open("w", encoding="utf-8", newline="") as file:
        file.write(",".join(table.column_names) + "\n")
        for start in tqdm(range(0, n_rows, chunk_rows), desc=f"writing {path.name}", unit="chunk",
                          disable=not progress):
            chunk = table.slice(start, chunk_rows)
            fields = [csv_field(chunk[name].combine_chunks()) for name in chunk.column_names]
            lines = pc.binary_join_element_wise(*fields, ",")
            file.write("\n".join(lines.to_pylist()) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="the CSV file to write")
    parser.add_argument("--rows", type=int, default=1_204_025, help="number of tracks (Kaggle's: 1,204,025)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    write_synthetic_catalogue(args.path, args.rows, args.seed)
    print(f"wrote {args.rows:,} synthetic tracks to {args.path}")


if __name__ == "__main__":
    main()
