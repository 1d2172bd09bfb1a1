"""A planned playlist: the recommender's steps, checked, and shown to people as text and a table.

A playlist is the list of the recommender's steps (`helpers.recommend.PlaylistStep`): position
0 is the first step's `track_id` (the start track), position p >= 1 is step p's `chosen` track,
picked among that step's `candidates` with the probabilities `probs`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import pandas as pd

if TYPE_CHECKING:
    from helpers.recommend import PlaylistStep


class PlaylistRecommender(Protocol):
    """What a session needs from a `helpers.recommend.Recommender` (tests pass small fakes)."""

    track_table: pd.DataFrame
    model_version: str
    n_candidates: int

    def playlist(self, start_id: str | None = None, length: int = 10, greedy: bool = True,
                 seed: int | None = None) -> list[PlaylistStep]: ...

    def latent(self, track_id: str) -> list[float]: ...

    def song_id(self, track_id: str) -> str: ...


def indexed_by_id(track_table: pd.DataFrame) -> pd.DataFrame:
    """The catalogue indexed by track id (it may come keyed by an `id` column or by its index)."""
    return track_table.set_index("id") if "id" in track_table.columns else track_table


def playlist_tracks(steps: Sequence[PlaylistStep]) -> list[str]:
    """The playlist's track ids in playing order: the start track, then every step's choice."""
    return [steps[0]["track_id"], *(step["chosen"] for step in steps)]


def choice_at(steps: Sequence[PlaylistStep], position: int) -> tuple[list[str], list[float]]:
    """The candidates and probabilities the track at `position` was chosen with (none for the start)."""
    return ([], []) if position == 0 else (steps[position - 1]["candidates"], steps[position - 1]["probs"])


def choice_probability(step: PlaylistStep) -> float:
    """The policy's probability of the step's choice."""
    return step["probs"][step["candidates"].index(step["chosen"])]


def check_length(recommender: PlaylistRecommender, length: int) -> int:
    """`length` if the catalogue can fill a playlist that long with full candidate sets, else ValueError.

    Each pick needs `n_candidates` tracks not played yet, so at most n_tracks - n_candidates + 1
    tracks fit; checking first keeps a huge length from building (and caching) a huge neighbour
    index before it fails.
    """
    longest = len(recommender.track_table) - recommender.n_candidates + 1
    if not 2 <= length <= longest:
        raise ValueError(f"a playlist has 2 to {longest} tracks with this catalogue of {len(recommender.track_table)} "
                         f"tracks ({recommender.n_candidates} candidates per pick), got length={length}")
    return length


def plan_playlist(recommender: PlaylistRecommender, start_id: str | None = None, length: int = 10,
                  greedy: bool = False, *, seed: int | None = None) -> list[PlaylistStep]:
    """The recommender's playlist from `start_id` (random when None), checked.

    `start_id` may be any id of notebook 01's catalogue: the recommender resolves it to its song.
    `greedy=False` draws each choice from the policy's probabilities, so the logged `probs` are
    the probabilities the tracks were really chosen with (what off-policy evaluation needs);
    `greedy=True` takes the most probable candidate every time.
    """
    check_length(recommender, length)
    if start_id is not None:
        start_id = recommender.song_id(start_id)
    steps = recommender.playlist(start_id=start_id, length=length, greedy=greedy, seed=seed)
    if len(steps) != length - 1:
        raise ValueError(f"the recommender returned {len(steps)} steps for a playlist of {length} tracks "
                         f"(expected {length - 1})")
    for position, step in enumerate(steps, start=1):
        if position > 1 and step["track_id"] != steps[position - 2]["chosen"]:
            raise ValueError(f"step {position} starts from {step['track_id']}, but the playlist is at "
                             f"{steps[position - 2]['chosen']}")
        if step["chosen"] not in step["candidates"] or len(step["candidates"]) != len(step["probs"]):
            raise ValueError(f"step {position} chose {step['chosen']} outside its {len(step['candidates'])} "
                             f"candidates (or gave {len(step['probs'])} probabilities)")
    track_ids = playlist_tracks(steps)
    if len(set(track_ids)) != len(track_ids):
        raise ValueError(f"the playlist repeats a track: {track_ids}")
    return steps


def track_label(track_id: str, name: str | None = None, artist: str | None = None) -> str:
    """'Name by Artist (id)' with what is known; the id alone when nothing is."""
    known = " by ".join(str(part) for part in (name, artist) if part is not None and not pd.isna(part))
    return f"{known} ({track_id})" if known else track_id


def format_steps(steps: Sequence[PlaylistStep], track_table: pd.DataFrame | None = None) -> str:
    """Each step of the policy: the current track, the candidates by probability, the choice.

    Tracks are named from `track_table` (its `name` and `artist`) when given, else the current and
    the chosen track from the steps' own names (`track_name`, `chosen_name`, ...)."""
    known: dict[str, tuple[str | None, str | None]] = {}
    for step in steps:
        known[step["track_id"]] = (step.get("track_name"), step.get("track_artist"))
        known[step["chosen"]] = (step.get("chosen_name"), step.get("chosen_artist"))
    if track_table is not None:
        tracks = indexed_by_id(track_table)
        ids = list(dict.fromkeys(track for step in steps for track in (step["track_id"], *step["candidates"])))
        columns = [tracks[c].reindex(ids) if c in tracks.columns else pd.Series(None, index=ids, dtype=object)
                   for c in ("name", "artist")]
        known |= dict(zip(ids, zip(*columns)))

    def label(track_id: str) -> str:
        return track_label(track_id, *known.get(track_id, (None, None)))

    lines = []
    for position, step in enumerate(steps, start=1):
        lines.append(f"step {position}: from {label(step['track_id'])}")
        for candidate, prob in sorted(zip(step["candidates"], step["probs"]), key=lambda pair: -pair[1]):
            lines.append(f"    {prob:6.3f}  {label(candidate)}{'  <- chosen' if candidate == step['chosen'] else ''}")
    return "\n".join(lines)


