"""Learning a listener from playlists: exact local planning, the measure, and the learners."""
import copy
import dataclasses

import numpy as np
import pandas as pd
import pytest

from helpers.adaptation import (BanditLearner, ClusterFormKnown, ClusterFormLearner, FixedTable, FormUnknown,
                                HeardClustersKnown, ServedChain, SmoothFormKnown, Study, StudySettings, TasteLearner,
                                make_learner, measure_person, paired_regret, summarise, taste_snapshots)
from helpers.env import TrackPool, load_neighbour_index, local_env, local_rows, neighbours_needed
from helpers.evaluation import build_playlists, finish_playlists
from helpers.listeners import draw_listener_model
from helpers.people import make_person
from helpers.ppo import PPOConfig, TrainingRun, greedy_policy, make_env, train
from helpers.recommend import checkpoint_path
from helpers.rewards import RewardWeights

from conftest import make_rewards_table


@pytest.fixture(scope="module")
def served_chain(tmp_path_factory) -> ServedChain:
    """A small chain: 400 songs in 6 clusters, a briefly trained default policy, notebook 04's listener."""
    rng = np.random.default_rng(0)
    table = make_rewards_table(n_tracks=400, n_clusters=6, seed=2)
    table = table.assign(percentage_listened=rng.uniform(0.3, 0.9, len(table)),
                         proximity_score=rng.uniform(0, 1, len(table)))
    pool = TrackPool.from_table(table)
    neighbours = load_neighbour_index(pool, neighbours_needed(10, 4), show_progress=False)
    config = PPOConfig(hidden_size=32, n_fourier_features=8, num_envs=128, total_timesteps=8_000, seed=0)
    heldout = pool.ids[::5].tolist()
    run = TrainingRun.start(config, pool, heldout)
    train_rows = np.setdiff1d(np.arange(pool.n_tracks), pool.rows_of(heldout))
    train(run, make_env(config, pool, neighbours), train_rows, progress=False)
    path = run.save(checkpoint_path(tmp_path_factory.mktemp("models")))
    return ServedChain(pool, neighbours, run, RewardWeights(), draw_listener_model(6, seed=0), path)


def test_a_local_environment_plans_exactly_as_the_whole_pool(served_chain):
    rng = np.random.default_rng(1)
    rewards = rng.uniform(0, 120, served_chain.pool.n_tracks)
    starts = rng.choice(served_chain.pool.n_tracks, 12, replace=False)
    policy = greedy_policy(served_chain.run.agent)
    whole_env = make_env(served_chain.run.config, served_chain.serving(rewards), served_chain.neighbours)
    whole = build_playlists(whole_env, starts, policy)[0]
    assert np.array_equal(served_chain.policy_playlists(rewards, starts), whole)
    for start, expected in zip(starts, whole):
        playlist = np.full((1, 10), -1)
        playlist[0, 0] = start
        for step in range(1, 4):  # resumed mid-playlist too, as after a change of table
            rows = local_rows(served_chain.neighbours, playlist)
            env, batch = local_env(served_chain.serving(rewards), served_chain.neighbours, playlist, rows,
                                   look_ahead_depth=served_chain.run.config.look_ahead_depth)
            local = finish_playlists(env, batch, policy)[0]
            assert np.array_equal(rows[local[0]], expected)
            assert len(rows) < served_chain.pool.n_tracks
            playlist[0, step] = expected[step]


def test_the_measure_gives_one_to_the_taste_model_known_and_zero_to_no_update(served_chain):
    person = make_person("someone else", served_chain.pool.table, served_chain.listener_model, seed=4)
    study = Study.build(served_chain, person, seed=0, n_learning=3, n_eval_starts=40)
    told = study.run(make_learner("taste model known", served_chain, seed=0), checkpoints=(1, 3))
    assert np.allclose(told["share_knowable"], 1.0)
    knowable = person.knowable_rewards(served_chain.proximity, served_chain.weights)
    first = served_chain.policy_playlists(knowable, study.learning_starts[:1])[0]
    played = make_learner("taste model known", served_chain, seed=0)
    assert np.array_equal(played.play(int(study.learning_starts[0]), copy.deepcopy(person)), first)
    none = study.run(FixedTable(served_chain), checkpoints=(1, 3))
    assert np.allclose(none["share_knowable"], 0.0) and np.allclose(none["share_full"], 0.0)
    assert (none["regret"].diff().dropna() >= 0).all() and (none["regret"] >= 0).all()


