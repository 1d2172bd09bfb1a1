"""The reward of each track: engagement (interaction score) plus representativeness (proximity).

    interaction_score = listened_weight * percentage_listened + liked_weight * liked
    proximity_score   = 1 - d / d_max(cluster)      (1 for a one-track cluster or d_max = 0)
    reward            = interaction_weight * interaction_score + proximity_weight * proximity_score
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.data import FEATURES
from helpers.paths import ARTEFACTS, missing_artefact, produced_by, write_text_atomic
from helpers.validation import check_columns, check_finite, check_unique_ids, latent_columns

# Expected and mean shares computed in floating point may leave [0, 1] by a rounding error.
RANGE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class RewardWeights:
    """The four weights of the reward; all finite and non-negative."""

    listened_weight: float = 100.0
    liked_weight: float = 50.0
    interaction_weight: float = 0.8
    proximity_weight: float = 0.2

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{field.name} must be a finite, non-negative number, got {value}")

    def save(self, path: str | Path) -> Path:
        """Write the weights as JSON (atomically), so every later step computes the same rewards."""
        return write_text_atomic(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "RewardWeights":
        """The weights notebook 05 saved; a clear error when the file is missing or not such a file."""
        path = Path(path)
        if not path.exists():
            raise missing_artefact(path, ARTEFACTS["reward_weights"].produced_by)
        try:
            document = json.loads(path.read_text())
            return cls(**{field.name: float(document[field.name]) for field in fields(cls)})
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a reward weights file written by notebook 05 ({error!r}); "
                             f"re-run notebook {ARTEFACTS['reward_weights'].produced_by}.") from None

    def formula(self) -> str:
        """The reward formula with these weights, as LaTeX for a notebook's Markdown."""
        return (f"$$\\text{{interaction\\_score}} = {self.listened_weight:g}\\cdot\\text{{percentage\\_listened}}"
                f" + {self.liked_weight:g}\\cdot\\text{{liked}}, \\qquad "
                f"\\text{{reward}} = {self.interaction_weight:g}\\cdot\\text{{interaction\\_score}}"
                f" + {self.proximity_weight:g}\\cdot\\text{{proximity\\_score}}$$")


def interaction_score(percentage_listened: np.ndarray, liked: np.ndarray,
                      weights: RewardWeights = RewardWeights()) -> np.ndarray:
    """listened_weight * percentage_listened + liked_weight * liked, element-wise.

    `liked` is 0 or 1 for one play; a like rate or a like probability in [0, 1] gives the mean
    or the expected score (with `percentage_listened` the mean or expected share heard). A NaN
    `liked` (not known) gives a NaN score. Every interaction score of the project is this one.
    """
    percentage_listened = np.asarray(percentage_listened, dtype=np.float64)
    liked = np.asarray(liked, dtype=np.float64)
    if not ((percentage_listened >= -RANGE_TOLERANCE) & (percentage_listened <= 1 + RANGE_TOLERANCE)).all():
        raise ValueError("percentage_listened must lie in [0, 1]")
    if not (np.isnan(liked) | ((liked >= -RANGE_TOLERANCE) & (liked <= 1 + RANGE_TOLERANCE))).all():
        raise ValueError("liked must be 0 or 1 (or a like rate in [0, 1], NaN when unknown)")
    return weights.listened_weight * percentage_listened + weights.liked_weight * liked


def interaction_scores(interactions: pd.DataFrame, weights: RewardWeights) -> pd.Series:
    """The interaction score of each logged record (`helpers.feedback`); NaN where `liked` is
    unknown (a failed library check is not scored as "not liked")."""
    liked = pd.to_numeric(interactions["liked"]).astype("Float64").to_numpy(np.float64, na_value=np.nan)
    return pd.Series(interaction_score(interactions["percentage_listened"], liked, weights),
                     index=interactions.index, name="interaction_score")


