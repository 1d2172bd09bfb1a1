"""Learning one listener from a few playlists, and the measure of how well a system does it.

A *learner* meets a simulated person (`helpers.people`), plays them playlists one at a time
(`play`), learns from what they heard, and can at any time build the playlists it now believes
best (`playlists`). The measure compares, under the person's true rewards and on held-out
start songs, the learner's playlists after 1, 3 and 10 learning playlists with:

- the policy serving notebook 05's table, never updated (R_none);
- the same policy serving the *knowable* table: the person's taste model known exactly, no
  song known individually (R_knowable, `Person.knowable_rewards`);
- the exact optimum under the true rewards (R*).

    share of the full gap     = (R - R_none) / (R* - R_none)
    share of the knowable gap = (R - R_none) / (R_knowable - R_none)

Over listener seeds, `summarise` gives the mean of those shares and, where a person's knowable
gap can be near 0 (the large catalogues), the pooled share: the mean gain over the mean gap.

The planning error is measured apart: an exact planner reading the learner's own table,
scored under the true rewards, against the learner's playlists. The regret is what the
learning playlists cost the person: the sum over them of (best playlist from their start -
what they heard), under the true rewards of the moment.

Learners: `TasteLearner` (the system: a `helpers.taste.TasteModel` posterior; playlists
planned by notebook 06's policy on a Thompson draw of the person's reward table, evaluated on
the posterior mean table), `FixedTable` (no update), `BanditLearner` (LinUCB, linear Thompson
sampling). `TasteModelKnown` is no learner: it serves the person's taste model exactly from the
first playlist, so a learner's regret minus its own is what learning cost. Four references
hear the taste model's playlists and then know more than a learner may: `HeardClustersKnown`
(the person's taste model in the clusters those songs fell in) and, for "someone else" and
"smooth taste", `ClusterFormKnown` and `SmoothFormKnown` (the taste inferred from those plays
knowing its form and priors) and `FormUnknown` (knowing both forms and their priors, not which
one the person has). `ClusterFormLearner` knows the "someone else" form too, but
chooses its own playlists (a Thompson draw of its posterior): how much any exploration with
this policy could learn of that person.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from helpers.bandits import LinearBandit
from helpers.drift import DriftSettings
from helpers.env import BatchPlaylistEnv, PlaylistBatch, TrackPool, local_env, local_rows
from helpers.evaluation import Policy, evaluation_starts, exact_optimum, finish_playlists
from helpers.finetune import fine_tune, log_provenance, save_version, update_rewards
from helpers.listeners import ListenerModel
from helpers.people import (SCENARIOS, SMOOTH_SONG_NOISE, Person, SmoothGrid, expected_rewards, make_person,
                            smooth_grid, smooth_log_evidence, smooth_posterior, someone_else_log_evidence,
                            someone_else_posterior)
from helpers.ppo import TrainingRun, greedy_policy
from helpers.paths import ProjectPaths
from helpers.recommend import checkpoint_path, load_chain, version_path
from helpers.rewards import RewardWeights, interaction_score, reward, reward_range
from helpers.taste import THOMPSON_SCALE, TasteModel, TastePrior

CHECKPOINTS = (1, 3, 10)
FEEDBACK = DriftSettings()  # notebook 08's update and fine-tune settings (confidence, prior, learning rate, head reset)
Rewards = np.ndarray | Callable[[np.ndarray], np.ndarray]  # a reward per song, or per song of the rows given


@dataclass(frozen=True)
class ServedChain:
    """What a trained chain serves: notebook 05's table, its neighbour index, notebook 06's policy."""

    pool: TrackPool
    neighbours: np.ndarray
    run: TrainingRun
    weights: RewardWeights
    listener_model: ListenerModel
    checkpoint: Path

    @property
    def like_threshold(self) -> float:
        return self.listener_model.like_threshold

    @property
    def proximity(self) -> np.ndarray:
        return self.pool.table["proximity_score"].to_numpy(np.float64)

    def serving(self, rewards: np.ndarray) -> TrackPool:
        """The catalogue with `rewards` in place of notebook 05's (ids and latents shared, not copied)."""
        rewards = np.asarray(rewards, dtype=np.float64)
        if rewards.shape != self.pool.rewards.shape or not np.isfinite(rewards).all():
            raise ValueError(f"a served table needs one finite reward per song ({self.pool.n_tracks}), "
                             f"got shape {rewards.shape}")
        rewards.flags.writeable = False
        return dataclasses.replace(self.pool, rewards=rewards)

    def local(self, rewards: Rewards, start_rows: np.ndarray) -> tuple[BatchPlaylistEnv, PlaylistBatch, np.ndarray]:
        """An environment over only the songs playlists from `start_rows` can reach (`helpers.env.local_env`),
        serving `rewards` (one per song, or a function of the rows); its first observation; its rows."""
        config = self.run.config
        playlists = np.full((len(start_rows), config.playlist_length), -1, dtype=np.int64)
        playlists[:, 0] = start_rows
        rows = local_rows(self.neighbours, playlists, config.playlist_length, config.n_candidates)
        served = rewards(rows) if callable(rewards) else np.asarray(rewards)[rows]
        env, batch = local_env(self.pool, self.neighbours, playlists, rows, rewards=served,
                               playlist_length=config.playlist_length, n_candidates=config.n_candidates,
                               look_ahead_depth=config.look_ahead_depth)
        return env, batch, rows

    def policy_playlists(self, rewards: Rewards, start_rows: np.ndarray, policy: Policy | None = None) -> np.ndarray:
        """The playlists (catalogue rows, start first) of `policy` (default: notebook 06's, greedy)
        from `start_rows`, serving `rewards`."""
        env, batch, rows = self.local(rewards, np.asarray(start_rows))
        return rows[finish_playlists(env, batch, policy or greedy_policy(self.run.agent))[0]]

    def planned_playlists(self, rewards: Rewards, start_rows: np.ndarray) -> np.ndarray:
        """The best playlists by `rewards` (exact search), from `start_rows`."""
        env, _, rows = self.local(rewards, np.asarray(start_rows))
        return rows[exact_optimum(env, env.playlists[:, 0], progress=False)[0]]


