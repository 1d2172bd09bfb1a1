"""The VAE state space: each latent belongs to its own track, training is seeded, scaling is safe."""
import numpy as np
import pandas as pd
import pytest
import torch

from helpers.data import FEATURES
from helpers.vae import MinMaxScaling, TrainedVAE, fit_vae, kl_divergence

TINY = dict(hidden_dim=16, epochs=30, batch_size=64, progress=False)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks train several times faster on one thread than on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_tracks(n_tracks: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Tracks on a smooth random curve through the features' usual ranges, in random row order.

    Returns the tracks (random hex ids, unrelated to the row order) and each row's position t
    in [0, 1] along the curve: tracks close in t have close features.
    """
    rng = np.random.default_rng(seed)
    t = rng.permutation(np.linspace(0.0, 1.0, n_tracks))
    phases, speeds = rng.uniform(0, 2 * np.pi, len(FEATURES)), rng.uniform(1.0, 3.0, len(FEATURES))
    unit = 0.5 + 0.5 * np.sin(speeds * t[:, None] * np.pi + phases)
    low = np.array([0, 0, 0, -30, 0, 0, 0, 0, 0, 0, 60], dtype=float)
    high = np.array([1, 1, 11, 0, 1, 1, 1, 1, 1, 1, 200], dtype=float)
    tracks = pd.DataFrame(low + unit * (high - low), columns=list(FEATURES))
    tracks.insert(0, "id", [f"{value:016x}" for value in rng.integers(0, 2**63, n_tracks)])
    tracks.insert(1, "artist", "Someone")
    return tracks, t


@pytest.fixture(scope="module")
def catalogue() -> pd.DataFrame:
    return make_tracks(300, seed=0)[0]


@pytest.fixture(scope="module")
def trained(catalogue) -> tuple[TrainedVAE, pd.DataFrame]:
    return fit_vae(catalogue, seed=0, **TINY)


# --- every latent belongs to its own track --------------------------------------------------

def test_shuffling_the_rows_gives_every_id_the_same_latent(trained, catalogue):
    vae, _ = trained
    shuffled = catalogue.sample(frac=1.0, random_state=1)
    in_file_order = vae.encode(catalogue)
    reencoded = vae.encode(shuffled)
    assert reencoded["id"].tolist() == shuffled["id"].tolist()
    joined = in_file_order.merge(reencoded, on="id", suffixes=("", "_shuffled"), validate="1:1")
    columns = [f"latent_{j}" for j in range(5)]
    np.testing.assert_allclose(joined[columns].to_numpy(),
                               joined[[f"{c}_shuffled" for c in columns]].to_numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("row", [0, 137, 299])
def test_a_track_encoded_alone_gets_its_row_of_the_table(trained, catalogue, row):
    vae, _ = trained
    table = vae.encode(catalogue).set_index("id")
    alone = vae.encode(catalogue.iloc[[row]])
    assert alone["id"].tolist() == [catalogue["id"].iloc[row]]
    np.testing.assert_allclose(alone.drop(columns="id").to_numpy()[0],
                               table.loc[catalogue["id"].iloc[row]].to_numpy(), rtol=0, atol=1e-6)


def test_tracks_with_close_features_get_close_latents():
    """Tracks lie on a curve; neighbours on the curve must be neighbours in latent space.

    The encoder is continuous, so this holds for any weights when each latent is paired with
    its own id; latents paired with the wrong ids (a permutation) are as far apart as random pairs.
    """
    tracks, t = make_tracks(200, seed=1)
    vae, _ = fit_vae(tracks, seed=0, **TINY)
    latents = vae.encode(tracks).set_index("id").loc[tracks["id"].to_numpy()[np.argsort(t)]].to_numpy()

    def neighbour_over_random_distance(states: np.ndarray) -> float:
        neighbours = np.linalg.norm(np.diff(states, axis=0), axis=1).mean()
        random_pairs = np.linalg.norm(states[:, None] - states[None], axis=-1).mean()
        return neighbours / random_pairs

    assert neighbour_over_random_distance(latents) < 0.1
    permuted = latents[np.random.default_rng(0).permutation(len(latents))]
    assert neighbour_over_random_distance(permuted) > 0.5


def test_latents_keep_the_input_order_and_ids(trained, catalogue):
    vae, _ = trained
    latents = vae.encode(catalogue.iloc[::-1])
    assert list(latents.columns) == ["id"] + [f"latent_{j}" for j in range(5)]
    assert latents["id"].tolist() == catalogue["id"].iloc[::-1].tolist()


# --- determinism -----------------------------------------------------------------------------

def test_same_seed_gives_identical_weights_and_latents(catalogue):
    first, first_history = fit_vae(catalogue, seed=7, **{**TINY, "epochs": 3})
    second, second_history = fit_vae(catalogue, seed=7, **{**TINY, "epochs": 3})
    for name, weights in first.model.state_dict().items():
        assert torch.equal(weights, second.model.state_dict()[name]), name
    pd.testing.assert_frame_equal(first.encode(catalogue), second.encode(catalogue), check_exact=True)
    pd.testing.assert_frame_equal(first_history.drop(columns="seconds"),
                                  second_history.drop(columns="seconds"), check_exact=True)


def test_different_seeds_give_different_latents(catalogue):
    first, _ = fit_vae(catalogue, seed=7, **{**TINY, "epochs": 3})
    second, _ = fit_vae(catalogue, seed=8, **{**TINY, "epochs": 3})
    difference = first.encode(catalogue).drop(columns="id") - second.encode(catalogue).drop(columns="id")
    assert np.abs(difference.to_numpy()).max() > 0.01


# --- scaling ---------------------------------------------------------------------------------

def test_catalogue_latents_span_exactly_the_unit_interval(trained, catalogue):
    vae, _ = trained
    states = vae.encode(catalogue).drop(columns="id")
    assert (states.min() == 0).all() and (states.max() == 1).all()


def test_a_constant_feature_is_scaled_to_zero_without_nan(catalogue):
    constant = catalogue.assign(mode=1.0)
    vae, history = fit_vae(constant, seed=0, **{**TINY, "epochs": 3})
    assert np.isfinite(history[["total", "reconstruction", "kl"]].to_numpy()).all()
    scaled = vae.feature_scaling.transform(constant[list(FEATURES)].to_numpy())
    assert (scaled[:, FEATURES.index("mode")] == 0).all()
    assert np.isfinite(vae.encode(constant).drop(columns="id").to_numpy()).all()


def test_min_max_scaling_maps_to_unit_interval_and_back():
    values = np.random.default_rng(0).normal(50, 30, (100, 3))
    scaling = MinMaxScaling.fit(values, ["a", "b", "c"])
    scaled = scaling.transform(values)
    np.testing.assert_allclose(scaled.min(axis=0), 0)
    np.testing.assert_allclose(scaled.max(axis=0), 1)
    np.testing.assert_allclose(scaling.inverse_transform(scaled), values)


def test_new_tracks_use_the_catalogue_scaling(trained, catalogue):
    """A track outside the catalogue's range is scaled by the stored min/max, not refitted."""
    vae, _ = trained
    louder = catalogue.iloc[[0]].assign(loudness=catalogue["loudness"].max() + 10)
    scaled = vae.feature_scaling.transform(louder[list(FEATURES)].to_numpy())
    assert scaled[0, FEATURES.index("loudness")] > 1


# --- saving ----------------------------------------------------------------------------------

def test_saved_model_reloads_and_encodes_identically(trained, catalogue, tmp_path):
    vae, _ = trained
    reloaded = TrainedVAE.load(vae.save(tmp_path / "models" / "vae.pt"))
    assert reloaded.hyperparameters == vae.hyperparameters
    np.testing.assert_array_equal(reloaded.feature_scaling.minimum, vae.feature_scaling.minimum)
    np.testing.assert_array_equal(reloaded.latent_scaling.maximum, vae.latent_scaling.maximum)
    pd.testing.assert_frame_equal(reloaded.encode(catalogue), vae.encode(catalogue), check_exact=True)


def test_loading_a_missing_model_names_the_notebook_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="02_vae"):
        TrainedVAE.load(tmp_path / "vae.pt")


