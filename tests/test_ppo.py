"""PPO: the original networks, the candidate-aware actor, GAE, learning, determinism, checkpoints."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import make_rewards_table

from helpers.env import REWARD_FEATURES, BatchPlaylistEnv, TrackPool, build_neighbour_index, neighbours_needed
from helpers.evaluation import build_playlists, compare_policies, greedy_oracle_policy, random_policy, split_start_tracks
from helpers.ppo import (
    CandidateActorCritic,
    Observations,
    OriginalActorCritic,
    PPOConfig,
    TrainingRun,
    compute_gae,
    explained_variance,
    greedy_policy,
    make_agent,
    make_env,
    pick_table,
    train,
)

SMALL = dict(hidden_size=32, n_fourier_features=8, playlist_length=6, num_envs=64, num_minibatches=2,
             total_timesteps=64 * 5 * 4, look_ahead_depth=1)  # the `env` fixture's plan value


@pytest.fixture(scope="module")
def pool(rewards_table):
    return TrackPool.from_table(rewards_table)


@pytest.fixture(scope="module")
def env(pool):
    return BatchPlaylistEnv(pool, build_neighbour_index(pool.latents, neighbours_needed(6, 4)), 6, 4)


@pytest.fixture(scope="module")
def split(pool):
    return split_start_tracks(pool.n_tracks, 0.2, seed=0)


def random_observations(batch: int, n_candidates: int, seed: int = 0) -> Observations:
    generator = torch.Generator().manual_seed(seed)
    return Observations(
        current=torch.rand(batch, 5, generator=generator),
        candidates=torch.rand(batch, n_candidates, 5, generator=generator),
        mask=torch.ones(batch, n_candidates, dtype=torch.bool),
        steps_left=torch.rand(batch, generator=generator),
        candidate_rewards=torch.rand(batch, n_candidates, len(REWARD_FEATURES), generator=generator),
    )


def test_original_architecture_has_the_original_parameter_counts():
    agent = OriginalActorCritic(latent_dim=5, n_candidates=4, hidden_size=128)
    assert sum(p.numel() for p in agent.policy_net.parameters()) == 17_796
    assert sum(p.numel() for p in agent.value_net.parameters()) == 17_921
    layers = [type(m).__name__ for m in agent.value_net]
    assert layers == ["Linear", "LeakyReLU", "LayerNorm", "Linear", "LeakyReLU", "LayerNorm", "Linear"]


@pytest.mark.parametrize("n_candidates", [2, 4, 7])
def test_candidate_actor_serves_any_k_and_scores_each_candidate_with_shared_weights(n_candidates):
    agent = CandidateActorCritic(latent_dim=5, hidden_size=16, n_fourier_features=4)
    obs = random_observations(3, n_candidates)
    logits, values = agent(obs)
    assert logits.shape == (3, n_candidates) and values.shape == (3,)
    permutation = torch.randperm(n_candidates)
    shuffled = Observations(obs.current, obs.candidates[:, permutation], obs.mask[:, permutation], obs.steps_left,
                            obs.candidate_rewards[:, permutation])
    permuted_logits, permuted_values = agent(shuffled)
    torch.testing.assert_close(permuted_logits, logits[:, permutation])
    torch.testing.assert_close(permuted_values, values)


@pytest.mark.parametrize("agent", [OriginalActorCritic(), CandidateActorCritic(hidden_size=16, n_fourier_features=4)])
def test_masked_candidates_get_zero_probability_and_are_never_sampled(agent):
    obs = random_observations(500, 4)
    mask = torch.ones(500, 4, dtype=torch.bool)
    mask[:, 2:] = False
    mask[:100, 1] = False
    obs = Observations(obs.current, obs.candidates, mask, obs.steps_left, obs.candidate_rewards)
    probs = agent.policy(obs).probs
    assert (probs[~mask] == 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(500))
    actions, logprobs, _ = agent.act(obs, torch.Generator().manual_seed(0))
    assert mask[torch.arange(500), actions].all()
    assert (actions[:100] == 0).all() and torch.isfinite(logprobs).all()
    assert torch.isfinite(agent.evaluate(obs, actions)[1]).all()


@pytest.mark.parametrize("make", [OriginalActorCritic, lambda: CandidateActorCritic(hidden_size=16, n_fourier_features=4)])
def test_resetting_the_policy_head_makes_pi_near_uniform_and_keeps_everything_else(make):
    obs = random_observations(200, 4, seed=3)
    agent, twin = make(), make()
    with torch.no_grad():
        for parameter in agent.logits_layer().parameters():
            parameter.mul_(10_000)  # a sharp policy, like a trained one
    twin.load_state_dict(agent.state_dict())
    head = {name for name, p in agent.named_parameters() if any(p is q for q in agent.logits_layer().parameters())}
    kept = {name: tensor.clone() for name, tensor in agent.state_dict().items() if name not in head}
    with torch.no_grad():
        values = agent(obs)[1]
        assert agent.policy(obs).entropy().mean() < 0.5
        agent.reset_policy_head(seed=7)
        twin.reset_policy_head(seed=7)
        entropy = agent.policy(obs).entropy()
        torch.testing.assert_close(agent(obs)[1], values)  # the critic is untouched
    assert (entropy > 0.99 * np.log(4)).all()
    for name, tensor in kept.items():
        assert torch.equal(agent.state_dict()[name], tensor), name
    for name, tensor in agent.state_dict().items():
        assert torch.equal(twin.state_dict()[name], tensor), name  # the same seed gives the same head


def test_gae_matches_a_hand_computed_example():
    # gamma 0.9, lambda 0.8, one episode of three steps ending at the last one:
    # delta_2 = 3 - 1.5 = 1.5                  A_2 = 1.5
    # delta_1 = 2 + 0.9 * 1.5 - 1.0 = 2.35     A_1 = 2.35 + 0.72 * 1.5 = 3.43
    # delta_0 = 1 + 0.9 * 1.0 - 0.5 = 1.4      A_0 = 1.4 + 0.72 * 3.43 = 3.8696
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    dones = torch.tensor([[0.0], [0.0], [1.0]])
    advantages, returns = compute_gae(rewards, values, dones, torch.tensor([10.0]), gamma=0.9, gae_lambda=0.8)
    torch.testing.assert_close(advantages, torch.tensor([[3.8696], [3.43], [1.5]]))
    torch.testing.assert_close(returns, advantages + values)


def test_gae_bootstraps_from_last_value_and_stops_at_episode_ends():
    # An episode ends after step 0; a new one is cut by the rollout after step 1 (V = 2 there).
    rewards, values = torch.tensor([[1.0], [1.0]]), torch.tensor([[0.0], [0.0]])
    dones = torch.tensor([[1.0], [0.0]])
    advantages, _ = compute_gae(rewards, values, dones, torch.tensor([2.0]), gamma=0.5, gae_lambda=1.0)
    torch.testing.assert_close(advantages, torch.tensor([[1.0], [2.0]]))


def test_short_seeded_training_beats_random_on_held_out_starts(pool, env, split):
    train_rows, heldout_rows = split
    run = train(TrainingRun.start(PPOConfig(**(SMALL | dict(total_timesteps=64 * 5 * 40))), pool),
                env, train_rows, progress=False)
    trained = build_playlists(env, heldout_rows, greedy_policy(run.agent))[1].sum(axis=1).mean()
    random = np.mean([build_playlists(env, heldout_rows, random_policy(seed))[1].sum(axis=1).mean() for seed in range(5)])
    assert trained > 1.1 * random
    history = run.history_frame()
    assert len(history) == 40 and history["global_step"].iloc[-1] == 64 * 5 * 40
    assert history["mean_return"].iloc[-5:].mean() > history["mean_return"].iloc[:5].mean()
    columns = ["mean_return", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
               "explained_variance", "steps_per_second"]
    assert np.isfinite(history[columns].to_numpy()).all()


@pytest.mark.parametrize("make_config", [PPOConfig, PPOConfig.original])
def test_same_seed_same_weights_other_seed_other_weights(pool, env, split, make_config):
    def weights(seed):
        run = train(TrainingRun.start(make_config(**SMALL, seed=seed), pool), env, split[0], progress=False)
        return run.agent.state_dict(), run.history_frame()

    (first, first_history), (again, again_history), (other, _) = weights(1), weights(1), weights(2)
    for name in first:
        torch.testing.assert_close(first[name], again[name], rtol=0, atol=0)
    assert any(not torch.equal(first[name], other[name]) for name in first)
    drop = ["elapsed_seconds", "steps_per_second"]
    assert first_history.drop(columns=drop).equals(again_history.drop(columns=drop))


@pytest.mark.parametrize("make_config", [PPOConfig, PPOConfig.original])
def test_the_same_seed_gives_the_same_weights_whatever_threads_the_process_set(make_config):
    """Orthogonal initialisation rounds differently with 1 and 2 threads; the config's count is used."""
    before = torch.get_num_threads()
    try:
        weights = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            weights.append(make_agent(make_config(seed=5), 5).state_dict())
    finally:
        torch.set_num_threads(before)
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name


