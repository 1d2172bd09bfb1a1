"""The listener posterior: what a play says about the songs near it, and how sure the model is."""
import numpy as np
import pytest

from helpers.people import smooth_curve
from helpers.rewards import RewardWeights
from helpers.taste import TasteModel, TastePrior

from conftest import make_rewards_table

# No person's level: then the interest-point form's level cannot be centred apart from the mean either.
NO_LEVEL = TastePrior(offset_std=0.0, interest_level=TastePrior().mean)


@pytest.fixture(scope="module")
def songs():
    table = make_rewards_table(n_tracks=400, n_clusters=6, seed=3)
    latents = table.filter(regex=r"^latent_").to_numpy()
    return latents, table["cluster"].to_numpy()


def nearest_unplayed(latents: np.ndarray, row: int, k: int = 10) -> np.ndarray:
    distance = np.linalg.norm(latents - latents[row], axis=1)
    distance[row] = np.inf
    return np.argsort(distance)[:k]


@pytest.mark.parametrize("listened, direction", [(0.05, -1), (1.0, 1)])
def test_a_skip_lowers_and_a_full_listen_raises_the_unplayed_neighbours(songs, listened, direction):
    latents, clusters = songs
    model = TasteModel(latents, clusters, seed=0)
    weights = RewardWeights()
    proximity = np.full(len(clusters), 0.5)
    neighbours = nearest_unplayed(latents, 7)
    before = model.expected_rewards(proximity, weights, 0.6)[neighbours]
    model.observe([7], [listened])
    after = model.expected_rewards(proximity, weights, 0.6)[neighbours]
    assert (np.sign(after - before) == direction).all()
    far = np.flatnonzero(clusters != clusters[7])
    distance = np.linalg.norm(latents[far] - latents[7], axis=1)
    farthest = far[np.argsort(distance)[-10:]]
    moved_far = np.abs(model.predict(farthest)[0] - TastePrior().mean)
    moved_near = np.abs(model.predict(neighbours)[0] - TastePrior().mean)
    # Evidence is mostly local: beyond the person's level (the shared offset) it reaches neighbours, not the far side.
    assert moved_near.mean() > 1.5 * moved_far.mean()
    without_level = TasteModel(latents, clusters, NO_LEVEL, seed=0)
    without_level.observe([7], [listened])
    moved_far = np.abs(without_level.predict(farthest)[0] - TastePrior().mean)
    moved_near = np.abs(without_level.predict(neighbours)[0] - TastePrior().mean)
    assert moved_near.mean() > 3 * moved_far.mean()  # without the level, evidence is local, as it always was


def test_plays_in_some_clusters_set_the_persons_level_in_the_others(songs):
    latents, clusters = songs
    rng = np.random.default_rng(0)
    heard = np.concatenate([rng.choice(np.flatnonzero(clusters == c), 5, replace=False) for c in range(4)])
    unheard = np.isin(clusters, [4, 5])
    level = {}
    for name, prior in (("level", TastePrior()), ("no level", NO_LEVEL)):
        model = TasteModel(latents, clusters, prior, seed=0)
        model.observe(heard, np.full(len(heard), 0.35))  # someone who skips much of everything heard
        level[name] = model.predict()[0][unheard].mean()
    assert level["level"] < TastePrior().mean - 0.15
    assert level["level"] < level["no level"] - 0.08, "without the offset, unheard clusters keep their level"


@pytest.mark.parametrize("prior, locality", [(TastePrior(), 1.5), (TastePrior(interest_probability=0), 2),
                                             (TastePrior(cluster_scales=(1.0,), interest_probability=0), 3)])
def test_uncertainty_shrinks_where_plays_fall_and_stays_elsewhere(songs, prior, locality):
    latents, clusters = songs
    model = TasteModel(latents, clusters, prior, seed=0)
    _, before = model.predict()
    played = np.flatnonzero(clusters == 2)[:15]
    model.observe(played, np.full(len(played), 0.8))
    _, after = model.predict()
    same_cluster = np.setdiff1d(np.flatnonzero(clusters == 2), played)
    elsewhere = np.flatnonzero(clusters == 4)
    assert (after[played] < before[played]).all()
    shrink_near = 1 - after[same_cluster].mean() / before[same_cluster].mean()
    shrink_elsewhere = 1 - after[elsewhere].mean() / before[elsewhere].mean()
    # The more of the taste the plays can tell to be shared (the person's level, learnt in one
    # cluster and true of all: clusters that may matter little, a taste that may be one interest
    # point and a level), the more the uncertainty elsewhere shrinks too.
    assert shrink_near > 0.1 and shrink_elsewhere < shrink_near / locality


