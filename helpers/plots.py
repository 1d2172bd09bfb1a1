"""Figures: plotly drawings shared by the notebooks, and their export to `figures/`.

Every figure is saved twice: an interactive HTML page (with one shared `plotly.min.js` beside
it, so the folder opens offline) and a PNG. PNG export drives a Chrome/Chromium through
kaleido; where none is installed, the first export downloads kaleido's own Chrome once, and
where that fails too (offline) we say so once and keep going with HTML only.
"""
from __future__ import annotations

import os
import shutil
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from helpers.paths import PNG_ENVIRONMENT, PRIVATE_FILE_MODE, atomic_write, create_private

_CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_png_state: dict[str, bool] = {}
PNG_TIMEOUT_SECONDS = 120.0  # a figure renders in about a second; a stuck browser never returns


def find_chrome() -> str | None:
    """Path of a Chrome/Chromium that kaleido can drive, or None."""
    explicit = os.environ.get("BROWSER_PATH")
    if explicit and Path(explicit).exists():
        return explicit
    return next((path for name in _CHROME_NAMES if (path := shutil.which(name))), None)


def download_chrome(timeout_seconds: float = 60.0) -> str | None:
    """Kaleido's own Chrome (Chrome for Testing), downloaded once into the user's data folder;
    None when that is impossible (offline, unsupported platform). A copy already there is reused."""
    import socket

    import kaleido

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_seconds)  # kaleido's download has no timeout of its own
    try:
        return str(kaleido.get_chrome_sync())
    except Exception:  # noqa: BLE001 - any failure means: no PNGs, HTML only
        return None
    finally:
        socket.setdefaulttimeout(previous)


def _png_export_ready() -> bool:
    """Start kaleido's browser once per process; False (with one warning) if it cannot run.

    Without a Chrome/Chromium on the machine, the first call tries kaleido's Chrome download once.
    """
    if "ready" not in _png_state:
        chrome = find_chrome()
        if chrome is None:
            print("No Chrome/Chromium found: downloading kaleido's own Chrome once, for PNG export …")
            chrome = download_chrome()
        if chrome is None:
            warnings.warn(
                "No Chrome/Chromium found and kaleido's Chrome could not be downloaded (offline?): "
                "figures are saved as HTML only. Install one (Debian: `apt-get install chromium`) "
                "to get PNGs too.",
                stacklevel=3,
            )
            _png_state["ready"] = False
        else:
            import kaleido

            os.environ["BROWSER_PATH"] = chrome  # the browser kaleido starts, and its notebooks' kernels
            # MathJax would be fetched from a CDN; we have no formulas in figures and may be offline.
            kaleido.start_sync_server(mathjax=False, silence_warnings=True)
            _png_state["ready"] = True
    return _png_state["ready"]


def _write_png(fig: go.Figure, path: Path, width: int, height: int, *, timeout_seconds: float,
               mode: int | None = None) -> bool:
    """Render `fig` to `path` through kaleido within `timeout_seconds`; False if it did not finish.

    Kaleido waits without limit on its browser: a Chrome that crashed or hangs would freeze the
    notebook. The render runs in a daemon thread, so a stuck one is abandoned, not waited for.
    The PNG is written to a temporary file first: a render that fails leaves no partial file.
    """
    outcome: list[BaseException | None] = []

    def render() -> None:
        try:
            with atomic_write(path, mode) as temporary, warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The kopts argument is ignored")
                fig.write_image(temporary, format="png", width=width, height=height)
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - handed to the caller below
            outcome.append(error)

    worker = threading.Thread(target=render, name=f"png {path.name}", daemon=True)
    worker.start()
    worker.join(timeout_seconds)
    if not outcome:
        return False
    if outcome[0] is not None:
        raise outcome[0]
    return True


def save_figure(fig: go.Figure, name: str, figures_dir: str | Path, *, png: bool = True,
                width: int = 1000, height: int = 650,
                png_timeout_seconds: float = PNG_TIMEOUT_SECONDS, private: bool = False) -> dict[str, Path]:
    """Write `fig` to `figures_dir/name.html` (and `name.png`); return the paths written.

    `private`: the figure shows a person's listening data, so its files are created readable by
    their owner only (mode 0600, as the interaction log).

    A PNG that takes longer than `png_timeout_seconds` is given up with one warning, and the
    figures after it are saved as HTML only (the browser behind the export is not responding).
    No PNG either when the environment sets `PNG_ENVIRONMENT` to "0" (`helpers.pipeline --no-png`).
    """
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    written = {"html": figures_dir / f"{name}.html"}
    if private:
        create_private(written["html"])
    fig.write_html(written["html"], include_plotlyjs="directory")
    if png and os.environ.get(PNG_ENVIRONMENT) != "0" and _png_export_ready():
        if _write_png(fig, figures_dir / f"{name}.png", width, height, timeout_seconds=png_timeout_seconds,
                      mode=PRIVATE_FILE_MODE if private else None):
            written["png"] = figures_dir / f"{name}.png"
        else:
            _png_state["ready"] = False
            warnings.warn(f"PNG export of {name} did not finish within {png_timeout_seconds:g} s (the browser "
                          "behind kaleido is not responding): this and later figures are saved as HTML only.",
                          stacklevel=2)
    return written


