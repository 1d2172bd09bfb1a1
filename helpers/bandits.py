"""Contextual bandit baselines: LinUCB and linear Thompson sampling over the candidates' latents.

At every pick of a playlist each of the 4 candidates is an arm with context x = (1, z), its
latent state z with a bias. One shared ridge regression predicts a song's reward (in units of
the largest reward, so the noise scale is the same at every size) from x, learned online from
every song heard, the start song included:

    A = lambda I + sum x x^T,   b = sum r x,   theta = A^-1 b

LinUCB picks argmax x . theta + alpha sqrt(x^T A^-1 x) (Li et al., 2010); linear Thompson
sampling draws theta~ ~ N(theta, v^2 A^-1) once per pick and takes argmax x . theta~ (Agrawal
and Goyal, 2013). Both are myopic: they choose the best-looking candidate now and never plan
the rest of the playlist. Evaluation takes argmax x . theta.
"""
from __future__ import annotations

import numpy as np

from helpers.env import PlaylistBatch


class LinearBandit:
    """A shared ridge regression from (1, latent) to the reward scaled by `reward_scale`.

    `exploration` is "ucb" (alpha = `strength`) or "thompson" (v = `strength`).
    """

    def __init__(self, latent_dim: int, exploration: str, strength: float = 1.0, ridge: float = 1.0, *,
                 reward_scale: float = 1.0, seed: int = 0) -> None:
        if exploration not in ("ucb", "thompson"):
            raise ValueError(f"exploration must be 'ucb' or 'thompson', got {exploration!r}")
        if strength < 0 or ridge <= 0 or reward_scale <= 0:
            raise ValueError("strength must be >= 0, ridge and reward_scale > 0")
        self.exploration = exploration
        self.strength = strength
        self.reward_scale = reward_scale
        self.precision = ridge * np.eye(latent_dim + 1)
        self.target = np.zeros(latent_dim + 1)
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def contexts(latents: np.ndarray) -> np.ndarray:
        """(..., d) latents -> (..., d + 1) contexts with a leading 1."""
        return np.concatenate([np.ones((*latents.shape[:-1], 1)), latents], axis=-1)

    @property
    def theta(self) -> np.ndarray:
        return np.linalg.solve(self.precision, self.target)

    def update(self, latents: np.ndarray, rewards: np.ndarray) -> None:
        """Learn from heard songs: their latents (n, d) and rewards (n,) in the table's units."""
        x = self.contexts(np.asarray(latents, dtype=np.float64))
        self.precision += x.T @ x
        self.target += x.T @ (np.asarray(rewards, dtype=np.float64) / self.reward_scale)

    def scores(self, batch: PlaylistBatch, explore: bool) -> np.ndarray:
        """Each candidate's score, -inf where there is none; with `explore`, the bandit's exploring score."""
        x = self.contexts(batch.candidates.astype(np.float64))
        theta = self.theta
        if explore and self.exploration == "thompson":
            covariance = np.linalg.inv(self.precision)
            theta = self.rng.multivariate_normal(theta, self.strength ** 2 * (covariance + covariance.T) / 2)
        score = x @ theta
        if explore and self.exploration == "ucb":
            spread = np.einsum("bkd,de,bke->bk", x, np.linalg.inv(self.precision), x)
            score = score + self.strength * np.sqrt(np.maximum(spread, 0.0))
        return np.where(batch.mask, score, -np.inf)

    def policy(self, explore: bool):
        """A batch policy for `helpers.evaluation.build_playlists`: the best-scoring candidate."""
        return lambda batch: np.argmax(self.scores(batch, explore), axis=1)
