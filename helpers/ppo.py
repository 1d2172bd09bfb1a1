"""Proximal Policy Optimisation (PPO) for the playlist MDP, every step in view.

The loop follows CleanRL's ppo.py. One update:

1. Rollout: `num_envs` playlists are built at once by the current policy π_old.
2. Advantages by GAE(λ): δ_t = r_t + γ V(s_{t+1}) - V(s_t) and Â_t = Σ_l (γλ)^l δ_{t+l};
   the value targets are R_t = Â_t + V(s_t).
3. `update_epochs` passes over shuffled minibatches of the rollout. With the probability ratio
   ρ_t = π_θ(a_t | s_t) / π_old(a_t | s_t), the policy loss is the clipped surrogate
   -E[min(ρ_t Â_t, clip(ρ_t, 1 - ε, 1 + ε) Â_t)]; the value loss is ½ E[(V(s_t) - R_t)²];
   an entropy bonus keeps exploring; the gradient norm is clipped.

Two actor-critics share the loop (`PPOConfig.architecture`):

- "original", the original design exactly: a policy 5→128→ReLU→128→ReLU→4→softmax that sees
  the current track only and scores the 4 candidates by rank, and a value network
  5→128→LeakyReLU→LayerNorm→128→LeakyReLU→LayerNorm→1.
- "candidate": one MLP scores every candidate from what it knows about that candidate (its
  latent, a Fourier encoding of it, its offset from the current track, the share of picks
  left, and what the reward table the policy serves says about it and about what it leads
  to: `helpers.env.REWARD_FEATURES`); a softmax over the scores is the policy. The same
  weights serve any number of candidates and any catalogue. The critic encodes the
  candidates the same way and pools them.

Training is reproducible for a fixed `total_timesteps` (same seed, same machine, same weights);
a wall-clock budget `train_seconds` is not, as the number of updates depends on the machine.
"""
from __future__ import annotations

import hashlib
import io
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.distributions import Categorical
from tqdm.auto import tqdm

from helpers.env import REWARD_FEATURES, BatchPlaylistEnv, PlaylistBatch, TrackPool
from helpers.paths import load_checkpoint, missing_artefact, produced_by, write_bytes_atomic

ARCHITECTURES = ("original", "candidate")
# The networks are drawn and served on one thread. Orthogonal initialisation's QR decomposition rounds
# differently on 1 and 2 threads, so a seed gave another policy in a process that had set its own (the
# benchmark's SB3 run set 1); and a playlist took 3 times as long on 2 threads while another job used a core.
NETWORK_THREADS = 1
# 4: searched plan value, planner prior; 3: plan value without immediate return; 2: num_minibatches, reward
# inputs; 1: latents only
CHECKPOINT_FORMAT = 4