class Learner(Protocol):
    name: str

    def play(self, start_row: int, person: Person) -> np.ndarray:
        """Play one learning playlist from `start_row` to `person`, learn from it; its rows, start first."""

    def playlists(self, start_rows: np.ndarray) -> np.ndarray:
        """The playlists it now believes best from `start_rows` (rows, start first)."""

    def table(self) -> np.ndarray | None:
        """Its reward table of the person (None for a learner without one)."""


class FixedTable:
    """No update: notebook 06's policy serving notebook 05's table, whatever is heard."""

    name = "no update"

    def __init__(self, chain: ServedChain) -> None:
        self.chain = chain

    def play(self, start_row: int, person: Person) -> np.ndarray:
        rows = self.chain.policy_playlists(self.chain.pool.rewards, [start_row])[0]
        person.listen(rows)
        return rows

    def playlists(self, start_rows: np.ndarray) -> np.ndarray:
        return self.chain.policy_playlists(self.chain.pool.rewards, start_rows)

    def table(self) -> np.ndarray:
        return self.chain.pool.rewards


class TasteModelKnown:
    """Not a learner: the person's taste model known exactly from the first playlist on.

    Each playlist serves `Person.knowable_rewards` as the person is when it starts (unheard and
    heard songs alike at their expected value), planned by notebook 06's policy, and learns
    nothing. A learner's regret minus this one's is what learning the taste model cost the
    person; this one's margin over the bandits is about the most that learning it can win.
    """

    name = "taste model known"

    def __init__(self, chain: ServedChain) -> None:
        self.chain = chain
        self._rewards: np.ndarray | None = None

    def play(self, start_row: int, person: Person) -> np.ndarray:
        self._rewards = person.knowable_rewards(self.chain.proximity, self.chain.weights)
        rows = self.chain.policy_playlists(self._rewards, [start_row])[0]
        person.listen(rows)
        return rows

    def playlists(self, start_rows: np.ndarray) -> np.ndarray:
        if self._rewards is None:
            raise RuntimeError("the taste model known serves the person's table: play a playlist to them first")
        return self.chain.policy_playlists(self._rewards, start_rows)

    def table(self) -> np.ndarray | None:
        return self._rewards