def test_loading_another_file_says_it_is_not_a_vae(tmp_path):
    path = tmp_path / "policy.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match=r"policy\.pt is not a checkpoint of notebook 02_vae"):
        TrainedVAE.load(path)


# --- training --------------------------------------------------------------------------------

def test_history_records_the_negative_elbo_per_epoch(trained, catalogue):
    vae, history = trained
    assert history["epoch"].tolist() == list(range(1, TINY["epochs"] + 1))
    assert (history["tracks_seen"] == len(catalogue)).all()
    np.testing.assert_allclose(history["total"],
                               history["reconstruction"] + vae.hyperparameters["beta"] * history["kl"])
    assert history["total"].iloc[-1] < history["total"].iloc[0]


def test_the_vae_reconstructs_better_than_predicting_the_mean(trained, catalogue):
    vae, _ = trained
    errors = vae.reconstruction_error(catalogue)
    assert list(errors["feature"]) == list(FEATURES)
    assert errors["rmse"].mean() < 0.5 * errors["rmse_predicting_mean"].mean()


def test_time_budget_stops_training_early(catalogue):
    _, history = fit_vae(catalogue, seed=0, **{**TINY, "epochs": 100_000}, time_budget_seconds=0.3)
    assert len(history) < 100_000
    assert history["seconds"].iloc[-1] < 5


