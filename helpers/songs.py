"""Songs, not ids: find the catalogue rows that are one recording, merge them, keep every id usable.

A catalogue often lists one recording under several Spotify ids (single and album, deluxe
edition, compilation, a market's relinked copy). Two rows are the same **song** when

* all 11 audio features are equal (Spotify computed them from the same audio), or
* the catalogue has names and both rows have the same normalised title (`normalise_titles`)
  by the same set of normalised artists,

and, transitively, when a chain of such pairs links them (connected components of the union of
both relations). Each song keeps one representative row; the alias table maps every id of the
input catalogue to its song's id (the representative's own id included), so an id a user, the
feedback log or Spotify gives still resolves (`resolve_song_ids`).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from helpers.data import FEATURES, arrow_array, artist_lists, joined_per_group, normalise_names
from helpers.paths import save_parquet
from helpers.validation import check_columns

ALIAS_COLUMNS = ("id", "song_id")

# What a version suffix says without changing the recording: a remaster, an edit for radio, the
# single or album version, a live tag, a featured artist. Remixes, acoustic and instrumental
# versions are other recordings and stay apart.
_VERSION = (
    r"(?:\d{4} )?(?:digital )?remaster(?:ed|izado)?(?: \d{4})?(?: version)?"
    r"|radio (?:edit|mix|version)|single (?:version|edit)|(?:explicit |clean )?album version"
    r"|original (?:album )?(?:version|mix)|edit(?:ed)?|explicit|clean|mono|stereo"
    r"|live(?: (?:at|from|in) [^\)\]]*)?|live version|ao vivo|en vivo"
    r"|(?:feat\.?|ft\.?|featuring|with) [^\)\]]*"
)
_BRACKETED_VERSION = rf"\s*[\(\[]\s*(?:{_VERSION})\s*[\)\]]"
_DASHED_VERSION = rf"\s+-\s+(?:{_VERSION})\s*$"
_NOT_A_LETTER_OR_DIGIT = r"[^\p{L}\p{N}]+"


def normalise_titles(titles: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Titles in the form used to compare songs.

    Case and accents are ignored (as for artists, `normalise_names`); version tags that do not
    change the recording are removed: in brackets anywhere (`(feat. X)`, `[Live]`,
    `(Remastered)`) and after ` - ` at the end (` - Remastered 2011`, ` - Radio Edit`,
    ` - Single Version`, ` - Live at Wembley`), up to two in a row; then every run of
    punctuation and spaces becomes one space. `'Halo - 2011 Remaster'` and `'HALO'` both give
    `'halo'`; `'Halo - Remix'` stays `'halo remix'`.
    """
    text = normalise_names(titles)
    text = _replace_where(text, r"[\(\[]", _BRACKETED_VERSION, "")
    for _ in range(2):
        text = _replace_where(text, " - ", _DASHED_VERSION, "")
    text = _replace_where(text, r"[^a-z0-9 ]|  |^ | $", _NOT_A_LETTER_OR_DIGIT, " ")
    return pc.utf8_trim_whitespace(text)


def _replace_where(text: pa.Array, needle: str, pattern: str, replacement: str) -> pa.Array:
    """`replace_substring_regex`, run only on the texts where the cheaper regex `needle`
    matches (most titles have no tag and no punctuation)."""
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    mask = pc.fill_null(pc.match_substring_regex(text, needle), False)
    if not pc.any(mask).as_py():
        return text
    replaced = pc.replace_substring_regex(text.filter(mask), pattern=pattern, replacement=replacement)
    return pc.replace_with_mask(text, mask, replaced)


@dataclass(frozen=True)
class MergeReport:
    """How many ids became how many songs, and by which rule."""

    ids: int
    songs: int
    feature_groups: int  # songs if only identical features counted

    @property
    def merged_by_features(self) -> int:
        """Rows that disappeared because all 11 features equal another row's."""
        return self.ids - self.feature_groups

    @property
    def merged_by_title(self) -> int:
        """Further rows that disappeared because of the same title by the same artists."""
        return self.feature_groups - self.songs

    def __str__(self) -> str:
        return (f"{self.ids:,} ids became {self.songs:,} songs: {self.merged_by_features:,} merged "
                f"because all 11 features equal another id's, {self.merged_by_title:,} more "
                "because of the same title by the same artists.")