class TasteLearner:
    """The system: a taste posterior, exploring by Thompson sampling, planning with notebook 06's policy.

    Each learning playlist is planned by notebook 06's policy on the reward table of one taste
    drawn from the posterior (its spread times `exploration`; 0: the posterior mean, no
    exploration). Every song heard, the start included, updates the posterior after the
    playlist; evaluation serves the posterior mean table.
    """

    name = "taste model"

    def __init__(self, chain: ServedChain, prior: TastePrior = TastePrior(), prior_mean: np.ndarray | None = None, *,
                 exploration: float = THOMPSON_SCALE, seed: int = 0) -> None:
        if exploration < 0:
            raise ValueError(f"exploration must be >= 0, got {exploration}")
        self.chain = chain
        table = chain.pool.table
        self.model = TasteModel(chain.pool.latents, table["cluster"].to_numpy(np.int64), prior, prior_mean, seed=seed)
        self.exploration = exploration
        self.rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
        self.run = chain.run
        self.switch_seconds: list[float] = []  # from a playlist's last play to the next playlist built
        self._update_seconds: float | None = None

    def _rewards(self, rows: np.ndarray, explore: bool) -> np.ndarray:
        rng = self.rng if explore and self.exploration > 0 else None
        return self.model.expected_rewards(self.chain.proximity, self.chain.weights, self.chain.like_threshold,
                                           rows=rows, rng=rng, scale=self.exploration)

    def next_playlist(self, start_row: int, explore: bool = True) -> np.ndarray:
        """The policy's playlist from `start_row` on the model's table (a Thompson draw with `explore`).

        Only the songs the playlist can reach are scored and planned on (`ServedChain.local`), so
        the time does not grow with the catalogue."""
        return self.chain.policy_playlists(lambda rows: self._rewards(rows, explore), [start_row], self.policy)[0]

    @property
    def policy(self) -> Policy:
        return greedy_policy(self.run.agent)

    def play(self, start_row: int, person: Person) -> np.ndarray:
        began = time.perf_counter()
        rows = self.next_playlist(start_row)
        if self._update_seconds is not None:
            self.switch_seconds.append(self._update_seconds + time.perf_counter() - began)
        listened, _ = person.listen(rows)
        began = time.perf_counter()
        self.model.observe(rows, listened)
        self.model.end_session()
        self._update_seconds = time.perf_counter() - began
        return rows

    def playlists(self, start_rows: np.ndarray) -> np.ndarray:
        return self.chain.policy_playlists(self.table(), start_rows, self.policy)

    def table(self) -> Rewards:
        return lambda rows: self._rewards(rows, explore=False)