def test_max_updates_stops_training_after_exactly_that_many_minibatches_and_is_reproducible(catalogue):
    first, history = fit_vae(catalogue, seed=0, **{**TINY, "epochs": 1_000}, max_updates=25)
    updates_per_epoch = -(-history["tracks_seen"] // TINY["batch_size"])  # the last batch may be partial
    assert updates_per_epoch.sum() == 25
    assert len(history) == -(-25 // -(-len(catalogue) // TINY["batch_size"]))
    second, _ = fit_vae(catalogue, seed=0, **{**TINY, "epochs": 1_000}, max_updates=25)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_kl_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(50, 5, generator=generator), torch.randn(50, 5, generator=generator)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, torch.exp(0.5 * logvar)), torch.distributions.Normal(0.0, 1.0))
    torch.testing.assert_close(kl_divergence(mu, logvar), expected)


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("corrupt, message", [
    (lambda t: t.drop(columns="tempo"), r"my_tracks\.parquet: missing column\(s\) \['tempo'\]"),
    (lambda t: t.assign(energy="loud"), r"my_tracks\.parquet: column 'energy' has dtype .*expected numbers"),
    (lambda t: t.assign(valence=np.where(np.arange(len(t)) < 3, np.nan, t["valence"])),
     r"my_tracks\.parquet: column 'valence' has 3 missing or infinite"),
    (lambda t: t.assign(id=t["id"].where(np.arange(len(t)) != 5, t["id"].iloc[0])),
     r"my_tracks\.parquet: column 'id' has 1 duplicate id"),
    (lambda t: t.drop(columns="id"), r"my_tracks\.parquet: missing column\(s\) \['id'\]"),
    (lambda t: t.iloc[:0], r"my_tracks\.parquet: no rows"),
])
def test_bad_tracks_raise_an_error_naming_file_and_column(trained, catalogue, corrupt, message):
    vae, _ = trained
    with pytest.raises(ValueError, match=message):
        vae.encode(corrupt(catalogue), source="my_tracks.parquet")
    with pytest.raises(ValueError, match=message):
        fit_vae(corrupt(catalogue), source="my_tracks.parquet", **TINY)


@pytest.mark.parametrize("setting", [dict(batch_size=0), dict(latent_dim=2.5), dict(beta=-1.0),
                                     dict(learning_rate=0.0), dict(time_budget_seconds=0),
                                     dict(max_updates=0)])
def test_bad_hyperparameters_are_rejected(catalogue, setting):
    with pytest.raises(ValueError, match=next(iter(setting))):
        fit_vae(catalogue, **{**TINY, **setting})


# --- nothing non-finite is trained on or written ---------------------------------------------

def test_a_feature_span_that_overflows_is_refused(catalogue):
    tracks = catalogue.copy()
    tracks.loc[0, "tempo"], tracks.loc[1, "tempo"] = -1e308, 1e308
    with pytest.raises(ValueError, match=r"the span \(maximum - minimum\) of the features: column 'tempo' 1 value"):
        fit_vae(tracks, seed=0, **TINY)


def test_a_loss_that_is_not_finite_stops_training(catalogue):
    from helpers.vae import VAE, vae_training_loop

    model = VAE(len(FEATURES), 3, 8)
    with torch.no_grad():
        model.decoder[0].weight[0, 0] = float("nan")
    x = torch.rand(64, len(FEATURES))
    with pytest.raises(ValueError, match=r"VAE training diverged: the loss is nan .* in epoch 1, after 2 updates"):
        vae_training_loop(model, x, epochs=3, batch_size=32, learning_rate=1e-3, beta=0.01, seed=0, progress=False)


def test_latents_that_are_not_finite_are_never_returned(trained, catalogue):
    import copy

    vae = copy.deepcopy(trained[0])
    with torch.no_grad():
        vae.model.encoder[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"the VAE's latents of tracks: column 'latent_0' 300 value\(s\) are NaN"):
        vae.encode(catalogue)
