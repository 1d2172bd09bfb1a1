"""Simulated people: seeded, hidden tastes of the documented kinds, and the bandit baselines that learn them."""
import numpy as np
import pytest

from helpers.bandits import LinearBandit
from helpers.env import PlaylistBatch
from helpers.listeners import MEAN_RANGE, STD_RANGE, draw_listener_model, expected_listening
from helpers.people import (LIKE_THRESHOLD, PLAY_NOISE, SCENARIOS, SMOOTH_SONG_NOISE, make_person,
                            smooth_grid, smooth_log_evidence, smooth_posterior, someone_else_log_evidence,
                            someone_else_posterior)
from helpers.rewards import RewardWeights

from conftest import make_rewards_table


@pytest.fixture(scope="module")
def table():
    frame = make_rewards_table(n_tracks=300, n_clusters=6, seed=1)
    rng = np.random.default_rng(0)
    return frame.assign(percentage_listened=rng.uniform(0, 1, len(frame)), proximity_score=rng.uniform(0, 1, len(frame)))


@pytest.fixture(scope="module")
def listener_model():
    return draw_listener_model(n_clusters=6, seed=0)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_person_is_reproducible_from_its_seed_and_differs_across_seeds(table, listener_model, scenario):
    first = make_person(scenario, table, listener_model, seed=3)
    again = make_person(scenario, table, listener_model, seed=3)
    other = make_person(scenario, table, listener_model, seed=4)
    assert np.array_equal(first.taste, again.taste)
    assert np.array_equal(first.listen(np.arange(10))[0], again.listen(np.arange(10))[0])
    if scenario != "loves the two lowest clusters":  # outside the loved clusters that one is notebook 04's listener
        assert not np.allclose(first.taste, other.taste)
    else:
        assert not np.allclose(first.taste, other.taste) and np.isclose(first.taste, other.taste).mean() > 0.5


def test_someone_else_has_one_taste_per_cluster_and_a_draw_per_song(table, listener_model):
    person = make_person("someone else", table, listener_model, seed=0)
    clusters = table["cluster"].to_numpy()
    for cluster in range(6):
        members = clusters == cluster
        assert np.unique(person.model_mean[members]).size == 1
        assert 0.4 <= person.model_mean[members][0] <= 0.9
    assert np.std(person.taste - person.model_mean) > 0.03


def test_smooth_taste_falls_with_distance_from_its_interest(table, listener_model):
    person = make_person("smooth taste", table, listener_model, seed=0)
    latents = table.filter(regex=r"^latent_").to_numpy()
    distance = np.linalg.norm(latents - person.interest, axis=1)
    assert np.corrcoef(distance, person.model_mean)[0, 1] < -0.8


def test_a_drifting_person_moves_towards_what_they_enjoyed(table, listener_model):
    person = make_person("drifting", table, listener_model, seed=0)
    latents = table.filter(regex=r"^latent_").to_numpy()
    far = int(np.argmax(np.linalg.norm(latents - person.interest, axis=1)))
    before = np.linalg.norm(latents[far] - person.interest)
    taste_before = person.taste[far]
    person.taste[far] = 1.0  # they enjoy it fully whenever it plays
    for _ in range(10):
        person.listen([far])
    assert np.linalg.norm(latents[far] - person.interest) < 0.6 * before
    assert person.taste[far] > taste_before


def test_the_hard_case_changes_only_the_two_lowest_clusters(table, listener_model):
    person = make_person("loves the two lowest clusters", table, listener_model, seed=0)
    loved = np.argsort(listener_model.cluster_mean)[:2]
    inside = np.isin(table["cluster"], loved)
    assert np.array_equal(person.taste[~inside], table["percentage_listened"].to_numpy()[~inside])
    assert person.taste[inside].mean() > 0.85


def test_true_rewards_are_the_expected_reward_of_the_plays(table, listener_model):
    person = make_person("someone else", table, listener_model, seed=0)
    weights = RewardWeights()
    proximity = table["proximity_score"].to_numpy()
    expected = person.true_rewards(proximity, weights)
    rows = np.repeat(np.arange(5), 4000)
    listened, liked = person.listen(rows)
    heard = (weights.interaction_weight * (weights.listened_weight * listened + weights.liked_weight * liked)
             + weights.proximity_weight * proximity[rows])
    assert np.allclose(np.bincount(rows, heard) / 4000, expected[:5], atol=1.5)


def batch_of(latents: np.ndarray) -> PlaylistBatch:
    """One step of one playlist whose 4 candidates have `latents`."""
    return PlaylistBatch(current=latents[:1], candidates=latents[None], mask=np.ones((1, len(latents)), bool),
                         steps_left=np.ones(1, np.float32), candidate_rewards=np.zeros((1, len(latents), 6)),
                         current_rows=np.zeros(1, int), candidate_rows=np.arange(len(latents))[None],
                         playlists=np.array([[0] + [-1] * 9]))


@pytest.mark.parametrize("exploration", ["ucb", "thompson"])
def test_a_linear_bandit_learns_which_direction_pays(exploration):
    rng = np.random.default_rng(0)
    bandit = LinearBandit(2, exploration, strength=0.5, reward_scale=100.0, seed=0)
    latents = rng.uniform(0, 1, (200, 2))
    bandit.update(latents, 100 * latents[:, 0])
    candidates = np.array([[0.1, 0.5], [0.9, 0.5], [0.5, 0.1], [0.5, 0.9]])
    assert bandit.policy(explore=False)(batch_of(candidates))[0] == 1
    picks = [bandit.policy(explore=True)(batch_of(candidates))[0] for _ in range(20)]
    assert np.mean(np.array(picks) == 1) > 0.8