def test_checkpoint_round_trip_and_resume_equal_an_uninterrupted_run(pool, env, split, tmp_path):
    config = PPOConfig(**SMALL, seed=3)
    straight = train(TrainingRun.start(config, pool), env, split[0], progress=False)

    first_half = train(TrainingRun.start(config, pool, heldout_ids=list(pool.ids[split[1]])),
                       env, split[0], max_updates=2, progress=False)
    path = first_half.save(tmp_path / "ppo_candidate.pt")
    reloaded = TrainingRun.load(path, pool)
    assert reloaded.config == config and reloaded.updates == 2
    assert reloaded.heldout_ids == list(pool.ids[split[1]])
    assert reloaded.model_version() == first_half.model_version()
    resumed = train(reloaded, env, split[0], progress=False)

    assert resumed.updates == straight.updates == 4
    for name, tensor in straight.agent.state_dict().items():
        torch.testing.assert_close(resumed.agent.state_dict()[name], tensor, rtol=0, atol=0)
    assert resumed.model_version() == straight.model_version()


def test_checkpoint_refuses_another_catalogue_and_missing_files(pool, tmp_path, rewards_table):
    path = TrainingRun.start(PPOConfig(**SMALL), pool).save(tmp_path / "run.pt")
    other = TrackPool.from_table(rewards_table.assign(reward=rewards_table["reward"] + 1))
    with pytest.raises(ValueError, match="another rewards table"):
        TrainingRun.load(path, other)
    with pytest.raises(FileNotFoundError, match="06_ppo"):
        TrainingRun.load(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(architecture="transformer"), "architecture"),
        (dict(total_timesteps=None, train_seconds=None), "budget"),
        (dict(num_envs=8, num_minibatches=1024), "num_minibatches"),
        (dict(reward_inputs=("popularity",)), "reward_inputs"),
        (dict(gamma=1.5), "gamma"),
        (dict(learning_rate=0.0), "learning_rate"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        PPOConfig(**overrides)


def test_original_config_keeps_the_original_network_and_clip():
    config = PPOConfig.original(learning_rate=1e-4)
    assert (config.architecture, config.hidden_size, config.clip_epsilon, config.learning_rate) == (
        "original", 128, 0.1, 1e-4)


def test_a_seeded_short_training_on_a_mid_size_catalogue_beats_the_greedy_oracle():
    pool = TrackPool.from_table(make_rewards_table(n_tracks=5_000, n_clusters=20, seed=1))
    config = PPOConfig(total_timesteps=120_000, seed=0)
    env = make_env(config, pool, build_neighbour_index(pool.latents, neighbours_needed(10, 4), show_progress=False))
    train_rows, heldout_rows = split_start_tracks(pool.n_tracks, 0.1, seed=0)
    run = train(TrainingRun.start(config, pool), env, train_rows, progress=False)
    results = compare_policies(env, {"greedy oracle": lambda seed: greedy_oracle_policy(pool.rewards),
                                     "PPO": lambda seed: greedy_policy(run.agent)},
                               heldout_rows, n_eval_starts=100, eval_seeds=(0,), progress=False)
    assert results.loc["PPO", "mean_return"] > results.loc["greedy oracle", "mean_return"]
    assert results.loc["PPO", "repeats_per_episode"] == 0


def test_minibatches_are_counted_as_in_cleanrl_and_the_critic_reports_explained_variance(pool, env, split):
    config = PPOConfig(**SMALL)
    assert config.batch_size == 64 * 5 and config.minibatch_size == 64 * 5 // 2
    history = train(TrainingRun.start(config, pool), env, split[0], progress=False).history_frame()
    assert history["explained_variance"].between(-10, 1).all()
    assert explained_variance(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0])) == 1.0
    assert explained_variance(torch.full((3,), 2.0), torch.tensor([1.0, 2.0, 3.0])) == 0.0


