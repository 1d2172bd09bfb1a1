"""Simulated people: listeners the system has never met, each with a hidden taste.

A person has a taste for every song of the catalogue: the share t_i of song i they listen to
on average. A play of song i is heard

    percentage_listened = clip(N(t_i, play_noise), 0, 1),   liked when percentage_listened > like_threshold,

so a person's expected reward for a song follows from t_i alone (`expected_rewards`). What
differs between the scenarios is where the taste comes from, and so what a system can learn
about it from a few plays:

- `someone_else`: a fresh draw of notebook 04's kind of listener. Each cluster c has a mean
  mu_c ~ U(0.4, 0.9) and a spread sigma_c ~ U(0.05, 0.15), and each song its own
  t_i ~ N(mu_c, sigma_c). Clusters are independent: hearing one says nothing of another.
- `smooth_taste`: taste falls with the latent distance from an interest point u (RecSim NG's
  affinity), t_i = low + (high - low) exp(-|z_i - u|^2 / (2 l^2)) + N(0, song_noise).
- `drifting`: smooth taste whose interest point moves while listening, towards the songs
  enjoyed (RecSim's interest evolution): after a play of song j, u <- u + rate * p_j (z_j - u),
  with p_j its percentage listened.
- `loves_lowest_clusters`: notebook 04's own listener, except that it now loves the clusters
  notebook 04 rated lowest (their songs are drawn afresh around 0.95): the hard case.

Each person also carries its *taste model* (`model_mean`, `model_std`): the distribution of a
song's taste given everything about the person except that song's own draw. A system that
knew the taste model exactly, and no song individually, would serve `knowable_rewards`: that
table is the "knowable" ceiling of adaptation. The system under test never sees any of this.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from helpers.listeners import MEAN_RANGE, STD_RANGE, ListenerModel, expected_listening, sample_listening
from helpers.rewards import RewardWeights, interaction_score, reward

SCENARIOS = ("someone else", "smooth taste", "drifting", "loves the two lowest clusters")
PLAY_NOISE = 0.05  # spread of one play around the song's taste
LIKE_THRESHOLD = 0.6  # notebook 04's
# The smooth-taste people's priors: a lengthscale of this fraction of the median latent distance
# from the interest point, a taste from low (far away) to high (at the interest point), a song's own noise.
SMOOTH_LENGTHSCALE = (0.5, 1.0)
SMOOTH_LOW = (0.3, 0.5)
SMOOTH_HIGH = (0.85, 0.95)
SMOOTH_SONG_NOISE = 0.07


def expected_rewards(taste_mean: np.ndarray, taste_std: np.ndarray | float, proximity: np.ndarray,
                     weights: RewardWeights, *, like_threshold: float = LIKE_THRESHOLD) -> np.ndarray:
    """Each song's expected reward when its taste is N(taste_mean, taste_std) and a play adds nothing more.

    A play is clip(Y, 0, 1) with Y ~ N(taste_mean, taste_std), so notebook 05's reward formula
    applies to E[percentage_listened] and P(liked) (`helpers.listeners.expected_listening`).
    """
    listened, like_probability = expected_listening(taste_mean, taste_std, like_threshold)
    return reward(interaction_score(listened, like_probability, weights), proximity, weights)


@dataclass
class Person:
    """A simulated person: a taste per song, plays drawn from it, and (for `drifting`) a taste that moves.

    `taste` (n_songs,) is the current mean share listened; `model_mean`/`model_std` the taste
    model (see the module docstring). `interest`, `lengthscale`, `low`, `high` and
    `drift_rate` describe a smooth taste and its drift (unused when `drift_rate` is 0).
    `history` is what a system may know of the person from before (the mean share listened per
    song of their past plays), None for a stranger.
    """

    scenario: str
    taste: np.ndarray
    model_mean: np.ndarray
    model_std: np.ndarray
    latents: np.ndarray
    song_noise: np.ndarray
    seed: int
    play_noise: float = PLAY_NOISE
    like_threshold: float = LIKE_THRESHOLD
    interest: np.ndarray | None = None
    lengthscale: float = 1.0
    low: float = 0.0
    high: float = 1.0
    drift_rate: float = 0.0
    history: np.ndarray | None = None
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(np.random.SeedSequence(self.seed).spawn(2)[1])

    @property
    def n_songs(self) -> int:
        return len(self.taste)

    def listen(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Play the songs at `rows` in order: (percentage_listened, liked), drifting after each play."""
        rows = np.asarray(rows, dtype=np.int64)
        if not self.drift_rate:
            return sample_listening(self.taste[rows], self.play_noise, self.like_threshold, self.rng)
        listened, liked = np.empty(len(rows)), np.empty(len(rows), dtype=np.int64)
        for position, row in enumerate(rows):  # a playlist's songs, one after the other: the taste moves between them
            heard = sample_listening(self.taste[row:row + 1], self.play_noise, self.like_threshold, self.rng)
            listened[position], liked[position] = heard[0][0], heard[1][0]
            self.interest = self.interest + self.drift_rate * listened[position] * (self.latents[row] - self.interest)
            self._retaste()
        return listened, liked

    def _retaste(self) -> None:
        self.model_mean = smooth_curve(self.latents, self.interest, self.lengthscale, low=self.low, high=self.high)
        self.taste = self.model_mean + self.song_noise

    def true_rewards(self, proximity: np.ndarray, weights: RewardWeights) -> np.ndarray:
        """Each song's expected reward for this person now (its taste known exactly)."""
        return expected_rewards(self.taste, self.play_noise, proximity, weights, like_threshold=self.like_threshold)

    def knowable_rewards(self, proximity: np.ndarray, weights: RewardWeights) -> np.ndarray:
        """Each song's expected reward under the taste model, no song known individually."""
        spread = np.sqrt(self.model_std ** 2 + self.play_noise ** 2)
        return expected_rewards(self.model_mean, spread, proximity, weights, like_threshold=self.like_threshold)