def test_knowing_the_form_infers_a_smooth_taste_model_from_plays_and_more_plays_infer_it_better(table, listener_model):
    person = make_person("smooth taste", table, listener_model, seed=5)
    latents = table.filter(regex=r"^latent_").to_numpy()
    rng = np.random.default_rng(0)
    error, spread = {}, {}
    for n in (5, 60):
        rows = rng.choice(len(table), n, replace=False)
        listened, _ = person.listen(rows)
        mean, std = smooth_posterior(smooth_grid(latents), rows, listened, np.full(n, SMOOTH_SONG_NOISE ** 2 + PLAY_NOISE ** 2))
        error[n], spread[n] = np.sqrt(np.mean((mean - person.model_mean) ** 2)), std.mean()
        assert np.mean(np.abs(mean - person.model_mean) < 2.5 * std + 1e-3) > 0.8, "its uncertainty covers the truth"
    assert error[60] < 0.03 and error[60] < error[5] and spread[60] < spread[5]


def test_each_forms_evidence_is_a_density_of_the_plays_and_tells_the_person_s_form_from_enough_plays(
        table, listener_model):
    grid, clusters = smooth_grid(table.filter(regex=r"^latent_").to_numpy()), table["cluster"].to_numpy()
    smooth_variance = SMOOTH_SONG_NOISE ** 2 + PLAY_NOISE ** 2

    def log_evidence(form: str, rows: np.ndarray, listened: np.ndarray) -> float:
        if form == "smooth taste":
            return smooth_log_evidence(grid, rows, listened, np.full(len(rows), smooth_variance))
        return someone_else_log_evidence(clusters, rows, listened, np.ones(len(rows)))

    shares = np.linspace(-2, 3, 2_001)
    for form in ("smooth taste", "someone else"):  # one song's mean share: its density integrates to 1
        density = np.exp([log_evidence(form, np.array([7]), np.array([share])) for share in shares])
        assert abs(np.trapezoid(density, shares) - 1) < 1e-3
    rng = np.random.default_rng(0)
    for seed in range(3):
        for scenario in ("smooth taste", "someone else"):
            rows = rng.choice(len(table), 60, replace=False)
            listened, _ = make_person(scenario, table, listener_model, seed=seed).listen(rows)
            other = "someone else" if scenario == "smooth taste" else "smooth taste"
            assert log_evidence(scenario, rows, listened) > log_evidence(other, rows, listened) + 3


def test_knowing_the_form_predicts_someone_elses_heard_clusters_from_plays_and_leaves_the_others_at_the_prior(
        table, listener_model):
    person = make_person("someone else", table, listener_model, seed=5)
    clusters = table["cluster"].to_numpy()
    truth, _ = expected_listening(person.model_mean, np.sqrt(person.model_std ** 2 + PLAY_NOISE ** 2), LIKE_THRESHOLD)
    rng = np.random.default_rng(0)
    error = {}
    for n in (1, 25):  # songs heard in each of clusters 0-2
        rows = np.concatenate([rng.choice(np.flatnonzero(clusters == cluster), n, replace=False) for cluster in range(3)])
        listened, _ = person.listen(rows)
        predicted, like_probability = someone_else_posterior(clusters, rows, listened, np.ones(len(rows)))
        heard_clusters = clusters < 3
        error[n] = np.abs(predicted - truth)[heard_clusters].mean()
        assert ((like_probability >= 0) & (like_probability <= 1)).all()
        others = predicted[~heard_clusters]
        assert np.allclose(others, others[0]), "a cluster nobody heard is the prior's, whatever was heard elsewhere"
    assert error[25] < 0.02 and error[25] < error[1] / 2
    # On clusters drawn from the prior, one song of each heard once: Bayes' rule beats reading the play as the cluster's.
    n_clusters, prior_rng = 400, np.random.default_rng(1)
    mu, sigma = prior_rng.uniform(*MEAN_RANGE, n_clusters), prior_rng.uniform(*STD_RANGE, n_clusters)
    plays = np.clip(prior_rng.normal(prior_rng.normal(mu, sigma), PLAY_NOISE), 0, 1)
    truth, _ = expected_listening(mu, np.hypot(sigma, PLAY_NOISE), LIKE_THRESHOLD)
    heard = np.arange(n_clusters)
    bayes, _ = someone_else_posterior(heard, heard, plays, np.ones(n_clusters))
    plug_in, _ = expected_listening(plays, np.hypot(np.mean(STD_RANGE), PLAY_NOISE), LIKE_THRESHOLD)
    assert ((bayes - truth) ** 2).mean() < 0.8 * ((plug_in - truth) ** 2).mean()
    # A Thompson draw: one (mu, sigma) per cluster, so one value per cluster, spread around the mean where plays are few.
    draws = np.array([someone_else_posterior(heard, heard, plays, np.ones(n_clusters), rng=np.random.default_rng(k))[0]
                      for k in range(30)])
    assert draws.std(axis=0).mean() > 0.02 and np.abs(draws.mean(axis=0) - bayes).mean() < 0.02
    nothing = someone_else_posterior(clusters, np.empty(0, int), np.empty(0), np.empty(0))[0]
    assert np.allclose(nothing, nothing[0]) and abs(nothing[0] - 0.65) < 0.01
    with pytest.raises(ValueError, match="heard_plays"):
        someone_else_posterior(clusters, np.array([0]), np.array([0.5]), np.array([0]))
