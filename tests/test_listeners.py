"""The simulated listener: drawn per-cluster taste, clipping, the like threshold, seeds, JSON."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from helpers.listeners import ListenerModel, draw_listener_model, expected_listening, simulate_listening


def test_drawn_means_and_stds_lie_in_their_ranges():
    model = draw_listener_model(500, mean_range=(0.3, 0.5), std_range=(0.01, 0.02), seed=1)
    assert model.n_clusters == 500
    assert ((0.3 <= model.cluster_mean) & (model.cluster_mean <= 0.5)).all()
    assert ((0.01 <= model.cluster_std) & (model.cluster_std <= 0.02)).all()
    assert model.cluster_mean.std() > 0.03, "means are drawn, not constant"


def test_the_same_seed_draws_the_same_model_and_listening():
    clusters = np.arange(20).repeat(10)
    model = draw_listener_model(20, seed=3)
    assert model == draw_listener_model(20, seed=3)
    assert model != draw_listener_model(20, seed=4)
    pd.testing.assert_frame_equal(simulate_listening(clusters, model, seed=3),
                                  simulate_listening(clusters, model, seed=3))
    assert not simulate_listening(clusters, model, seed=3).equals(simulate_listening(clusters, model, seed=4))


def test_listening_is_clipped_to_between_0_and_1():
    model = ListenerModel(np.array([0.02, 0.98]), np.array([0.5, 0.5]), like_threshold=0.6, seed=0)
    listening = simulate_listening(np.array([0, 1]).repeat(2_000), model, seed=0)
    percentage = listening["percentage_listened"]
    assert percentage.between(0, 1).all()
    assert (percentage == 0).any() and (percentage == 1).any(), "the clip is reached at both ends"


@pytest.mark.parametrize("like_threshold", [0.0, 0.35, 0.6, 1.0])
def test_liked_means_listened_beyond_the_threshold(like_threshold):
    model = draw_listener_model(5, mean_range=(0.2, 0.8), std_range=(0.1, 0.3),
                                like_threshold=like_threshold, seed=2)
    listening = simulate_listening(np.arange(5).repeat(400), model, seed=2)
    expected = (listening["percentage_listened"] > like_threshold).astype(np.int64)
    pd.testing.assert_series_equal(listening["liked"], expected, check_names=False)
    assert listening["liked"].dtype == np.int64


def test_a_large_draw_matches_the_model():
    model = ListenerModel(np.array([0.45, 0.7, 0.55]), np.array([0.05, 0.1, 0.08]), 0.6, seed=0)
    clusters = np.arange(3).repeat(100_000)
    percentage, _ = model.sample(clusters, np.random.default_rng(9))
    frame = pd.DataFrame({"cluster": clusters, "percentage": percentage})
    statistics = frame.groupby("cluster")["percentage"].agg(["mean", "std"])
    np.testing.assert_allclose(statistics["mean"], model.cluster_mean, atol=2e-3)
    np.testing.assert_allclose(statistics["std"], model.cluster_std, atol=2e-3)


def test_json_round_trip(tmp_path):
    model = draw_listener_model(7, like_threshold=0.55, seed=12)
    model.to_json(tmp_path / "listener_model.json")
    loaded = ListenerModel.from_json(tmp_path / "listener_model.json")
    assert loaded == model
    np.testing.assert_array_equal(loaded.cluster_mean, model.cluster_mean)
    assert (loaded.like_threshold, loaded.seed) == (0.55, 12)


@pytest.mark.parametrize("content", ["not json", json.dumps({"seed": 1}),
                                     json.dumps({"like_threshold": 0.6, "seed": 1,
                                                 "clusters": [{"cluster": 1, "mean": 0.5, "std": 0.1}]})])
def test_a_broken_model_file_is_named_in_the_error(tmp_path, content):
    path = tmp_path / "listener_model.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="listener_model.json is not a listener model"):
        ListenerModel.from_json(path)


@pytest.mark.parametrize("mean, std, threshold, message", [
    ([0.5, 0.6], [0.1], 0.6, "same, non-zero length"),
    ([0.5, 1.2], [0.1, 0.1], 0.6, "cluster_mean must lie in"),
    ([0.5, 0.6], [0.1, -0.1], 0.6, "cluster_std must be finite and non-negative"),
    ([0.5, 0.6], [0.1, 0.1], 1.5, "like_threshold must lie in"),
])
def test_an_invalid_model_is_refused(mean, std, threshold, message):
    with pytest.raises(ValueError, match=message):
        ListenerModel(np.array(mean), np.array(std), threshold, seed=0)


def test_sample_refuses_unknown_clusters():
    model = draw_listener_model(3, seed=0)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"cluster ids must lie in \[0, 2\]"):
        model.sample(np.array([0, 3]), rng)
    with pytest.raises(ValueError, match="integer cluster ids"):
        model.sample(np.array([0.0, 1.0]), rng)


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError, match="mean_range"):
        draw_listener_model(3, mean_range=(0.9, 0.4))
    with pytest.raises(ValueError, match="std_range"):
        draw_listener_model(3, std_range=(-0.1, 0.1))


def test_a_model_cannot_be_changed_once_drawn():
    model = draw_listener_model(3, seed=0)
    with pytest.raises(ValueError, match="read-only"):
        model.cluster_mean[0] = 0.5
    with pytest.raises(AttributeError):
        model.like_threshold = 0.9


def test_expected_listening_matches_a_monte_carlo_of_the_clipped_normal():
    mean, std = np.array([0.05, 0.5, 0.62, 0.97]), np.array([0.1, 0.2, 0.05, 0.15])
    listened, like_probability = expected_listening(mean, std, like_threshold=0.6)
    draws = np.clip(np.random.default_rng(0).normal(mean, std, (400_000, 4)), 0, 1)
    np.testing.assert_allclose(listened, draws.mean(axis=0), atol=1e-3)
    np.testing.assert_allclose(like_probability, (draws > 0.6).mean(axis=0), atol=3e-3)
    exact, liked = expected_listening(mean, 0.0, like_threshold=0.6)
    np.testing.assert_array_equal(exact, mean)
    np.testing.assert_array_equal(liked, [0, 0, 1, 1])


def test_like_probability_is_a_step_at_zero_spread_for_every_caller():
    from helpers.listeners import like_probability

    mean = np.array([0.3, 0.6, 0.61, 0.9])
    assert like_probability(mean, 0.0, 0.6).tolist() == [0.0, 0.0, 1.0, 1.0]  # liked only strictly above
    model = ListenerModel(mean, np.array([0.0, 0.1, 0.0, 0.2]), like_threshold=0.6, seed=0)
    np.testing.assert_allclose(model.like_probability(), [0.0, 0.5, 1.0, norm.cdf(1.5)])
    np.testing.assert_array_equal(expected_listening(mean, model.cluster_std, 0.6)[1], model.like_probability())