def smooth_curve(latents: np.ndarray, interest: np.ndarray, lengthscale: float, *, low: float, high: float) -> np.ndarray:
    """low + (high - low) exp(-|z - interest|^2 / (2 lengthscale^2)) for every row z of `latents`."""
    squared = ((latents - interest) ** 2).sum(axis=1)
    return low + (high - low) * np.exp(-squared / (2 * lengthscale ** 2))


def someone_else(clusters: np.ndarray, latents: np.ndarray, seed: int, *,
                 mean_range: tuple[float, float] = MEAN_RANGE,
                 std_range: tuple[float, float] = STD_RANGE) -> Person:
    """A fresh listener of notebook 04's kind: per-cluster mean and spread, a draw per song."""
    rng = np.random.default_rng(seed)
    n_clusters = int(clusters.max()) + 1
    cluster_mean = rng.uniform(*mean_range, size=n_clusters)
    cluster_std = rng.uniform(*std_range, size=n_clusters)
    model_mean, model_std = cluster_mean[clusters], cluster_std[clusters]
    song_noise = model_std * rng.standard_normal(len(clusters))
    return Person("someone else", model_mean + song_noise, model_mean, model_std, latents, song_noise, seed)


def midpoints(value_range: tuple[float, float], n: int) -> np.ndarray:
    """The midpoints of `n` equal bins of `value_range`: a grid over a uniform prior."""
    edges = np.linspace(*value_range, n + 1)
    return (edges[:-1] + edges[1:]) / 2