class Reference(TasteLearner):
    """A reference, not a system: the taste model's own playlists (so the same plays), then a
    table that knows more of the person than any learner may (`_table`); every song heard is
    known exactly (its true reward). Before any play it serves the population prior."""

    scenarios: tuple[str, ...] = SCENARIOS  # the people it is defined for

    def __init__(self, chain: ServedChain, prior: TastePrior = TastePrior(), prior_mean: np.ndarray | None = None, *,
                 exploration: float = THOMPSON_SCALE, seed: int = 0) -> None:
        super().__init__(chain, prior, prior_mean, exploration=exploration, seed=seed)
        self.seed = seed
        self._prior_rewards = self.model.expected_rewards(chain.proximity, chain.weights, chain.like_threshold)
        self._person: Person | None = None

    def play(self, start_row: int, person: Person) -> np.ndarray:
        if person.scenario not in self.scenarios:
            raise ValueError(f"{self.name!r} is defined for {self.scenarios}, not for {person.scenario!r}")
        self._person = person
        return super().play(start_row, person)

    def table(self) -> np.ndarray:
        if self._person is None:
            return self._prior_rewards
        return self._with_heard_known(self._table(self._person))

    def _with_heard_known(self, table: np.ndarray) -> np.ndarray:
        """`table` with every song heard so far at its true reward."""
        heard = self.model.heard_rows
        table[heard] = self._person.true_rewards(self.chain.proximity, self.chain.weights)[heard]
        return table

    def _table(self, person: Person) -> np.ndarray:
        raise NotImplementedError

    def _heard(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The songs heard so far, the mean share of each and its number of plays."""
        rows, listened = self.model.plays
        heard, inverse = np.unique(rows, return_inverse=True)
        n = np.bincount(inverse)
        return heard, np.bincount(inverse, weights=listened) / n, n


class HeardClustersKnown(Reference):
    """The person's taste model known exactly in every cluster the heard songs fell in, and the
    population prior everywhere else.

    For "someone else", whose clusters are independent, nothing the person heard says anything
    of another cluster, and a few plays cannot tell a heard cluster exactly: an upper bound of
    what the taste model's playlists could have taught it (`ClusterFormKnown` is the ceiling).
    For the smooth scenarios, where a play informs other clusters too, it is only a reference.
    """

    name = "heard clusters known"

    def _table(self, person: Person) -> np.ndarray:
        clusters = self.model.clusters
        touched = np.isin(clusters, clusters[self.model.heard_rows])
        return np.where(touched, person.knowable_rewards(self.chain.proximity, self.chain.weights),
                        self._prior_rewards)


class SmoothFormKnown(Reference):
    """For "smooth taste": the person's taste model inferred from the plays by someone who knows
    its form (an interest point, a lengthscale, a low and a high) and the priors its parameters
    are drawn from (`helpers.people.smooth_posterior`): no learner can infer it better from the
    same plays, so this is the ceiling of what the taste model's playlists could have taught it."""

    name = "smooth form known"
    scenarios = ("smooth taste",)

    @functools.cached_property
    def grid(self) -> SmoothGrid:
        """The (interest point, lengthscale) grid Bayes' rule weighs: the catalogue's, built once."""
        return smooth_grid(self.chain.pool.latents, seed=self.seed)

    def _table(self, person: Person) -> np.ndarray:
        heard, mean, n = self._heard()
        taste, spread = smooth_posterior(self.grid, heard, mean, SMOOTH_SONG_NOISE ** 2 + person.play_noise ** 2 / n)
        spread = np.sqrt(spread ** 2 + SMOOTH_SONG_NOISE ** 2 + person.play_noise ** 2)
        return expected_rewards(taste, spread, self.chain.proximity, self.chain.weights,
                                like_threshold=person.like_threshold)


class ClusterFormKnown(Reference):
    """For "someone else": the next play of every song predicted from the plays by someone who
    knows the person's form (independent clusters, a mean and a spread each, a draw per song)
    and the priors its parameters are drawn from (`helpers.people.someone_else_posterior`). Unlike
    `HeardClustersKnown`, it learns a heard cluster only as far as its plays tell, so this is the
    ceiling of what the taste model could have learnt from the same plays."""

    name = "cluster form known"
    scenarios = ("someone else",)

    def _table(self, person: Person, rng: np.random.Generator | None = None) -> np.ndarray:
        listened, like_probability = someone_else_posterior(self.model.clusters, *self._heard(),
                                                            play_noise=person.play_noise,
                                                            like_threshold=person.like_threshold, rng=rng)
        return reward(interaction_score(listened, like_probability, self.chain.weights), self.chain.proximity,
                      self.chain.weights)


class FormUnknown(SmoothFormKnown, ClusterFormKnown):
    """For "someone else" and "smooth taste": Bayes' rule from the plays by someone who knows both
    people's forms and priors but not which of the two the person has (each a priori 1/2). The
    table is the two forms' tables (`SmoothFormKnown`, `ClusterFormKnown`) weighed by how well
    each explains the plays (`helpers.people.smooth_log_evidence`, `someone_else_log_evidence`):
    the ceiling of a learner that must tell a person's form from their plays, as the taste model must."""

    name = "form unknown"
    scenarios = ("someone else", "smooth taste")

    def _table(self, person: Person) -> np.ndarray:
        heard, mean, n = self._heard()
        smooth = smooth_log_evidence(self.grid, heard, mean, SMOOTH_SONG_NOISE ** 2 + person.play_noise ** 2 / n)
        clustered = someone_else_log_evidence(self.model.clusters, heard, mean, n, play_noise=person.play_noise)
        self.smooth_probability = float(np.exp(smooth - np.logaddexp(smooth, clustered)))
        return (self.smooth_probability * SmoothFormKnown._table(self, person)
                + (1 - self.smooth_probability) * ClusterFormKnown._table(self, person))


class ClusterFormLearner(ClusterFormKnown):
    """Not a system: for "someone else", a learner that knows the person's form and priors and
    chooses its own playlists, planned by notebook 06's policy on a Thompson draw of its Bayes
    posterior (every heard song at its true reward, as `ClusterFormKnown`); served its posterior
    predictive. How much of the person's knowable gap exploring with this policy could close."""

    name = "cluster form learner"

    def _rewards(self, rows: np.ndarray, explore: bool) -> np.ndarray:
        rng = self.rng if explore else None
        return self._with_heard_known(self._table(self._person, rng))[rows]


class FineTunedTasteLearner(TasteLearner):
    """The ablation of PPO's part: the taste model, and after the playlists numbered in
    `finetune_after` a PPO fine-tune of `timesteps` steps (notebook 08's) on its posterior mean table."""

    name = "taste model + PPO fine-tune"

    def __init__(self, chain: ServedChain, finetune_after: Sequence[int] = (max(CHECKPOINTS),),
                 timesteps: int = 200_000, **taste: object) -> None:
        super().__init__(chain, **taste)
        self.finetune_after = finetune_after
        self.timesteps = timesteps
        self.played = 0

    def play(self, start_row: int, person: Person) -> np.ndarray:
        rows = super().play(start_row, person)
        self.played += 1
        if self.played in self.finetune_after:
            with tempfile.TemporaryDirectory(prefix="taste-finetune-") as folder:
                shutil.copy(self.chain.checkpoint, version_path(folder, 0))
                table = self._rewards(np.arange(self.chain.pool.n_tracks), explore=False)
                self.run = fine_tune(folder, self.chain.serving(table), self.chain.neighbours, self.timesteps,
                                     learning_rate=FEEDBACK.learning_rate,
                                     reset_policy_head=FEEDBACK.reset_policy_head)
        return rows


class BanditLearner:
    """LinUCB or linear Thompson sampling over the candidates' latents, learning after every song."""

    def __init__(self, chain: ServedChain, exploration: str, strength: float = 1.0, seed: int = 0) -> None:
        self.chain = chain
        self.name = {"ucb": "LinUCB", "thompson": "linear Thompson sampling"}[exploration]
        self.bandit = LinearBandit(chain.pool.latent_dim, exploration, strength,
                                   reward_scale=reward_range(chain.weights)[1], seed=seed)

    def _heard(self, rows: np.ndarray, person: Person) -> None:
        listened, liked = person.listen(rows)
        weights = self.chain.weights
        heard = reward(interaction_score(listened, liked, weights), self.chain.proximity[rows], weights)
        self.bandit.update(self.chain.pool.latents[rows], heard)

    def play(self, start_row: int, person: Person) -> np.ndarray:
        """Pick by pick, hearing each song before the next pick (the start song first)."""
        env, batch, rows = self.chain.local(self.chain.pool.rewards, np.array([start_row]))
        self._heard(np.array([start_row]), person)
        policy = self.bandit.policy(explore=True)
        while batch is not None:
            step = env.step_index
            batch, _, _ = env.step(policy(batch))
            self._heard(rows[env.playlists[:, step + 1]], person)
        return rows[env.playlists[0]]

    def playlists(self, start_rows: np.ndarray) -> np.ndarray:
        return self.chain.policy_playlists(self.chain.pool.rewards, start_rows, self.bandit.policy(explore=False))

    def table(self) -> None:
        return None


class Notebook08Learner:
    """Today's notebook 08: the reward update of `helpers.finetune.update_rewards` after every
    playlist, and a PPO fine-tune of `timesteps` steps on the updated table after the playlists
    numbered in `finetune_after` (every one by default); playlists come from the newest policy
    serving the newest table."""

    name = "notebook 08 update + fine-tune"

    def __init__(self, chain: ServedChain, timesteps: int = 200_000, finetune_after: Sequence[int] | None = None) -> None:
        self.chain = chain
        self.timesteps = timesteps
        self.finetune_after = finetune_after
        self.folder = tempfile.TemporaryDirectory(prefix="notebook08-")
        self.models_dir = Path(self.folder.name)
        shutil.copy(chain.checkpoint, version_path(self.models_dir, 0))
        self.run = chain.run
        self.rewards = chain.pool.rewards
        self.log: list[pd.DataFrame] = []

    def _rollout(self, start_rows: np.ndarray) -> np.ndarray:
        return self.chain.policy_playlists(self.rewards, start_rows, greedy_policy(self.run.agent))

    def play(self, start_row: int, person: Person) -> np.ndarray:
        rows = self._rollout([start_row])[0]
        listened, liked = person.listen(rows)
        self.log.append(pd.DataFrame({"track_id": self.chain.pool.ids[rows], "percentage_listened": listened,
                                      "liked": liked, "session_id": str(len(self.log)), "position": range(len(rows)),
                                      "timestamp": pd.Timestamp.now(tz="UTC")}))
        log = pd.concat(self.log, ignore_index=True)
        updated, _ = update_rewards(self.chain.pool.table, log, self.chain.listener_model,
                                    confidence_plays=FEEDBACK.confidence_plays, prior_plays=FEEDBACK.prior_plays,
                                    weights=self.chain.weights)
        self.rewards = updated["reward"].to_numpy(np.float64)
        if self.finetune_after is None or len(self.log) in self.finetune_after:
            served = self.chain.serving(self.rewards)
            self.run = fine_tune(self.models_dir, served, self.chain.neighbours, self.timesteps,
                                 learning_rate=FEEDBACK.learning_rate, reset_policy_head=FEEDBACK.reset_policy_head)
            save_version(self.run, self.models_dir, updated, log_provenance(log))
        return rows

    def playlists(self, start_rows: np.ndarray) -> np.ndarray:
        return self._rollout(start_rows)

    def table(self) -> np.ndarray:
        return self.rewards


def playlist_returns(playlists: np.ndarray, true_rewards: np.ndarray) -> np.ndarray:
    """Each playlist's return under `true_rewards`: the sum over its picks (the start is not a pick)."""
    return true_rewards[playlists[:, 1:]].sum(axis=1)


@dataclass
class Study:
    """One person, one chain: the learning starts, the evaluation starts and the learners to compare."""

    chain: ServedChain
    person: Person
    learning_starts: np.ndarray
    eval_starts: np.ndarray
    # A person whose taste never moves has the same best playlists and references for every
    # learner: computed once (exact searches are most of a learner's measure).
    _best_from: dict[int, float] = field(default_factory=dict, repr=False)
    _references: dict[str, float] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, chain: ServedChain, person: Person, seed: int, *, n_learning: int = max(CHECKPOINTS),
              n_eval_starts: int = 200) -> "Study":
        """Learning starts among notebook 06's training starts, evaluation starts among its held-out ones (seeded)."""
        heldout = chain.pool.rows_of(chain.run.heldout_ids)
        training = np.setdiff1d(np.arange(chain.pool.n_tracks), heldout)
        rng = np.random.default_rng(seed)
        return cls(chain, person, rng.choice(training, n_learning, replace=False),
                   evaluation_starts(heldout, n_eval_starts, seed))

    def references(self, person: Person) -> dict[str, float]:
        """R_none, R_knowable and R* for `person` as they are now, on the evaluation starts."""
        chain, proximity, weights = self.chain, self.chain.proximity, self.chain.weights
        truth = person.true_rewards(proximity, weights)
        knowable = person.knowable_rewards(proximity, weights)
        return {
            "none": playlist_returns(chain.policy_playlists(chain.pool.rewards, self.eval_starts), truth).mean(),
            "knowable": playlist_returns(chain.policy_playlists(knowable, self.eval_starts), truth).mean(),
            "optimum": playlist_returns(chain.planned_playlists(truth, self.eval_starts), truth).mean(),
        }

    def run(self, learner: Learner, checkpoints: Sequence[int] = CHECKPOINTS, plan: bool = True) -> pd.DataFrame:
        """Play the learning playlists to a private copy of the person; one row per checkpoint."""
        person = copy.deepcopy(self.person)
        static = person.drift_rate == 0
        rows, regret, references = [], 0.0, self._references if static else None
        best_from = self._best_from if static else {}
        last_table, planned = None, np.nan
        for number, start in enumerate(self.learning_starts[: max(checkpoints)], start=1):
            truth = person.true_rewards(self.chain.proximity, self.chain.weights)
            if not static or start not in best_from:
                best = self.chain.planned_playlists(truth, [start])
                best_from[start] = float(playlist_returns(best, truth)[0])
            heard = learner.play(int(start), person)
            regret += best_from[start] - float(playlist_returns(heard[None], truth)[0])
            if number not in checkpoints:
                continue
            truth = person.true_rewards(self.chain.proximity, self.chain.weights)
            references = self.references(person) if (references is None or not static) else references
            if static:
                self._references = references
            achieved = playlist_returns(learner.playlists(self.eval_starts), truth).mean()
            table = learner.table() if plan else None
            if table is None:
                planned = np.nan
            elif not (static and table is last_table):  # an unchanged table plans the same playlists
                planned = playlist_returns(self.chain.planned_playlists(table, self.eval_starts), truth).mean()
            last_table = table
            rows.append({"learner": learner.name, "playlists": number, "return": achieved, "planned": planned,
                         "regret": regret, **{f"R_{name}": value for name, value in references.items()}})
        frame = pd.DataFrame(rows)
        frame["share_full"] = (frame["return"] - frame["R_none"]) / (frame["R_optimum"] - frame["R_none"])
        frame["share_knowable"] = (frame["return"] - frame["R_none"]) / (frame["R_knowable"] - frame["R_none"])
        frame["planned_share_knowable"] = (frame["planned"] - frame["R_none"]) / (frame["R_knowable"] - frame["R_none"])
        return frame