def test_a_checkpoint_of_the_first_format_is_refused_clearly(pool, tmp_path):
    path = TrainingRun.start(PPOConfig(**SMALL), pool).save(tmp_path / "run.pt")
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["format"]
    checkpoint["config"] = {k: v for k, v in checkpoint["config"].items()
                            if k not in ("num_minibatches", "reward_inputs")} | {"minibatch_size": 160}
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="format 1.*re-run notebook 06_ppo"):
        TrainingRun.load(path, pool)


def test_an_untrained_policy_with_a_planner_prior_picks_as_the_look_ahead_planner(pool):
    """The actor's logits start from the search's score, so before any training the greedy policy picks
    a best candidate of the planner of its depth at every step; a policy without the prior does not."""
    neighbours = build_neighbour_index(pool.latents, neighbours_needed(10, 4), show_progress=False)
    config = PPOConfig(look_ahead_depth=2, planner_weight=1_000.0, seed=0)
    env = make_env(config, pool, neighbours)

    def shortfalls(agent) -> np.ndarray:
        """How far below the planner's best score each greedy pick of `agent` is, at every step."""
        batch, done, gaps = env.reset(np.arange(0, pool.n_tracks, 2)), False, []
        while not done:
            scores = env.look_ahead(batch.playlists, batch.candidate_rows, batch.mask, depth=2)
            choice = greedy_policy(agent)(batch)
            gaps.append(scores.max(axis=1) - scores[np.arange(len(choice)), choice])
            batch, _, done = env.step(choice)
        return np.concatenate(gaps)

    assert shortfalls(make_agent(config, 5, pool)).max() < 1e-3  # ties (A then B, B then A) go either way
    assert shortfalls(make_agent(replace(config, planner_weight=0.0), 5, pool)).max() > 1.0


