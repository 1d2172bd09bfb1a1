"""The figure list, the committed gallery, and PNG export without a Chrome on the machine."""
import json
import re
import threading
import warnings
from pathlib import Path

import plotly.graph_objects as go
import pytest

from helpers import gallery, plots
from helpers.paths import NOTEBOOKS_DIR


def saved_figure_names() -> set[str]:
    """The names every notebook passes to save_figure."""
    names = set()
    for notebook in NOTEBOOKS_DIR.glob("*.ipynb"):
        cells = json.loads(notebook.read_text())["cells"]
        code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
        names |= set(re.findall(r"save_figure\(\s*fig\s*,\s*\"([0-9a-z_]+)\"", code))
    return names


def test_the_figure_list_is_exactly_what_the_notebooks_save():
    assert set(gallery.FIGURES) == saved_figure_names()
    assert all(name.startswith(notebook[:3]) for name, (notebook, _) in gallery.FIGURES.items())


def test_the_figures_readme_is_rendered_from_the_list():
    assert gallery.FIGURES_README.read_text() == gallery.figures_readme()


def test_the_committed_gallery_is_the_curated_list_and_small():
    assert set(gallery.GALLERY) <= set(gallery.FIGURES) and len(gallery.GALLERY) <= gallery.MAX_GALLERY_FIGURES
    committed = {path.stem: path for path in gallery.GALLERY_DIR.glob("*.png")}
    assert set(committed) == set(gallery.GALLERY) | set(gallery.SCREENSHOTS)
    assert all(path.stat().st_size <= gallery.MAX_GALLERY_BYTES for path in committed.values())
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in committed.values())


def test_refreshing_copies_the_curated_pngs_and_refuses_missing_or_large_ones(tmp_path):
    run_figures, target = tmp_path / "figures", tmp_path / "gallery"
    run_figures.mkdir()
    for name in gallery.FIGURES:
        (run_figures / f"{name}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + name.encode())
    (run_figures / f"{gallery.GALLERY[0]}.png").unlink()
    with pytest.raises(FileNotFoundError, match=gallery.GALLERY[0]):
        gallery.refresh_gallery(run_figures, target, tmp_path / "README.md")
    (run_figures / f"{gallery.GALLERY[0]}.png").write_bytes(b"x" * (gallery.MAX_GALLERY_BYTES + 1))
    with pytest.raises(ValueError, match=f"{gallery.GALLERY[0]}.png"):
        gallery.refresh_gallery(run_figures, target, tmp_path / "README.md")
    assert not target.exists(), "nothing is copied unless every PNG is fine"
    (run_figures / f"{gallery.GALLERY[0]}.png").write_bytes(b"small")
    copied = gallery.refresh_gallery(run_figures, target, tmp_path / "README.md")
    assert sorted(path.name for path in copied) == sorted(f"{name}.png" for name in gallery.GALLERY)
    assert (target / f"{gallery.GALLERY[1]}.png").read_bytes().endswith(gallery.GALLERY[1].encode())
    assert (tmp_path / "README.md").read_text() == gallery.figures_readme()


@pytest.fixture
def no_chrome(monkeypatch):
    monkeypatch.setattr(plots, "_png_state", {})
    monkeypatch.setattr(plots, "find_chrome", lambda: None)


def test_without_chrome_the_first_export_tries_the_download_once_then_falls_back_to_html(
        no_chrome, monkeypatch, tmp_path, capsys):
    attempts = []
    monkeypatch.setattr(plots, "download_chrome", lambda: attempts.append(1))
    with pytest.warns(UserWarning, match="could not be downloaded .* HTML only"):
        written = plots.save_figure(go.Figure(), "first", tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.save_figure(go.Figure(), "second", tmp_path)
    assert attempts == [1] and set(written) == {"html"} and (tmp_path / "second.html").exists()
    assert "downloading kaleido's own Chrome once" in capsys.readouterr().out


def test_without_chrome_a_downloaded_chrome_is_used(no_chrome, monkeypatch):
    import kaleido

    started = []
    monkeypatch.setattr(plots, "download_chrome", lambda: "/opt/kaleido-chrome/chrome")
    monkeypatch.setattr(kaleido, "start_sync_server", lambda **options: started.append(options))
    monkeypatch.setenv("BROWSER_PATH", "/a/browser/that/is/gone")  # restored after the test
    assert plots._png_export_ready()
    assert started and plots.os.environ["BROWSER_PATH"] == "/opt/kaleido-chrome/chrome"


class StuckFigure:
    """A figure whose PNG export never returns, like kaleido waiting on a browser that crashed."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def write_html(self, path, **options) -> None:
        Path(path).write_text("<html></html>")

    def write_image(self, path, **options) -> None:
        self.release.wait()


def test_a_png_export_that_hangs_is_given_up_and_later_figures_are_html_only(monkeypatch, tmp_path):
    monkeypatch.setattr(plots, "_png_state", {"ready": True})
    stuck = StuckFigure()
    with pytest.warns(UserWarning, match="PNG export of stuck did not finish within 0.2 s"):
        written = plots.save_figure(stuck, "stuck", tmp_path, png_timeout_seconds=0.2)
    assert set(written) == {"html"} and not list(tmp_path.glob("*.png")), "no partial PNG is left"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert set(plots.save_figure(StuckFigure(), "later", tmp_path)) == {"html"}, "no second wait"
    stuck.release.set()