@dataclass(frozen=True)
class PPOConfig:
    """Every hyperparameter of a training run. The defaults are the tuned candidate-aware ones.

    They keep the original design's clip 0.1; the original learning rate 1e-4 is far too slow
    for a one-minute budget, 2e-3 annealed to 0 is not. Gamma is 1: the planner's score the
    actor starts from is the undiscounted return the playlist is judged by (with the original
    0.95 PPO traded later reward for sooner and ended below the planner it started from).
    `PPOConfig.original()` is the original network with the values that let it learn (see its docstring).
    Training stops at `total_timesteps` environment steps or after `train_seconds`, whichever
    comes first; at least one must be set. `torch_threads` is 1 because these small networks
    gain nothing from more threads, and on a busy machine extra threads only wait for cores.
    As in CleanRL, each rollout of `batch_size` steps is split into `num_minibatches`
    minibatches of `minibatch_size` steps. `reward_inputs` names the `REWARD_FEATURES` the
    candidate-aware networks see (the ablation of notebook 06 removes them one by one).
    The plan value among them is searched exactly `look_ahead_depth` picks deep; the actor's
    logits start from `planner_weight` times that search's score (reward + plan value, in
    reward standard deviations; the weight is learned), so PPO learns what the search gets
    wrong (residual policy learning) instead of relearning the search; a weight of 10 makes
    the start nearly the greedy planner (3 explored more and ended below it). 0 turns it off.
    """

    architecture: str = "candidate"
    hidden_size: int = 64
    n_fourier_features: int = 32
    fourier_scale: float = 2.0
    reward_inputs: tuple[str, ...] = REWARD_FEATURES
    look_ahead_depth: int = 4
    planner_weight: float = 10.0
    playlist_length: int = 10
    n_candidates: int = 4
    learning_rate: float = 2e-3
    anneal_lr: bool = True
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip_epsilon: float = 0.1
    update_epochs: int = 4
    num_envs: int = 512
    num_minibatches: int = 4
    normalize_advantages: bool = True
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    reward_scale: float | None = None
    total_timesteps: int | None = 200_000
    train_seconds: float | None = None
    torch_threads: int = 1
    seed: int = 42

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}.")
        if self.total_timesteps is None and self.train_seconds is None:
            raise ValueError("set total_timesteps or train_seconds (or both): training needs a budget.")
        positive = ("hidden_size", "playlist_length", "n_candidates", "learning_rate", "clip_epsilon",
                    "update_epochs", "num_envs", "num_minibatches", "max_grad_norm", "torch_threads",
                    "look_ahead_depth")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"PPOConfig.{name} must be positive, got {getattr(self, name)}.")
        if not self.planner_weight >= 0:
            raise ValueError(f"PPOConfig.planner_weight must be >= 0, got {self.planner_weight}.")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"PPOConfig.{name} must lie in [0, 1], got {getattr(self, name)}.")
        if self.num_minibatches > self.batch_size:
            raise ValueError(
                f"num_minibatches {self.num_minibatches} exceeds the rollout of {self.batch_size} steps "
                f"(num_envs × (playlist_length - 1))."
            )
        unknown = sorted(set(self.reward_inputs) - set(REWARD_FEATURES))
        if unknown:
            raise ValueError(f"PPOConfig.reward_inputs: unknown input(s) {unknown}; choose among {REWARD_FEATURES}.")
        object.__setattr__(self, "reward_inputs", tuple(self.reward_inputs))

    @classmethod
    def original(cls, **overrides) -> "PPOConfig":
        """The original design's networks (128 wide), trained by our PPO loop.

        The original clip 0.1 is kept. With the original learning rate 1e-4 and gamma 0.95 the
        policy stays at random level; lr 1e-2 and gamma 0.5 (a shorter horizon: this policy
        cannot plan far, and nearer rewards are a less noisy signal) make it learn.
        """
        values = dict(architecture="original", hidden_size=128, n_fourier_features=0, reward_inputs=(),
                      look_ahead_depth=1, planner_weight=0.0, learning_rate=1e-2, gamma=0.5, clip_epsilon=0.1,
                      total_timesteps=1_000_000)
        return cls(**(values | overrides))

    @property
    def batch_size(self) -> int:
        """Environment steps per rollout (and per update)."""
        return self.num_envs * (self.playlist_length - 1)

    @property
    def minibatch_size(self) -> int:
        """Steps per minibatch, derived as in CleanRL: batch_size // num_minibatches."""
        return self.batch_size // self.num_minibatches


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights and constant biases, the initialisation PPO implementations use."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


@dataclass(frozen=True)
class Observations:
    """A batch of observations as tensors (see `helpers.env.PlaylistBatch`)."""

    current: torch.Tensor
    candidates: torch.Tensor
    mask: torch.Tensor
    steps_left: torch.Tensor
    candidate_rewards: torch.Tensor

    @classmethod
    def from_batch(cls, batch: PlaylistBatch) -> "Observations":
        return cls(*(torch.from_numpy(getattr(batch, f.name)) for f in fields(cls)))

    @classmethod
    def concat(cls, observations: list["Observations"]) -> "Observations":
        return cls(*(torch.cat([getattr(o, f.name) for o in observations]) for f in fields(cls)))

    def __getitem__(self, index) -> "Observations":
        return Observations(*(getattr(self, f.name)[index] for f in fields(self)))


def masked_policy(logits: torch.Tensor, mask: torch.Tensor) -> Categorical:
    """π(· | s): a softmax over the real candidates only (missing ones get probability 0)."""
    return Categorical(logits=logits.masked_fill(~mask, torch.finfo(logits.dtype).min))