def test_the_plays_decide_which_form_the_taste_takes(songs):
    latents, clusters = songs
    rng = np.random.default_rng(2)
    heard = rng.choice(len(clusters), 60, replace=False)
    per_cluster = np.array([0.35, 0.9, 0.5, 0.8, 0.4, 0.7])[clusters]
    lengthscale = 0.7 * np.median(np.linalg.norm(latents - latents[0], axis=1))
    curve = smooth_curve(latents, latents[0], lengthscale, low=0.35, high=0.9)
    within_clusters = curve - (np.bincount(clusters, curve) / np.bincount(clusters))[clusters] + 0.65
    chosen = {}
    for name, taste, prior in (("per cluster", per_cluster, TastePrior()),
                               ("interest point", curve, TastePrior()),
                               ("within clusters", within_clusters, TastePrior(interest_probability=0))):
        model = TasteModel(latents, clusters, prior, seed=0)
        model.observe(heard, np.clip(taste[heard] + 0.05 * rng.standard_normal(len(heard)), 0, 1))
        chosen[name] = model
    scales = TastePrior().cluster_scales
    assert dict(zip(scales, chosen["per cluster"].cluster_scale_posterior))[max(scales)] > 0.95
    assert chosen["per cluster"].interest_posterior < 0.05
    assert chosen["interest point"].interest_posterior > 0.95
    assert dict(zip(scales, chosen["within clusters"].cluster_scale_posterior))[min(scales)] > 0.7


def test_plays_that_rise_towards_an_unheard_point_expect_more_there(songs):
    latents, clusters = songs
    peak = 0
    distance = np.linalg.norm(latents - latents[peak], axis=1)
    lengthscale = 0.8 * np.median(distance)
    taste = smooth_curve(latents, latents[peak], lengthscale, low=0.35, high=0.92)
    # Plays on the peak's slope only: none within a lengthscale of it.
    slope = np.flatnonzero((distance > lengthscale) & (distance < 2 * lengthscale))
    heard = np.random.default_rng(4).choice(slope, 25, replace=False)
    near_peak = np.argsort(distance)[:5]
    expected = {}
    for probability in (TastePrior().interest_probability, 0.0):
        model = TasteModel(latents, clusters, TastePrior(interest_probability=probability), seed=0)
        model.observe(heard, taste[heard])
        expected[probability] = model.predict(near_peak)[0].mean()
    # Beyond what was heard: more than 9 in 10 of the heard songs, where the model without the form stays below.
    assert expected[TastePrior().interest_probability] > np.quantile(taste[heard], 0.9) > expected[0.0]
    assert expected[TastePrior().interest_probability] > expected[0.0] + 0.05


@pytest.mark.parametrize("interest_level", [0.65, 0.45])
def test_an_interest_point_is_weighed_and_learnt_exactly(songs, interest_level):
    """Each interest point's weight and posterior mean equal those of the linear-Gaussian model
    with its feature added (its level centred on `interest_level`), computed directly from the
    plays' joint Gaussian."""
    latents, clusters = songs
    prior = TastePrior(n_fourier=8, cluster_scales=(1.0, 0.5), n_interest_centres=40, n_interests=5,
                       interest_lengthscales=(1.0,), interest_probability=0.3, interest_level=interest_level)
    model = TasteModel(latents, clusters, prior, seed=0)
    rng = np.random.default_rng(5)
    rows = rng.choice(len(clusters), 30, replace=False)
    model.observe(rows, np.clip(0.5 + 0.2 * rng.standard_normal(30), 0, 1))
    noise = prior.song_std ** 2 + prior.play_noise ** 2
    targets = model.plays[1] - prior.mean
    base = model._base_features(rows).astype(float)
    interests = model._interest_features(rows, model._candidate_centres, model._candidate_lengthscales).astype(float)

    def log_evidence(features: np.ndarray, mean: np.ndarray) -> float:
        covariance = features @ features.T + noise * np.eye(len(rows))
        residual = targets - mean
        return -(residual @ np.linalg.solve(covariance, residual) + np.linalg.slogdet(covariance)[1]) / 2

    level_only = np.zeros(model.n_base)
    level_only[model.n_clusters] = 1
    prior_amplitude, shift = prior.interest_mean / prior.interest_std, interest_level - prior.mean
    log_with = np.array([log_evidence(np.column_stack([base * level_only, g]), prior_amplitude * g + shift)
                         for g in interests.T]) + np.log(prior.interest_probability / interests.shape[1])
    log_scales = [log_evidence(base * np.r_[np.full(model.n_clusters, a), np.ones(model.n_base - model.n_clusters)],
                           np.zeros(len(rows))) + np.log((1 - prior.interest_probability) / 2)
                  for a in prior.cluster_scales]
    kept = np.argsort(log_with)[::-1][: prior.n_interests]
    family = np.logaddexp.reduce(log_with)
    weights = np.r_[log_scales, log_with[kept] - np.logaddexp.reduce(log_with[kept]) + family]
    expected = np.exp(weights - np.logaddexp.reduce(weights))
    assert model.component_posterior == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(model.interest_centres, model._candidate_centres[kept])
    # The most probable point's taste at the heard songs: the posterior mean of the Gaussian model.
    g = interests[:, kept[0]]
    features = np.column_stack([base * level_only, g])
    prior_mean = prior_amplitude * g + shift
    covariance = features @ features.T + noise * np.eye(len(rows))
    direct = prior_mean + features @ features.T @ np.linalg.solve(covariance, targets - prior_mean)
    component = model._component_means[len(prior.cluster_scales)]
    shared = model._shared(rows)
    fitted = prior.cluster_std * component[clusters[rows]] + shared @ component[model.n_clusters:]
    np.testing.assert_allclose(fitted, direct, atol=1e-6)


