"""Clusters of tracks in the latent space, each track's distance to its centroid, and a 2-D map.

K-Means places `n_clusters` centroids mu_c and gives each track's latent vector z_i to its
nearest one, minimising the inertia

    J = sum_i ||z_i - mu_c(i)||^2.

The distance d_i = ||z_i - mu_c(i)|| says how typical a track is of its cluster; the rewards
turn it into a proximity score. UMAP then draws the latent space in two dimensions for people
to look at; the agent never sees that map.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans, MiniBatchKMeans
from tqdm.auto import tqdm

from helpers.env import LATENT_DTYPE, nearest_others
from helpers.validation import check_finite, check_unique_ids, latent_columns, numeric_matrix

ALGORITHMS = ("auto", "kmeans", "minibatch")
MINIBATCH_THRESHOLD = 200_000  # 'auto' switches to MiniBatchKMeans above this many tracks
MINIBATCH_SIZE = 4096
PLACEMENT_CHUNK = 100_000


def sample_indices(n_items: int, sample_size: int | None, seed: int) -> np.ndarray:
    """Sorted positions of a seeded sample of `sample_size` items (all of them when None or larger)."""
    if sample_size is None or sample_size >= n_items:
        return np.arange(n_items)
    if sample_size < 1:
        raise ValueError(f"sample_size must be at least 1, got {sample_size}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_items, size=sample_size, replace=False))


def latent_matrix(latents: pd.DataFrame, source: str = "latents.parquet") -> np.ndarray:
    """The latent vectors as a float64 array (n_tracks, d), after checking ids and values."""
    check_unique_ids(latents, source)
    return numeric_matrix(latents, latent_columns(latents, source), source)


def resolve_algorithm(algorithm: str, n_tracks: int,
                      minibatch_threshold: int = MINIBATCH_THRESHOLD) -> str:
    """'kmeans' or 'minibatch'; 'auto' picks MiniBatchKMeans above `minibatch_threshold` tracks."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if algorithm == "auto":
        return "minibatch" if n_tracks > minibatch_threshold else "kmeans"
    return algorithm


def distances_to_centroids(latents: np.ndarray, labels: np.ndarray,
                           centroids: np.ndarray) -> np.ndarray:
    """Euclidean distance from each latent vector to the centroid of its cluster."""
    return np.linalg.norm(latents - centroids[labels], axis=1)


@dataclass(frozen=True)
class Clustering:
    """A fitted clustering: a label and a distance per track, a centroid per cluster."""

    labels: np.ndarray
    centroids: np.ndarray
    distance_to_centroid: np.ndarray
    algorithm: str

    @property
    def n_clusters(self) -> int:
        return len(self.centroids)

    @property
    def inertia(self) -> float:
        """Sum of squared distances to the centroids (the K-Means objective J)."""
        return float(np.sum(self.distance_to_centroid ** 2))

    @property
    def sizes(self) -> np.ndarray:
        """Number of tracks per cluster, indexed by cluster id."""
        return np.bincount(self.labels, minlength=self.n_clusters)


def fit_kmeans(latents: np.ndarray, n_clusters: int = 20, n_init: int = 10,
               algorithm: str = "auto", *, seed: int = 42,
               batch_size: int = MINIBATCH_SIZE) -> Clustering:
    """Cluster the latent vectors with K-Means (or MiniBatchKMeans), `n_init` seeded restarts."""
    latents = np.asarray(latents, dtype=np.float64)
    if latents.ndim != 2:
        raise ValueError(f"latents must be a 2-D array (n_tracks, d), got shape {latents.shape}")
    if not 1 <= n_clusters <= len(latents):
        raise ValueError(f"n_clusters must be between 1 and the number of tracks "
                         f"({len(latents)}), got {n_clusters}")
    if n_init < 1:
        raise ValueError(f"n_init must be at least 1, got {n_init}")
    chosen = resolve_algorithm(algorithm, len(latents))
    if chosen == "kmeans":
        model = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed)
    else:
        model = MiniBatchKMeans(n_clusters=n_clusters, n_init=n_init, batch_size=batch_size,
                                random_state=seed)
    labels = model.fit_predict(latents).astype(np.int64)
    centroids = model.cluster_centers_
    return Clustering(labels, centroids, distances_to_centroids(latents, labels, centroids), chosen)


def compare_kmeans_inertia(latents: np.ndarray, n_clusters: int = 20, n_init: int = 10,
                           sample_size: int | None = None, *, seed: int = 42) -> pd.DataFrame:
    """Full K-Means against MiniBatchKMeans on the same (optionally sampled) tracks.

    One row per algorithm: tracks used, inertia, inertia relative to full K-Means, fit seconds.
    Both inertias are computed the same way, from each track's distance to its nearest centroid.
    """
    sample = np.asarray(latents, dtype=np.float64)[sample_indices(len(latents), sample_size, seed)]
    rows = []
    for algorithm in ("kmeans", "minibatch"):
        started = time.perf_counter()
        clustering = fit_kmeans(sample, n_clusters, n_init, algorithm, seed=seed)
        rows.append({"algorithm": algorithm, "n_tracks": len(sample),
                     "inertia": clustering.inertia, "seconds": time.perf_counter() - started})
    table = pd.DataFrame(rows)
    table.insert(3, "inertia_vs_kmeans", table["inertia"] / table["inertia"].iloc[0])
    return table