# Figure builders used by the notebooks. Each returns a plotly Figure; notebooks save and show it.


# --- 03 clusters, 04 listeners, 05 rewards ---------------------------------------------------

# What a listener can read about a track, in the order the hover text shows it.
TRACK_LABELS = ("name", "artist", "album", "genre")
MAP_MAX_POINTS = 100_000  # a map figure of a million points would weigh tens of MB
CLUSTER_COLOURS = px.colors.qualitative.Dark24


def _titled(title: str, *notes: str) -> dict:
    """A layout title with the non-empty notes as its subtitle."""
    subtitle = "; ".join(note for note in notes if note)
    return {"text": title, "subtitle": {"text": subtitle}}


def _map_points(points: pd.DataFrame, max_points: int | None, seed: int) -> tuple[pd.DataFrame, str]:
    """At most `max_points` seeded random rows of `points`, and a note when some were left out.

    When `points` has a `umap_sample` column (from clusters.parquet), only the tracks UMAP was
    fitted on are drawn: the positions of the others are interpolated.
    """
    if "umap_sample" in points.columns:
        points = points[points["umap_sample"].to_numpy(bool)]
    if max_points is None or len(points) <= max_points:
        return points, ""
    shown = points.sample(n=max_points, random_state=seed)
    return shown, f"showing a seeded random {max_points:,} of {len(points):,} tracks"


def track_labels(columns: Iterable[str]) -> list[str]:
    """The columns of `TRACK_LABELS` a table has, in that order."""
    present = set(columns)
    return [column for column in TRACK_LABELS if column in present]


def _track_hover(points: pd.DataFrame, extra: dict[str, str] | None = None) -> tuple[np.ndarray, str]:
    """customdata and hovertemplate showing the track's name, artist, album and genre (each when
    known), id, cluster and `extra`.

    `extra` maps further columns to their d3 number format ("" for none).
    """
    formats = {**dict.fromkeys(track_labels(points.columns), ""), "id": "", "cluster": "", **(extra or {})}
    lines = [f"{column}: %{{customdata[{position}]{(':' + fmt) if fmt else ''}}}"
             for position, (column, fmt) in enumerate(formats.items())]
    data = points[list(formats)].astype(object)
    return data.where(data.notna(), "").to_numpy(), "<br>".join(lines) + "<extra></extra>"


def cluster_map_figure(points: pd.DataFrame, *, note: str = "", max_points: int | None = MAP_MAX_POINTS,
                       seed: int = 42) -> go.Figure:
    """Tracks on the UMAP map, one colour per cluster (columns id, artist, [name], cluster, umap_x, umap_y)."""
    shown, shown_note = _map_points(points, max_points, seed)
    fig = go.Figure()
    for cluster, members in shown.groupby("cluster", sort=True):
        customdata, template = _track_hover(members)
        fig.add_trace(go.Scattergl(
            x=members["umap_x"], y=members["umap_y"], mode="markers", name=f"cluster {cluster}",
            marker={"size": 5, "opacity": 0.8, "color": CLUSTER_COLOURS[cluster % len(CLUSTER_COLOURS)]},
            customdata=customdata, hovertemplate=template))
    fig.update_layout(title=_titled("Tracks on a 2-D UMAP map of the latent space, coloured by K-Means cluster",
                                    note, shown_note),
                      xaxis_title="UMAP 1", yaxis_title="UMAP 2", legend_title_text="cluster")
    return fig


def cluster_sizes_figure(sizes: np.ndarray) -> go.Figure:
    """Number of tracks in each cluster (index = cluster id)."""
    clusters = np.arange(len(sizes))
    fig = go.Figure(go.Bar(x=clusters, y=sizes,
                           marker_color=[CLUSTER_COLOURS[c % len(CLUSTER_COLOURS)] for c in clusters],
                           hovertemplate="cluster %{x}: %{y:,} tracks<extra></extra>"))
    fig.update_layout(title=_titled("Tracks per cluster",
                                    f"{int(np.sum(sizes)):,} tracks in {len(sizes)} clusters"),
                      xaxis_title="cluster", yaxis_title="tracks", xaxis_dtick=1)
    return fig