def test_heard_clusters_known_serves_heard_songs_their_clusters_taste_model_and_the_prior_elsewhere(served_chain):
    person = make_person("someone else", served_chain.pool.table, served_chain.listener_model, seed=3)
    reference = HeardClustersKnown(served_chain, seed=0)
    before = reference.table()
    np.testing.assert_array_equal(before, TasteLearner(served_chain, seed=0).table()(np.arange(len(before))))
    heard = reference.play(int(served_chain.pool.rows_of(served_chain.run.heldout_ids)[0]), person)
    clusters = served_chain.pool.table["cluster"].to_numpy()
    touched = np.isin(clusters, clusters[heard])
    knowable = person.knowable_rewards(served_chain.proximity, served_chain.weights)
    others = touched & ~np.isin(np.arange(len(clusters)), heard)
    np.testing.assert_array_equal(reference.table()[others], knowable[others])
    np.testing.assert_array_equal(reference.table()[heard], person.true_rewards(served_chain.proximity,
                                                                                served_chain.weights)[heard])
    np.testing.assert_array_equal(reference.table()[~touched], before[~touched])
    assert 0 < touched.sum() < len(clusters)
    study = Study.build(served_chain, person, seed=3, n_learning=3, n_eval_starts=20)
    learner, ceiling = TasteLearner(served_chain, seed=0), HeardClustersKnown(served_chain, seed=0)
    study.run(learner, checkpoints=(3,), plan=False)
    study.run(ceiling, checkpoints=(3,), plan=False)
    np.testing.assert_array_equal(learner.model.heard_rows, ceiling.model.heard_rows,
                                  err_msg="the reference hears what the taste model hears")


def test_the_taste_model_learns_a_smooth_listener_and_regret_is_what_was_heard(served_chain):
    person = make_person("smooth taste", served_chain.pool.table, served_chain.listener_model, seed=1)
    study = Study.build(served_chain, person, seed=1, n_learning=10, n_eval_starts=40)
    learner = TasteLearner(served_chain, seed=0)
    frame = study.run(learner)
    assert frame["share_knowable"].iloc[-1] > 0.5
    assert frame["share_knowable"].iloc[-1] > frame["share_knowable"].iloc[0] - 0.05
    assert learner.model.n_plays == 100 and len(learner.switch_seconds) == 9
    assert person.rng.bit_generator.state == make_person(
        "smooth taste", served_chain.pool.table, served_chain.listener_model, seed=1).rng.bit_generator.state


def test_the_same_seed_gives_the_same_learning(served_chain):
    person = make_person("someone else", served_chain.pool.table, served_chain.listener_model, seed=2)
    study = Study.build(served_chain, person, seed=2, n_learning=3, n_eval_starts=20)
    first = study.run(TasteLearner(served_chain, seed=5), checkpoints=(3,))
    second = study.run(TasteLearner(served_chain, seed=5), checkpoints=(3,))
    pd.testing.assert_frame_equal(first, second)
    bandit = study.run(BanditLearner(served_chain, "thompson", seed=5), checkpoints=(3,))
    assert np.isnan(bandit["planned"]).all() and np.isfinite(bandit["return"]).all()


def test_summary_has_a_confidence_interval_per_checkpoint():
    rows = [{"catalogue": "c", "scenario": "s", "learner": "l", "playlists": p, "share_full": v, "share_knowable": v,
             "planned_share_knowable": v, "regret": 10 * v} for p in (1, 3) for v in (0.2, 0.4, 0.6)]
    summary = summarise(pd.DataFrame(rows))
    assert summary["seeds"].tolist() == [3, 3]
    assert summary["share_knowable"].tolist() == pytest.approx([0.4, 0.4])
    assert summary["share_knowable_ci95"].iloc[0] == pytest.approx(1.96 * 0.2 / np.sqrt(3))
    assert "pooled_share_knowable" not in summary  # without the returns


def test_the_pooled_share_divides_mean_gains_by_the_mean_knowable_gap():
    # Two people with a knowable gap of 10 and one with almost none, who gained a little by chance.
    gained, gap = np.array([5.0, 7.0, 0.2]), np.array([10.0, 10.0, 0.001])
    frame = pd.DataFrame({"learner": "l", "playlists": 1, "return": 100 + gained, "R_none": 100.0,
                          "R_knowable": 100 + gap, "R_optimum": 150.0, "regret": 0.0})
    for name, value in (("share_full", gained / 50), ("share_knowable", gained / gap), ("planned_share_knowable", 0)):
        frame[name] = value
    summary = summarise(frame).iloc[0]
    assert summary["share_knowable"] > 60  # the near-empty gap makes the mean of shares explode
    assert summary["pooled_share_knowable"] == pytest.approx(gained.mean() / gap.mean())
    residual = gained - gained.mean() / gap.mean() * gap
    assert summary["pooled_share_knowable_ci95"] == pytest.approx(
        1.96 * residual.std(ddof=1) / (np.sqrt(3) * gap.mean()))