def _feature_groups(tracks: pd.DataFrame) -> np.ndarray:
    """A label per row, equal for rows whose 11 features are all equal.

    Rows are grouped by a 64-bit hash of their features, then checked against their group's
    first row; only if two different rows ever shared a hash are whole rows compared (sorted).
    """
    values = tracks[list(FEATURES)].to_numpy(dtype=np.float64) + 0.0  # -0.0 becomes 0.0
    hashes = pd.util.hash_pandas_object(pd.DataFrame(values), index=False).to_numpy()
    labels = pd.factorize(hashes)[0]
    first = np.empty(int(labels.max()) + 1 if len(labels) else 0, dtype=np.int64)
    first[labels[::-1]] = np.arange(len(labels))[::-1]
    if (values == values[first[labels]]).all():
        return labels
    rows = np.ascontiguousarray(values).view(np.dtype((np.void, values.itemsize * values.shape[1]))).ravel()
    return np.unique(rows, return_inverse=True)[1].ravel()


def _artist_keys(tracks: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each row's set of normalised artists as one number, and which rows have an artist.

    A row's number is the sum (modulo 2**64) of a seeded random 64-bit number per distinct
    normalised name, so the order of the names does not matter and two different sets get the
    same number with a probability of about 2**-64 per pair.
    """
    lists = artist_lists(tracks)
    listed = pc.dictionary_encode(pc.list_flatten(lists))
    name_code = pd.factorize(normalise_names(listed.dictionary).to_pandas())[0]
    weights = np.random.default_rng(0).integers(0, 2**64, size=len(name_code), dtype=np.uint64)
    present = listed.indices.is_valid().to_numpy(zero_copy_only=False)
    values = weights[name_code[listed.indices.fill_null(0).to_numpy()[present]]]
    parents = pc.list_parent_indices(lists).to_numpy()[present]
    starts = np.flatnonzero(np.diff(parents, prepend=-1) != 0)
    keys = np.zeros(len(tracks), dtype=np.uint64)
    has_artist = np.zeros(len(tracks), dtype=bool)
    if len(values):
        keys[parents[starts]] = np.add.reduceat(values, starts)
        has_artist[parents[starts]] = True
    return keys, has_artist


def _title_groups(tracks: pd.DataFrame) -> np.ndarray | None:
    """A label per row, equal for the same normalised title by the same artists; rows without a
    title or an artist get a label of their own. None when the catalogue has no names."""
    if "name" not in tracks.columns:
        return None
    titles = pc.dictionary_encode(arrow_array(tracks["name"], pa.string()))
    normalised = normalise_titles(titles.dictionary)
    title_code = pd.factorize(pc.if_else(pc.equal(normalised, ""), None, normalised).to_pandas())[0]
    row_title = np.full(len(tracks), -1, dtype=np.int64)
    named = titles.indices.is_valid().to_numpy(zero_copy_only=False)
    row_title[named] = title_code[titles.indices.fill_null(0).to_numpy()[named]]
    artists, has_artist = _artist_keys(tracks)
    labels = pd.DataFrame({"title": row_title, "artists": artists}).groupby(
        ["title", "artists"], sort=False).ngroup().to_numpy(copy=True)
    alone = (row_title < 0) | ~has_artist
    labels[alone] = labels.max() + 1 + np.arange(int(alone.sum()))
    return labels


def recording_groups(tracks: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Label each row with its song (connected components of both relations, labels 0 …
    n_songs−1), and with its group of identical features alone."""
    by_features = _feature_groups(tracks)
    n_rows = len(tracks)
    relations = [by_features]
    by_title = _title_groups(tracks)
    if by_title is not None:
        relations.append(by_title + int(by_features.max()) + 1)
    # A bipartite graph: row i is linked to the node of each group it belongs to.
    rows = np.concatenate([np.arange(n_rows)] * len(relations))
    groups = n_rows + np.concatenate(relations)
    size = int(groups.max()) + 1 if n_rows else 0
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, groups)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    return pd.factorize(labels[:n_rows])[0], by_features