FINE_TUNING = ("notebook 08 update + fine-tune", "taste model + PPO fine-tune")  # the ablation: PPO fine-tunes in the loop
REFERENCE_CLASSES = {reference.name: reference for reference in (HeardClustersKnown, ClusterFormKnown,
                                                                  SmoothFormKnown, FormUnknown)}
REFERENCES = tuple(REFERENCE_CLASSES)  # they hear the taste model's playlists
# Every learner that knows more than a system may, each defined for the people of its `scenarios` only.
KNOWING_CLASSES = {learner.name: learner for learner in (*REFERENCE_CLASSES.values(), ClusterFormLearner)}
LEARNERS = ("taste model", "no update", "LinUCB", "linear Thompson sampling", TasteModelKnown.name, *REFERENCES,
            ClusterFormLearner.name, *FINE_TUNING)


def make_learner(name: str, chain: ServedChain, seed: int, history: np.ndarray | None = None) -> Learner:
    """A fresh learner of `LEARNERS` over `chain`, seeded; the taste model starts from the person's
    `history` (mean share listened per song) where there is one, else from the population prior."""
    if name == "taste model":
        return TasteLearner(chain, prior_mean=history, seed=seed)
    if name == "no update":
        return FixedTable(chain)
    if name == TasteModelKnown.name:
        return TasteModelKnown(chain)
    if name in KNOWING_CLASSES:
        return KNOWING_CLASSES[name](chain, prior_mean=history, seed=seed)
    if name in ("LinUCB", "linear Thompson sampling"):
        return BanditLearner(chain, "ucb" if name == "LinUCB" else "thompson", seed=seed)
    if name == "notebook 08 update + fine-tune":
        return Notebook08Learner(chain, finetune_after=CHECKPOINTS)
    if name == "taste model + PPO fine-tune":
        return FineTunedTasteLearner(chain, prior_mean=history, seed=seed)
    raise ValueError(f"learner must be one of {LEARNERS}, got {name!r}")


