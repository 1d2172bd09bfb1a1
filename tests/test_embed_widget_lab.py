"""The embed player's Jupyter widget in JupyterLab, in a real browser: a notebook shows it, a
click plays the playlist through the stand-in iFrame API, and each song reaches the kernel once."""
from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from embed_browser import standin_url
from helpers.embed import EMBED_API_URL_VARIABLE
from helpers.feedback import DEFAULT_LOG_NAME, read_interactions
from helpers.paths import NOTEBOOKS_DIR

TRACKS = ["4uLU6hMCjMI75M1A2tKUQC", "7GhIk7Il098yCjg4BQjzvb", "3n3Ppam7vgaVa1iaRUc9Lp"]
SCREENSHOTS = "EMBED_SCREENSHOT_DIR"  # set it to keep a picture of the player (the README's gallery)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 with its own settings, no update or news checks; yields (url, root)."""
    root = tmp_path_factory.mktemp("lab")
    port, token = free_port(), secrets.token_hex(16)
    environment = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".config"),
                   "JUPYTERLAB_SETTINGS_DIR": str(root / ".settings"),
                   "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces"), "JUPYTER_RUNTIME_DIR": str(root / ".run")}
    settings = root / ".settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"autoStartDefaultKernel": True}))
    news = root / ".settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
         "--allow-root"],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "JupyterLab did not start"
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}", token, root
    server.terminate()
    server.wait(timeout=30)


def write_notebook(path: Path, api_url: str, log: Path) -> None:
    code = f"""
import json
from helpers.embed import EmbedListener
from helpers.embed_widget import EmbedWidget, in_background

view = EmbedWidget(api_url={api_url!r})
listener = EmbedListener(view, poll_interval=0.05)
listener.labels.update({{track: {{"name": f"Song {{n}}", "artist": "Sia", "probability": 0.5 if n else None}}
                        for n, track in enumerate({TRACKS!r})}})

def on_finished(position, share, liked, played_id=None, *, preview_duration_ms=None):
    with open({str(log)!r}, "a") as log:
        log.write(json.dumps([position, share, liked, preview_duration_ms]) + "\\n")

display(view)
session = in_background(lambda: listener.listen({TRACKS!r}, on_finished))
"""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code.strip())])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


def run_in_lab(page, url: str, token: str, notebook: str):
    """Open `notebook` in JupyterLab, run all its cells, and return the player's ▶ Play once it can play."""
    page.set_default_timeout(60_000)  # JupyterLab's first load and kernel start on a busy machine
    # A workspace of its own: JupyterLab would otherwise reopen the notebooks of the tests before.
    page.goto(f"{url}/lab/workspaces/{Path(notebook).stem}/tree/{notebook}?token={token}")
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for()
    page.locator(".jp-Notebook .jp-Cell").first.click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    play = page.locator(".embed-player button.ep-play")
    choose_kernel = page.locator(".jp-Dialog .jp-mod-accept")
    choose_kernel.or_(play).first.wait_for()
    if choose_kernel.is_visible():  # JupyterLab asks which kernel to start for a new notebook
        choose_kernel.click()
    play.wait_for()
    page.wait_for_function("() => !document.querySelector('.embed-player button.ep-play').disabled")
    return play


def test_the_widget_plays_the_playlist_in_jupyterlab_and_the_kernel_logs_each_song_once(
        lab, page, standin_origin):
    url, token, root = lab
    log = root / "heard.jsonl"
    write_notebook(root / "player.ipynb", standin_url(standin_origin, speed=150), log)
    play = run_in_lab(page, url, token, "player.ipynb")
    assert page.locator(".embed-player table.ep-songs td:nth-child(2)").all_inner_texts() == \
        ["Song 0", "Song 1", "Song 2"]
    play.click()
    page.locator(".embed-player .ep-status", has_text="played to the end: every song is logged (3 of 3 songs)").wait_for()
    if os.environ.get(SCREENSHOTS):
        page.locator(".embed-player").scroll_into_view_if_needed()
        page.screenshot(path=str(Path(os.environ[SCREENSHOTS]) / "07_embed_player_jupyterlab.png"))
    assert [json.loads(line) for line in log.read_text().splitlines()] == [[0, 1.0, None, None], [1, 1.0, None, None],
                                                                          [2, 1.0, None, None]]


def notebook_07_with(path: Path, api_url: str, **parameters: object) -> None:
    """Notebook 07 with `parameters` in place of its defaults and the stand-in script in Spotify's."""
    notebook = nbformat.read(NOTEBOOKS_DIR / "07_spotify.ipynb", as_version=4)
    cell = next(cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))
    cell.source += "".join(f"\n{name} = {value!r}" for name, value in parameters.items())
    cell.source += f"\nimport os\nos.environ[{EMBED_API_URL_VARIABLE!r}] = {api_url!r}"
    nbformat.write(notebook, path)


def test_notebook_07_plays_its_sessions_in_one_widget_each_planned_on_the_last_update(
        lab, page, standin_origin, live_run):
    url, token, root = lab
    notebook_07_with(root / "sessions.ipynb", standin_url(standin_origin, speed=300), embed_player=True,
                     sessions=2, playlist_length=3, output_dir=str(live_run.root))
    run_in_lab(page, url, token, "sessions.ipynb").click()  # once: the second playlist starts by itself
    player_cell = page.locator(".jp-CodeCell", has=page.locator(".embed-player"))
    player_cell.get_by_text("saved as taste version 2").wait_for()  # the loop's messages, below its cell
    player_cell.get_by_text("Session 2 of 2: planned on a Thompson draw of taste version 1").wait_for()
    log = read_interactions(live_run.feedback / DEFAULT_LOG_NAME)
    order = log.groupby("session_id")["timestamp"].min().sort_values().index
    first, second = (log[log["session_id"] == session] for session in order)
    assert first["position"].tolist() == second["position"].tolist() == [0, 1, 2], "each song once"
    assert first["model_version"].str.endswith("+taste-v0").all() and second["model_version"].str.endswith("+taste-v1").all()
    shown = page.locator(".embed-player table.ep-songs tr[data-position]").evaluate_all(
        "rows => rows.map(row => row.dataset.id)")
    assert shown == second["track_id"].tolist(), "the widget shows the second playlist"
    assert "played to the end: every song is logged (3 of 3 songs)." in page.locator(".embed-player .ep-status").inner_text()