class ActorCritic(nn.Module):
    """An actor (candidate scores → policy) and a critic (state value) for the playlist MDP."""

    def forward(self, obs: Observations) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate logits (batch, n_candidates) and state values (batch,)."""
        raise NotImplementedError

    def logits(self, obs: Observations) -> torch.Tensor:
        """Candidate logits (batch, n_candidates) without the critic: what serving a playlist needs."""
        return self(obs)[0]

    def policy(self, obs: Observations) -> Categorical:
        """π(· | s) for a batch of observations."""
        return masked_policy(self.logits(obs), obs.mask)

    def logits_layer(self) -> nn.Linear:
        """The actor's output layer, whose outputs are the candidates' logits."""
        raise NotImplementedError

    def reset_policy_head(self, seed: int) -> None:
        """Re-initialise the actor's output layer (small weights: a near-uniform π), keeping the rest.

        A converged policy gives the candidates it learned to avoid almost no probability, so PPO
        never samples them again and cannot learn that they have become good; warm-started networks
        also unlearn slowly (the primacy bias, Nikishin et al., 2022). A fresh head samples every
        candidate again while the hidden layers keep what they learned about the catalogue.
        """
        with torch.random.fork_rng(), torch_threads(NETWORK_THREADS):
            torch.manual_seed(seed)
            layer_init(self.logits_layer(), std=0.01)

    def act(self, obs: Observations,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Actions sampled from π(· | s), their log-probabilities and V(s)."""
        logits, value = self(obs)
        pi = masked_policy(logits, obs.mask)
        action = torch.multinomial(pi.probs, 1, generator=generator).squeeze(-1)
        return action, pi.log_prob(action), value

    def evaluate(self, obs: Observations, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log π_θ(a | s), the policy's entropy and V(s), with gradients, for the PPO update."""
        logits, value = self(obs)
        pi = masked_policy(logits, obs.mask)
        return pi.log_prob(action), pi.entropy(), value


class OriginalActorCritic(ActorCritic):
    """The original design: both networks see only the current track's latent.

    The policy's k-th output is the k-th nearest candidate, whatever that track is. The
    latent is standardised with the catalogue's mean and std first (observation
    normalisation, a fixed preprocessing kept in buffers: the networks and their parameter
    counts are the original's); without it the latents' small spread leaves the first layer
    almost linear over the data and the policy learns next to nothing.
    """

    def __init__(self, latent_dim: int = 5, n_candidates: int = 4, hidden_size: int = 128,
                 latent_mean: np.ndarray | None = None, *, latent_std: np.ndarray | None = None):
        super().__init__()
        self.policy_net = nn.Sequential(
            layer_init(nn.Linear(latent_dim, hidden_size)), nn.ReLU(),
            layer_init(nn.Linear(hidden_size, hidden_size)), nn.ReLU(),
            layer_init(nn.Linear(hidden_size, n_candidates), std=0.01),
        )
        self.value_net = nn.Sequential(
            layer_init(nn.Linear(latent_dim, hidden_size)), nn.LeakyReLU(), nn.LayerNorm(hidden_size),
            layer_init(nn.Linear(hidden_size, hidden_size)), nn.LeakyReLU(), nn.LayerNorm(hidden_size),
            layer_init(nn.Linear(hidden_size, 1), std=1.0),
        )
        mean = torch.zeros(latent_dim) if latent_mean is None else torch.as_tensor(latent_mean, dtype=torch.float32)
        std = torch.ones(latent_dim) if latent_std is None else torch.as_tensor(latent_std, dtype=torch.float32)
        self.register_buffer("latent_mean", mean)
        self.register_buffer("latent_std", std.clamp(min=1e-6))

    def logits_layer(self) -> nn.Linear:
        return self.policy_net[-1]

    def forward(self, obs: Observations) -> tuple[torch.Tensor, torch.Tensor]:
        state = (obs.current - self.latent_mean) / self.latent_std
        return self.policy_net(state), self.value_net(state).squeeze(-1)

    def logits(self, obs: Observations) -> torch.Tensor:
        return self.policy_net((obs.current - self.latent_mean) / self.latent_std)


class CandidateActorCritic(ActorCritic):
    """Scores each candidate with shared weights, so it serves any K and any catalogue.

    A candidate is described by [current latent, candidate latent, their difference, the
    share of picks left, its `reward_inputs` standardised, sin/cos(2π B·candidate)].
    The reward inputs come from the table the policy serves (see `helpers.env`): rewards are
    mostly per-track noise that no latent reveals, so reading them beats memorising them,
    and an updated table changes the policy's choices at once. They are standardised with
    the mean and std of the table the policy was first trained on (`reward_mean`,
    `reward_std`, buffers saved with the weights), so later tables keep the same units. The
    random Fourier encoding (fixed Gaussian frequencies B with scale `fourier_scale`) lets the
    MLP fit bumpy functions of the latent. With `planner_weight` > 0 a candidate's logit is the
    MLP's score plus a learned weight (starting at `planner_weight`) times the search's score
    (reward + plan value) in reward standard deviations: the greedy policy starts as the
    look-ahead planner and the MLP, whose output starts near 0, learns corrections to it.
    """

    def __init__(self, latent_dim: int = 5, hidden_size: int = 64, n_fourier_features: int = 32,
                 fourier_scale: float = 2.0, *, reward_inputs: tuple[str, ...] = REWARD_FEATURES,
                 reward_mean: float = 0.0, reward_std: float = 1.0, planner_weight: float = 0.0):
        super().__init__()
        self.log_planner_weight = (nn.Parameter(torch.tensor(float(np.log(planner_weight))))
                                   if planner_weight > 0 else None)
        self.register_buffer("score_columns", torch.tensor([REWARD_FEATURES.index("reward"),
                                                            REWARD_FEATURES.index("plan_value")], dtype=torch.int64))
        self.register_buffer("fourier_frequencies", torch.randn(latent_dim, n_fourier_features) * fourier_scale)
        self.register_buffer("reward_columns", torch.tensor([REWARD_FEATURES.index(n) for n in reward_inputs],
                                                            dtype=torch.int64))
        self.register_buffer("reward_mean", torch.tensor(float(reward_mean)))
        self.register_buffer("reward_std", torch.tensor(max(float(reward_std), 1e-6)))
        n_features = 3 * latent_dim + 1 + len(reward_inputs) + 2 * n_fourier_features
        self.actor = nn.Sequential(
            layer_init(nn.Linear(n_features, hidden_size)), nn.ReLU(),
            layer_init(nn.Linear(hidden_size, hidden_size)), nn.ReLU(),
            layer_init(nn.Linear(hidden_size, 1), std=0.01),
        )
        self.critic_encoder = nn.Sequential(layer_init(nn.Linear(n_features, hidden_size)), nn.ReLU())
        self.critic_head = nn.Sequential(
            layer_init(nn.Linear(2 * hidden_size, hidden_size)), nn.ReLU(),
            layer_init(nn.Linear(hidden_size, 1), std=1.0),
        )

    def logits_layer(self) -> nn.Linear:
        return self.actor[-1]

    def candidate_features(self, obs: Observations) -> torch.Tensor:
        """(batch, n_candidates, n_features): what the networks know about each candidate."""
        n_candidates = obs.candidates.shape[1]
        current = obs.current[:, None, :].expand(-1, n_candidates, -1)
        steps_left = obs.steps_left[:, None, None].expand(-1, n_candidates, 1)
        rewards = (obs.candidate_rewards[..., self.reward_columns] - self.reward_mean) / self.reward_std
        phase = 2 * torch.pi * obs.candidates @ self.fourier_frequencies
        return torch.cat([current, obs.candidates, obs.candidates - current, steps_left, rewards,
                          torch.sin(phase), torch.cos(phase)], dim=-1)

    def actor_logits(self, obs: Observations, features: torch.Tensor) -> torch.Tensor:
        """The actor's scores of the candidates described by `features`, plus the planner prior."""
        logits = self.actor(features).squeeze(-1)
        if self.log_planner_weight is None:
            return logits
        score = obs.candidate_rewards[..., self.score_columns].sum(dim=-1) / self.reward_std
        return logits + self.log_planner_weight.exp() * (score - score.amax(dim=1, keepdim=True))

    def logits(self, obs: Observations) -> torch.Tensor:
        return self.actor_logits(obs, self.candidate_features(obs))

    def forward(self, obs: Observations) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.candidate_features(obs)
        logits = self.actor_logits(obs, features)
        encoded = self.critic_encoder(features)
        mask = obs.mask[..., None]
        pooled_max = encoded.masked_fill(~mask, 0.0).amax(dim=1)
        pooled_mean = (encoded * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        value = self.critic_head(torch.cat([pooled_max, pooled_mean], dim=-1)).squeeze(-1)
        return logits, value


def make_agent(config: PPOConfig, latent_dim: int, pool: TrackPool | None = None) -> ActorCritic:
    """The actor-critic named by `config.architecture`, initialised from `config.seed`.

    `pool` gives the networks their input statistics (the original architecture's latent
    mean and std, the candidate-aware one's reward mean and std); a checkpoint restores them instead.
    The weights are drawn on `NETWORK_THREADS` threads, whatever the process set.
    """
    with torch.random.fork_rng(), torch_threads(NETWORK_THREADS):
        torch.manual_seed(config.seed)
        if config.architecture == "original":
            mean, std = (None, None) if pool is None else (pool.latents.mean(0), pool.latents.std(0))
            return OriginalActorCritic(latent_dim, config.n_candidates, config.hidden_size, mean, latent_std=std)
        mean, std = (0.0, 1.0) if pool is None else (pool.rewards.mean(), pool.rewards.std())
        return CandidateActorCritic(latent_dim, config.hidden_size, config.n_fourier_features, config.fourier_scale,
                                    reward_inputs=config.reward_inputs, reward_mean=mean, reward_std=std,
                                    planner_weight=config.planner_weight)


def make_env(config: PPOConfig, pool: TrackPool, neighbours: np.ndarray) -> BatchPlaylistEnv:
    """The batched playlist environment of a run with `config` over `pool`'s rewards."""
    return BatchPlaylistEnv(pool, neighbours, config.playlist_length, config.n_candidates,
                            look_ahead_depth=config.look_ahead_depth)


def make_optimizer(agent: ActorCritic, learning_rate: float) -> torch.optim.Adam:
    """Adam with eps 1e-5, as the PPO implementations use."""
    return torch.optim.Adam(agent.parameters(), lr=learning_rate, eps=1e-5)


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor,
                *, gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and value targets for a (time, batch) rollout.

    `dones[t]` is 1 where the episode ended with step t (no bootstrap from V(s_{t+1}));
    `last_value` is V of the state after the last step.
    """
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(last_value)
    next_value = last_value
    for t in reversed(range(len(rewards))):
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        next_advantage = delta + gamma * gae_lambda * not_done * next_advantage
        advantages[t] = next_advantage
        next_value = values[t]
    return advantages, advantages + values


CHECKPOINT_KEYS = ("config", "architecture", "model_version", "agent", "optimizer", "generator", "reward_scale",
                   "latent_dim", "catalogue_fingerprint", "heldout_ids", "history", "global_step", "elapsed_seconds")


@dataclass
class TrainingRun:
    """A training run's state: config, networks, optimiser, random generator and history.

    It is everything a checkpoint holds, so `TrainingRun.load(path)` resumes exactly.
    """

    config: PPOConfig
    agent: ActorCritic
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    reward_scale: float
    latent_dim: int
    pool_fingerprint: str
    heldout_ids: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    global_step: int = 0
    elapsed_seconds: float = 0.0

    @classmethod
    def start(cls, config: PPOConfig, pool: TrackPool, heldout_ids: list[str] | None = None) -> "TrainingRun":
        """A fresh run on `pool`; `heldout_ids` (start tracks kept for evaluation) are recorded."""
        agent = make_agent(config, pool.latent_dim, pool)
        reward_scale = config.reward_scale or 1.0 / float(np.std(pool.rewards) or 1.0)
        return cls(
            config=config,
            agent=agent,
            optimizer=make_optimizer(agent, config.learning_rate),
            generator=torch.Generator().manual_seed(config.seed),
            reward_scale=reward_scale,
            latent_dim=pool.latent_dim,
            pool_fingerprint=pool.fingerprint,
            heldout_ids=list(heldout_ids or []),
        )

    @property
    def updates(self) -> int:
        return len(self.history)

    def history_frame(self) -> pd.DataFrame:
        """One row per update: the metrics of `train`."""
        return pd.DataFrame(self.history)

    def model_version(self) -> str:
        """Architecture plus a digest of the weights: identifies the trained policy."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.agent.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().numpy().tobytes())
        return f"{self.config.architecture}-{digest.hexdigest()[:12]}"

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint (weights, optimiser, generator, config, history, held-out starts),
        atomically: a crash never leaves a truncated checkpoint."""
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(self.config),
            "architecture": self.config.architecture,
            "model_version": self.model_version(),
            "agent": self.agent.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "reward_scale": self.reward_scale,
            "latent_dim": self.latent_dim,
            "catalogue_fingerprint": self.pool_fingerprint,
            "heldout_ids": self.heldout_ids,
            "history": self.history,
            "global_step": self.global_step,
            "elapsed_seconds": self.elapsed_seconds,
        }
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        return write_bytes_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path, pool: TrackPool | None = None) -> "TrainingRun":
        """Read a checkpoint; with `pool`, check it is the reward table the policy serves.

        The candidate-aware policy reads its reward inputs from whatever catalogue its
        environment is built on, so they are never stale; the check stops a policy from being
        silently paired with a table other than the one it was trained (or fine-tuned) on.
        A truncated or foreign file is a DamagedArtefact naming the notebook to re-run;
        checkpoints of the first format (`minibatch_size`, no reward inputs) are refused.
        """
        path = Path(path)
        if not path.exists():
            raise missing_artefact(path, produced_by(path, "policy"))
        checkpoint = load_checkpoint(path, CHECKPOINT_KEYS, "policy")
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"{path} is a checkpoint of format {checkpoint.get('format', 1)}, this code reads format "
                f"{CHECKPOINT_FORMAT} (its inputs changed: the plan value is searched `look_ahead_depth` picks "
                "deep and the actor starts from the search's score): re-run notebook 06_ppo to train a policy in "
                "the current format."
            )
        if pool is not None and pool.fingerprint != checkpoint["catalogue_fingerprint"]:
            raise ValueError(
                f"{path} serves another rewards table (fingerprint {checkpoint['catalogue_fingerprint']}, "
                f"this one is {pool.fingerprint}): load the table saved with that version, or re-run "
                "notebook 06_ppo."
            )
        config = PPOConfig(**checkpoint["config"])
        agent = make_agent(config, checkpoint["latent_dim"])
        agent.load_state_dict(checkpoint["agent"])
        optimizer = make_optimizer(agent, config.learning_rate)
        optimizer.load_state_dict(checkpoint["optimizer"])
        generator = torch.Generator()
        generator.set_state(checkpoint["generator"])
        return cls(
            config=config, agent=agent, optimizer=optimizer, generator=generator,
            reward_scale=checkpoint["reward_scale"], latent_dim=checkpoint["latent_dim"],
            pool_fingerprint=checkpoint["catalogue_fingerprint"], heldout_ids=checkpoint["heldout_ids"],
            history=checkpoint["history"], global_step=checkpoint["global_step"],
            elapsed_seconds=checkpoint["elapsed_seconds"],
        )


@dataclass(frozen=True)
class Rollout:
    """One rollout: `num_envs` complete playlists, stored step-major (time, batch)."""

    observations: Observations
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    table_rewards: np.ndarray


def collect_rollout(agent: ActorCritic, env: BatchPlaylistEnv, start_rows: torch.Tensor, num_envs: int,
                    *, generator: torch.Generator) -> Rollout:
    """Build `num_envs` playlists from random `start_rows` with the current policy π_old."""
    starts = start_rows[torch.randint(len(start_rows), (num_envs,), generator=generator)]
    batch = env.reset(starts.numpy())
    observations, actions, logprobs, values = [], [], [], []
    table_rewards = np.zeros((env.n_picks, num_envs))
    with torch.no_grad():
        for t in range(env.n_picks):
            obs = Observations.from_batch(batch)
            action, logprob, value = agent.act(obs, generator)
            observations.append(obs)
            actions.append(action)
            logprobs.append(logprob)
            values.append(value)
            batch, table_rewards[t], _ = env.step(action.numpy())
    return Rollout(Observations.concat(observations), torch.stack(actions), torch.stack(logprobs),
                   torch.stack(values), table_rewards)


def ppo_update(agent: ActorCritic, optimizer: torch.optim.Optimizer, rollout: Rollout, advantages: torch.Tensor,
               *, returns: torch.Tensor, config: PPOConfig, generator: torch.Generator) -> dict[str, float]:
    """Several epochs of clipped-surrogate updates over shuffled minibatches; mean losses and diagnostics."""
    b_actions, b_logprobs = rollout.actions.reshape(-1), rollout.logprobs.reshape(-1)
    b_advantages, b_returns = advantages.reshape(-1), returns.reshape(-1)
    stats = {"policy_loss": [], "value_loss": [], "entropy": [], "approx_kl": [], "clip_fraction": []}
    for _ in range(config.update_epochs):
        permutation = torch.randperm(config.batch_size, generator=generator)
        for mb in torch.tensor_split(permutation, config.num_minibatches):
            new_logprob, entropy, new_value = agent.evaluate(rollout.observations[mb], b_actions[mb])
            log_ratio = new_logprob - b_logprobs[mb]
            ratio = log_ratio.exp()
            mb_advantages = b_advantages[mb]
            if config.normalize_advantages:
                mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
            policy_loss = torch.max(
                -mb_advantages * ratio,
                -mb_advantages * torch.clamp(ratio, 1 - config.clip_epsilon, 1 + config.clip_epsilon),
            ).mean()
            value_loss = 0.5 * ((new_value - b_returns[mb]) ** 2).mean()
            entropy_bonus = entropy.mean()
            loss = policy_loss - config.entropy_coef * entropy_bonus + config.value_coef * value_loss

            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
            optimizer.step()

            with torch.no_grad():
                stats["policy_loss"].append(policy_loss.item())
                stats["value_loss"].append(value_loss.item())
                stats["entropy"].append(entropy_bonus.item())
                stats["approx_kl"].append(((ratio - 1) - log_ratio).mean().item())
                stats["clip_fraction"].append(((ratio - 1).abs() > config.clip_epsilon).float().mean().item())
    return {name: float(np.mean(values)) for name, values in stats.items()} | {
        "explained_variance": explained_variance(rollout.values.reshape(-1), b_returns)}


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var[R - V] / Var[R], CleanRL's critic diagnostic: 1 is perfect, 0 no better than a constant.

    Measured on the rollout's value predictions V(s_t) against the GAE targets R_t; NaN when the
    targets do not vary.
    """
    variance = target.var()
    return float("nan") if variance == 0 else float(1 - (target - predicted).var() / variance)


@contextmanager
def torch_threads(n_threads: int):
    """Run the block with `n_threads` torch threads, then restore the previous number."""
    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(run: TrainingRun, env: BatchPlaylistEnv, start_rows: np.ndarray, *, max_updates: int | None = None,
          progress: bool = True, on_update: Callable[[dict], None] | None = None) -> TrainingRun:
    """Train `run.agent` by PPO until its budget is spent (or for `max_updates` more updates).

    Episodes start from `start_rows` (catalogue rows; keep evaluation starts out of them).
    `on_update(metrics)` is called after every update, e.g. to redraw live training curves.
    Returns the same `run`, updated in place; `run.history` gains one row of metrics per update.
    """
    config = run.config
    built, configured = ((env.playlist_length, env.n_candidates, env.look_ahead_depth),
                         (config.playlist_length, config.n_candidates, config.look_ahead_depth))
    if built != configured:
        raise ValueError(
            "the environment builds playlists of {} with {} candidates and plan values searched {} picks deep; "
            "the config says {}, {} and {} (build it with make_env).".format(*built, *configured)
        )
    start_rows = torch.as_tensor(np.asarray(start_rows), dtype=torch.int64)
    if len(start_rows) == 0:
        raise ValueError("start_rows is empty: training needs start tracks.")
    dones = torch.zeros(env.n_picks, config.num_envs)
    dones[-1] = 1.0  # every playlist ends with its last pick: nothing to bootstrap

    def budget_spent() -> float:
        """Share of the budget spent: drives learning-rate annealing and the stopping rule."""
        shares = []
        if config.total_timesteps is not None:
            shares.append(run.global_step / config.total_timesteps)
        if config.train_seconds is not None:
            shares.append(run.elapsed_seconds / config.train_seconds)
        return min(max(shares), 1.0)

    bar = tqdm(total=1.0, initial=budget_spent(), desc=f"PPO ({config.architecture})", disable=not progress,
               bar_format="{l_bar}{bar}| {elapsed} {postfix}")
    updates_this_call = 0
    with torch_threads(config.torch_threads):
        while budget_spent() < 1.0 and (max_updates is None or updates_this_call < max_updates):
            update_start = time.perf_counter()
            if config.anneal_lr:
                run.optimizer.param_groups[0]["lr"] = (1.0 - budget_spent()) * config.learning_rate

            rollout = collect_rollout(run.agent, env, start_rows, config.num_envs, generator=run.generator)
            rewards = torch.as_tensor(rollout.table_rewards * run.reward_scale, dtype=torch.float32)
            advantages, returns = compute_gae(rewards, rollout.values, dones, torch.zeros(config.num_envs),
                                              gamma=config.gamma, gae_lambda=config.gae_lambda)
            losses = ppo_update(run.agent, run.optimizer, rollout, advantages, returns=returns, config=config,
                                generator=run.generator)

            seconds = time.perf_counter() - update_start
            spent_before = budget_spent()
            run.global_step += config.batch_size
            run.elapsed_seconds += seconds
            metrics = {
                "update": run.updates + 1,
                "global_step": run.global_step,
                "elapsed_seconds": run.elapsed_seconds,
                "mean_return": float(rollout.table_rewards.sum(axis=0).mean()),
                **losses,
                "learning_rate": run.optimizer.param_groups[0]["lr"],
                "steps_per_second": config.batch_size / seconds,
            }
            run.history.append(metrics)
            updates_this_call += 1
            bar.update(budget_spent() - spent_before)
            bar.set_postfix(mean_return=f"{metrics['mean_return']:.1f}",
                            steps_per_s=f"{metrics['steps_per_second']:.0f}")
            if on_update is not None:
                on_update(metrics)
    bar.close()
    return run


def pick_table(agent: ActorCritic, env: BatchPlaylistEnv, playlist: np.ndarray) -> pd.DataFrame:
    """What the policy weighs at the pick after `playlist` (catalogue rows so far): for each real
    candidate, its reward, its plan value (searched `env.look_ahead_depth` picks deep), the
    look-ahead planner's score (their sum) and the policy's probability, best score first."""
    partial = np.full((1, env.playlist_length), -1, dtype=np.int64)
    partial[0, : len(playlist)] = playlist
    batch = env.resume(partial)
    with torch.no_grad():
        probability = agent.policy(Observations.from_batch(batch)).probs[0].numpy()
    real = batch.mask[0]
    features = batch.candidate_rewards[0][real]
    reward, plan_value = (features[:, REWARD_FEATURES.index(name)] for name in ("reward", "plan_value"))
    table = pd.DataFrame({"id": env.pool.ids[batch.candidate_rows[0][real]], "reward": reward,
                          "plan_value": plan_value, "planner_score": reward + plan_value,
                          "probability": probability[real]})
    return table.sort_values("planner_score", ascending=False, ignore_index=True)


def greedy_policy(agent: ActorCritic) -> Callable[[PlaylistBatch], np.ndarray]:
    """The agent's most probable candidate at every step, as a batch policy for evaluation."""
    def choose(batch: PlaylistBatch) -> np.ndarray:
        with torch.inference_mode(), torch_threads(NETWORK_THREADS):
            obs = Observations.from_batch(batch)
            return agent.logits(obs).masked_fill(~obs.mask, -torch.inf).argmax(dim=1).numpy()
    return choose


def sampling_policy(agent: ActorCritic, seed: int) -> Callable[[PlaylistBatch], np.ndarray]:
    """Candidates sampled from the agent's policy with a seeded generator."""
    generator = torch.Generator().manual_seed(seed)

    def choose(batch: PlaylistBatch) -> np.ndarray:
        with torch.no_grad(), torch_threads(NETWORK_THREADS):
            return agent.act(Observations.from_batch(batch), generator)[0].numpy()
    return choose