def cluster_table(ids: np.ndarray, clustering: Clustering, latent_map: LatentMap) -> pd.DataFrame:
    """The rows of clusters.parquet: id, cluster, distance_to_centroid, umap_x, umap_y, umap_sample;
    a ValueError if a distance or a map coordinate is not finite."""
    check_finite(np.column_stack([clustering.distance_to_centroid, latent_map.xy]), "the clustering of the latents",
                 ["distance_to_centroid", "umap_x", "umap_y"])
    return pd.DataFrame({"id": ids, "cluster": clustering.labels,
                         "distance_to_centroid": clustering.distance_to_centroid,
                         "umap_x": latent_map.xy[:, 0], "umap_y": latent_map.xy[:, 1],
                         "umap_sample": latent_map.fitted})


@dataclass(frozen=True)
class LatentMap:
    """2-D coordinates of every track, and which tracks UMAP was fitted on (the others are placed)."""

    xy: np.ndarray
    fitted: np.ndarray

    @property
    def n_fitted(self) -> int:
        return int(self.fitted.sum())

    def describe(self) -> str:
        """One sentence for figure titles: what the map was fitted on and what it shows."""
        n_tracks = len(self.xy)
        if self.n_fitted == n_tracks:
            return f"UMAP fitted on all {n_tracks:,} tracks"
        return f"UMAP fitted on a seeded sample of {self.n_fitted:,} of {n_tracks:,} tracks; the map shows that sample"


def place_by_neighbours(fitted_latents: np.ndarray, fitted_xy: np.ndarray, latents: np.ndarray,
                        n_neighbors: int = 10, *, progress: bool = True) -> np.ndarray:
    """Map positions for tracks UMAP was not fitted on: the inverse-distance weighted mean of the
    positions of their `n_neighbors` nearest fitted tracks in latent space.

    UMAP's own `transform` starts from a similar weighted mean (with its fuzzy-graph weights) and
    refines it with further optimisation epochs; this takes seconds on a million tracks where
    `transform` takes many minutes. A track that coincides with a fitted one gets exactly that
    track's position.
    """
    from sklearn.neighbors import NearestNeighbors

    n_neighbors = min(n_neighbors, len(fitted_latents))
    index = NearestNeighbors(n_neighbors=n_neighbors).fit(fitted_latents)
    xy = np.empty((len(latents), 2), dtype=np.float64)
    starts = range(0, len(latents), PLACEMENT_CHUNK)
    for start in tqdm(starts, desc="placing the other tracks", unit="chunk", disable=not progress or len(starts) < 2):
        distances, neighbours = index.kneighbors(latents[start:start + PLACEMENT_CHUNK])
        weights = 1.0 / np.maximum(distances, 1e-12)
        weights[distances[:, 0] < 1e-12] = np.eye(n_neighbors)[0]  # an exact match takes its twin's place
        weights /= weights.sum(axis=1, keepdims=True)
        xy[start:start + PLACEMENT_CHUNK] = np.einsum("nk,nkd->nd", weights, fitted_xy[neighbours])
    return xy


def umap_map(latents: np.ndarray, n_neighbors: int = 15, min_dist: float = 0.1,
             sample_size: int | None = 50_000, *, seed: int = 42, progress: bool = True) -> LatentMap:
    """A seeded 2-D UMAP map of the latent vectors.

    With `sample_size` smaller than the catalogue, UMAP is fitted on a seeded sample of that
    many tracks and the other tracks are placed with `place_by_neighbours`, which keeps the map
    affordable on a million tracks (UMAP's fit grows faster than linearly with the tracks, and
    its `transform` took 460 s for 1.15 million tracks on 2 cores).
    """
    import umap  # imported here: its numba compilation takes seconds

    latents = np.asarray(latents, dtype=np.float64)
    fitted = np.zeros(len(latents), dtype=bool)
    fitted[sample_indices(len(latents), sample_size, seed)] = True
    if not 2 <= n_neighbors < fitted.sum():
        raise ValueError(f"umap n_neighbors must be between 2 and the number of fitted tracks "
                         f"minus one ({fitted.sum() - 1}), got {n_neighbors}")
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist,
                        random_state=seed, transform_seed=seed, verbose=False)
    xy = np.empty((len(latents), 2), dtype=np.float64)
    with warnings.catch_warnings():
        # A random_state makes UMAP single-threaded, and it says so every time.
        warnings.filterwarnings("ignore", message="n_jobs value .* overridden")
        xy[fitted] = reducer.fit_transform(latents[fitted])
    if not fitted.all():
        xy[~fitted] = place_by_neighbours(latents[fitted], xy[fitted], latents[~fitted], progress=progress)
    return LatentMap(xy, fitted)


def gridworld_edges(ids: np.ndarray, latents: np.ndarray, n_tracks: int = 6, k: int = 4,
                    *, seed: int = 42) -> pd.DataFrame:
    """Arrows from `n_tracks` seeded random tracks to their `k` nearest neighbours in latent space.

    The targets are the environment's `k` candidates at a playlist's first pick from each source
    (`helpers.env.nearest_others` on the latents at the environment's precision, ties by row).
    Columns: source (S1, S2, ...), source_id, target_id, rank (1 = nearest), latent_distance.
    """
    if not 1 <= n_tracks <= len(latents):
        raise ValueError(f"n_tracks must be between 1 and the number of tracks ({len(latents)}), "
                         f"got {n_tracks}")
    sources = np.random.default_rng(seed).choice(len(latents), size=n_tracks, replace=False)
    latents = np.asarray(latents, dtype=LATENT_DTYPE).astype(np.float64)
    targets = nearest_others(latents, sources, k)
    distances = np.linalg.norm(latents[targets] - latents[sources, None], axis=2)
    ids = np.asarray(ids)
    return pd.DataFrame({
        "source": np.repeat([f"S{number}" for number in range(1, n_tracks + 1)], k),
        "source_id": np.repeat(ids[sources], k),
        "target_id": ids[targets.ravel()],
        "rank": np.tile(np.arange(1, k + 1), n_tracks),
        "latent_distance": distances.ravel(),
    })
