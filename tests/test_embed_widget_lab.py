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


def test_the_widget_plays_the_playlist_in_jupyterlab_and_the_kernel_logs_each_song_once(
        lab, page, standin_origin):
    url, token, root = lab
    log = root / "heard.jsonl"
    write_notebook(root / "player.ipynb", standin_url(standin_origin, speed=150), log)
    page.set_default_timeout(60_000)  # JupyterLab's first load and kernel start on a busy machine
    page.goto(f"{url}/lab/tree/player.ipynb?token={token}")
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for()
    page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.click()
    page.keyboard.press("Shift+Enter")
    play = page.locator(".embed-player button.ep-play")
    choose_kernel = page.locator(".jp-Dialog .jp-mod-accept")
    choose_kernel.or_(play).first.wait_for()
    if choose_kernel.is_visible():  # JupyterLab asks which kernel to start for a new notebook
        choose_kernel.click()
    play.wait_for()
    page.wait_for_function("() => !document.querySelector('.embed-player button.ep-play').disabled")
    assert page.locator(".embed-player table.ep-songs td:nth-child(2)").all_inner_texts() == \
        ["Song 0", "Song 1", "Song 2"]
    play.click()
    page.locator(".embed-player .ep-status", has_text="played to the end: every song is logged (3 of 3 songs)").wait_for()
    if os.environ.get(SCREENSHOTS):
        page.locator(".embed-player").scroll_into_view_if_needed()
        page.screenshot(path=str(Path(os.environ[SCREENSHOTS]) / "07_embed_player_jupyterlab.png"))
    assert [json.loads(line) for line in log.read_text().splitlines()] == [[0, 1.0, None, None], [1, 1.0, None, None],
                                                                          [2, 1.0, None, None]]