def load_served_chain(output_dir: str | Path | ProjectPaths | None = None) -> ServedChain:
    """What the chain at `output_dir` serves (`helpers.recommend.load_chain`, version 0): notebook 05's
    table and weights, notebook 04's listener model, notebook 06's default policy and its neighbour index."""
    trained = load_chain(output_dir, version=0, taste=False)  # never a table a live loop learnt
    return ServedChain(trained.pool, trained.neighbours(), trained.run, trained.weights, trained.listener_model,
                       checkpoint_path(trained.paths.models))


@dataclass(frozen=True)
class StudySettings:
    """Who is measured, by which learners, on how many held-out starts: notebook 08's study and the benchmark's."""

    scenarios: tuple[str, ...] = SCENARIOS
    n_listeners: int = 5  # people per scenario, seeds seed, seed + 1, ...
    learners: tuple[str, ...] = tuple(name for name in LEARNERS if name not in FINE_TUNING)
    n_eval_starts: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [name for name in self.scenarios if name not in SCENARIOS]
        if unknown or not self.scenarios:
            raise ValueError(f"scenarios must be a non-empty selection of {SCENARIOS}, got {list(self.scenarios)}")
        unknown = [name for name in self.learners if name not in LEARNERS]
        if unknown or not self.learners:
            raise ValueError(f"learners must be a non-empty selection of {LEARNERS}, got {list(self.learners)}")
        if self.n_listeners < 1 or self.n_eval_starts < 1:
            raise ValueError(f"n_listeners and n_eval_starts must be >= 1, got {self.n_listeners} and "
                             f"{self.n_eval_starts}")

    def people(self) -> list[tuple[str, int]]:
        """Every (scenario, listener seed) to measure."""
        return [(scenario, self.seed + i) for scenario in self.scenarios for i in range(self.n_listeners)]