def test_evidence_without_a_share_orders_the_songs_but_leaves_the_level(songs):
    latents, clusters = songs
    rng = np.random.default_rng(1)
    skipped = rng.choice(np.flatnonzero(clusters == 1), 30, replace=False)
    finished = rng.choice(np.flatnonzero(clusters == 3), 5, replace=False)
    rows = np.concatenate([np.repeat(skipped, 4), np.repeat(finished, 4)])  # mostly skips, as a real history is
    values = (np.isin(rows, finished)).astype(float)
    as_evidence, as_shares = TasteModel(latents, clusters, seed=0), TasteModel(latents, clusters, seed=0)
    as_evidence.observe(rows, values, evidence=np.ones(len(rows), bool))
    as_shares.observe(rows, values)
    for model in (as_evidence, as_shares):
        taste = model.predict()[0]
        assert taste[clusters == 3].mean() > taste[clusters == 1].mean() + 0.05, "finished songs' region ranks higher"
    level = TastePrior().mean
    evidence_taste, share_taste = as_evidence.predict()[0], as_shares.predict()[0]
    assert abs(evidence_taste.mean() - level) < 0.04, "the 0/1 evidence does not set the taste's level"
    assert share_taste.mean() < level - 0.04, "read as shares, the same skips drag every song down"
    assert (as_evidence.predict(skipped)[0] > 0.4).all(), "a skip without a share is no share of 0"
    with pytest.raises(ValueError, match="same length"):
        as_evidence.observe([1, 2], [0.0, 1.0], evidence=[True])


def test_a_history_of_0_1_evidence_places_no_interest_point(songs):
    latents, clusters = songs
    distance = np.linalg.norm(latents - latents[0], axis=1)
    taste = smooth_curve(latents, latents[0], 0.8 * np.median(distance), low=0.35, high=0.92)
    heard = np.random.default_rng(6).choice(len(clusters), 60, replace=False)
    model = TasteModel(latents, clusters, seed=0)
    model.observe(heard, taste[heard])
    assert model.interest_posterior > 0.5, "shares of an interest point's taste place it"
    model.observe(heard[:5], (taste[heard[:5]] > 0.6).astype(float), evidence=np.ones(5, bool))
    assert model.interest_posterior == 0
    assert model.cluster_scale_posterior.sum() == pytest.approx(1)


def test_a_known_history_is_the_taste_before_any_play_and_places_no_interest_point(songs):
    latents, clusters = songs
    history = np.random.default_rng(7).uniform(0.2, 0.9, len(clusters))
    model = TasteModel(latents, clusters, prior_mean=history, seed=0)
    np.testing.assert_allclose(model.predict()[0], history, atol=1e-6)
    distance = np.linalg.norm(latents - latents[0], axis=1)
    taste = smooth_curve(latents, latents[0], 0.8 * np.median(distance), low=0.35, high=0.92)
    heard = np.random.default_rng(6).choice(len(clusters), 60, replace=False)
    model.observe(heard, taste[heard])
    assert model.interest_posterior == 0, "the population's interest form does not describe a known person"


def test_a_heard_song_moves_most_towards_its_own_plays(songs):
    latents, clusters = songs
    model = TasteModel(latents, clusters, seed=0)
    model.observe([11, 11, 11], [0.95, 0.9, 1.0])
    mean, _ = model.predict()
    assert mean[11] > mean[nearest_unplayed(latents, 11)].max()
    assert mean[11] == pytest.approx(0.95, abs=0.1)


