"""The system's model of one listener's taste: a Bayesian posterior learned from their plays.

The taste t_i of song i (the share of it the person listens to on average) is modelled as

    t_i = m_i + s_o * o + s_c * b[c_i] + phi(z_i) . w + e_i,
          o ~ N(0, 1),  b ~ N(0, I),  w ~ N(0, I),  e_i ~ N(0, song_std^2)

- m_i, the prior mean: the population's mean taste (`TastePrior.mean`), or the person's own
  history where it is known;
- o, the person's level (scale s_o = `offset_std`): how much more or less of everything they
  listen to than the population, so plays in a few clusters move the taste of the others too;
- b, one effect per K-Means cluster (scale s_c = `cluster_std` x one of `cluster_scales`):
  hearing a song says something of its whole cluster;
- phi(z_i) . w, a smooth function of the latent state: `n_fourier` random Fourier features of
  an RBF kernel of lengthscale `lengthscale_factor` x the catalogue's median latent distance
  (scale `smooth_std`), so hearing a song says something of its latent neighbours, across
  cluster borders;
- e_i, the song's own deviation, learned only from the song's own plays.

A play is y = clip(N(t_i, play_noise), 0, 1). Treating y as Gaussian, the posterior of the
weights (o, b, w) is exact and closed-form: with the plays of song i averaged (n_i of them, mean
ybar_i), ybar_i ~ N(m_i + f_i . theta, song_std^2 + play_noise^2 / n_i). A song's posterior
mean is then its features' prediction, pulled towards its own plays by
k_i = song_std^2 / (song_std^2 + play_noise^2 / n_i).

A play whose share is unknown (an imported play of a song without a known length: 1 heard to its
end, 0 skipped; `share_from_evidence` in the feedback log) is modelled as

    mean + evidence_contrast * (y - 1/2) = t_i + a + N(0, (evidence_contrast * evidence_noise)^2)

(a song heard to its end is `evidence_contrast` more to the person's taste than one skipped;
the population `mean` centres it), with a ~ N(0, evidence_offset_std^2) one free offset shared
by all such plays. They say which songs are heard more than others; the offset, learned with
them and then marginalised out, keeps their 0/1 scale from setting the taste's level. They
inform the weights, not a song's own deviation.

How much a person's taste follows the clusters is not known in advance: for some, a cluster is
a taste; for others taste changes within a cluster as much as across. So the posterior is
averaged over the cluster scales `cluster_scales` (multiples of `cluster_std`), each weighted by
its evidence, the marginal likelihood of the plays (Bayesian model averaging, the scales a
priori equally likely).

How a person's taste is shaped is not known in advance either. Beside the model above (prior
probability 1 - `interest_probability`, split evenly over the cluster scales), the posterior
weighs a second form: the taste of one interest point (RecSim NG's affinity),

    t_i = m_i + s_o * o + s_a * a * exp(-|z_i - u|^2 / (2 l^2)) + e_i,   a ~ N(interest_mean / s_a, 1),

the level o ~ N((`interest_level` - `mean`) / s_o, 1) (the taste far from the point, a priori),
s_a = `interest_std`, u one of `n_interest_centres` songs (a seeded sample) and l one of
`interest_lengthscales` x the median latent distance, every (u, l) a priori equally likely.
Each candidate point's evidence and posterior are closed-form (one column added to the level's
model); the `n_interests` most probable are kept, and share their form's whole evidence (while
the plays include 0/1 evidence, or the prior mean is the person's own history, the form is left
out: see `TastePrior`). A smooth kernel only spreads what was heard; an interest point
extrapolates it: plays that rise towards a place the person has not heard yet predict more
there, and a Thompson draw of such a point goes and looks.

Predictions use the mixture's exact mean and covariance of the weights (an interest point's
weight is 0 in every other component); a Thompson draw is a draw of the mixture itself: a
component (a cluster scale or an interest point) by its posterior probability, then the weights
from that component's posterior.

Evidence fades by `forgetting` per session (a play of s sessions ago counts forgetting^s), so
a taste that moves is followed; 1 keeps every play at full weight.

Two tables come out of it, in notebook 05's reward units (`helpers.people.expected_rewards`):
the posterior mean reward (what the system believes; evaluation and serving without
exploration) and a Thompson sample (one plausible taste drawn from the posterior; the table
the exploring playlists are planned on).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from helpers.people import expected_rewards, squared_distances
from helpers.rewards import RewardWeights

Plays = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # one session's rows, percentage listened, evidence

CHUNK = 262_144  # songs per block when predicting, so memory stays small at 1.2M songs
# Heard songs x candidate interest points per block when scoring the points, so a long history stays small.
BUMPS_PER_BLOCK = 4_194_304
JITTER = 1e-12  # added to a covariance's diagonal so that a weight the component fixes at 0 can be drawn
# The exploring draw's spread, times the posterior's. Measured on the adaptation benchmark's
# people (TidyTuesday, synthetic 100k and 1.2M): 0.25 cost less regret than 0.5 in 8 of 9
# (catalogue, person) pairs and learnt as much. 0, the posterior mean, cost less still on
# TidyTuesday, but never tries what the mean ranks low. Re-measured with the mixture draw
# (embedded and TidyTuesday, someone else / smooth / drifting, 20 people each): 0.5 cost
# 180-240 more regret for all six; 0.125 cost 31-142 less for five of them (86 more for
# TidyTuesday's someone else) but 5 points less of that person's gap after 3 and 10 playlists,
# the shares of the others within +-6 points of 0.25's.
THOMPSON_SCALE = 0.25


@dataclass(frozen=True)
class TastePrior:
    """The population prior of a person's taste: no particular listener, only how listeners vary.

    The defaults follow notebook 04's population of listeners: cluster means ~ U(0.4, 0.9)
    (mean 0.65, standard deviation 0.144) and per-song spreads ~ U(0.05, 0.15) (mean 0.1). A
    person's level (`offset_std`) varies about as much as one cluster from another: with it the
    smooth-taste people's share of the knowable gap after 1 / 3 / 10 playlists went from
    9 / 36 / 65 % to 11 / 42 / 75 % on TidyTuesday (30 listener seeds), "someone else" unchanged.
    Averaging over `cluster_scales` instead of the full scale alone (the adaptation benchmark,
    10 listener seeds, paired): after 10 playlists smooth taste 85 -> 90 % (embedded) and
    78 -> 84 % (TidyTuesday), drifting 70 -> 78 % and 56 -> 64 %, "someone else" unchanged
    (95 / 77 %); after one playlist up to 7 points lower, as 10 plays cannot yet tell the scales apart.
    The smooth part's scale (`smooth_std`) was halved, 0.15 -> 0.075, once the interest-point
    form described the smooth people (the adaptation benchmark's taste model alone, listener
    seeds 0-39, embedded and TidyTuesday, paired): the regret over 10 playlists fell for all six
    (catalogue, person) pairs of someone else, smooth taste and drifting (by 2-159; for
    TidyTuesday's three by 99-159, each interval excluding 0), the share of the knowable gap after
    3 playlists rose by 0.7-11 points, and after 10 it moved by -1.8 to +4.7 (embedded smooth
    taste -1.8 +- 1.8). 0.05 (seeds 20-39) moved them as much, within the noise. The one cost
    measured: smooth taste at 1.2M songs, regret +85 +- 74 (10 people). Halved again,
    0.075 -> 0.0375, once the synthetic catalogues were measured against what their plays can
    teach (pooled share of the knowable gap after 10 playlists, 10 people each, paired): someone
    else 0.40 -> 1.02 at 100k songs and -0.19 -> 0.49 at 1.2M, drifting 0.32 -> 0.52 and
    0.37 -> 0.44, smooth taste 1.00 -> 0.96 (regret +23 +- 14, the one cost) and 0.64 -> 0.75.
    On the embedded and TidyTuesday catalogues (seeds 0-39, paired) every share after 1 / 3 / 10
    playlists moved by -1.8 to +8.4 points (TidyTuesday's someone else +4.9 +- 6.5 after 3,
    drifting +3.8 and +4.0 after 10) and every regret by -78 to +23, each inside its interval
    but embedded drifting's (-78 +- 55). Without the smooth part (0) smooth taste on TidyTuesday
    cost +164 +- 110 of regret.
    The interest-point form's prior describes a population too: as many people whose taste follows
    one interest point as people whose taste follows the clusters (`interest_probability` 0.5, as in
    the adaptation benchmark's population), each listening to about 0.45 of what lies far from the
    point (`interest_level`) and 0.45 +- 0.1 more at it (`interest_mean`, `interest_std`: the
    smooth-taste people's 0.3-0.5 and 0.85-0.95), the point one of 10,000 sampled songs. It replaced
    a broad one (probability 0.2, 0.65 far from the point, a point 0.2 +- 0.2 above it, 2,000
    songs), measured paired on the same people (pooled share of the knowable gap after 1 / 3 / 10
    playlists, regret over 10; 40 people each): smooth taste at 100k songs 0 / 4 / 79 % -> 24 / 53 /
    92 % (regret -67 +- 26), someone else there 22 / 42 / 60 % -> 17 / 28 / 67 % (+-24 / 30 / 18;
    regret -6 +- 51), drifting -1 / 9 / 37 % -> 41 / 63 / 56 % (regret -61 +- 32), the hard case 16
    / 31 / 62 % -> 10 / 24 / 57 % (regret +0 +- 6); at 1.2M songs (20 people) smooth taste 14 / 36 /
    81 % -> 27 / 48 / 89 % (-8 +- 49), someone else 18 / 30 / 74 % -> -15 / 44 / 73 % (+-50 / 40 /
    28; -3 +- 65); TidyTuesday smooth taste 34 / 68 / 95 % -> 35 / 71 / 96 % (regret -99 +- 76),
    drifting 51 / 76 / 86 % -> 62 / 89 / 91 % (-117 +- 69), someone else 25 / 52 / 83 % -> 22 / 52 /
    82 % (+22 +- 110); embedded smooth taste 47 / 74 / 99 % -> 44 / 80 / 100 % (-67 +- 89), drifting
    72 / 83 / 91 % -> 69 / 87 / 94 % (-92 +- 82), someone else 34 / 62 / 90 % -> 33 / 61 / 92 % (+29
    +- 104). Taken apart at 100k (smooth taste / someone else): the narrower height and level alone
    13 / 41 / 81 % and 18 / 40 / 54 %; with probability 0.4, 33 / 55 / 82 % and 6 / 39 / 60 %; with
    10,000 songs instead, 7 / 39 / 90 % and 28 / 36 / 55 %; with both (0.4), 12 / 62 / 88 % and 18 /
    41 / 62 %; 10,000 songs with the broad prior, 1 / 8 / 84 % and 22 / 43 / 58 %. Lengthscales of
    0.5 / 0.75 / 1 x the median, or relative to each point's own median distance, did not help. The
    form is left out while the plays include 0/1 evidence (an imported history without song
    lengths): people play what they like, so such a history is of songs near their interest point,
    finished or skipped for reasons of their own, and shows no slope to place it by. Weighed on
    1,000 such plays (the history benchmark, embedded, 5 people) the form lowered the share of the
    knowable gap before the first playlist from 0.85 to 0.61. It is left out too where the prior
    mean is the person's own history: the form's level and point describe someone the system knows
    nothing of, so with it the model's belief before any play was the history lowered by 0.1, and
    half its first Thompson draws chased a point drawn at random. Left out for the hard case (a
    history of every song; 40 people, paired), its share of the knowable gap after 1 / 3 / 10
    playlists went from -10 / 1 / 18 % to 15 / 15 / 27 % on the embedded catalogue (regret over 10
    playlists -12 +- 14), -12 / 8 / 33 % to 6 / 14 / 34 % on TidyTuesday (-8 +- 17) and 10 / 24 /
    57 % to 17 / 29 / 63 % at 100k songs (+4 +- 7).
    The form keeps 64 candidate points (`n_interests`), not 16: after a few playlists the plays
    leave many points about as likely, and 16 made the belief too sure of a few of them. Paired on
    the same people (share of the knowable gap after 1 / 3 / 10 playlists, regret over 10), smooth
    taste went from 27 / 48 / 89 % to 28 / 69 / 95 % at 1.2M songs (20 people; after 3 +21 +- 23
    points, regret -31 +- 63) and from 24 / 53 / 92 % to 30 / 70 / 87 % at 100k (40; +17 +- 16
    after 3, -4 +- 9 after 10, regret +2 +- 31); on TidyTuesday (40 each) smooth taste 35 / 71 / 96
    -> 44 / 74 / 96 %, drifting 62 / 89 / 91 -> 69 / 89 / 90 % (regret -55 +- 49), someone else 22
    / 52 / 82 -> 21 / 51 / 79 %; on the embedded catalogue every share moved by -2 to +6 points.
    The cost measured: at 100k someone else 17 / 28 / 67 -> 16 / 37 / 57 % and drifting 41 / 63 /
    56 -> 42 / 56 / 45 % (after 10 -10 +- 16 and -9 +- 14 points, regret -19 +- 50 and +16 +- 32).
    """

    mean: float = 0.65
    cluster_std: float = 0.144
    cluster_scales: tuple[float, ...] = (1.0, 1 / 3)
    offset_std: float = 0.15
    smooth_std: float = 0.0375
    song_std: float = 0.1
    play_noise: float = 0.05
    n_fourier: int = 64
    lengthscale_factor: float = 0.8
    forgetting: float = 1.0
    history_song_std: float = 0.05
    evidence_noise: float = 0.5  # a 0/1 outcome's spread
    evidence_contrast: float = 0.3  # taste of a song heard to its end, against one skipped
    evidence_offset_std: float = 0.5
    interest_probability: float = 0.5
    interest_level: float = 0.45
    interest_mean: float = 0.45
    interest_std: float = 0.1
    interest_lengthscales: tuple[float, ...] = (0.5, 0.8)
    n_interest_centres: int = 10_000
    n_interests: int = 64

    def __post_init__(self) -> None:
        for name in ("cluster_std", "offset_std", "smooth_std", "song_std", "play_noise", "lengthscale_factor",
                     "history_song_std", "evidence_offset_std", "interest_std"):
            if not np.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)}")
        if self.play_noise == 0 and min(self.song_std, self.history_song_std) == 0:
            raise ValueError("play_noise and a song's own spread cannot both be 0: a play would be exact")
        for name in ("evidence_noise", "evidence_contrast"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be finite and > 0, got {getattr(self, name)}")
        if not 0 < self.forgetting <= 1:
            raise ValueError(f"forgetting must lie in (0, 1], got {self.forgetting}")
        for name in ("cluster_scales", "interest_lengthscales"):
            values = np.asarray(getattr(self, name), dtype=float)
            if values.ndim != 1 or not len(values) or not (np.isfinite(values).all() and (values > 0).all()):
                raise ValueError(f"{name} must be one or more finite numbers > 0, got {getattr(self, name)}")
        if self.n_fourier < 0:
            raise ValueError(f"n_fourier must be >= 0, got {self.n_fourier}")
        if not np.isfinite(self.interest_mean):
            raise ValueError(f"interest_mean must be finite, got {self.interest_mean}")
        if not np.isfinite(self.interest_level) or (self.interest_level != self.mean and self.offset_std == 0):
            raise ValueError(f"interest_level must be finite, and equal mean while offset_std is 0 (the level's "
                             f"prior mean is offset_std x a weight), got {self.interest_level}")
        if not 0 <= self.interest_probability < 1:
            raise ValueError(f"interest_probability must lie in [0, 1), got {self.interest_probability}")
        if self.n_interest_centres < 0 or self.n_interests < 0:
            raise ValueError(f"n_interest_centres and n_interests must be >= 0, got {self.n_interest_centres} "
                             f"and {self.n_interests}")


def median_distance(latents: np.ndarray, seed: int, n_sample: int = 2_000) -> float:
    """Median Euclidean distance between two songs, on a seeded sample of at most `n_sample` songs."""
    rng = np.random.default_rng(seed)
    sample = latents[rng.choice(len(latents), min(n_sample, len(latents)), replace=False)]
    distances = np.linalg.norm(sample[:, None, :] - sample[None, :, :], axis=-1)
    return float(np.median(distances[np.triu_indices(len(sample), 1)]))


class TasteModel:
    """The posterior over one person's taste, for every song of a catalogue (see the module docstring).

    `latents` (n_songs, d) and `clusters` (n_songs,) describe the songs. `prior_mean` is the
    person's history, m_i: the mean share they listened to each song before (NaN where they
    never heard it); a song with history deviates from it by `history_song_std`, one without
    starts at the population mean with `song_std`. Plays are added with `observe`;
    `end_session` ages them by one session. Given the plays so far, `cluster_scale_posterior`
    holds the posterior probability of the first form at each of the prior's `cluster_scales`,
    `interest_posterior` that of the interest-point form, `interest_centres` and
    `interest_lengthscales` its points kept, and `component_posterior` every component's.
    """

    def __init__(self, latents: np.ndarray, clusters: np.ndarray, prior: TastePrior = TastePrior(),
                 prior_mean: np.ndarray | None = None, *, seed: int = 0) -> None:
        self.latents = np.asarray(latents, dtype=np.float32)
        self.clusters = np.asarray(clusters, dtype=np.int64)
        if self.latents.ndim != 2 or len(self.latents) != len(self.clusters):
            raise ValueError(f"latents (n_songs, d) and clusters (n_songs,) must describe the same songs, "
                             f"got shapes {self.latents.shape} and {self.clusters.shape}")
        self.prior = prior
        history = np.full(len(self.clusters), np.nan) if prior_mean is None else np.asarray(prior_mean, np.float64)
        if history.shape != self.clusters.shape or not np.isfinite(history[~np.isnan(history)]).all():
            raise ValueError(f"prior_mean must hold one share (or NaN: no history) per song, got shape {history.shape}")
        known = ~np.isnan(history)
        self.prior_mean = np.where(known, history, prior.mean)
        self._has_history = bool(known.any())
        self._song_var = np.where(known, prior.history_song_std, prior.song_std) ** 2  # of e_i
        self.n_clusters = int(self.clusters.max()) + 1
        rng = np.random.default_rng(seed)
        median = median_distance(self.latents, seed)
        self.frequencies = (rng.standard_normal((self.latents.shape[1], prior.n_fourier))
                            / max(prior.lengthscale_factor * median, 1e-9)).astype(np.float32)
        self.phases = rng.uniform(0, 2 * np.pi, prior.n_fourier).astype(np.float32)
        # The interest points the plays may reveal: a seeded sample of songs, each at every lengthscale.
        centres = self.latents[rng.choice(self.n_songs, min(prior.n_interest_centres, self.n_songs), replace=False)]
        lengthscales = median * np.asarray(prior.interest_lengthscales, dtype=np.float32)
        self._candidate_centres = np.repeat(centres, len(lengthscales), axis=0)
        self._candidate_lengthscales = np.tile(lengthscales, len(centres))
        self.n_interests = min(prior.n_interests, len(self._candidate_centres)) if prior.interest_probability else 0
        self.n_base = self.n_clusters + 1 + prior.n_fourier
        self.n_weights = self.n_base + self.n_interests
        self.session = 0
        self._rows = np.empty(0, dtype=np.int64)
        self._listened = np.empty(0)
        self._sessions = np.empty(0, dtype=np.int64)
        self._evidence = np.empty(0, dtype=bool)
        self._fit()

    @property
    def n_songs(self) -> int:
        return len(self.clusters)

    @property
    def n_plays(self) -> int:
        return len(self._rows)

    @property
    def heard_rows(self) -> np.ndarray:
        """The rows of every song played at least once, sorted."""
        return np.unique(self._rows)

    @property
    def plays(self) -> tuple[np.ndarray, np.ndarray]:
        """Every play observed, in order: the song rows and their percentage listened (or 0/1 evidence)."""
        return self._rows.copy(), self._listened.copy()

    def _base_features(self, rows: np.ndarray) -> np.ndarray:
        """The scaled cluster indicator, the offset's and the Fourier features of `rows`, (len(rows), n_base)."""
        rows = np.asarray(rows, dtype=np.int64)
        features = np.zeros((len(rows), self.n_base), dtype=np.float32)
        features[np.arange(len(rows)), self.clusters[rows]] = self.prior.cluster_std
        features[:, self.n_clusters:] = self._shared(rows, interests=False)
        return features

    def _interest_features(self, rows: np.ndarray, centres: np.ndarray, lengthscales: np.ndarray) -> np.ndarray:
        """interest_std x exp(-|z_i - u|^2 / (2 l^2)) for every song of `rows` and interest point (u, l)."""
        squared = squared_distances(self.latents[rows], centres)
        return (self.prior.interest_std * np.exp(-squared / (2 * lengthscales ** 2))).astype(np.float32)

    def _shared(self, rows: np.ndarray, interests: bool = True) -> np.ndarray:
        """The features every song has: the offset's (`offset_std`), the scaled Fourier features and
        (with `interests`) the features of the interest points the posterior holds."""
        scale = self.prior.smooth_std * np.sqrt(2.0 / max(self.prior.n_fourier, 1))
        shared = np.empty((len(rows), 1 + self.prior.n_fourier + interests * self.n_interests), dtype=np.float32)
        shared[:, 0] = self.prior.offset_std
        shared[:, 1:1 + self.prior.n_fourier] = scale * np.cos(self.latents[rows] @ self.frequencies + self.phases)
        if interests and self.n_interests:
            shared[:, 1 + self.prior.n_fourier:] = self._interest_features(rows, self.interest_centres,
                                                                           self.interest_lengthscales)
        return shared

    def observe(self, rows: np.ndarray, percentage_listened: np.ndarray, evidence: np.ndarray | None = None) -> None:
        """Add plays (song rows and their percentage listened, in [0, 1]) and update the posterior;
        `evidence` marks the plays whose value is the export's 0/1 evidence, not a share."""
        self._append([self._checked_plays(rows, percentage_listened, evidence)])
        self._fit()

    def end_session(self) -> None:
        """Age every play by one session (evidence then counts `forgetting` times less)."""
        self.session += 1
        self._fit()

    def observe_sessions(self, sessions: Sequence[Plays]) -> None:
        """Add several sessions' plays in order, ending each, and fit once: the posterior of
        `observe` then `end_session` for one session after another, without their two fits per
        session (about 0.07 s each at any catalogue size, so a long log's replay grew with it)."""
        if not sessions:
            return
        self._append([self._checked_plays(*plays) for plays in sessions])
        self.session += len(sessions)
        self._fit()

    def _checked_plays(self, rows: np.ndarray, percentage_listened: np.ndarray,
                       evidence: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One session's plays as arrays, validated."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        listened = np.asarray(percentage_listened, dtype=np.float64).ravel()
        evidence = np.zeros(len(rows), bool) if evidence is None else np.asarray(evidence, dtype=bool).ravel()
        if not rows.shape == listened.shape == evidence.shape:
            raise ValueError(f"rows, percentage_listened and evidence must have the same length, got {rows.shape}, "
                             f"{listened.shape} and {evidence.shape}")
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n_songs):
            raise ValueError(f"song rows must lie in [0, {self.n_songs}), got {rows.min()} to {rows.max()}")
        if not (np.isfinite(listened).all() and ((listened >= 0) & (listened <= 1)).all()):
            raise ValueError("percentage_listened must be finite and lie in [0, 1]")
        return rows, listened, evidence

    def _append(self, sessions: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Append checked sessions' plays, the first in the current session, each next one the next."""
        self._rows = np.concatenate([self._rows, *(rows for rows, _, _ in sessions)])
        self._listened = np.concatenate([self._listened, *(listened for _, listened, _ in sessions)])
        self._sessions = np.concatenate([self._sessions, *(np.full(len(rows), self.session + offset)
                                                           for offset, (rows, _, _) in enumerate(sessions))])
        self._evidence = np.concatenate([self._evidence, *(evidence for _, _, evidence in sessions)])

    def _summaries(self, plays: np.ndarray, play_noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The songs heard in the (faded) `plays`, their mean value and the variance of that mean."""
        weight = self.prior.forgetting ** (self.session - self._sessions[plays])
        heard, inverse = np.unique(self._rows[plays], return_inverse=True)
        n = np.bincount(inverse, weights=weight, minlength=len(heard))
        total = np.bincount(inverse, weights=weight * self._listened[plays], minlength=len(heard))
        return heard, total / np.maximum(n, 1e-12), self._song_var[heard] + play_noise ** 2 / np.maximum(n, 1e-12)

    def _fit(self) -> None:
        """The weights' posterior and the heard songs' summaries from the (faded) plays."""
        prior = self.prior
        heard, heard_mean, noise = self._summaries(~self._evidence, prior.play_noise)
        rows = heard
        features = self._base_features(heard).astype(np.float64)
        targets = heard_mean - self.prior_mean[heard]
        if self._evidence.any():  # one more weight, the evidence's offset, with feature evidence_offset_std
            contrast = prior.evidence_contrast
            songs, evidence_mean, evidence_noise = self._summaries(self._evidence, contrast * prior.evidence_noise)
            features = np.block([[features, np.zeros((len(heard), 1))],
                                 [self._base_features(songs), np.full((len(songs), 1), prior.evidence_offset_std)]])
            rows = np.concatenate([heard, songs])
            # Centred on the population mean, so the offset only has to absorb the share of finished plays.
            centred = prior.mean + contrast * (evidence_mean - 0.5)
            targets = np.concatenate([targets, centred - self.prior_mean[songs]])
            noise = np.concatenate([noise, evidence_noise])
        log_weight, means, covariances = self._components(features, targets, noise, rows)
        probability = np.exp(log_weight - log_weight.max())
        probability /= probability.sum()
        self.component_posterior = probability
        self.cluster_scale_posterior = probability[: len(prior.cluster_scales)]
        self.interest_posterior = 1 - float(self.cluster_scale_posterior.sum())
        # The taste's weights (base, then interest points), with the evidence's offset marginalised out.
        taste = np.r_[0:self.n_base, features.shape[1]:features.shape[1] + self.n_interests]
        means, covariances = means[:, taste], covariances[:, taste][:, :, taste]
        self.weights = probability @ means
        spread = means - self.weights
        covariance = np.einsum("k,kij->ij", probability, covariances) + (spread.T * probability) @ spread
        self.covariance = (covariance + covariance.T) / 2
        jitter = JITTER * np.eye(self.n_weights)
        self.cholesky = np.linalg.cholesky(self.covariance + jitter)
        self._component_means = means
        self._component_choleskies = np.linalg.cholesky(covariances + jitter)
        self._pull = np.zeros(self.n_songs)  # k_i: how far a song's own plays pull its taste (0: unheard)
        self._pull[heard] = self._song_var[heard] / noise[: len(heard)]
        self._own_mean = np.zeros(self.n_songs)
        self._own_mean[heard] = heard_mean

    def _components(self, features: np.ndarray, targets: np.ndarray, noise: np.ndarray,
                    rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The posterior's mixture components, the first form at each cluster scale and then the
        interest points kept: their log posterior weights (up to a shared constant), means and
        covariances of the weights [`features`' weights, then one per interest point kept].
        `rows` are the songs of `features`' rows. Sets `interest_centres` and `interest_lengthscales`.

        With S = diag(scale) (the cluster scale on the cluster weights; for the interest-point form
        1 on the level and the evidence's offset, 0 elsewhere), the posterior of the unscaled
        weights is N(P^-1 b, P^-1), P = I + S G S, b = S F' N^-1 y, G = F' N^-1 F, and the log
        evidence b' P^-1 b / 2 - log|P| / 2, up to a constant every component shares. An interest
        point adds one column g (its feature at `rows`) with a weight of prior N(mu, 1),
        mu = interest_mean / interest_std. By the block inverse, with u = S F' N^-1 g, the weight's
        posterior precision is c = 1 + g' N^-1 g - u' P^-1 u and its mean mu + beta / c, with
        beta = g' N^-1 y - u' P^-1 b - mu (c - 1); the other weights' mean moves by
        -P^-1 u (mu + beta / c), and the log evidence changes by
        mu g' N^-1 y - mu^2 g' N^-1 g / 2 - mu u' P^-1 b + mu^2 u' P^-1 u / 2 + beta^2 / (2 c) - log(c) / 2.
        """
        prior = self.prior
        gram = features.T @ (features / noise[:, None])
        projected = features.T @ (targets / noise)
        n_features, n_interests, n_scales = features.shape[1], self.n_interests, len(prior.cluster_scales)

        def posterior(scale: np.ndarray, projected: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
            """Posterior mean, covariance (of the unscaled weights) and log evidence under S = diag(scale),
            `projected` = F' N^-1 y."""
            precision = np.eye(n_features) + scale[:, None] * gram * scale[None, :]
            covariance = np.linalg.inv(precision)
            covariance = (covariance + covariance.T) / 2
            mean = covariance @ (scale * projected)
            return mean, covariance, (scale * projected) @ mean / 2 - np.linalg.slogdet(precision)[1] / 2

        dimension = n_features + n_interests
        means = np.zeros((n_scales + n_interests, dimension))
        covariances = np.zeros((n_scales + n_interests, dimension, dimension))
        log_weight = np.zeros(n_scales + n_interests)
        for component, cluster_scale in enumerate(prior.cluster_scales):
            scale = np.ones(n_features)
            scale[: self.n_clusters] = cluster_scale
            mean, covariance, log_evidence = posterior(scale, projected)
            log_weight[component] = np.log1p(-prior.interest_probability) - np.log(n_scales) + log_evidence
            means[component, :n_features] = scale * mean
            covariances[component, :n_features, :n_features] = scale[:, None] * covariance * scale[None, :]
        if not n_interests:
            return log_weight, means, covariances
        # 0/1 evidence cannot place an interest point, and a history already says where the taste lies (see
        # `TastePrior`): with either, the form is left out.
        if self._evidence.any() or self._has_history:
            log_weight[n_scales:] = -np.inf
            self.interest_centres = self._candidate_centres[:n_interests]
            self.interest_lengthscales = self._candidate_lengthscales[:n_interests]
            return log_weight, means, covariances
        # The interest-point form: the person's level and one interest point, no clusters nor Fourier features.
        # Its level is centred on interest_level: the plays are read relative to it (y - shift), so the
        # evidence gains the change of the Gaussian's -y' N^-1 y / 2, which the other components share.
        shift = prior.interest_level - prior.mean
        targets = targets - shift
        scale = np.ones(n_features)
        scale[: self.n_base] = 0
        scale[self.n_clusters] = 1
        mean, covariance, log_evidence = posterior(scale, features.T @ (targets / noise))
        log_evidence += (shift * (targets + shift / 2) / noise).sum()
        candidates = len(self._candidate_centres)
        gram_g, projected_g, cross = np.zeros(candidates), np.zeros(candidates), np.zeros((candidates, n_features))
        rows_per_block = max(1, BUMPS_PER_BLOCK // candidates)
        for start in range(0, len(rows), rows_per_block):
            block = slice(start, start + rows_per_block)
            bumps = self._interest_features(rows[block], self._candidate_centres,
                                            self._candidate_lengthscales).astype(np.float64)
            gram_g += (bumps ** 2 / noise[block, None]).sum(0)
            projected_g += bumps.T @ (targets[block] / noise[block])
            cross += bumps.T @ (features[block] / noise[block, None])
        u = cross * scale
        moved = u @ covariance  # P^-1 u, one row per candidate
        c = 1 + gram_g - (u * moved).sum(1)
        mu = prior.interest_mean / prior.interest_std
        u_mean, u_moved = u @ mean, (u * moved).sum(1)
        beta = projected_g - u_mean - mu * (c - 1)
        log_with = (np.log(prior.interest_probability / candidates) + log_evidence - mu * u_mean + mu ** 2 / 2 * u_moved
                    + mu * projected_g - mu ** 2 / 2 * gram_g + beta ** 2 / (2 * c) - np.log(c) / 2)
        kept = np.argsort(log_with, kind="stable")[::-1][:n_interests]
        # The form keeps its whole evidence; the points kept share it as their own evidences do.
        log_with = log_with - np.logaddexp.reduce(log_with[kept]) + np.logaddexp.reduce(log_with)
        self.interest_centres = self._candidate_centres[kept]
        self.interest_lengthscales = self._candidate_lengthscales[kept]
        for slot, k in enumerate(kept):
            component, at = n_scales + slot, n_features + slot
            log_weight[component] = log_with[k]
            means[component, :n_features] = scale * (mean - moved[k] * (mu + beta[k] / c[k]))
            means[component, at] = mu + beta[k] / c[k]
            base = covariance + np.outer(moved[k], moved[k]) / c[k]
            covariances[component, :n_features, :n_features] = scale[:, None] * base * scale[None, :]
            covariances[component, :n_features, at] = covariances[component, at, :n_features] = -scale * moved[k] / c[k]
            covariances[component, at, at] = 1 / c[k]
        if shift:  # the level's weight, centred on interest_level
            means[n_scales:, self.n_clusters] += shift / prior.offset_std
        return log_weight, means, covariances

    def _predict(self, weights: np.ndarray, rows: np.ndarray, with_variance: bool) -> tuple[np.ndarray, np.ndarray]:
        """m_i + f_i . weights for the songs `rows`, and f_i Sigma f_i (0 unless `with_variance`),
        in blocks of `CHUNK` songs."""
        mean = np.empty(len(rows))
        variance = np.zeros(len(rows))
        cluster_part = self.prior.cluster_std * weights[: self.n_clusters]
        factor = self.cholesky.astype(np.float32)
        for start in range(0, len(rows), CHUNK):
            block = slice(start, start + CHUNK)
            songs = rows[block]
            shared = self._shared(songs)
            mean[block] = (self.prior_mean[songs] + cluster_part[self.clusters[songs]]
                           + shared @ weights[self.n_clusters:].astype(np.float32))
            if with_variance:
                projected = self.prior.cluster_std * factor[self.clusters[songs]] + shared @ factor[self.n_clusters:]
                variance[block] = np.einsum("ij,ij->i", projected, projected)
        return mean, variance

    def _with_heard(self, rows: np.ndarray, mean: np.ndarray, variance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Taste mean and standard deviation of `rows` from the features' prediction: heard songs
        pulled towards their own plays, each song's own deviation added to the variance."""
        pull, own = self._pull[rows], self._own_mean[rows]
        mean = (1 - pull) * mean + pull * own
        variance = (1 - pull) ** 2 * variance + (1 - pull) * self._song_var[rows]
        return mean, np.sqrt(variance)

    def _songs(self, rows: np.ndarray | None) -> np.ndarray:
        return np.arange(self.n_songs) if rows is None else np.asarray(rows, dtype=np.int64)

    def predict(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the taste of the songs `rows` (default: every song)."""
        rows = self._songs(rows)
        return self._with_heard(rows, *self._predict(self.weights, rows, with_variance=True))

    def sample(self, rng: np.random.Generator, rows: np.ndarray | None = None,
               scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """One Thompson draw of the weights (a component by its posterior probability, then the
        weights from that component's posterior; its distance from the posterior mean times `scale`):
        the taste of `rows` under it, and the spread left (each song's own deviation)."""
        rows = self._songs(rows)
        chosen = rng.choice(len(self.component_posterior), p=self.component_posterior)
        draw = self._component_means[chosen] + self._component_choleskies[chosen] @ rng.standard_normal(self.n_weights)
        drawn = self.weights + scale * (draw - self.weights)
        return self._with_heard(rows, *self._predict(drawn, rows, with_variance=False))

    def expected_rewards(self, proximity: np.ndarray, weights: RewardWeights, like_threshold: float, *,
                         rows: np.ndarray | None = None, rng: np.random.Generator | None = None,
                         scale: float = 1.0) -> np.ndarray:
        """The person's reward table as the model sees it, for `rows` (default: every song;
        `proximity` is per song of the catalogue): the posterior mean reward, or with `rng` the
        reward under one Thompson draw of the taste (`sample`, for exploring)."""
        rows = self._songs(rows)
        mean, std = self.predict(rows) if rng is None else self.sample(rng, rows, scale)
        spread = np.sqrt(std ** 2 + self.prior.play_noise ** 2)
        return expected_rewards(mean, spread, proximity[rows], weights, like_threshold=like_threshold)