def gridworld_figure(points: pd.DataFrame, edges: pd.DataFrame, *, note: str = "",
                     max_points: int | None = MAP_MAX_POINTS, seed: int = 42, columns: int = 3) -> go.Figure:
    """One panel per source track: the map around it, with arrows to its nearest latent neighbours.

    `points` as for `cluster_map_figure`; `edges` from `helpers.clustering.gridworld_edges`.
    Each panel is zoomed on its source and targets; the numbers are the neighbours' ranks.
    """
    by_id = points.set_index("id")
    groups = list(edges.groupby("source", sort=False))
    columns = min(columns, len(groups))
    titles = [f"{source}: {by_id.loc[arrows['source_id'].iloc[0], 'artist']}, "
              f"cluster {by_id.loc[arrows['source_id'].iloc[0], 'cluster']}" for source, arrows in groups]
    fig = make_subplots(rows=-(-len(groups) // columns), cols=columns, subplot_titles=titles,
                        horizontal_spacing=0.05, vertical_spacing=0.12)
    shown_note = ""
    for number, (source, arrows) in enumerate(groups):
        row, col = number // columns + 1, number % columns + 1
        axis = "" if number == 0 else str(number + 1)
        colour = px.colors.qualitative.Bold[number % len(px.colors.qualitative.Bold)]
        start = by_id.loc[[arrows["source_id"].iloc[0]]].reset_index()
        ends = by_id.loc[arrows["target_id"]].reset_index()
        ends["rank"], ends["latent_distance"] = arrows["rank"].to_numpy(), arrows["latent_distance"].to_numpy()
        xs, ys = np.r_[start["umap_x"], ends["umap_x"]], np.r_[start["umap_y"], ends["umap_y"]]
        centre_x, centre_y = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
        half = 0.75 * max(np.ptp(xs), np.ptp(ys), 1e-3)
        window = points[((points["umap_x"] - centre_x).abs() <= half)
                        & ((points["umap_y"] - centre_y).abs() <= half)]
        shown, panel_note = _map_points(window, None if max_points is None else max_points // len(groups), seed)
        shown_note = shown_note or panel_note
        customdata, template = _track_hover(shown)
        fig.add_trace(go.Scattergl(
            x=shown["umap_x"], y=shown["umap_y"], mode="markers", showlegend=False, customdata=customdata,
            hovertemplate=template,
            marker={"size": 6, "opacity": 0.35,
                    "color": [CLUSTER_COLOURS[c % len(CLUSTER_COLOURS)] for c in shown["cluster"]]}),
            row=row, col=col)
        for end in ends.itertuples():
            fig.add_annotation(x=end.umap_x, y=end.umap_y, ax=start["umap_x"].iloc[0], ay=start["umap_y"].iloc[0],
                               xref=f"x{axis}", yref=f"y{axis}", axref=f"x{axis}", ayref=f"y{axis}",
                               text="", showarrow=True, arrowhead=2, arrowsize=1.2, arrowwidth=2,
                               arrowcolor=colour, standoff=6)
        customdata, template = _track_hover(ends, {"rank": "", "latent_distance": ".3f"})
        fig.add_trace(go.Scatter(
            x=ends["umap_x"], y=ends["umap_y"], mode="markers+text", text=ends["rank"].astype(str),
            textposition="top right", showlegend=False, customdata=customdata, hovertemplate=template,
            marker={"size": 10, "color": colour, "line": {"width": 1, "color": "white"}}), row=row, col=col)
        customdata, template = _track_hover(start)
        fig.add_trace(go.Scatter(
            x=start["umap_x"], y=start["umap_y"], mode="markers+text", text=[source],
            textposition="top center", textfont={"size": 14, "color": colour}, showlegend=False,
            customdata=customdata, hovertemplate=template,
            marker={"size": 14, "color": colour, "symbol": "square", "line": {"width": 1, "color": "black"}}),
            row=row, col=col)
        fig.update_xaxes(range=[centre_x - half, centre_x + half], row=row, col=col)
        fig.update_yaxes(range=[centre_y - half, centre_y + half], row=row, col=col)
    fig.update_layout(title=_titled(
        "Songs as a gridworld: arrows from a track (square) to its candidate next tracks",
        f"its {len(groups[0][1])} nearest tracks in latent space, not on this map; numbers: rank",
        note, shown_note))
    return fig


def listening_by_cluster_figure(listeners: pd.DataFrame, cluster_mean: np.ndarray,
                                like_threshold: float) -> go.Figure:
    """Per cluster: the spread of percentage_listened with the drawn mean, and the like rate.

    Quartiles are computed here, so the figure stays small for any number of tracks.
    """
    grouped = listeners.groupby("cluster")["percentage_listened"]
    quartiles = grouped.quantile([0.25, 0.5, 0.75]).unstack()
    clusters = quartiles.index.to_numpy()
    like_rate = listeners.groupby("cluster")["liked"].mean()
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.06)
    fig.add_trace(go.Box(x=clusters, q1=quartiles[0.25], median=quartiles[0.5], q3=quartiles[0.75],
                         lowerfence=grouped.min(), upperfence=grouped.max(), name="simulated listening",
                         marker_color="#4c78a8"), row=1, col=1)
    fig.add_trace(go.Scatter(x=np.arange(len(cluster_mean)), y=cluster_mean, mode="markers",
                             name="drawn mean μ_c",
                             marker={"symbol": "diamond", "size": 10, "color": "#e45756"}), row=1, col=1)
    fig.add_hline(y=like_threshold, line_dash="dash", line_color="grey", row=1, col=1,
                  annotation_text=f"like threshold {like_threshold:g}", annotation_position="top left")
    fig.add_trace(go.Bar(x=like_rate.index, y=like_rate, name="like rate", marker_color="#54a24b",
                         hovertemplate="cluster %{x}: %{y:.0%} liked<extra></extra>"), row=2, col=1)
    fig.update_yaxes(title_text="percentage listened", range=[-0.02, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="like rate", range=[0, 1], tickformat=".0%", row=2, col=1)
    fig.update_xaxes(range=[-0.5, len(cluster_mean) - 0.5], dtick=1)
    fig.update_xaxes(title_text="cluster", row=2, col=1)
    fig.update_layout(title=_titled("Simulated listening per cluster",
                                    "boxes: quartiles, whiskers: min and max; diamonds: the cluster's drawn mean"))
    return fig


def reward_map_figure(points: pd.DataFrame, *, note: str = "", max_points: int | None = MAP_MAX_POINTS,
                      seed: int = 42) -> go.Figure:
    """Tracks on the UMAP map coloured by reward (columns as for `cluster_map_figure`, plus reward)."""
    shown, shown_note = _map_points(points, max_points, seed)
    customdata, template = _track_hover(shown, {"reward": ".1f"})
    fig = go.Figure(go.Scattergl(
        x=shown["umap_x"], y=shown["umap_y"], mode="markers",
        marker={"size": 5, "color": shown["reward"], "colorscale": "Viridis", "showscale": True,
                "colorbar": {"title": {"text": "reward"}}},
        customdata=customdata, hovertemplate=template))
    fig.update_layout(title=_titled("Reward of each track on the UMAP map", note, shown_note),
                      xaxis_title="UMAP 1", yaxis_title="UMAP 2")
    return fig


def reward_histogram_figure(rewards: pd.DataFrame, bins: int = 60) -> go.Figure:
    """Histogram of the reward, stacked by liked (columns reward, liked); binned here, so it stays small."""
    edges = np.histogram_bin_edges(rewards["reward"], bins=bins)
    centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig = go.Figure()
    for liked, label, colour in ((0, "not liked", "#9d9d9d"), (1, "liked", "#54a24b")):
        counts, _ = np.histogram(rewards.loc[rewards["liked"] == liked, "reward"], bins=edges)
        fig.add_trace(go.Bar(x=centres, y=counts, width=widths, name=label, marker_color=colour,
                             hovertemplate="reward %{x:.1f}: %{y:,} tracks<extra>" + label + "</extra>"))
    fig.update_layout(barmode="stack", bargap=0,
                      title=_titled("Distribution of the reward",
                                    f"{len(rewards):,} tracks; liked tracks get the liked bonus on top"),
                      xaxis_title="reward", yaxis_title="tracks")
    return fig


# --- 02 VAE ------------------------------------------------------------------------------------

def vae_loss_figure(history: pd.DataFrame, beta: float) -> go.Figure:
    """The VAE's loss per epoch, one panel per term (columns epoch, total, reconstruction, kl)."""
    terms = {"total": "negative ELBO (total)", "reconstruction": "reconstruction: squared error",
             "kl": "KL divergence (nats)"}
    fig = make_subplots(rows=1, cols=len(terms), subplot_titles=list(terms.values()),
                        horizontal_spacing=0.08)
    for position, (term, label) in enumerate(terms.items(), start=1):
        fig.add_trace(go.Scatter(x=history["epoch"], y=history[term], mode="lines", name=label,
                                 showlegend=False, hovertemplate="epoch %{x}: %{y:.4g}<extra></extra>"),
                      row=1, col=position)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(title=_titled("VAE training loss per epoch",
                                    f"total = reconstruction + β·KL with β = {beta:g}",
                                    "each point is the mean over the epoch's tracks"))
    return fig


def feature_correlation_figure(tracks: pd.DataFrame, features: list[str] | tuple[str, ...]) -> go.Figure:
    """Pearson correlation between the audio features, as an annotated heatmap."""
    correlation = tracks[list(features)].corr()
    fig = px.imshow(correlation, text_auto=".2f", zmin=-1, zmax=1, color_continuous_scale="RdBu_r",
                    aspect="equal")
    fig.update_layout(title=_titled("Correlation between the audio features",
                                    f"Pearson r over {len(tracks):,} tracks"),
                      coloraxis_colorbar_title_text="r")
    return fig


def reconstruction_error_figure(errors: pd.DataFrame) -> go.Figure:
    """Per feature: the VAE's RMSE next to always predicting the mean (columns feature, rmse,
    rmse_predicting_mean, in scaled units)."""
    fig = go.Figure([
        go.Bar(x=errors["feature"], y=errors["rmse"], name="VAE (decoder of μ)", marker_color="#4c78a8",
               hovertemplate="%{x}: RMSE %{y:.3f}<extra>VAE</extra>"),
        go.Bar(x=errors["feature"], y=errors["rmse_predicting_mean"], name="always the mean (std)",
               marker_color="#bab0ac", hovertemplate="%{x}: RMSE %{y:.3f}<extra>mean</extra>"),
    ])
    fig.update_layout(barmode="group",
                      title=_titled("Reconstruction error per feature",
                                    f"features scaled to [0, 1]; mean RMSE {errors['rmse'].mean():.3f} "
                                    f"(always the mean: {errors['rmse_predicting_mean'].mean():.3f})"),
                      xaxis_title="feature", yaxis_title="RMSE (scaled units)")
    return fig


def latent_distribution_figure(latents: pd.DataFrame, bins: int = 40) -> go.Figure:
    """Histogram of each latent dimension (columns latent_0 ...); binned here, so it stays small."""
    columns = [column for column in latents.columns if str(column).startswith("latent_")]
    fig = make_subplots(rows=1, cols=len(columns), subplot_titles=columns, shared_yaxes=True,
                        horizontal_spacing=0.02)
    for position, column in enumerate(columns, start=1):
        counts, edges = np.histogram(latents[column], bins=bins)
        fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges),
                             marker_color="#4c78a8", showlegend=False,
                             hovertemplate="%{x:.2f}: %{y:,} tracks<extra>" + column + "</extra>"),
                      row=1, col=position)
    fig.update_layout(bargap=0, title=_titled("Distribution of each latent dimension (the states)",
                                              f"{len(latents):,} tracks; encoder mean rescaled to [0, 1]"))
    fig.update_yaxes(title_text="tracks", row=1, col=1)
    return fig


