"""K-Means clusters, distances to centroids, the UMAP map's row placement, latent neighbours."""
from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans

from helpers.clustering import (LatentMap, cluster_table, compare_kmeans_inertia, fit_kmeans, gridworld_edges,
                                latent_matrix, place_by_neighbours, resolve_algorithm,
                                sample_indices, umap_map)


@pytest.fixture(scope="module")
def latents() -> np.ndarray:
    """400 points in [0, 1]^5 around 4 centres."""
    rng = np.random.default_rng(7)
    centres = rng.uniform(0.2, 0.8, (4, 5))
    return np.clip(centres[rng.integers(0, 4, 400)] + rng.normal(0, 0.06, (400, 5)), 0, 1)


def latent_frame(values: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(values, columns=[f"latent_{j}" for j in range(values.shape[1])])
    frame.insert(0, "id", [f"t{i}" for i in range(len(values))])
    return frame


@pytest.mark.parametrize("algorithm", ["kmeans", "minibatch"])
def test_kmeans_is_deterministic_under_a_seed(latents, algorithm):
    first = fit_kmeans(latents, n_clusters=6, n_init=3, algorithm=algorithm, seed=3)
    second = fit_kmeans(latents, n_clusters=6, n_init=3, algorithm=algorithm, seed=3)
    assert first.algorithm == algorithm
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.centroids, second.centroids)


@pytest.mark.parametrize("algorithm", ["kmeans", "minibatch"])
def test_each_track_gets_its_nearest_centroid_and_that_distance(latents, algorithm):
    clustering = fit_kmeans(latents, n_clusters=6, n_init=2, algorithm=algorithm, seed=0)
    for i, point in enumerate(latents):
        distances = [np.sqrt(np.sum((point - centroid) ** 2)) for centroid in clustering.centroids]
        assert clustering.labels[i] == int(np.argmin(distances))
        assert clustering.distance_to_centroid[i] == pytest.approx(min(distances), abs=1e-12)
    assert clustering.sizes.sum() == len(latents) and clustering.sizes.min() > 0


def test_inertia_is_the_kmeans_objective(latents):
    clustering = fit_kmeans(latents, n_clusters=5, n_init=4, algorithm="kmeans", seed=1)
    reference = KMeans(n_clusters=5, n_init=4, random_state=1).fit(latents)
    assert clustering.inertia == pytest.approx(reference.inertia_, rel=1e-9)


def test_compare_kmeans_inertia_fits_both_on_the_same_seeded_sample(latents):
    table = compare_kmeans_inertia(latents, n_clusters=4, n_init=2, sample_size=150, seed=5)
    assert list(table["algorithm"]) == ["kmeans", "minibatch"]
    assert (table["n_tracks"] == 150).all()
    sample = latents[sample_indices(len(latents), 150, seed=5)]
    for row in table.itertuples():
        expected = fit_kmeans(sample, n_clusters=4, n_init=2, algorithm=row.algorithm, seed=5).inertia
        assert row.inertia == pytest.approx(expected)
    assert table["inertia_vs_kmeans"].iloc[0] == 1.0


def test_auto_switches_to_minibatch_only_for_big_catalogues():
    assert resolve_algorithm("auto", 200_000) == "kmeans"
    assert resolve_algorithm("auto", 200_001) == "minibatch"
    assert resolve_algorithm("kmeans", 5_000_000) == "kmeans"
    with pytest.raises(ValueError, match="algorithm must be one of"):
        resolve_algorithm("dbscan", 10)


def test_kmeans_rejects_more_clusters_than_tracks(latents):
    with pytest.raises(ValueError, match="n_clusters must be between 1 and the number of tracks"):
        fit_kmeans(latents[:5], n_clusters=6)


def test_latent_matrix_reads_columns_in_numeric_order():
    frame = latent_frame(np.arange(24, dtype=float).reshape(2, 12))
    shuffled = frame[["id", *reversed(frame.columns[1:])]]
    np.testing.assert_array_equal(latent_matrix(shuffled), np.arange(24).reshape(2, 12))


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns="latent_1"), r"without gaps, found latent_0, latent_2"),
    (lambda f: f.drop(columns=["latent_0", "latent_1", "latent_2"]), "found none"),
    (lambda f: f.drop(columns="id"), r"missing column\(s\) \['id'\]"),
    (lambda f: f.assign(id=["a", "a", "b"]), "column 'id' has 1 duplicate id"),
    (lambda f: f.assign(latent_2=[0.1, np.nan, 0.3]), "column 'latent_2' has 1 missing or infinite"),
    (lambda f: f.assign(latent_0=["x", "y", "z"]), "column 'latent_0' has dtype .*; expected numbers"),
])
def test_latent_matrix_names_the_problem(change, message):
    frame = change(latent_frame(np.full((3, 3), 0.5)))
    with pytest.raises(ValueError, match=f"latents.parquet: .*{message}"):
        latent_matrix(frame)