def someone_else_posterior(clusters: np.ndarray, heard_rows: np.ndarray, heard_mean: np.ndarray,
                           heard_plays: np.ndarray, *, play_noise: float = PLAY_NOISE,
                           like_threshold: float = LIKE_THRESHOLD, n_grid: int = 100,
                           rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """What plays say of a "someone else"'s next play of each song, to someone who knows the
    person's form and priors: E[percentage_listened] and P(liked) per song, under the posterior.

    The form (`someone_else`): cluster c's mean mu_c ~ U(`MEAN_RANGE`) and spread
    sigma_c ~ U(`STD_RANGE`), independent across clusters; a song's taste t_i ~ N(mu_c, sigma_c).
    A song heard n_i times with mean share ybar_i is read as ybar_i ~ N(mu_c, sigma_c^2 +
    play_noise^2 / n_i). Bayes' rule on a grid of `n_grid` x `n_grid` // 5 (mu, sigma) midpoints,
    one cluster at a time, weighs each grid point; a play of an unheard song of cluster c is then
    the posterior mixture of clip(N(mu, sigma^2 + play_noise^2), 0, 1). Up to the grid and to
    reading a clipped play as Gaussian, no learner can predict a song it has not heard better
    from the same plays. With `rng`, each cluster's (mu, sigma) is instead drawn from its
    posterior (a Thompson draw) and the play predicted under it.
    """
    mu, sigma, log_joint = _someone_else_grid(clusters, heard_rows, heard_mean, heard_plays,
                                              play_noise=play_noise, n_grid=n_grid)
    posterior = np.exp(log_joint - log_joint.max(axis=1, keepdims=True))
    posterior /= posterior.sum(axis=1, keepdims=True)
    listened, like_probability = expected_listening(mu, np.sqrt(sigma ** 2 + play_noise ** 2), like_threshold)
    clusters = np.asarray(clusters, dtype=np.int64)
    if rng is None:
        return (posterior @ listened)[clusters], (posterior @ like_probability)[clusters]
    drawn = (posterior.cumsum(axis=1) < rng.random((len(posterior), 1))).sum(axis=1).clip(max=len(mu) - 1)
    return listened[drawn][clusters], like_probability[drawn][clusters]


def someone_else_log_evidence(clusters: np.ndarray, heard_rows: np.ndarray, heard_mean: np.ndarray,
                              heard_plays: np.ndarray, *, play_noise: float = PLAY_NOISE,
                              n_grid: int = 100) -> float:
    """log p(heard means | the "someone else" form and its priors), the density of `heard_mean`
    as `someone_else_posterior` reads it (each cluster's (mu, sigma) integrated on its grid)."""
    _, _, log_joint = _someone_else_grid(clusters, heard_rows, heard_mean, heard_plays,
                                         play_noise=play_noise, n_grid=n_grid)
    return float((np.logaddexp.reduce(log_joint, axis=1) - np.log(log_joint.shape[1])).sum())


def _someone_else_grid(clusters: np.ndarray, heard_rows: np.ndarray, heard_mean: np.ndarray,
                       heard_plays: np.ndarray, *, play_noise: float,
                       n_grid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (mu, sigma) grid and, per cluster and grid point, log p(the cluster's heard means | mu, sigma)."""
    clusters = np.asarray(clusters, dtype=np.int64)
    heard_rows = np.asarray(heard_rows, dtype=np.int64)
    heard_mean = np.asarray(heard_mean, dtype=np.float64)
    heard_plays = np.asarray(heard_plays, dtype=np.float64)
    if not heard_rows.shape == heard_mean.shape == heard_plays.shape or (heard_plays <= 0).any():
        raise ValueError(f"heard_rows, heard_mean and heard_plays (each > 0) must describe the same songs, "
                         f"got shapes {heard_rows.shape}, {heard_mean.shape} and {heard_plays.shape}")
    if n_grid < 5:
        raise ValueError(f"n_grid must be >= 5, got {n_grid}")
    mu, sigma = (grid.ravel() for grid in np.meshgrid(midpoints(MEAN_RANGE, n_grid),
                                                      midpoints(STD_RANGE, n_grid // 5), indexing="ij"))
    variance = sigma[None] ** 2 + play_noise ** 2 / heard_plays[:, None]  # (heard songs, grid points)
    log_likelihood = -0.5 * ((heard_mean[:, None] - mu[None]) ** 2 / variance + np.log(2 * np.pi * variance))
    log_joint = np.zeros((int(clusters.max()) + 1, len(mu)))  # the uniform prior: equal weights
    np.add.at(log_joint, clusters[heard_rows], log_likelihood)
    return mu, sigma, log_joint


def _smooth_parameters(latents: np.ndarray, rng: np.random.Generator) -> dict:
    """An interest point at a random song, a lengthscale of `SMOOTH_LENGTHSCALE` x the median
    distance to it, a taste range from `SMOOTH_LOW` to `SMOOTH_HIGH`."""
    interest = latents[rng.integers(len(latents))].astype(np.float64)
    sample = latents[rng.choice(len(latents), min(len(latents), 10_000), replace=False)]
    median = float(np.median(np.linalg.norm(sample - interest, axis=1)))
    return {"interest": interest, "lengthscale": median * rng.uniform(*SMOOTH_LENGTHSCALE),
            "low": rng.uniform(*SMOOTH_LOW), "high": rng.uniform(*SMOOTH_HIGH)}


@dataclass(frozen=True)
class SmoothGrid:
    """The smooth-taste models Bayes' rule weighs (`smooth_grid`): grid point k is the interest
    point `centre[k]` at the lengthscale `lengthscale[k]`, over the songs' `latents`."""

    latents: np.ndarray
    centre: np.ndarray
    lengthscale: np.ndarray


def smooth_grid(latents: np.ndarray, *, n_lengthscales: int = 8, max_interests: int = 30_000,
                seed: int = 0) -> SmoothGrid:
    """Every song as the interest point u (at most `max_interests` of them, seeded), each at
    `n_lengthscales` fractions of `SMOOTH_LENGTHSCALE` of the median distance from u (`smooth_taste`)."""
    latents = np.asarray(latents, dtype=np.float64)
    rng = np.random.default_rng(seed)
    interests = latents if len(latents) <= max_interests else latents[rng.choice(len(latents), max_interests,
                                                                                 replace=False)]
    sample = latents[rng.choice(len(latents), min(len(latents), 2_000), replace=False)]
    median = np.concatenate([np.median(np.sqrt(squared_distances(block, sample)), axis=1)
                             for block in np.array_split(interests, max(1, len(interests) // 2_000))])
    fractions = midpoints(SMOOTH_LENGTHSCALE, n_lengthscales)
    return SmoothGrid(latents, interests.repeat(n_lengthscales, axis=0),  # point k: interest k // n, fraction k % n
                      (median[:, None] * fractions[None]).ravel())


def smooth_posterior(grid: SmoothGrid, heard_rows: np.ndarray, heard_mean: np.ndarray, heard_variance: np.ndarray,
                     *, max_components: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """What plays say of a smooth-taste person's taste model, to someone who knows its form and priors.

    The taste model is m(z) = low + (high - low) exp(-|z - u|^2 / (2 l^2)) (`smooth_taste`);
    its interest point u is one of the songs, l a fraction of `SMOOTH_LENGTHSCALE` of the median
    distance from u, low and high uniform on `SMOOTH_LOW` and `SMOOTH_HIGH`. Given the mean
    share `heard_mean` of the songs `heard_rows` (each N(m(z), `heard_variance`)), Bayes' rule
    on the `grid` of (u, l) (`smooth_grid`), with (low, high - low) integrated exactly under a
    Gaussian prior of the uniform priors' moments, gives the posterior mean and standard
    deviation of m(z) for every song. Up to the grid and to reading a clipped play as Gaussian,
    no learner can infer the taste model better from the same plays; `max_components` grid
    points of highest posterior weight make the prediction.
    """
    fit = _smooth_fit(grid, heard_rows, heard_mean, heard_variance)
    log_evidence = fit["log_evidence"]
    top = np.argsort(log_evidence)[::-1][:max_components]
    weight = np.exp(log_evidence[top] - log_evidence[top].max())
    weight /= weight.sum()
    mean, second_moment = np.zeros(len(grid.latents)), np.zeros(len(grid.latents))
    for k, w in zip(top, weight):
        shape = np.exp(-squared_distances(grid.latents, grid.centre[k][None])[:, 0] / (2 * grid.lengthscale[k] ** 2))
        value = fit["low"][k] + fit["amplitude"][k] * shape
        spread = fit["v11"][k] + 2 * fit["v12"][k] * shape + fit["v22"][k] * shape ** 2
        mean += w * value
        second_moment += w * (value ** 2 + spread)
    return mean, np.sqrt(np.maximum(second_moment - mean ** 2, 0))


def smooth_log_evidence(grid: SmoothGrid, heard_rows: np.ndarray, heard_mean: np.ndarray,
                        heard_variance: np.ndarray) -> float:
    """log p(heard means | the smooth-taste form and its priors), the density of `heard_mean` as
    `smooth_posterior` reads it (every point of the `grid` a priori equally likely)."""
    log_evidence = _smooth_fit(grid, heard_rows, heard_mean, heard_variance)["log_evidence"]
    return float(np.logaddexp.reduce(log_evidence) - np.log(len(log_evidence)))


def _smooth_fit(grid: SmoothGrid, heard_rows: np.ndarray, heard_mean: np.ndarray,
                heard_variance: np.ndarray) -> dict[str, np.ndarray]:
    """Per point of the `grid`: the posterior of (low, amplitude) (mean, covariance v11, v12, v22)
    and log p(heard means | the point)."""
    # Prior of (low, amplitude = high - low): the uniform priors' means and covariance.
    low_var, high_var = np.ptp(SMOOTH_LOW) ** 2 / 12, np.ptp(SMOOTH_HIGH) ** 2 / 12
    prior_mean = np.array([np.mean(SMOOTH_LOW), np.mean(SMOOTH_HIGH) - np.mean(SMOOTH_LOW)])
    prior_precision = np.linalg.inv(np.array([[low_var, -low_var], [-low_var, low_var + high_var]]))
    heard = grid.latents[np.asarray(heard_rows, dtype=np.int64)]
    y, inverse_variance = np.asarray(heard_mean, np.float64), 1 / np.asarray(heard_variance, np.float64)
    bump = np.exp(-squared_distances(grid.centre, heard) / (2 * grid.lengthscale[:, None] ** 2))  # (points, plays)
    a11 = prior_precision[0, 0] + inverse_variance.sum()
    a12 = prior_precision[0, 1] + bump @ inverse_variance
    a22 = prior_precision[1, 1] + bump ** 2 @ inverse_variance
    q = prior_precision @ prior_mean
    c1, c2 = q[0] + y @ inverse_variance, q[1] + bump @ (y * inverse_variance)
    determinant = a11 * a22 - a12 ** 2
    # Posterior covariance of (low, amplitude) per grid point: the inverse of [[a11, a12], [a12, a22]].
    v11, v12, v22 = a22 / determinant, -a12 / determinant, a11 / determinant
    low, amplitude = v11 * c1 + v12 * c2, v12 * c1 + v22 * c2
    # The linear-Gaussian model's log marginal likelihood: N(y; A m, A P^-1 A' + D), A = [1, bump].
    shared = 0.5 * (np.linalg.slogdet(prior_precision)[1] + np.log(inverse_variance / (2 * np.pi)).sum()
                    - y ** 2 @ inverse_variance - prior_mean @ q)
    log_evidence = shared + 0.5 * (c1 * low + c2 * amplitude) - 0.5 * np.log(determinant)
    return {"low": low, "amplitude": amplitude, "v11": v11, "v12": v12, "v22": v22, "log_evidence": log_evidence}


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a_i - b_j|^2 for every row of `a` and of `b`, without the (len(a), len(b), d) differences."""
    return np.maximum((a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None] - 2 * a @ b.T, 0)


def smooth_taste(latents: np.ndarray, seed: int, song_noise: float = SMOOTH_SONG_NOISE,
                 drift_rate: float = 0.0) -> Person:
    """Taste that falls with latent distance from an interest point, plus per-song noise."""
    rng = np.random.default_rng(seed)
    latents = np.asarray(latents, dtype=np.float64)
    parameters = _smooth_parameters(latents, rng)
    model_mean = smooth_curve(latents, parameters["interest"], parameters["lengthscale"],
                              low=parameters["low"], high=parameters["high"])
    noise = song_noise * rng.standard_normal(len(latents))
    return Person("drifting" if drift_rate else "smooth taste", model_mean + noise, model_mean,
                  np.full(len(latents), song_noise), latents, noise, seed, drift_rate=drift_rate, **parameters)


def drifting(latents: np.ndarray, seed: int, drift_rate: float = 0.1) -> Person:
    """Smooth taste whose interest point moves towards each song by `drift_rate` x its percentage listened."""
    return smooth_taste(latents, seed, drift_rate=drift_rate)


def loves_lowest_clusters(table: pd.DataFrame, listener_model: ListenerModel, seed: int, *,
                          n_loved: int = 2, loved_mean: float = 0.95) -> Person:
    """Notebook 04's listener (its per-song draws in `table`), now loving the `n_loved` clusters it rated lowest.

    Outside those clusters the taste is the song's `percentage_listened` in `table`; inside, a
    fresh draw N(loved_mean, sigma_c). The system knows the person's past: `history` is that
    `percentage_listened` (notebook 05's table is built from it).
    """
    rng = np.random.default_rng(seed)
    clusters = table["cluster"].to_numpy(np.int64)
    loved = np.sort(np.argsort(listener_model.cluster_mean, kind="stable")[:n_loved])
    in_loved = np.isin(clusters, loved)
    model_mean = table["percentage_listened"].to_numpy(np.float64).copy()
    model_std = np.zeros(len(table))
    model_mean[in_loved] = loved_mean
    model_std[in_loved] = listener_model.cluster_std[clusters[in_loved]]
    noise = model_std * rng.standard_normal(len(table))
    latents = table.filter(regex=r"^latent_\d+$").to_numpy(np.float64)
    history = table["percentage_listened"].to_numpy(np.float64)
    return Person("loves the two lowest clusters", model_mean + noise, model_mean, model_std, latents, noise, seed,
                  history=history)


def make_person(scenario: str, table: pd.DataFrame, listener_model: ListenerModel, seed: int) -> Person:
    """The person of `scenario` (one of `SCENARIOS`) over the songs of the rewards `table`, seeded."""
    latents = table.filter(regex=r"^latent_\d+$").to_numpy(np.float64)
    clusters = table["cluster"].to_numpy(np.int64)
    if scenario == "someone else":
        return someone_else(clusters, latents, seed)
    if scenario == "smooth taste":
        return smooth_taste(latents, seed)
    if scenario == "drifting":
        return drifting(latents, seed)
    if scenario == "loves the two lowest clusters":
        return loves_lowest_clusters(table, listener_model, seed)
    raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