def test_paired_regret_differences_are_taken_person_by_person():
    rows = [{"scenario": "s", "seed": seed, "playlists": playlists, "learner": learner, "regret": regret}
            for seed, base in enumerate((1000.0, 2000.0, 3000.0)) for playlists in (1, 10)
            for learner, regret in (("taste model", base), ("LinUCB", base + 100 + seed), ("no update", base - 50),
                                    ("heard clusters known", base))]
    paired = paired_regret(pd.DataFrame(rows)).set_index("against")
    assert list(paired.index) == ["LinUCB", "no update"], "a reference hears the taste model's playlists: left out"
    assert paired.loc["LinUCB", "difference"] == pytest.approx(-101)  # people differ by 1000s; the pairs by 100-102
    assert paired.loc["LinUCB", "difference_ci95"] == pytest.approx(1.96 * 1.0 / np.sqrt(3))
    assert paired.loc["no update", "difference"] == pytest.approx(50) and (paired["seeds"] == 3).all()
    with pytest.raises(ValueError, match="no 'oracle' learner"):
        paired_regret(pd.DataFrame(rows), learner="oracle")


def test_the_taste_snapshots_move_towards_the_truth_and_count_the_songs_heard(served_chain):
    person = make_person("smooth taste", served_chain.pool.table, served_chain.listener_model, seed=3)
    state = person.rng.bit_generator.state
    snapshots = taste_snapshots(served_chain, person, seed=3, checkpoints=(0, 1, 5))
    assert list(snapshots.columns) == ["id", "true taste", "after 0 playlists", "after 1 playlists",
                                       "after 5 playlists", "heard_in"]
    assert person.rng.bit_generator.state == state, "the person given is left untouched"
    truth = snapshots["true taste"]
    before, after = (np.corrcoef(snapshots[f"after {n} playlists"], truth)[0, 1] for n in (0, 5))
    assert after > before + 0.3
    heard = snapshots["heard_in"]
    assert set(heard.unique()) <= set(range(6)) and (heard == 1).sum() == 10
    assert 10 < (heard > 0).sum() <= 50, "five playlists of ten songs, repeats heard once"


def test_measure_person_gives_every_learner_the_same_references(served_chain):
    frame = measure_person(served_chain, "someone else", 1, ["taste model", "no update", "LinUCB"], n_eval_starts=10)
    assert frame.groupby("learner", sort=False).size().to_dict() == {"taste model": 3, "no update": 3, "LinUCB": 3}
    assert frame.groupby("playlists")[["R_none", "R_knowable", "R_optimum"]].nunique().eq(1).all().all()
    assert (frame["scenario"] == "someone else").all() and (frame["n_songs"] == 400).all()
    assert frame.loc[frame["learner"] == "taste model", "switch_seconds_max"].notna().all()
    assert frame.loc[frame["learner"] == "no update", "switch_seconds_max"].isna().all()


def test_smooth_form_known_hears_the_taste_models_playlists_and_is_measured_on_smooth_taste_only(served_chain):
    start = int(served_chain.pool.rows_of(served_chain.run.heldout_ids)[0])
    error = {"reference": 0.0, "taste model": 0.0}
    for seed in range(10):  # Bayes' rule knowing the form is the better guess on average over people, not for each
        person = make_person("smooth taste", served_chain.pool.table, served_chain.listener_model, seed=seed)
        reference, learner = SmoothFormKnown(served_chain, seed=0), TasteLearner(served_chain, seed=0)
        heard = reference.play(start, copy.deepcopy(person))
        np.testing.assert_array_equal(heard, learner.play(start, copy.deepcopy(person)))
        truth = person.true_rewards(served_chain.proximity, served_chain.weights)
        np.testing.assert_array_equal(reference.table()[heard], truth[heard])
        knowable = person.knowable_rewards(served_chain.proximity, served_chain.weights)
        unheard = np.setdiff1d(np.arange(len(truth)), heard)
        every = np.arange(len(truth))
        for name, table in (("reference", reference.table()), ("taste model", learner.table()(every))):
            error[name] += np.abs(table[unheard] - knowable[unheard]).mean()
    assert error["reference"] < error["taste model"], "knowing the form infers the taste model better"
    with pytest.raises(ValueError, match="smooth taste"):
        SmoothFormKnown(served_chain, seed=0).play(start, make_person("someone else", served_chain.pool.table,
                                                                      served_chain.listener_model, seed=2))
    frame = measure_person(served_chain, "someone else", 1, ["taste model", "smooth form known"], n_eval_starts=5)
    assert set(frame["learner"]) == {"taste model"}