# --- 01 filter ---------------------------------------------------------------------------------

def tracks_per_artist_figure(tracks: pd.DataFrame, top: int = 30) -> go.Figure:
    """Number of tracks per artist, most first; only the `top` artists when there are more."""
    counts = tracks["artist"].value_counts()
    shown = counts.head(top).rename_axis("artist").reset_index(name="tracks")
    fig = px.bar(shown, x="artist", y="tracks", text="tracks")
    fig.update_traces(marker_color="#4c78a8", textposition="outside",
                      hovertemplate="%{x}: %{y:,} tracks<extra></extra>")
    fig.update_layout(
        title=_titled("Tracks per artist in the catalogue the chain uses",
                      f"{len(tracks):,} tracks by {len(counts):,} artists",
                      f"the {top} artists with most tracks" if len(counts) > top else ""),
        xaxis_title="artist", yaxis_title="tracks", xaxis_tickangle=-45)
    return fig


# --- 07 spotify --------------------------------------------------------------------------------

def session_feedback_figure(interactions: pd.DataFrame) -> go.Figure:
    """How one played playlist was heard: percentage listened per position, liked tracks marked.

    The hover names each track where `interactions` has `name` and `artist` columns.
    `interactions` are the session's records from `helpers.feedback.read_interactions` (a
    `liked` of <NA> is shown as unknown).
    """
    fig = go.Figure()
    name, artist = (interactions[c].astype("string").fillna("") if c in interactions.columns
                    else pd.Series("", index=interactions.index, dtype="string") for c in ("name", "artist"))
    label = (name + np.where((name != "") & (artist != ""), " by ", "") + artist).mask(name + artist == "", "track")
    interactions = interactions.assign(label=label)
    liked_or_unknown = interactions["liked"].astype("Float64").fillna(-1)
    for liked, label, colour in ((0, "not liked", "#9d9d9d"), (1, "liked", "#54a24b"), (-1, "liked unknown", "#bab0ac")):
        heard = interactions[(liked_or_unknown == liked).to_numpy(bool)]
        if liked == -1 and heard.empty:
            continue
        fig.add_trace(go.Bar(
            x=heard["position"], y=heard["percentage_listened"], name=label, marker_color=colour,
            text={1: "♥", -1: "?"}.get(liked, ""), textposition="outside",
            customdata=heard[["track_id", "label"]].to_numpy(),
            hovertemplate=("position %{x}: %{customdata[1]} (%{customdata[0]})<br>listened %{y:.0%}<extra>"
                           + label + "</extra>")))
    sources = ", ".join(sorted(interactions["source"].unique()))
    fig.update_layout(
        barmode="overlay",
        title=_titled("How the playlist was heard",
                      f"{len(interactions)} tracks ({sources}); mean listened "
                      f"{interactions['percentage_listened'].mean():.0%}, {int(interactions['liked'].sum())} liked"),
        xaxis={"title": "position in the playlist (0 = start track)", "dtick": 1},
        yaxis={"title": "percentage listened", "range": [0, 1.1], "tickformat": ".0%"})
    return fig


