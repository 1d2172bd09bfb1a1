"""A simulated listener: how much of each track it plays, and whether it likes it.

There is no real listening history to learn from (the cold start), so each cluster c gets a
taste drawn once: a mean mu_c ~ U(0.4, 0.9) and a spread sigma_c ~ U(0.05, 0.15). A track of
cluster c is then played for

    percentage_listened ~ clip(N(mu_c, sigma_c), 0, 1)

of its length, and liked when percentage_listened > like_threshold.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import norm

from helpers.paths import ProjectPaths, write_text_atomic

if TYPE_CHECKING:
    from helpers.playback import OnFinished, StopReason

MEAN_RANGE = (0.4, 0.9)  # mu_c ~ U(MEAN_RANGE)
STD_RANGE = (0.05, 0.15)  # sigma_c ~ U(STD_RANGE)


@dataclass(frozen=True, eq=False)
class ListenerModel:
    """Per-cluster listening mean and standard deviation (index = cluster id), and the like threshold."""

    cluster_mean: np.ndarray
    cluster_std: np.ndarray
    like_threshold: float
    seed: int

    def __post_init__(self) -> None:
        mean = np.array(self.cluster_mean, dtype=np.float64)
        std = np.array(self.cluster_std, dtype=np.float64)
        if mean.ndim != 1 or mean.shape != std.shape or len(mean) == 0:
            raise ValueError(f"cluster_mean and cluster_std must be 1-D arrays of the same, non-zero "
                             f"length, got shapes {mean.shape} and {std.shape}")
        if not (np.isfinite(mean).all() and (0 <= mean).all() and (mean <= 1).all()):
            raise ValueError(f"cluster_mean must lie in [0, 1] (a share of the track), got {mean}")
        if not (np.isfinite(std).all() and (std >= 0).all()):
            raise ValueError(f"cluster_std must be finite and non-negative, got {std}")
        if not 0 <= self.like_threshold <= 1:
            raise ValueError(f"like_threshold must lie in [0, 1], got {self.like_threshold}")
        mean.setflags(write=False)
        std.setflags(write=False)
        object.__setattr__(self, "cluster_mean", mean)
        object.__setattr__(self, "cluster_std", std)
        object.__setattr__(self, "like_threshold", float(self.like_threshold))
        object.__setattr__(self, "seed", int(self.seed))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ListenerModel):
            return NotImplemented
        return (np.array_equal(self.cluster_mean, other.cluster_mean)
                and np.array_equal(self.cluster_std, other.cluster_std)
                and self.like_threshold == other.like_threshold and self.seed == other.seed)

    @property
    def n_clusters(self) -> int:
        return len(self.cluster_mean)

    def sample(self, clusters: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One listening per entry of `clusters`: (percentage_listened in [0, 1], liked as 0/1)."""
        clusters = np.asarray(clusters)
        if not np.issubdtype(clusters.dtype, np.integer):
            raise ValueError(f"clusters must be integer cluster ids, got dtype {clusters.dtype}")
        if clusters.size and (clusters.min() < 0 or clusters.max() >= self.n_clusters):
            raise ValueError(f"cluster ids must lie in [0, {self.n_clusters - 1}] for this model, "
                             f"got ids from {clusters.min()} to {clusters.max()}")
        return sample_listening(self.cluster_mean[clusters], self.cluster_std[clusters], self.like_threshold, rng)

    def like_probability(self) -> np.ndarray:
        """Per cluster: P(liked) = Φ((mu_c - like_threshold) / sigma_c) (`like_probability`)."""
        return like_probability(self.cluster_mean, self.cluster_std, self.like_threshold)

    def to_json(self, path: str | Path) -> None:
        """Write the model as readable JSON (atomically): one {cluster, mean, std} entry per cluster."""
        document = {
            "like_threshold": self.like_threshold,
            "seed": self.seed,
            "clusters": [{"cluster": cluster, "mean": float(mean), "std": float(std)}
                         for cluster, (mean, std) in enumerate(zip(self.cluster_mean, self.cluster_std))],
        }
        write_text_atomic(path, json.dumps(document, indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> "ListenerModel":
        """Read a model written by `to_json`; a clear error if the file is not one."""
        try:
            document = json.loads(Path(path).read_text())
            clusters = sorted(document["clusters"], key=lambda entry: entry["cluster"])
            numbers = [entry["cluster"] for entry in clusters]
            if numbers != list(range(len(numbers))):
                raise ValueError(f"clusters must be numbered 0 ... {len(numbers) - 1}, got {numbers}")
            return cls(cluster_mean=np.array([entry["mean"] for entry in clusters]),
                       cluster_std=np.array([entry["std"] for entry in clusters]),
                       like_threshold=document["like_threshold"], seed=document["seed"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path} is not a listener model written by ListenerModel.to_json: "
                             f"{type(error).__name__}: {error}") from error


def _check_range(name: str, value_range: tuple[float, float], low: float, high: float) -> None:
    start, stop = value_range
    if not low <= start <= stop <= high:
        raise ValueError(f"{name} must be (low, high) with {low} <= low <= high <= {high}, "
                         f"got {tuple(value_range)}")


def draw_listener_model(n_clusters: int, mean_range: tuple[float, float] = MEAN_RANGE,
                        std_range: tuple[float, float] = STD_RANGE,
                        like_threshold: float = 0.6, *, seed: int = 42) -> ListenerModel:
    """Draw each cluster's listening mean ~ U(mean_range) and std ~ U(std_range), seeded."""
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be at least 1, got {n_clusters}")
    _check_range("mean_range", mean_range, 0.0, 1.0)
    _check_range("std_range", std_range, 0.0, np.inf)
    rng = np.random.default_rng(seed)
    cluster_mean = rng.uniform(*mean_range, size=n_clusters)
    cluster_std = rng.uniform(*std_range, size=n_clusters)
    return ListenerModel(cluster_mean, cluster_std, like_threshold, seed)


def simulate_listening(clusters: np.ndarray, model: ListenerModel, seed: int) -> pd.DataFrame:
    """One simulated listening per track of `clusters`: columns percentage_listened, liked."""
    # A child stream of `seed`: independent of the draw of the model even when both use one seed.
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    percentage_listened, liked = model.sample(clusters, rng)
    return pd.DataFrame({"percentage_listened": percentage_listened, "liked": liked})


def sample_listening(mean: np.ndarray, std: np.ndarray | float, like_threshold: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One play per entry of `mean`: percentage_listened = clip(N(mean, std), 0, 1), and liked
    (0/1) when it is above `like_threshold`. Every simulated play of the project is drawn here."""
    percentage_listened = np.clip(rng.normal(mean, std), 0.0, 1.0)
    liked = (percentage_listened > like_threshold).astype(np.int64)
    return percentage_listened, liked


def like_probability(mean: np.ndarray, std: np.ndarray | float, like_threshold: float) -> np.ndarray:
    """P(liked) = P(Y > like_threshold) = Φ((mean - like_threshold) / std) for Y ~ N(mean, std).

    A zero `std` is a listener without noise: 1 where mean > like_threshold, else 0 (the limit
    of the sampled plays of `sample_listening`, which like only strictly above the threshold).
    """
    mean = np.asarray(mean, dtype=np.float64)
    std = np.broadcast_to(np.asarray(std, dtype=np.float64), mean.shape)
    if (std < 0).any():
        raise ValueError("std must be non-negative")
    safe = np.where(std > 0, std, 1.0)
    return np.where(std > 0, norm.cdf((mean - like_threshold) / safe), (mean > like_threshold) * 1.0)


def expected_listening(mean: np.ndarray, std: np.ndarray | float,
                       like_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """E[percentage_listened] and P(liked) when percentage_listened = clip(Y, 0, 1), Y ~ N(mean, std).

    With clip(Y, 0, 1) = max(Y, 0) - max(Y - 1, 0) and E[max(Y - a, 0)] = (m - a) Φ((m - a)/s) + s φ((m - a)/s);
    P(liked) from `like_probability`. A zero `std` gives the clipped mean.
    """
    mean = np.asarray(mean, dtype=np.float64)
    std = np.broadcast_to(np.asarray(std, dtype=np.float64), mean.shape)
    if (std < 0).any():
        raise ValueError("std must be non-negative")
    safe = np.where(std > 0, std, 1.0)

    def above(shift: float) -> np.ndarray:
        z = (mean - shift) / safe
        return np.where(std > 0, (mean - shift) * norm.cdf(z) + safe * norm.pdf(z), np.maximum(mean - shift, 0.0))

    return above(0.0) - above(1.0), like_probability(mean, std, like_threshold)


class SimulatedListener:
    """A simulated listener playing the playlist instantly (the offline mode).

    By default it is notebook 04's listener: a track of cluster c is heard
    `clip(N(mu_c, sigma_c), 0, 1)` of its length. Given a `taste` (a mean share per track id)
    it has an opinion of every track instead, as notebook 05's rewards assume: track i is heard
    `clip(N(taste_i, play_noise), 0, 1)`. Liked above the like threshold. The draws come from one
    generator seeded with `seed`, so successive playlists get fresh draws and the same seed
    replays the same sequence of sessions.
    """

    source = "simulated"

    def __init__(self, listener_model: ListenerModel, clusters: pd.Series, seed: int | None = None,
                 taste: pd.Series | None = None, *, play_noise: float = 0.05) -> None:
        if play_noise < 0:
            raise ValueError(f"play_noise must be >= 0, got {play_noise}")
        self.listener_model = listener_model
        self.clusters = clusters
        self.taste = taste
        self.play_noise = play_noise
        self.rng = np.random.default_rng(seed)

    def listen(self, track_ids: Sequence[str], on_finished: OnFinished) -> StopReason:
        """Report every track at once, in order; the playlist always plays to the end."""
        known = self.clusters.index if self.taste is None else self.taste.index
        unknown = [track_id for track_id in track_ids if track_id not in known]
        if unknown:
            raise ValueError(f"no {'cluster' if self.taste is None else 'taste'} known for the tracks {unknown}")
        if self.taste is None:
            clusters = self.clusters.loc[list(track_ids)].to_numpy()
            percentage_listened, liked = self.listener_model.sample(clusters, self.rng)
        else:
            percentage_listened, liked = sample_listening(self.taste.loc[list(track_ids)].to_numpy(np.float64),
                                                          self.play_noise, self.listener_model.like_threshold,
                                                          self.rng)
        for position, (percentage, like) in enumerate(zip(percentage_listened, liked)):
            on_finished(position, float(percentage), int(like))
        return "finished"


def simulated_listener(paths: ProjectPaths, clusters: pd.Series, seed: int | None = None) -> SimulatedListener:
    """The offline listener of the run at `paths`: notebook 04's listener model over `clusters`
    (each track's cluster, indexed by track id)."""
    model = ListenerModel.from_json(paths.existing("listener_model"))
    return SimulatedListener(model, clusters, seed=seed)