def measure_person(chain: ServedChain, scenario: str, seed: int, learners: Sequence[str], *,
                   n_eval_starts: int) -> pd.DataFrame:
    """Every learner on one person of `scenario` (seed `seed`): `Study.run`'s rows, each with the
    learner's seconds and slowest switch (last play of a playlist to the next playlist built).
    A reference is measured only on the people it is defined for."""
    person = make_person(scenario, chain.pool.table, chain.listener_model, seed=seed)
    study = Study.build(chain, person, seed=seed, n_eval_starts=n_eval_starts)
    frames = []
    for name in learners:
        if name in KNOWING_CLASSES and scenario not in KNOWING_CLASSES[name].scenarios:
            continue
        began = time.perf_counter()
        learner = make_learner(name, chain, seed=seed, history=person.history)
        frame = study.run(learner)
        frame["seconds"] = time.perf_counter() - began
        switch = getattr(learner, "switch_seconds", [])
        frame["switch_seconds_max"] = max(switch) if switch else np.nan
        frames.append(frame)
    return pd.concat(frames, ignore_index=True).assign(scenario=scenario, seed=seed, n_songs=chain.pool.n_tracks)


def taste_snapshots(chain: ServedChain, person: Person, seed: int,
                    checkpoints: Sequence[int] = (0, *CHECKPOINTS)) -> pd.DataFrame:
    """What the taste model believes of every song after each of `checkpoints` learning playlists.

    Columns: `id`, `true taste` (the person's), one `after N playlists` per checkpoint (the
    posterior mean share listened) and `heard_in` (the number of the playlist that first
    played the song; 0 for never). The playlists are `Study.build`'s learning playlists for
    `seed`; `person` itself is left untouched (a copy listens).
    """
    person = copy.deepcopy(person)
    learner = TasteLearner(chain, prior_mean=person.history, seed=seed)
    starts = Study.build(chain, person, seed=seed, n_eval_starts=1).learning_starts
    snapshots = {"id": chain.pool.ids, "true taste": person.taste.copy()}
    heard_in = np.zeros(chain.pool.n_tracks, dtype=np.int64)
    for number in range(max(checkpoints) + 1):
        if number in checkpoints:
            snapshots[f"after {number} playlists"] = learner.model.predict()[0]
        if number < max(checkpoints):
            rows = learner.play(int(starts[number]), person)
            heard_in[rows[heard_in[rows] == 0]] = number + 1
    return pd.DataFrame({**snapshots, "heard_in": heard_in})


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% confidence half-width over listener seeds, per catalogue, scenario, learner and
    checkpoint (the keys present).

    Where the results hold the returns, `pooled_share_knowable` is the share of the *mean*
    knowable gap, (mean return - mean R_none) / (mean R_knowable - mean R_none), with its
    delta-method interval. It is the share to read where a person's own knowable gap can be
    near 0 (the large catalogues), which makes the mean of the people's shares explode."""
    keys = [key for key in ("catalogue", "scenario", "learner", "playlists") if key in results]
    measures = ["share_full", "share_knowable", "planned_share_knowable", "regret"]
    grouped = results.groupby(keys, sort=False)
    mean = grouped[measures].mean()
    size = grouped.size()
    half_width = 1.96 * grouped[measures].std(ddof=1) / np.sqrt(size.to_numpy()[:, None])
    summary = mean.join(half_width.add_suffix("_ci95")).join(size.rename("seeds"))
    if {"return", "R_none", "R_knowable"} <= set(results):
        parts = pd.DataFrame({"gained": results["return"] - results["R_none"],
                              "gap": results["R_knowable"] - results["R_none"]})
        groups = [results[key] for key in keys]
        means = parts.groupby(groups, sort=False).mean()
        row_means = parts.groupby(groups, sort=False).transform("mean")
        # Linearised, the ratio's error is that of mean(gained - pooled * gap) / mean(gap).
        residual = parts["gained"] - row_means["gained"] / row_means["gap"] * parts["gap"]
        summary["pooled_share_knowable"] = means["gained"] / means["gap"]
        summary["pooled_share_knowable_ci95"] = (1.96 * residual.groupby(groups, sort=False).std(ddof=1)
                                                 / (np.sqrt(size) * means["gap"].abs()))
    return summary.reset_index()


