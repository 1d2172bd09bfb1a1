"""One source per default: a notebook parameter that mirrors a dataclass field or a helper's
argument has that default, so changing the dataclass changes what `make run` does (and this
test says which copy to change with it)."""
from __future__ import annotations

import ast
import inspect
import json

import pytest

from helpers.adaptation import StudySettings
from helpers.clustering import fit_kmeans, gridworld_edges, umap_map
from helpers.drift import DriftSettings
from helpers.evaluation import compare_policies, split_start_tracks
from helpers.listeners import draw_listener_model
from helpers.paths import NOTEBOOKS_DIR
from helpers.ppo import PPOConfig
from helpers.rewards import RewardWeights
from helpers.vae import fit_vae


def default(function, name: str) -> object:
    return inspect.signature(function).parameters[name].default


def parameters(notebook: str) -> dict[str, object]:
    """The values of the notebook's cell tagged `parameters`."""
    cells = json.loads((NOTEBOOKS_DIR / f"{notebook}.ipynb").read_text())["cells"]
    cell = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)}


PPO, ORIGINAL, DRIFT, WEIGHTS, STUDY = (PPOConfig(), PPOConfig.original(), DriftSettings(), RewardWeights(),
                                      StudySettings())
SHARED_PPO = ("playlist_length", "n_candidates", "gae_lambda", "update_epochs", "num_envs", "num_minibatches",
              "entropy_coef", "value_coef", "max_grad_norm", "torch_threads", "seed", "n_fourier_features",
              "fourier_scale")
MIRRORS: dict[str, dict[str, object]] = {
    "02_vae": {"latent_dim": default(fit_vae, "latent_dim"), "hidden_dim": default(fit_vae, "hidden_dim"),
               "beta": default(fit_vae, "beta"), "vae_epochs": default(fit_vae, "epochs"),
               "batch_size": default(fit_vae, "batch_size"), "learning_rate": default(fit_vae, "learning_rate"),
               "vae_max_updates": default(fit_vae, "max_updates"),
               "time_budget_seconds": default(fit_vae, "time_budget_seconds"), "seed": default(fit_vae, "seed")},
    "03_clusters": {"n_clusters": default(fit_kmeans, "n_clusters"), "kmeans_n_init": default(fit_kmeans, "n_init"),
                    "kmeans_algorithm": default(fit_kmeans, "algorithm"),
                    "umap_n_neighbors": default(umap_map, "n_neighbors"), "umap_min_dist": default(umap_map, "min_dist"),
                    "umap_sample_size": default(umap_map, "sample_size"), "n_candidates": PPO.n_candidates,
                    "gridworld_n_tracks": default(gridworld_edges, "n_tracks")},
    "04_listeners": {"listen_mean_range": list(default(draw_listener_model, "mean_range")),
                     "listen_std_range": list(default(draw_listener_model, "std_range")),
                     "like_threshold": default(draw_listener_model, "like_threshold")},
    "05_rewards": {name: getattr(WEIGHTS, name) for name in
                   ("listened_weight", "liked_weight", "interaction_weight", "proximity_weight")},
    "06_ppo": {
        **{name: getattr(PPO, name) for name in SHARED_PPO},
        **{f"{name}_candidate": getattr(PPO, name) for name in
           ("total_timesteps", "train_seconds", "hidden_size", "learning_rate", "gamma", "clip_epsilon")},
        **{f"{name}_original": getattr(ORIGINAL, name) for name in
           ("total_timesteps", "train_seconds", "learning_rate", "gamma", "clip_epsilon")},
        "reward_inputs": list(PPO.reward_inputs),
        "look_ahead_depth": PPO.look_ahead_depth,
        "planner_weight": PPO.planner_weight,
        "heldout_fraction": default(split_start_tracks, "heldout_fraction"),
        "n_eval_starts": default(compare_policies, "n_eval_starts"),
        "eval_seeds": list(default(compare_policies, "eval_seeds")),
    },
    "07_spotify": {"playlist_length": PPO.playlist_length},
    "08_adaptation": {"scenarios": list(STUDY.scenarios), "n_listeners": STUDY.n_listeners,
                      "learners": list(STUDY.learners), "n_eval_starts": STUDY.n_eval_starts, "seed": STUDY.seed,
                      "confidence_plays": DRIFT.confidence_plays, "prior_plays": DRIFT.prior_plays,
                      "finetune_timesteps": DRIFT.finetune_timesteps, "finetune_learning_rate": DRIFT.learning_rate,
                      "finetune_reset_policy_head": DRIFT.reset_policy_head},
}


@pytest.mark.parametrize("notebook", sorted(MIRRORS))
def test_every_mirrored_notebook_parameter_has_its_dataclass_default(notebook):
    declared = parameters(notebook)
    assert set(MIRRORS[notebook]) <= set(declared), "a mirrored parameter was renamed: update MIRRORS"
    disagree = {name: (declared[name], expected) for name, expected in MIRRORS[notebook].items()
                if declared[name] != expected}
    assert not disagree, f"{notebook}: parameter defaults differ from their source (notebook, source): {disagree}"


def test_the_check_fails_when_a_default_changes(monkeypatch):
    monkeypatch.setitem(MIRRORS, "05_rewards", {**MIRRORS["05_rewards"], "liked_weight": 49.0})
    with pytest.raises(AssertionError, match="liked_weight"):
        test_every_mirrored_notebook_parameter_has_its_dataclass_default("05_rewards")
