"""The state space: a variational autoencoder (VAE) that compresses a track's audio features.

    features --min-max--> x in [0, 1]^n --encoder--> (mu, log sigma^2)
             --reparameterise--> z = mu + sigma * eps --decoder--> x_hat in [0, 1]^n

Training minimises the negative evidence lower bound (ELBO) per track,

    L(x) = ||x - x_hat||^2 + beta * KL( N(mu, sigma^2) || N(0, I) ),
    KL   = -1/2 * sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).

A track's state is its encoder mean `mu` (deterministic: the same track, the same state),
rescaled to [0, 1] per latent dimension with the minimum and maximum over the catalogue.
Every function that returns per-track values takes the tracks with their `id` and returns a
table keyed by `id`, in the input's row order: no latent can be paired with the wrong track.
"""
from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from helpers.paths import ARTEFACTS, load_checkpoint, missing_artefact, write_bytes_atomic
from helpers.validation import ID_COLUMN, check_finite, check_unique_ids, latent_names, numeric_matrix

from helpers.data import FEATURES

ENCODE_CHUNK_SIZE = 65_536  # rows per forward pass when encoding: bounds memory on 1.2M tracks


@dataclass(frozen=True, eq=False)
class MinMaxScaling:
    """Per-column min-max scaling to [0, 1], with the minimum and maximum kept for reuse.

    A constant column (maximum == minimum) maps to 0 instead of dividing by zero. Values
    outside the fitted range (new tracks) map outside [0, 1]; they are not clipped.
    """

    columns: tuple[str, ...]
    minimum: np.ndarray
    maximum: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, columns: Sequence[str]) -> MinMaxScaling:
        """Learn each column's minimum and maximum from `values` (rows x columns)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(columns) or len(values) == 0:
            raise ValueError(
                f"expected a non-empty (rows, {len(columns)}) matrix, got shape {values.shape}."
            )
        minimum, maximum = values.min(axis=0), values.max(axis=0)
        with np.errstate(over="ignore"):
            check_finite((maximum - minimum)[None, :], "the span (maximum - minimum) of the features", columns)
        return cls(tuple(columns), minimum, maximum)

    @property
    def span(self) -> np.ndarray:
        """maximum - minimum, with 1 for constant columns."""
        spread = self.maximum - self.minimum
        return np.where(spread > 0, spread, 1.0)

    def transform(self, values: np.ndarray) -> np.ndarray:
        """(values - minimum) / (maximum - minimum), column by column."""
        return (np.asarray(values, dtype=np.float64) - self.minimum) / self.span

    def inverse_transform(self, scaled: np.ndarray) -> np.ndarray:
        """Back to the original units."""
        return np.asarray(scaled, dtype=np.float64) * self.span + self.minimum

    def to_dict(self) -> dict:
        """Plain lists, so the scaling can be saved with `torch.save` and loaded with weights_only."""
        return {"columns": list(self.columns), "minimum": self.minimum.tolist(),
                "maximum": self.maximum.tolist()}

    @classmethod
    def from_dict(cls, saved: dict) -> MinMaxScaling:
        return cls(tuple(saved["columns"]), np.asarray(saved["minimum"], dtype=np.float64),
                   np.asarray(saved["maximum"], dtype=np.float64))


class VAE(nn.Module):
    """Encoder q(z|x) = N(mu(x), diag(sigma^2(x))) and decoder x_hat(z) in [0, 1]^n.

    Both are MLPs with two hidden layers of `hidden_dim` units; the decoder ends with a
    sigmoid because its targets, the min-max scaled features, lie in [0, 1].
    """

    def __init__(self, n_features: int, latent_dim: int, hidden_dim: int):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(n_features, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
        )
        self.mu_head = nn.Linear(hidden_dim, latent_dim)
        self.logvar_head = nn.Linear(hidden_dim, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, n_features), nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior's mean mu and log-variance log sigma^2."""
        hidden = self.encoder(x)
        return self.mu_head(hidden), self.logvar_head(hidden)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction x_hat from a sampled z, with mu and logvar for the loss."""
        mu, logvar = self.encode(x)
        return self.decode(reparameterise(mu, logvar, generator)), mu, logvar


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): a sample that gradients can flow through."""
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL( N(mu_j, sigma_j^2) || N(0, 1) ) in closed form, per track and latent dimension.

    The posterior is diagonal, so its KL from the prior is the sum over the last axis.
    """
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def negative_elbo(x: torch.Tensor, x_hat: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                  *, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, reconstruction, KL), each averaged over the tracks of the batch.

    Reconstruction is the squared error summed over features: the negative log-likelihood of
    a Gaussian decoder up to constants, with beta absorbing the decoder's variance.
    """
    reconstruction = torch.sum((x_hat - x) ** 2, dim=-1).mean()
    kl = kl_divergence(mu, logvar).sum(dim=-1).mean()
    return reconstruction + beta * kl, reconstruction, kl