# --- 06 PPO ----------------------------------------------------------------------------------

TRAINING_METRICS = {
    "mean_return": "mean return (table units)",
    "policy_loss": "policy loss (clipped surrogate)",
    "value_loss": "value loss",
    "entropy": "policy entropy",
    "approx_kl": "approximate KL(old || new)",
    "clip_fraction": "clip fraction",
    "explained_variance": "explained variance (critic)",
}


def training_curves_figure(histories: dict[str, pd.DataFrame], x: str = "elapsed_seconds") -> go.Figure:
    """PPO diagnostics per update (one panel per metric), one line per training run.

    `histories` maps a run's name to its history (`TrainingRun.history_frame()`).
    """
    long = pd.concat(
        [history.melt(id_vars=[x], value_vars=list(TRAINING_METRICS), var_name="metric").assign(run=name)
         for name, history in histories.items()],
        ignore_index=True,
    )
    long["metric"] = long["metric"].map(TRAINING_METRICS)
    fig = px.line(long, x=x, y="value", color="run", facet_col="metric", facet_col_wrap=3,
                  facet_row_spacing=0.12, facet_col_spacing=0.06,
                  category_orders={"metric": list(TRAINING_METRICS.values())},
                  labels={x: x.replace("_", " "), "value": ""})
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_xaxes(showticklabels=True)
    fig.update_layout(title=_titled("PPO training curves", "one point per update"), margin={"t": 110})
    return fig