def merge_recordings(catalogue: pd.DataFrame, kept: pd.DataFrame | None = None
                     ) -> tuple[pd.DataFrame, pd.DataFrame, MergeReport]:
    """Merge the rows of one recording into one song row.

    `catalogue` is every row that was read (unique ids); `kept` the rows the filter kept (a
    subset by id, with the filter's `artist` spelling; default: all of `catalogue`). Songs are
    found on the whole catalogue, so a kept track's twin that the filter dropped (another
    year's compilation) still resolves to it. Each song with at least one kept row becomes one
    row of `kept`: the most popular kept row where the catalogue has `popularity`, else the
    first kept row in file order; its `genre` becomes every genre of the song's rows.

    Returns the songs (rows in `kept`'s order), the alias table (`id`, `song_id`: every
    catalogue id whose song was kept, in catalogue order) and a `MergeReport` over `kept`.
    """
    kept = catalogue if kept is None else kept
    song, by_features = recording_groups(catalogue)
    positions = pd.Index(catalogue["id"]).get_indexer(kept["id"])
    if (positions < 0).any():
        raise ValueError("merge_recordings: `kept` holds ids that are not in `catalogue`.")
    kept_song = song[positions]
    order = np.arange(len(kept))
    if "popularity" in kept.columns:
        popularity = kept["popularity"].to_numpy(dtype=np.float64, na_value=-np.inf)
        order = np.lexsort((order, -popularity))
    first = order[np.unique(kept_song[order], return_index=True)[1]]
    is_representative = np.zeros(len(kept), dtype=bool)
    is_representative[first] = True
    songs = kept.loc[is_representative].copy()
    representative = np.full(int(song.max()) + 1, None, dtype=object)
    representative[kept_song[first]] = kept["id"].to_numpy()[first]
    has_kept_row = np.zeros(len(representative), dtype=bool)
    has_kept_row[kept_song] = True

    known = has_kept_row[song]
    aliases = pd.DataFrame({"id": catalogue["id"].to_numpy()[known], "song_id": representative[song[known]]})
    if "genre" in catalogue.columns:
        genres = pd.Series(catalogue["genre"].to_numpy()).str.split(", ").explode()
        joined = joined_per_group(genres, song[genres.index.to_numpy()])
        songs["genre"] = joined.reindex(kept_song[is_representative]).to_numpy()
    report = MergeReport(len(kept), len(songs), len(np.unique(by_features[positions])))
    return songs.reset_index(drop=True), aliases, report


def save_aliases(aliases: pd.DataFrame, path: str | Path) -> Path:
    """Write the alias table (`id`, `song_id`) to parquet, atomically."""
    return save_parquet(aliases[list(ALIAS_COLUMNS)], path)


def resolve_song_ids(ids: Iterable[str] | str, aliases: pd.DataFrame | str | Path) -> list[str] | str:
    """The song id of each id (any id of the input catalogue), in order; one id gives one id.

    `aliases` is the alias table or the path of `aliases.parquet`. An id that is not in it (not
    in the catalogue, or its song was filtered out in notebook 01) is a ValueError naming it.
    """
    source = str(aliases) if isinstance(aliases, (str, Path)) else "the alias table"
    if isinstance(aliases, (str, Path)):
        aliases = pd.read_parquet(aliases)
    check_columns(aliases, ALIAS_COLUMNS, source, hint="notebook 01 writes aliases.parquet")
    single = isinstance(ids, str)
    wanted = pd.Index([ids] if single else list(ids))
    position = pd.Index(aliases["id"]).get_indexer(wanted)
    if (position < 0).any():
        unknown = wanted[position < 0]
        raise ValueError(f"{len(unknown)} track id(s) are not in the catalogue of notebook 01, "
                         f"e.g. {unknown[0]!r}: neither a song nor one of its aliases.")
    songs = aliases["song_id"].to_numpy()[position].tolist()
    return songs[0] if single else songs


def log_with_song_ids(log: pd.DataFrame, aliases: pd.DataFrame | str | Path) -> pd.DataFrame:
    """The feedback log with `track_id` and every id in `candidates` replaced by its song's id.

    A log may hold other ids of a song than the one the chain trains on: records written before
    notebook 01 merged the catalogue's releases, or by a run on another filter. Raises a
    ValueError naming an id that is not in the alias table.
    """
    if isinstance(aliases, (str, Path)):
        aliases = pd.read_parquet(aliases)
    resolved = log.reset_index(drop=True)
    resolved["track_id"] = resolve_song_ids(log["track_id"], aliases)
    if "candidates" in log.columns:
        listed = resolved["candidates"].explode().dropna()
        songs = pd.Series(resolve_song_ids(listed, aliases), index=listed.index).groupby(level=0).agg(list)
        resolved["candidates"] = [songs.get(row, []) for row in resolved.index]
    return resolved