def vae_training_loop(model: VAE, x: torch.Tensor, *, epochs: int, batch_size: int,
                      learning_rate: float, beta: float, seed: int, max_updates: int | None = None,
                      time_budget_seconds: float | None = None, progress: bool = True) -> pd.DataFrame:
    """Train `model` on the scaled features `x` with Adam; return the loss history per epoch.

    Each epoch visits the rows in a fresh permutation drawn from a generator seeded with
    `seed` (which also draws the reparameterisation noise), so the same seed and model
    initialisation give bit-identical weights. Training stops early after `max_updates`
    minibatch updates (the budget that keeps a million-track catalogue affordable and the
    result reproducible), or after the first minibatch that ends past `time_budget_seconds`
    (whose result depends on the machine's speed); the last epoch may then be partial.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    n_tracks = len(x)
    started = time.perf_counter()
    updates = 0
    history = []
    model.train()
    for epoch in (bar := tqdm(range(1, epochs + 1), desc="VAE epochs", disable=not progress)):
        permutation = torch.randperm(n_tracks, generator=generator)
        sums = torch.zeros(3, dtype=torch.float64)
        seen = 0
        out_of_budget = False
        for start in range(0, n_tracks, batch_size):
            batch = x[permutation[start:start + batch_size]]
            x_hat, mu, logvar = model(batch, generator)
            total, reconstruction, kl = negative_elbo(batch, x_hat, mu, logvar, beta=beta)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            sums += torch.stack([total, reconstruction, kl]).detach().double() * len(batch)
            seen += len(batch)
            updates += 1
            out_of_budget = ((max_updates is not None and updates >= max_updates)
                             or (time_budget_seconds is not None
                                 and time.perf_counter() - started > time_budget_seconds))
            if out_of_budget:
                break
        if not torch.isfinite(sums).all():
            raise ValueError(f"VAE training diverged: the loss is {(sums / seen).tolist()[0]} (NaN or infinite) in "
                             f"epoch {epoch}, after {updates} updates; nothing was written. Check the features' "
                             "values, or lower learning_rate.")
        total, reconstruction, kl = (sums / seen).tolist()
        history.append({"epoch": epoch, "total": total, "reconstruction": reconstruction, "kl": kl,
                        "tracks_seen": seen, "seconds": time.perf_counter() - started})
        bar.set_postfix(loss=f"{total:.4f}", kl=f"{kl:.3f}", refresh=False)
        if out_of_budget:
            break
    model.eval()
    return pd.DataFrame(history)


def posterior_parameters(model: VAE, scaled: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """mu and logvar for each row of already-scaled features, in row order, a chunk at a time."""
    x = torch.as_tensor(scaled, dtype=torch.float32)
    with torch.no_grad():
        parts = [model.encode(chunk) for chunk in x.split(ENCODE_CHUNK_SIZE)]
    return torch.cat([mu for mu, _ in parts]), torch.cat([logvar for _, logvar in parts])


@dataclass(eq=False)
class TrainedVAE:
    """A trained VAE with everything needed to turn a track's raw features into its state."""

    model: VAE
    feature_scaling: MinMaxScaling
    latent_scaling: MinMaxScaling
    hyperparameters: dict

    @property
    def features(self) -> tuple[str, ...]:
        return self.feature_scaling.columns

    def encoder_mean(self, tracks: pd.DataFrame, source: str = "tracks") -> np.ndarray:
        """mu for every row of `tracks`, before rescaling (rows x latent_dim)."""
        scaled = self.feature_scaling.transform(numeric_matrix(tracks, self.features, source))
        return posterior_parameters(self.model, scaled)[0].double().numpy()

    def encode(self, tracks: pd.DataFrame, source: str = "tracks") -> pd.DataFrame:
        """The state of every track: `id` and latent_0..latent_{d-1}, in the rows' order.

        The ids are copied from the same rows whose features are encoded, so each latent
        belongs to its own track whatever the order of `tracks`.
        """
        ids = check_unique_ids(tracks, source)
        states = check_finite(self.latent_scaling.transform(self.encoder_mean(tracks, source)),
                              f"the VAE's latents of {source}", self.latent_scaling.columns)
        latents = pd.DataFrame(states, columns=list(self.latent_scaling.columns))
        latents.insert(0, ID_COLUMN, ids)
        return latents

    def reconstruct(self, tracks: pd.DataFrame, source: str = "tracks") -> pd.DataFrame:
        """`id` and the decoder's output from mu, in scaled units ([0, 1] per feature)."""
        ids = check_unique_ids(tracks, source)
        mu = torch.as_tensor(self.encoder_mean(tracks, source), dtype=torch.float32)
        with torch.no_grad():
            x_hat = torch.cat([self.model.decode(chunk) for chunk in mu.split(ENCODE_CHUNK_SIZE)])
        reconstruction = pd.DataFrame(x_hat.double().numpy(), columns=list(self.features))
        reconstruction.insert(0, ID_COLUMN, ids)
        return reconstruction

    def reconstruction_error(self, tracks: pd.DataFrame, source: str = "tracks") -> pd.DataFrame:
        """Per feature, in scaled units: the VAE's RMSE, and the RMSE of always predicting the mean.

        The second column is the feature's standard deviation: an error near it means the VAE
        learned nothing about that feature.
        """
        scaled = self.feature_scaling.transform(numeric_matrix(tracks, self.features, source))
        reconstructed = self.reconstruct(tracks, source)[list(self.features)].to_numpy()
        return pd.DataFrame({
            "feature": list(self.features),
            "rmse": np.sqrt(np.mean((reconstructed - scaled) ** 2, axis=0)),
            "rmse_predicting_mean": scaled.std(axis=0),
        })

    def latent_usage(self, tracks: pd.DataFrame, source: str = "tracks") -> pd.DataFrame:
        """Per latent dimension: the variance of mu over the tracks and the mean KL in nats.

        A collapsed dimension ignores its input: mu ~ 0 for every track (variance ~ 0) and
        the posterior equals the prior (KL ~ 0), so it carries no information about the track.
        """
        scaled = self.feature_scaling.transform(numeric_matrix(tracks, self.features, source))
        mu, logvar = posterior_parameters(self.model, scaled)
        return pd.DataFrame({"latent": list(self.latent_scaling.columns),
                             "mu_variance": mu.double().var(dim=0).numpy(),
                             "kl": kl_divergence(mu, logvar).double().mean(dim=0).numpy()})

    def save(self, path: str | Path) -> Path:
        """Write the weights, hyperparameters and both scalings to `path` (a .pt file), atomically."""
        buffer = io.BytesIO()
        torch.save({
            "state_dict": self.model.state_dict(),
            "hyperparameters": self.hyperparameters,
            "feature_scaling": self.feature_scaling.to_dict(),
            "latent_scaling": self.latent_scaling.to_dict(),
        }, buffer)
        return write_bytes_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> TrainedVAE:
        """Read a VAE written by `save`."""
        path = Path(path)
        if not path.exists():
            raise missing_artefact(path, ARTEFACTS["vae"].produced_by)
        saved = load_checkpoint(path, ("state_dict", "hyperparameters", "feature_scaling", "latent_scaling"), "vae")
        feature_scaling = MinMaxScaling.from_dict(saved["feature_scaling"])
        latent_scaling = MinMaxScaling.from_dict(saved["latent_scaling"])
        model = VAE(len(feature_scaling.columns), len(latent_scaling.columns),
                    saved["hyperparameters"]["hidden_dim"])
        model.load_state_dict(saved["state_dict"])
        model.eval()
        return cls(model, feature_scaling, latent_scaling, saved["hyperparameters"])