def missing_names(steps: Sequence[PlaylistStep], track_table: pd.DataFrame) -> list[str]:
    """Ids of the playlist's tracks whose name the catalogue does not know."""
    tracks = indexed_by_id(track_table)
    ids = playlist_tracks(steps)
    if "name" not in tracks.columns:
        return ids
    names = tracks["name"].reindex(ids)
    return [track_id for track_id, name in zip(ids, names) if pd.isna(name) or not str(name).strip()]


def playlist_table(steps: Sequence[PlaylistStep], track_table: pd.DataFrame,
                   names: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The playlist as a table: position, track_id, artist, [name], cluster, [reward], probability of the choice.

    Names come from the catalogue, else from `names` (e.g. looked up on Spotify); the column is
    left out when no name is known.
    """
    tracks = indexed_by_id(track_table)
    ids = playlist_tracks(steps)
    unknown = [track_id for track_id in ids if track_id not in tracks.index]
    if unknown:
        raise ValueError(f"tracks not in the catalogue: {unknown}")
    known = tracks["name"].reindex(ids) if "name" in tracks.columns else pd.Series(pd.NA, index=ids)
    name = [given if not pd.isna(given) else (names or {}).get(track_id, "") for track_id, given in known.items()]
    table = pd.DataFrame({"position": range(len(ids)), "track_id": ids,
                          "artist": tracks.loc[ids, "artist"].to_numpy()})
    if any(name):
        table["name"] = name
    table["cluster"] = tracks.loc[ids, "cluster"].to_numpy()
    if "reward" in tracks.columns:
        table["reward"] = tracks.loc[ids, "reward"].to_numpy()
    table["probability"] = [float("nan"), *(choice_probability(step) for step in steps)]
    return table