def test_cluster_form_known_hears_the_taste_models_playlists_and_ranks_clusters_by_their_plays(served_chain):
    person = make_person("someone else", served_chain.pool.table, served_chain.listener_model, seed=2)
    reference, learner = ClusterFormKnown(served_chain, seed=0), TasteLearner(served_chain, seed=0)
    starts = served_chain.pool.rows_of(served_chain.run.heldout_ids)[:3]
    twin = copy.deepcopy(person)
    for start in starts:
        np.testing.assert_array_equal(reference.play(int(start), person), learner.play(int(start), twin))
    table, truth = reference.table(), person.true_rewards(served_chain.proximity, served_chain.weights)
    heard, mean, _ = reference._heard()
    np.testing.assert_array_equal(table[heard], truth[heard])
    interaction = table - served_chain.weights.proximity_weight * served_chain.proximity  # the taste's part
    clusters, unheard = reference.model.clusters, np.setdiff1d(np.arange(len(truth)), heard)
    heard_clusters = np.unique(clusters[heard])
    nobody = unheard[~np.isin(clusters[unheard], heard_clusters)]
    assert len(nobody) and np.allclose(interaction[nobody], interaction[nobody][0]), "a cluster nobody heard: the prior"
    plays = [mean[clusters[heard] == cluster].mean() for cluster in heard_clusters]
    predicted = [interaction[unheard[clusters[unheard] == cluster]].mean() for cluster in heard_clusters]
    assert np.corrcoef(plays, predicted)[0, 1] > 0.9, "a cluster heard more is predicted to be heard more"
    with pytest.raises(ValueError, match="someone else"):
        ClusterFormKnown(served_chain, seed=0).play(int(starts[0]), make_person(
            "smooth taste", served_chain.pool.table, served_chain.listener_model, seed=2))


def test_form_unknown_weighs_the_two_forms_tables_by_their_evidence_from_the_same_plays(served_chain):
    starts = served_chain.pool.rows_of(served_chain.run.heldout_ids)[:2]
    for scenario in ("smooth taste", "someone else"):
        person = make_person(scenario, served_chain.pool.table, served_chain.listener_model, seed=3)
        references = [FormUnknown(served_chain, seed=0), SmoothFormKnown(served_chain, seed=0),
                      ClusterFormKnown(served_chain, seed=0)]
        # Each form's reference hears the same plays (the person relabelled as its own form's).
        people = [copy.deepcopy(person), dataclasses.replace(person, scenario="smooth taste"),
                  dataclasses.replace(person, scenario="someone else")]
        for start in starts:
            heard = [reference.play(int(start), listener) for reference, listener in zip(references, people)]
            assert all((rows == heard[0]).all() for rows in heard), "all hear the taste model's playlists"
        both, smooth, clustered = (reference.table() for reference in references)
        weight = references[0].smooth_probability
        assert 0 <= weight <= 1
        np.testing.assert_allclose(both, weight * smooth + (1 - weight) * clustered)
    with pytest.raises(ValueError, match="someone else"):
        FormUnknown(served_chain, seed=0).play(int(starts[0]), make_person(
            "drifting", served_chain.pool.table, served_chain.listener_model, seed=2))


def test_the_cluster_form_learner_plans_on_draws_of_its_posterior_and_serves_its_mean(served_chain):
    person = make_person("someone else", served_chain.pool.table, served_chain.listener_model, seed=2)
    learner = ClusterFormLearner(served_chain, seed=0)
    starts = served_chain.pool.rows_of(served_chain.run.heldout_ids)[:3]
    for start in starts:
        learner.play(int(start), person)
    rows = np.arange(served_chain.pool.n_tracks)
    served = learner.table()
    np.testing.assert_array_equal(learner._rewards(rows, explore=False), served)
    drawn = [learner._rewards(rows, explore=True) for _ in range(5)]
    assert not all(np.array_equal(draw, drawn[0]) for draw in drawn[1:]), "each learning playlist plans on a new draw"
    heard = learner.model.heard_rows
    assert all(np.array_equal(draw[heard], served[heard]) for draw in drawn), "a heard song is known"
    frame = measure_person(served_chain, "smooth taste", 1, ["taste model", "cluster form learner"], n_eval_starts=5)
    assert set(frame["learner"]) == {"taste model"}, "defined for someone else only"


def test_study_settings_name_every_person_and_refuse_unknown_names():
    settings = StudySettings(scenarios=("smooth taste", "drifting"), n_listeners=2, seed=7)
    assert settings.people() == [("smooth taste", 7), ("smooth taste", 8), ("drifting", 7), ("drifting", 8)]
    with pytest.raises(ValueError, match="scenarios must be"):
        StudySettings(scenarios=("nobody",))
    with pytest.raises(ValueError, match="learners must be"):
        StudySettings(learners=("oracle",))
    with pytest.raises(ValueError, match="n_listeners"):
        StudySettings(n_listeners=0)