def fit_vae(tracks: pd.DataFrame, *, features: Sequence[str] = FEATURES, latent_dim: int = 5,
            hidden_dim: int = 64, beta: float = 0.005, epochs: int = 200, batch_size: int = 128,
            learning_rate: float = 3e-3, max_updates: int | None = 20_000,
            time_budget_seconds: float | None = None, seed: int = 42, progress: bool = True, source: str = "tracks"
            ) -> tuple[TrainedVAE, pd.DataFrame]:
    """Scale the features, train a VAE on them and fit the latent rescaling on the catalogue.

    Returns the trained VAE and its loss history (one row per epoch: total, reconstruction,
    kl, tracks_seen, seconds). The same `seed` gives bit-identical weights on one machine.
    """
    for name, value in {"latent_dim": latent_dim, "hidden_dim": hidden_dim, "epochs": epochs,
                        "batch_size": batch_size}.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta!r}.")
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}.")
    if max_updates is not None and (int(max_updates) != max_updates or max_updates < 1):
        raise ValueError(f"max_updates must be a positive integer or None, got {max_updates!r}.")
    if time_budget_seconds is not None and time_budget_seconds <= 0:
        raise ValueError(f"time_budget_seconds must be > 0 or None, got {time_budget_seconds!r}.")
    check_unique_ids(tracks, source)

    values = numeric_matrix(tracks, features, source)
    feature_scaling = MinMaxScaling.fit(values, features)
    x = torch.as_tensor(feature_scaling.transform(values), dtype=torch.float32)

    torch.manual_seed(seed)  # the weights' initialisation
    model = VAE(len(features), latent_dim, hidden_dim)
    history = vae_training_loop(model, x, epochs=epochs, batch_size=batch_size,
                                learning_rate=learning_rate, beta=beta, seed=seed, max_updates=max_updates,
                                time_budget_seconds=time_budget_seconds, progress=progress)

    hyperparameters = {"latent_dim": latent_dim, "hidden_dim": hidden_dim, "beta": beta,
                       "epochs": epochs, "batch_size": batch_size,
                       "learning_rate": learning_rate, "max_updates": max_updates, "seed": seed,
                       "epochs_trained": int(len(history))}
    mu = check_finite(posterior_parameters(model, x.numpy())[0].double().numpy(), f"the VAE's encoding of {source}",
                      latent_names(latent_dim))
    latent_scaling = MinMaxScaling.fit(mu, latent_names(latent_dim))
    return TrainedVAE(model, feature_scaling, latent_scaling, hyperparameters), history