def test_forgetting_fades_old_sessions_and_one_keeps_them(songs):
    latents, clusters = songs
    for forgetting, expect_faded in ((0.5, True), (1.0, False)):
        model = TasteModel(latents, clusters, TastePrior(forgetting=forgetting), seed=0)
        model.observe([20], [1.0])
        after_play = model.predict([20])[0][0]
        for _ in range(5):
            model.end_session()
        later = model.predict([20])[0][0]
        assert (later < after_play - 0.05) == expect_faded


def test_sessions_observed_at_once_give_the_posterior_of_observing_and_ending_them_one_by_one(songs):
    latents, clusters = songs
    rng = np.random.default_rng(3)
    sessions = []
    for _ in range(4):
        evidence = rng.random(10) < 0.3
        sessions.append((rng.integers(0, len(latents), 10),
                         np.where(evidence, rng.integers(0, 2, 10), rng.uniform(0, 1, 10)), evidence))
    prior = TastePrior(forgetting=0.6)  # fading makes each play's session matter
    one_by_one, at_once = TasteModel(latents, clusters, prior, seed=0), TasteModel(latents, clusters, prior, seed=0)
    for plays in sessions:
        one_by_one.observe(*plays)
        one_by_one.end_session()
    at_once.observe_sessions(sessions)
    assert at_once.session == one_by_one.session == 4
    np.testing.assert_allclose(at_once.component_posterior, one_by_one.component_posterior)
    for expected, got in zip(one_by_one.predict(), at_once.predict()):
        np.testing.assert_allclose(got, expected)


def test_a_bad_session_among_several_adds_none_of_them(songs):
    latents, clusters = songs
    model = TasteModel(latents, clusters, seed=0)
    before = model.predict()
    with pytest.raises(ValueError, match="percentage_listened"):
        model.observe_sessions([([1, 2], [0.5, 0.9], None), ([3], [1.5], None)])
    assert model.session == 0
    for expected, got in zip(before, model.predict()):
        np.testing.assert_array_equal(got, expected)


def test_thompson_draws_are_seeded_and_spread_as_the_posterior(songs):
    latents, clusters = songs
    model = TasteModel(latents, clusters, seed=0)
    model.observe([1, 2, 3], [0.2, 0.9, 0.5])
    first = model.sample(np.random.default_rng(5))[0]
    assert np.array_equal(first, model.sample(np.random.default_rng(5))[0])
    unheard = np.setdiff1d(np.arange(len(clusters)), [1, 2, 3])
    draws = np.stack([model.sample(np.random.default_rng(seed), unheard)[0] for seed in range(2_000)])
    mean, std = model.predict(unheard)
    weights_std = np.sqrt(std ** 2 - TastePrior().song_std ** 2)  # a draw is of the weights, not of e_i
    assert np.abs(draws.mean(axis=0) - mean).max() < 4 * weights_std.max() / np.sqrt(len(draws))
    assert np.allclose(draws.std(axis=0), weights_std, rtol=0.12)
    assert np.array_equal(model.sample(np.random.default_rng(9), scale=0.0)[0], model.predict()[0])


def test_scoring_some_rows_equals_scoring_all(songs):
    latents, clusters = songs
    model = TasteModel(latents, clusters, seed=0)
    model.observe([5, 9], [0.1, 0.9])
    rows = np.array([3, 5, 9, 200])
    proximity = np.linspace(0, 1, len(clusters))
    every = model.expected_rewards(proximity, RewardWeights(), 0.6)
    assert np.allclose(model.expected_rewards(proximity, RewardWeights(), 0.6, rows=rows), every[rows])


def test_bad_plays_are_refused_with_the_reason(songs):
    latents, clusters = songs
    model = TasteModel(latents, clusters, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.observe([1], [1.5])
    with pytest.raises(ValueError, match="rows must lie"):
        model.observe([len(clusters)], [0.5])
    with pytest.raises(ValueError, match="forgetting"):
        TastePrior(forgetting=0)
    for cluster_scales in ((), (1.0, 0.0), (np.nan,)):
        with pytest.raises(ValueError, match="cluster_scales"):
            TastePrior(cluster_scales=cluster_scales)
    for bad, message in ((dict(interest_lengthscales=(0.5, -1.0)), "interest_lengthscales"),
                         (dict(interest_probability=1.0), "interest_probability"),
                         (dict(interest_mean=np.inf), "interest_mean"),
                         (dict(interest_std=-0.1), "interest_std"),
                         (dict(n_interests=-1), "n_interests")):
        with pytest.raises(ValueError, match=message):
            TastePrior(**bad)