def policy_comparison_figure(results: pd.DataFrame) -> go.Figure:
    """Mean return ± 95% CI of every policy, labelled with its share of the exact optimum.

    `results` is `helpers.evaluation.compare_policies`'s table (index: policy).
    """
    results = results.sort_values("mean_return")
    fig = go.Figure(go.Bar(
        x=results["mean_return"], y=results.index, orientation="h",
        error_x=dict(type="data", array=results["ci95"]),
        text=[f"{share:.1%} of optimum" for share in results["share_of_optimum"]],
        textposition="inside", insidetextanchor="middle",
        marker_color=["#2ca02c" if "PPO" in name else "#7f7f7f" for name in results.index],
    ))
    fig.update_layout(title=_titled("Policies on held-out start tracks: mean return ± 95% CI",
                                    f"{int(results['episodes'].iloc[0]):,} playlists per policy; green: learned by PPO"),
                      xaxis_title="mean return per playlist (sum of the picks' rewards)", yaxis_title="")
    return fig


def _spread_apart(xy: np.ndarray, min_gap: float) -> np.ndarray:
    """Nudge points that (nearly) coincide apart, along a spiral, so that their labels stay readable."""
    placed: list[np.ndarray] = []
    for point in xy:
        moved, turn = point, 0
        while placed and np.min(np.linalg.norm(np.array(placed) - moved, axis=1)) < min_gap:
            turn += 1
            angle = 2.4 * turn  # the golden angle spreads successive tries evenly
            moved = point + 0.6 * min_gap * np.sqrt(turn) * np.array([np.cos(angle), np.sin(angle)])
        placed.append(moved)
    return np.array(placed)


