"""Figures: plotly drawings shared by the notebooks, and their export to `figures/`.

Every figure is saved twice: an interactive HTML page (with one shared `plotly.min.js` beside
it, so the folder opens offline) and a PNG. PNG export drives a Chrome/Chromium through
kaleido; where none is installed we say so once and keep going with HTML only.
"""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

_CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_png_state: dict[str, bool] = {}


def find_chrome() -> str | None:
    """Path of a Chrome/Chromium that kaleido can drive, or None."""
    explicit = os.environ.get("BROWSER_PATH")
    if explicit and Path(explicit).exists():
        return explicit
    return next((path for name in _CHROME_NAMES if (path := shutil.which(name))), None)


def _png_export_ready() -> bool:
    """Start kaleido's browser once per process; False (with one warning) if it cannot run."""
    if "ready" not in _png_state:
        chrome = find_chrome()
        if chrome is None:
            warnings.warn(
                "No Chrome/Chromium found: figures are saved as HTML only. "
                "Install one (Debian: `apt-get install chromium`) to get PNGs too.",
                stacklevel=3,
            )
            _png_state["ready"] = False
        else:
            import kaleido

            os.environ.setdefault("BROWSER_PATH", chrome)
            # MathJax would be fetched from a CDN; we have no formulas in figures and may be offline.
            kaleido.start_sync_server(mathjax=False, silence_warnings=True)
            _png_state["ready"] = True
    return _png_state["ready"]


def save_figure(fig: go.Figure, name: str, figures_dir: str | Path, *, png: bool = True,
                width: int = 1000, height: int = 650) -> dict[str, Path]:
    """Write `fig` to `figures_dir/name.html` (and `name.png`); return the paths written."""
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    written = {"html": figures_dir / f"{name}.html"}
    fig.write_html(written["html"], include_plotlyjs="directory")
    if png and _png_export_ready():
        written["png"] = figures_dir / f"{name}.png"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The kopts argument is ignored")
            fig.write_image(written["png"], width=width, height=height)
    return written


# Figure builders used by the notebooks. Each returns a plotly Figure; notebooks save and show it.