def proximity_score(distance_to_centroid: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    """1 - d / d_max within each cluster: 1 at the centroid, 0 for the cluster's farthest track.

    A cluster of one track, or whose tracks all sit on the centroid (d_max = 0), scores 1.
    """
    distance = np.asarray(distance_to_centroid, dtype=np.float64)
    cluster = np.asarray(cluster)
    if distance.shape != cluster.shape or distance.ndim != 1:
        raise ValueError(f"distance_to_centroid and cluster must be 1-D and of the same length, "
                         f"got shapes {distance.shape} and {cluster.shape}")
    if not (np.isfinite(distance).all() and (distance >= 0).all()):
        raise ValueError("distance_to_centroid must be finite and non-negative")
    _, members = np.unique(cluster, return_inverse=True)
    d_max = np.zeros(members.max(initial=-1) + 1)
    np.maximum.at(d_max, members, distance)
    alone = np.bincount(members)[members] == 1
    d_max_per_track = d_max[members]
    scaled = np.divide(distance, d_max_per_track, out=np.zeros_like(distance),
                       where=d_max_per_track > 0)
    return np.where(alone, 1.0, 1.0 - scaled)


def reward(interaction: np.ndarray, proximity: np.ndarray,
           weights: RewardWeights = RewardWeights()) -> np.ndarray:
    """interaction_weight * interaction_score + proximity_weight * proximity_score, element-wise."""
    return (weights.interaction_weight * np.asarray(interaction, dtype=np.float64)
            + weights.proximity_weight * np.asarray(proximity, dtype=np.float64))


def reward_range(weights: RewardWeights = RewardWeights()) -> tuple[float, float]:
    """Smallest and largest possible reward: skipped, far from the centroid / played, liked, central."""
    largest_interaction = weights.listened_weight + weights.liked_weight
    return 0.0, weights.interaction_weight * largest_interaction + weights.proximity_weight


def _check_table(frame: pd.DataFrame, name: str, columns: list[str]) -> None:
    """Required columns present and every id unique in one input table."""
    check_columns(frame, ["id", *columns], name, hint=f"Re-run {produced_by(name)}.")
    check_unique_ids(frame, name)


def _check_same_ids(frame: pd.DataFrame, name: str, expected: pd.Index) -> None:
    """`frame` holds exactly the ids of tracks.parquet."""
    ids = pd.Index(frame["id"])
    missing, extra = expected.difference(ids), ids.difference(expected)
    if len(missing) or len(extra):
        example = (missing if len(missing) else extra)[0]
        raise ValueError(
            f"{name} does not hold the same tracks as tracks.parquet: {len(missing)} ids missing, "
            f"{len(extra)} extra (e.g. {example!r}). Re-run {produced_by(name)} and the notebooks "
            "after it on the same tracks.parquet.")


# What a listener can read about a track, carried from tracks.parquet where the catalogue has it.
NAME_COLUMNS = ("name", "album", "genre")


def build_rewards_table(tracks: pd.DataFrame, latents: pd.DataFrame, clusters: pd.DataFrame,
                        listeners: pd.DataFrame,
                        *, weights: RewardWeights = RewardWeights()) -> pd.DataFrame:
    """Join the four inputs on `id` and add interaction_score, proximity_score and reward.

    Rows keep tracks.parquet's order. Columns: id, artist, [name], [album], [genre] (each
    when tracks.parquet has it), the 11 features,
    latent_0 ... latent_{d-1}, cluster, distance_to_centroid, proximity_score, umap_x, umap_y,
    percentage_listened, liked, interaction_score, reward.
    """
    track_columns = ["artist", *(c for c in NAME_COLUMNS if c in tracks.columns), *FEATURES]
    latent_cols = latent_columns(latents, "latents.parquet")
    inputs = {
        "tracks.parquet": (tracks, track_columns),
        "latents.parquet": (latents, latent_cols),
        "clusters.parquet": (clusters, ["cluster", "distance_to_centroid", "umap_x", "umap_y"]),
        "listeners.parquet": (listeners, ["cluster", "percentage_listened", "liked"]),
    }
    for name, (frame, columns) in inputs.items():
        _check_table(frame, name, columns)
    expected = pd.Index(tracks["id"])
    for name, (frame, _) in list(inputs.items())[1:]:
        _check_same_ids(frame, name, expected)

    table = tracks[["id", *track_columns]]
    for frame, columns in [(latents, latent_cols),
                           (clusters, ["cluster", "distance_to_centroid", "umap_x", "umap_y"]),
                           (listeners.rename(columns={"cluster": "listener_cluster"}),
                            ["listener_cluster", "percentage_listened", "liked"])]:
        table = table.merge(frame[["id", *columns]], on="id", how="left", validate="one_to_one")
    disagree = table["cluster"].to_numpy() != table["listener_cluster"].to_numpy()
    if disagree.any():
        raise ValueError(f"listeners.parquet and clusters.parquet give different clusters to "
                         f"{int(disagree.sum())} tracks: re-run 04_listeners after 03_clusters.")

    table["proximity_score"] = proximity_score(table["distance_to_centroid"], table["cluster"])
    table["interaction_score"] = interaction_score(table["percentage_listened"], table["liked"], weights)
    table["reward"] = reward(table["interaction_score"], table["proximity_score"], weights)
    scores = ["proximity_score", "interaction_score", "reward"]
    check_finite(table[scores].to_numpy(dtype=np.float64), "the rewards table", scores)
    order = ["id", *track_columns, *latent_cols, "cluster", "distance_to_centroid",
             "proximity_score", "umap_x", "umap_y", "percentage_listened", "liked",
             "interaction_score", "reward"]
    return table[order].reset_index(drop=True)