def trajectories_figure(tracks: pd.DataFrame, trajectories: dict[str, list[dict]], *, note: str = "",
                        max_background: int = 5_000, seed: int = 42) -> go.Figure:
    """Playlists as walks on the UMAP map, in the spirit of the original "songs in a gridworld".

    `tracks` is indexed by id (columns artist, [name], cluster, umap_x, umap_y, reward); each
    trajectory is a list of playlist steps (`track_id`, `candidates`, `probs`, `chosen`) and gets
    its own panel, zoomed on its path. Arrows go from each song to the chosen next one,
    labelled with the policy's probability of that move; each circle shows the song's reward.
    Songs that nearly coincide on the map are nudged apart.
    """
    colours = ["#7b61ff", "#2ca02c", "#ff7f0e", "#d62728"]
    paths = {name: [steps[0]["track_id"]] + [step["chosen"] for step in steps] for name, steps in trajectories.items()}
    titles = [f"{name}: return of the {len(ids) - 1} picks {tracks.loc[ids[1:], 'reward'].sum():.0f}"
              for name, ids in paths.items()]
    fig = make_subplots(rows=1, cols=len(trajectories), subplot_titles=titles, horizontal_spacing=0.06)
    for col, ((name, steps), colour) in enumerate(zip(trajectories.items(), colours), start=1):
        nodes = tracks.loc[paths[name]].rename_axis("id").reset_index()
        xy = nodes[["umap_x", "umap_y"]].to_numpy(float)
        span = np.maximum(np.ptp(xy, axis=0), 1e-6)
        xy = xy.min(axis=0) + _spread_apart((xy - xy.min(axis=0)) / span, 0.09) * span
        margin = 0.12 * span
        x_range = [xy[:, 0].min() - margin[0], xy[:, 0].max() + margin[0]]
        y_range = [xy[:, 1].min() - margin[1], xy[:, 1].max() + margin[1]]
        window = tracks[tracks["umap_x"].between(*x_range) & tracks["umap_y"].between(*y_range)]
        shown, shown_note = _map_points(window.rename_axis("id").reset_index(), max_background, seed)
        customdata, template = _track_hover(shown, {"reward": ".1f"})
        fig.add_trace(go.Scattergl(
            x=shown["umap_x"], y=shown["umap_y"], mode="markers", name="other tracks", showlegend=col == 1,
            marker={"size": 5, "color": "#d0d0d0"}, customdata=customdata, hovertemplate=template),
            row=1, col=col)
        axis = "" if col == 1 else str(col)
        for step, ((x0, y0), (x1, y1)) in zip(steps, zip(xy[:-1], xy[1:])):
            prob = step["probs"][step["candidates"].index(step["chosen"])]
            fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref=f"x{axis}", yref=f"y{axis}", axref=f"x{axis}",
                               ayref=f"y{axis}", text="", showarrow=True, arrowhead=3, arrowwidth=2.5,
                               arrowcolor=colour, opacity=0.7, standoff=13, startstandoff=13)
            fig.add_annotation(x=0.45 * x0 + 0.55 * x1, y=0.45 * y0 + 0.55 * y1, xref=f"x{axis}", yref=f"y{axis}",
                               text=f"{prob:.2f}", showarrow=False, font={"color": colour, "size": 11},
                               bgcolor="rgba(255,255,255,0.8)")
        customdata, template = _track_hover(nodes, {"reward": ".1f"})
        fig.add_trace(go.Scatter(
            x=xy[:, 0], y=xy[:, 1], mode="markers+text", name=name,
            text=[f"{r:.0f}" for r in nodes["reward"]], textfont={"size": 10, "color": "black"},
            marker={"size": 26, "color": "#ffd92f", "line": {"width": 2, "color": colour},
                    "symbol": ["square"] + ["circle"] * (len(nodes) - 1)},
            customdata=customdata, hovertemplate=template), row=1, col=col)
        fig.update_xaxes(range=x_range, title_text="UMAP 1", row=1, col=col)
        fig.update_yaxes(range=y_range, title_text="UMAP 2" if col == 1 else None, row=1, col=col)
    fig.update_layout(plot_bgcolor="white", margin={"t": 120}, title=_titled(
        "Playlists of the trained policy as walks on the UMAP map",
        "square: start; arrows: the chosen next song and its probability; numbers: rewards; "
        "songs that nearly coincide are nudged apart", note, shown_note))
    return fig