class FakeUMAP:
    """Stands in for umap.UMAP: maps a point to its first two coordinates, so a row's map
    position tells which latent vector was placed there."""

    def __init__(self, **settings):
        self.settings = settings

    def fit_transform(self, latents):
        return latents[:, :2] * 10


@pytest.mark.parametrize("sample_size", [None, 1_000, 120])
def test_umap_map_fits_the_sample_and_places_every_other_track_near_its_neighbours(monkeypatch, latents,
                                                                                   sample_size):
    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    latent_map = umap_map(latents, n_neighbors=10, sample_size=sample_size, seed=2)
    fitted = len(latents) if sample_size in (None, 1_000) else sample_size
    assert latent_map.n_fitted == fitted and latent_map.fitted.dtype == bool
    np.testing.assert_array_equal(latent_map.xy[latent_map.fitted], latents[latent_map.fitted, :2] * 10)
    if fitted < len(latents):
        placed, truth = latent_map.xy[~latent_map.fitted], latents[~latent_map.fitted, :2] * 10
        error = np.linalg.norm(placed - truth, axis=1).mean()
        shuffled_error = np.linalg.norm(placed - np.random.default_rng(0).permutation(truth), axis=1).mean()
        assert error < 0.2 * shuffled_error
    assert ("seeded sample of 120 of 400 tracks; the map shows that sample" in latent_map.describe()) == (fitted == 120)


def test_place_by_neighbours_interpolates_by_inverse_distance_and_keeps_exact_matches():
    fitted_latents = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    fitted_xy = np.array([[0.0, 0.0], [10.0, 0.0], [50.0, 50.0]])
    queries = np.array([[0.25, 0.0], [1.0, 0.0]])
    xy = place_by_neighbours(fitted_latents, fitted_xy, queries, n_neighbors=2, progress=False)
    np.testing.assert_allclose(xy[0], [(0 / 0.25 + 10 / 0.75) / (1 / 0.25 + 1 / 0.75), 0.0])
    np.testing.assert_array_equal(xy[1], [10.0, 0.0])


def test_cluster_table_marks_the_tracks_umap_was_fitted_on(latents):
    clustering = fit_kmeans(latents, n_clusters=3, n_init=1, seed=0)
    latent_map = LatentMap(latents[:, :2], np.arange(len(latents)) % 2 == 0)
    table = cluster_table(np.arange(len(latents)).astype(str), clustering, latent_map)
    assert list(table.columns) == ["id", "cluster", "distance_to_centroid", "umap_x", "umap_y", "umap_sample"]
    assert table["umap_sample"].sum() == len(latents) // 2


def test_sample_indices_are_seeded_sorted_and_distinct():
    first, second = sample_indices(1_000, 100, seed=4), sample_indices(1_000, 100, seed=4)
    np.testing.assert_array_equal(first, second)
    assert len(np.unique(first)) == 100 and np.all(np.diff(first) > 0)
    assert not np.array_equal(first, sample_indices(1_000, 100, seed=5))


def test_gridworld_edges_give_k_ranked_arrows_per_seeded_source(latents):
    ids = np.array([f"t{i}" for i in range(len(latents))])
    edges = gridworld_edges(ids, latents, n_tracks=6, k=4, seed=11)
    assert len(edges) == 24 and edges["source"].nunique() == 6
    assert (edges.groupby("source")["rank"].apply(list) == [[1, 2, 3, 4]] * 6).all()
    assert (edges.groupby("source")["latent_distance"].apply(lambda d: d.is_monotonic_increasing)).all()
    assert not (edges["source_id"] == edges["target_id"]).any()
    pd.testing.assert_frame_equal(edges, gridworld_edges(ids, latents, n_tracks=6, k=4, seed=11))


def test_the_gridworld_shows_the_environments_first_candidates_ties_included():
    from conftest import make_rewards_table
    from helpers.env import TrackPool, PlaylistEnv

    table = make_rewards_table(n_tracks=120, n_duplicates=30)  # many tied distances
    pool = TrackPool.from_table(table)
    latents = table[[c for c in table.columns if c.startswith("latent_")]].to_numpy()
    edges = gridworld_edges(table["id"].to_numpy(), latents, n_tracks=40, k=4, seed=3)
    env = PlaylistEnv(pool, n_candidates=4)
    for source_id, arrows in edges.groupby("source_id", sort=False):
        _, info = env.reset(options={"start_id": source_id})
        assert arrows.sort_values("rank")["target_id"].tolist() == info["candidate_ids"]


def test_cluster_table_refuses_coordinates_that_are_not_finite(latents):
    clustering = fit_kmeans(latents, n_clusters=3, n_init=1, seed=0)
    xy = latents[:, :2].copy()
    xy[5, 1] = np.inf
    with pytest.raises(ValueError, match=r"the clustering of the latents: column 'umap_y' 1 value\(s\) .* row 6"):
        cluster_table(np.arange(len(latents)).astype(str), clustering, LatentMap(xy, np.ones(len(latents), bool)))