def paired_regret(results: pd.DataFrame, learner: str = "taste model") -> pd.DataFrame:
    """`learner`'s regret over all its learning playlists minus each other learner's, paired by
    person (the same person and start songs), per catalogue and scenario: the mean difference
    and its 95% confidence half-width over listener seeds (negative: `learner` cost the person less).
    The references, which hear the taste model's playlists, are left out."""
    keys = [key for key in ("catalogue", "scenario") if key in results]
    last = results[results["playlists"] == results["playlists"].max()]
    regret = last.pivot_table(index=[*keys, "seed"], columns="learner", values="regret", sort=False)
    if learner not in regret:
        raise ValueError(f"the results hold no {learner!r} learner, only {list(regret.columns)}")
    others = regret.drop(columns=[learner, *REFERENCES], errors="ignore")
    difference = others.rsub(regret[learner], axis=0).dropna(axis=1, how="all")
    difference = difference.rename_axis(columns="against").stack(future_stack=True).dropna().rename("difference")
    grouped = difference.groupby(level=[*keys, "against"], sort=False)
    return pd.DataFrame({"difference": grouped.mean(),
                         "difference_ci95": 1.96 * grouped.std(ddof=1) / np.sqrt(grouped.size()),
                         "seeds": grouped.size()}).reset_index()
