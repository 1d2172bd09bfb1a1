"""The whole chain, quick mode with short training, on a synthetic catalogue far larger than the embedded one."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import pipeline
from helpers.paths import ProjectPaths
from helpers.recommend import Recommender
from tests.conftest import SHORT_TRAINING, benchmark_module

N_ROWS = 100_000
UMAP_SAMPLE = 3_000


@pytest.fixture(scope="module")
def large_chain(tmp_path_factory) -> ProjectPaths:
    root = tmp_path_factory.mktemp("large_chain")
    catalogue = benchmark_module("synthetic_catalogue").write_synthetic_catalogue(
        root / "tracks_features.csv", N_ROWS, seed=3, progress=False)
    pipeline.run_chain({"catalogue_path": str(catalogue), "artists": None, "year_min": None, "year_max": None,
                        "umap_sample_size": UMAP_SAMPLE, **SHORT_TRAINING}, quick=True, output_dir=root, progress=False,
                       png=False)
    return ProjectPaths.at(root)


def test_every_track_gets_a_state_a_cluster_and_a_reward(large_chain):
    rewards = pd.read_parquet(large_chain.processed / "rewards.parquet")
    assert len(rewards) == N_ROWS and rewards["id"].is_unique
    assert rewards["cluster"].nunique() == 20
    numbers = rewards.select_dtypes("number")
    assert np.isfinite(numbers.to_numpy()).all()


def test_umap_is_fitted_on_the_sample_and_the_map_says_so(large_chain):
    clusters = pd.read_parquet(large_chain.processed / "clusters.parquet")
    assert clusters["umap_sample"].sum() == UMAP_SAMPLE
    assert np.isfinite(clusters[["umap_x", "umap_y"]].to_numpy()).all()
    inside = clusters.loc[clusters["umap_sample"], ["umap_x", "umap_y"]].agg(["min", "max"])
    placed = clusters.loc[~clusters["umap_sample"], ["umap_x", "umap_y"]]  # weighted means of sampled positions
    assert ((placed >= inside.loc["min"]) & (placed <= inside.loc["max"])).all().all()
    html = (large_chain.figures / "03_cluster_map.html").read_text()
    assert f"seeded sample of {UMAP_SAMPLE:,} of {N_ROWS:,} tracks; the map shows that sample" in html
    assert not list(large_chain.figures.glob("*.png")), "png=False (--no-png) saves HTML only"


def test_the_neighbour_index_is_saved_and_the_recommender_serves_playlists(large_chain):
    assert (large_chain.processed / "neighbours.npz").stat().st_size > 0
    recommender = Recommender.load(large_chain.root)
    steps = recommender.playlist(length=10, greedy=False, seed=0)
    playlist = [steps[0]["track_id"]] + [step["chosen"] for step in steps]
    assert len(playlist) == len(set(playlist)) == 10