def finetune_returns_figure(returns: pd.DataFrame) -> go.Figure:
    """Box plot of held-out playlist returns per policy (columns: policy, return)."""
    fig = px.box(returns, x="policy", y="return", points="all",
                 title="Held-out returns under the updated rewards, before and after fine-tuning")
    return fig.update_layout(xaxis_title="", yaxis_title="playlist return (sum of 9 rewards)")


def cluster_shift_figure(shares: pd.DataFrame) -> go.Figure:
    """Bars of each cluster's change in share of picks (columns: cluster, before, after)."""
    change = shares.assign(change=shares["after"] - shares["before"])
    fig = px.bar(change, x="cluster", y="change", color=np.where(change["change"] >= 0, "gained", "lost"),
                 title="Share of the greedy policy's picks per cluster: after minus before fine-tuning")
    return fig.update_layout(xaxis=dict(type="category"), yaxis_title="change in share of picks",
                             legend_title="")


# --- 08 adaptation ------------------------------------------------------------------------------


def adaptation_figure(summary: pd.DataFrame) -> go.Figure:
    """Share of the knowable gap against playlists heard: one panel per scenario (and row per catalogue),
    one line per learner with its 95% interval over listener seeds, the knowable ceiling at 1.

    `summary` has the columns of `helpers.adaptation.summarise`."""
    rows = list(dict.fromkeys(summary["catalogue"])) if "catalogue" in summary else [None]
    fig = px.line(summary, x="playlists", y="share_knowable", color="learner", markers=True,
                  facet_col="scenario", facet_row="catalogue" if len(rows) > 1 else None,
                  error_y="share_knowable_ci95", category_orders={"catalogue": rows},
                  title="Learning a new listener: share of the knowable gap closed<br><sup>mean over listener "
                        "seeds, 95% interval; 1 = the person's taste model known exactly</sup>")
    fig.add_hline(y=1.0, line_dash="dash", line_color="grey", annotation_text="knowable ceiling",
                  annotation_position="bottom right")
    fig.for_each_annotation(lambda note: note.update(text=note.text.split("=")[-1]))
    # Each panel on its own scale: the bandits' hard case (far below 0) would flatten the others.
    fig.update_yaxes(matches=None, showticklabels=True, title="")
    return fig.update_layout(legend_title="", height=max(450, 260 * len(rows))).update_xaxes(
        type="log", tickvals=[1, 3, 10], title="playlists heard")


def taste_map_figure(points: pd.DataFrame, *, note: str = "", max_points: int | None = MAP_MAX_POINTS,
                     seed: int = 42) -> go.Figure:
    """The person's true taste beside what the taste model believes after each checkpoint, on the UMAP map.

    `points`: `umap_x`, `umap_y`, `id`, `true taste`, `after N playlists` columns and `heard_in`
    (from `helpers.adaptation.taste_snapshots`). One panel per taste column, all on one colour
    scale (share listened, 0-1); a panel after N playlists rings the songs heard in them."""
    shown, shown_note = _map_points(points, max_points, seed)
    panels = ["true taste", *[column for column in shown.columns if column.startswith("after ")]]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels, horizontal_spacing=0.02,
                        shared_xaxes=True, shared_yaxes=True)
    for col, panel in enumerate(panels, start=1):
        heard_by = int(panel.split()[1]) if panel.startswith("after ") else 0
        heard = (shown["heard_in"] >= 1) & (shown["heard_in"] <= heard_by)
        fig.add_trace(go.Scattergl(
            x=shown["umap_x"], y=shown["umap_y"], mode="markers", name=panel, showlegend=False,
            marker={"size": 4, "color": shown[panel], "colorscale": "Viridis", "cmin": 0.0, "cmax": 1.0,
                    "showscale": col == len(panels), "colorbar": {"title": {"text": "share listened"}},
                    "line": {"width": np.where(heard, 1.5, 0.0), "color": "crimson"}},
            customdata=np.column_stack([shown["id"], shown[panel]]),
            hovertemplate="%{customdata[0]}: %{customdata[1]:.2f}<extra>" + panel + "</extra>"), row=1, col=col)
        fig.update_xaxes(showticklabels=False, row=1, col=col)
        fig.update_yaxes(showticklabels=False, row=1, col=col)
    fig.update_layout(title=_titled("What the taste model learns of one person, playlist after playlist", note,
                                    shown_note, "ringed: the songs heard so far"), height=380)
    return fig
