"""The reward formula, the proximity edge cases, and the join of notebooks 01–04's outputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.data import FEATURES
from helpers.rewards import (RewardWeights, build_rewards_table, interaction_score, proximity_score,
                             reward, reward_range)


def test_interaction_score_by_hand():
    np.testing.assert_allclose(interaction_score([0.0, 0.5, 0.7, 1.0], [0, 0, 1, 1]),
                               [0.0, 50.0, 120.0, 150.0])
    weights = RewardWeights(listened_weight=10.0, liked_weight=3.0)
    np.testing.assert_allclose(interaction_score([0.25, 1.0], [1, 0], weights), [5.5, 10.0])


def test_reward_by_hand():
    np.testing.assert_allclose(reward([120.0, 150.0, 0.0], [0.75, 1.0, 0.0]), [96.15, 120.2, 0.0])
    weights = RewardWeights(interaction_weight=0.5, proximity_weight=10.0)
    np.testing.assert_allclose(reward([40.0], [0.3], weights), [23.0])


def test_reward_range_is_reached_at_both_ends():
    weights = RewardWeights(listened_weight=80.0, liked_weight=20.0, interaction_weight=0.6,
                            proximity_weight=5.0)
    best = reward(interaction_score([1.0], [1], weights), [1.0], weights)[0]
    worst = reward(interaction_score([0.0], [0], weights), [0.0], weights)[0]
    assert reward_range(weights) == (worst, best) == (0.0, 65.0)


def test_proximity_by_hand():
    distance = np.array([0.1, 0.4, 0.2, 0.0, 0.3])
    cluster = np.array([7, 7, 7, 42, 42])
    np.testing.assert_allclose(proximity_score(distance, cluster), [0.75, 0.0, 0.5, 1.0, 0.0])


def test_a_one_track_cluster_scores_1_even_off_its_centroid():
    np.testing.assert_allclose(proximity_score([0.3, 0.2, 0.5], [0, 1, 1]), [1.0, 0.6, 0.0])


def test_a_cluster_on_its_centroid_scores_1_everywhere():
    np.testing.assert_allclose(proximity_score([0.0, 0.0, 0.0, 0.4], [3, 3, 3, 5]), [1.0, 1.0, 1.0, 1.0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10, allow_subnormal=False), st.integers(0, 4)), min_size=1, max_size=40))
def test_proximity_orders_tracks_within_each_cluster(rows):
    distance = np.array([d for d, _ in rows])
    cluster = np.array([c for _, c in rows])
    score = proximity_score(distance, cluster)
    assert ((0 <= score) & (score <= 1)).all()
    for c in np.unique(cluster):
        inside, members = score[cluster == c], distance[cluster == c]
        assert inside[np.argmin(members)] == inside.max(), "the centroid-nearest track scores highest"
        if len(members) > 1 and members.max() > 0:
            assert inside[np.argmax(members)] == 0.0, "the farthest track scores 0"


@pytest.mark.parametrize("call, message", [
    (lambda: interaction_score([1.2], [1]), "percentage_listened must lie in"),
    (lambda: interaction_score([np.nan], [1]), "percentage_listened must lie in"),
    (lambda: interaction_score([0.5], [2]), "liked must be 0 or 1"),
    (lambda: proximity_score([-0.1], [0]), "non-negative"),
    (lambda: proximity_score([0.1, 0.2], [0]), "same length"),
    (lambda: RewardWeights(liked_weight=-1.0), "liked_weight must be a finite, non-negative"),
    (lambda: RewardWeights(proximity_weight=float("inf")), "proximity_weight must be a finite"),
])
def test_bad_values_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- build_rewards_table -------------------------------------------------------------------

def make_inputs(n_tracks: int = 12, with_name: bool = True, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Consistent outputs of notebooks 01–04 for `n_tracks` made-up tracks."""
    rng = np.random.default_rng(seed)
    ids = [f"id{i:03d}" for i in range(n_tracks)]
    tracks = pd.DataFrame({"id": ids, "artist": rng.choice(["Adele", "Sia"], n_tracks)})
    if with_name:
        tracks["name"] = [f"Song {i}" for i in range(n_tracks)]
        tracks["album"] = "An album"
        tracks["genre"] = rng.choice(["pop", "rock, edm"], n_tracks)
    for feature in FEATURES:
        tracks[feature] = rng.uniform(size=n_tracks)
    tracks["year"] = 2010
    latents = pd.DataFrame(rng.uniform(size=(n_tracks, 3)), columns=["latent_0", "latent_1", "latent_2"])
    latents.insert(0, "id", ids)
    cluster = np.arange(n_tracks) % 3
    clusters = pd.DataFrame({"id": ids, "cluster": cluster, "distance_to_centroid": rng.uniform(size=n_tracks),
                             "umap_x": rng.normal(size=n_tracks), "umap_y": rng.normal(size=n_tracks)})
    percentage = rng.uniform(size=n_tracks)
    listeners = pd.DataFrame({"id": ids, "cluster": cluster, "percentage_listened": percentage,
                              "liked": (percentage > 0.6).astype(np.int64)})
    return {"tracks": tracks, "latents": latents, "clusters": clusters, "listeners": listeners}