def test_training_refuses_an_environment_with_another_look_ahead(pool, env, split):
    with pytest.raises(ValueError, match="searched 1 picks deep.*3 \\(build it with make_env\\)"):
        train(TrainingRun.start(PPOConfig(**(SMALL | dict(look_ahead_depth=3))), pool), env, split[0], progress=False)


def test_the_pick_table_shows_what_the_policy_weighs_at_one_pick(pool):
    config = PPOConfig(look_ahead_depth=2, seed=0)
    env = make_env(config, pool, build_neighbour_index(pool.latents, neighbours_needed(10, 4), show_progress=False))
    agent = make_agent(config, 5, pool)
    playlist = build_playlists(env, np.array([7]), greedy_policy(agent))[0][0]
    table = pick_table(agent, env, playlist[:3])
    batch = env.resume(np.concatenate([playlist[:3], np.full(7, -1)])[None])
    assert set(table["id"]) == set(pool.ids[batch.candidate_rows[0]])
    np.testing.assert_allclose(table["planner_score"], table["reward"] + table["plan_value"])
    expected = env.look_ahead(batch.playlists, batch.candidate_rows, batch.mask, depth=2)[0]
    np.testing.assert_allclose(table["planner_score"], np.sort(expected)[::-1], rtol=1e-5)
    assert table["probability"].sum() == pytest.approx(1.0)
    assert pool.ids[playlist[3]] == table["id"][table["probability"].idxmax()]  # the greedy pick is the likeliest
