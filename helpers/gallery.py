"""The figure gallery: every figure the chain writes, and the few committed for visitors to see.

    python -m helpers.gallery                    # refresh figures/gallery/ from the last `make run`
    python -m helpers.gallery --from /tmp/run    # from a run made with --output-dir /tmp/run

`FIGURES` is the one list of the chain's figures (a test checks it against the notebooks);
`figures/README.md` is rendered from it. `GALLERY` names the PNGs committed in
`figures/gallery/`, which the README shows.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from helpers.paths import REPO_ROOT, ProjectPaths, atomic_write, write_text_atomic

GALLERY_DIR = REPO_ROOT / "figures" / "gallery"
FIGURES_README = REPO_ROOT / "figures" / "README.md"
MAX_GALLERY_BYTES = 300_000
MAX_GALLERY_FIGURES = 8

# name: (notebook, what it shows)
FIGURES: dict[str, tuple[str, str]] = {
    "01_tracks_per_artist": ("01_filter", "how many tracks each artist keeps in the filtered catalogue"),
    "02_vae_loss": ("02_vae", "the VAE's reconstruction and KL losses per epoch"),
    "02_feature_correlation": ("02_vae", "correlations between the 11 audio features"),
    "02_reconstruction_error": ("02_vae", "the VAE's reconstruction error per feature, against simple baselines"),
    "02_latent_distribution": ("02_vae", "the distribution of each latent dimension (the states)"),
    "03_cluster_map": ("03_clusters", "every track on the 2-D UMAP map, coloured by K-Means cluster"),
    "03_cluster_sizes": ("03_clusters", "tracks per cluster"),
    "03_gridworld": ("03_clusters", "a few tracks and their 4 nearest neighbours in latent space: the \"gridworld\""),
    "04_listening_by_cluster": ("04_listeners", "the simulated listener's percentage_listened per cluster"),
    "05_reward_map": ("05_rewards", "each track's reward on the UMAP map"),
    "05_reward_histogram": ("05_rewards", "the distribution of the reward"),
    "06_training_curves": ("06_ppo", "PPO's return, losses, entropy and explained variance per update"),
    "06_policy_comparison": ("06_ppo", "mean return of every policy on held-out starts, with the exact optimum"),
    "06_gridworld_trajectories": ("06_ppo", "the walks of the trained policies and the baselines on the map"),
    "07_session_feedback": ("07_spotify", "how each track of the played playlist was heard"),
    "08_taste_map": ("08_adaptation", "one person's true taste and what the taste model believes after 0, 1, 3 and 10 "
                                      "playlists, on the UMAP map"),
    "08_adaptation": ("08_adaptation", "share of the knowable gap closed after 1, 3 and 10 playlists: every scenario, "
                                       "the taste model against the bandits"),
    "08_returns": ("08_adaptation", "held-out returns before and after fine-tuning on the logged feedback"),
    "08_cluster_shift": ("08_adaptation", "where the fine-tuned policy's picks moved, per cluster"),
}

GALLERY = ("03_cluster_map", "03_gridworld", "05_reward_map", "06_training_curves", "06_policy_comparison",
           "06_gridworld_trajectories", "08_taste_map", "08_adaptation")
# Screenshots of the embed player with a playlist (the tests' stand-in of Spotify's iFrame API in
# place of Spotify's player), taken by its browser tests when EMBED_SCREENSHOT_DIR is set.
SCREENSHOTS = {"07_embed_player_jupyterlab": "notebook 07's widget in JupyterLab",
               "07_embed_player_page": "the page of `python -m helpers.play --browser`"}


def figures_readme() -> str:
    """The text of figures/README.md, rendered from `FIGURES` and `GALLERY`."""
    rows = "\n".join(f"| `{name}` | {notebook} | {what} |" for name, (notebook, what) in FIGURES.items())
    gallery = "\n".join(f"- `gallery/{name}.png`" for name in GALLERY)
    screenshots = "\n".join(f"- `gallery/{name}.png`: {what}" for name, what in SCREENSHOTS.items())
    return f"""# Figures

Every notebook saves its figures here as interactive HTML and PNG (`NAME.html`, `NAME.png`;
git-ignored, written by `make run`). The PNG needs a Chrome or Chromium: without one, the first
figure tries kaleido's own Chrome download once, and offline the figures stay HTML only.

| figure | notebook | what it shows |
|---|---|---|
{rows}

## The gallery

`gallery/` holds a few PNGs of the default chain (embedded catalogue, seed 42), committed so
that a visitor sees them without running anything; the README shows them. Refresh them from a
run with `make gallery` (`python -m helpers.gallery`; this file is rendered from
`helpers/gallery.py`).

{gallery}

The embed player's screenshots, each after a playlist of three songs was heard, are taken by its
browser tests: `EMBED_SCREENSHOT_DIR=figures/gallery .venv/bin/python -m pytest
tests/test_embed_page.py tests/test_embed_widget_lab.py -k "command or widget"`.

{screenshots}
"""


def refresh_gallery(figures_dir: Path, gallery_dir: Path = GALLERY_DIR,
                    readme_path: Path = FIGURES_README) -> list[Path]:
    """Copy the `GALLERY` PNGs from a run's `figures_dir` (each checked to exist and to stay under
    `MAX_GALLERY_BYTES`), then rewrite figures/README.md. Nothing is copied unless all are fine."""
    sources = [figures_dir / f"{name}.png" for name in GALLERY]
    missing = [str(path) for path in sources if not path.exists()]
    if missing:
        raise FileNotFoundError(f"no PNG for {missing}: run the whole chain first (`make run`) on a machine "
                                "with Chrome/Chromium, or pass the run's folder with --from.")
    too_big = [f"{path.name} ({path.stat().st_size:,} bytes)" for path in sources
               if path.stat().st_size > MAX_GALLERY_BYTES]
    if too_big:
        raise ValueError(f"gallery PNGs must stay under {MAX_GALLERY_BYTES:,} bytes: {too_big}")
    gallery_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in sources:
        with atomic_write(gallery_dir / source.name) as temporary:
            shutil.copyfile(source, temporary)
        copied.append(gallery_dir / source.name)
    write_text_atomic(readme_path, figures_readme())
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.gallery", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="output_dir", metavar="DIR",
                        help="root of the run whose figures/ to use (default: the repository)")
    args = parser.parse_args(argv)
    try:
        copied = refresh_gallery(ProjectPaths.at(args.output_dir).figures)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"gallery refreshed: {len(copied)} PNGs in {GALLERY_DIR}, {FIGURES_README} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