def test_the_table_has_the_contract_columns_in_order():
    table = build_rewards_table(**make_inputs())
    assert list(table.columns) == [
        "id", "artist", "name", "album", "genre", *FEATURES, "latent_0", "latent_1", "latent_2", "cluster",
        "distance_to_centroid", "proximity_score", "umap_x", "umap_y", "percentage_listened",
        "liked", "interaction_score", "reward"]
    assert not {"name", "album", "genre"} & set(build_rewards_table(**make_inputs(with_name=False)).columns)


def test_the_scores_are_those_of_the_formulas():
    inputs = make_inputs()
    weights = RewardWeights(listened_weight=90.0, liked_weight=30.0, interaction_weight=0.7,
                            proximity_weight=3.0)
    table = build_rewards_table(**inputs, weights=weights)
    listeners, clusters = inputs["listeners"], inputs["clusters"]
    expected_interaction = 90.0 * listeners["percentage_listened"] + 30.0 * listeners["liked"]
    d_max = clusters.groupby("cluster")["distance_to_centroid"].transform("max")
    expected_proximity = 1 - clusters["distance_to_centroid"] / d_max
    np.testing.assert_allclose(table["interaction_score"], expected_interaction)
    np.testing.assert_allclose(table["proximity_score"], expected_proximity)
    np.testing.assert_allclose(table["reward"], 0.7 * expected_interaction + 3.0 * expected_proximity)


@pytest.mark.parametrize("shuffled", ["latents", "clusters", "listeners"])
def test_rows_are_joined_on_id_not_on_position(shuffled):
    inputs = make_inputs()
    expected = build_rewards_table(**inputs)
    inputs[shuffled] = inputs[shuffled].sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert not inputs[shuffled]["id"].equals(inputs["tracks"]["id"])
    pd.testing.assert_frame_equal(build_rewards_table(**inputs), expected)
    assert list(expected["id"]) == list(inputs["tracks"]["id"]), "rows keep tracks.parquet's order"


@pytest.mark.parametrize("name", ["latents", "clusters", "listeners"])
def test_a_missing_track_is_named_with_its_file(name):
    inputs = make_inputs()
    inputs[name] = inputs[name].iloc[2:]
    with pytest.raises(ValueError, match=f"{name}.parquet does not hold the same tracks as "
                                         r"tracks.parquet: 2 ids missing, 0 extra \(e.g. 'id000'\)"):
        build_rewards_table(**inputs)


def test_an_extra_track_is_named_with_its_file():
    inputs = make_inputs()
    inputs["latents"] = pd.concat([inputs["latents"], inputs["latents"].iloc[:1].assign(id="stranger")])
    with pytest.raises(ValueError, match=r"latents.parquet .* 0 ids missing, 1 extra \(e.g. 'stranger'\)"):
        build_rewards_table(**inputs)


@pytest.mark.parametrize("name", ["tracks", "latents", "clusters", "listeners"])
def test_a_duplicated_id_is_named_with_its_file(name):
    inputs = make_inputs()
    inputs[name] = pd.concat([inputs[name], inputs[name].iloc[[3]]])
    with pytest.raises(ValueError, match=f"{name}.parquet: column 'id' has 1 duplicate id\\(s\\), e.g. 'id003'"):
        build_rewards_table(**inputs)


def test_a_missing_column_is_named_with_its_file():
    inputs = make_inputs()
    inputs["clusters"] = inputs["clusters"].drop(columns="distance_to_centroid")
    with pytest.raises(ValueError, match=r"clusters.parquet: missing column\(s\) \['distance_to_centroid'\].*Re-run 03_clusters"):
        build_rewards_table(**inputs)


def test_listeners_from_another_clustering_are_refused():
    inputs = make_inputs()
    inputs["listeners"]["cluster"] = (inputs["listeners"]["cluster"] + 1) % 3
    with pytest.raises(ValueError, match="different clusters to 12 tracks"):
        build_rewards_table(**inputs)


def test_interaction_score_of_like_rates_is_the_mean_score_and_unknown_likes_stay_unknown():
    plays = interaction_score([0.2, 0.6, 0.9, 0.5], [0, 1, 1, 0])
    mean = interaction_score([0.4, 0.7], [0.5, 0.5])
    np.testing.assert_allclose(mean, [plays[:2].mean(), plays[2:].mean()])
    assert np.isnan(interaction_score([0.5], [np.nan])).all()
    with pytest.raises(ValueError, match="liked must be 0 or 1"):
        interaction_score([0.5], [1.5])


def test_a_reward_that_is_not_finite_is_never_returned():
    inputs = make_inputs()
    inputs["listeners"] = inputs["listeners"].astype({"liked": float})
    inputs["listeners"].loc[2, "liked"] = np.nan
    with pytest.raises(ValueError, match=r"the rewards table: column 'interaction_score' 1 value\(s\) are NaN or "
                                         r"infinite, the first in row 3; nothing was written"):
        build_rewards_table(**inputs)
