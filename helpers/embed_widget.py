"""The embed player as a Jupyter widget (anywidget), for notebook 07.

    widget = EmbedWidget()
    listener = EmbedListener(widget)
    display(widget)
    session = in_background(lambda: play_session(recommender, listener, steps, log_path, progress=False))
    ...                                  # later, in another cell: result = ended(session)

Notebook 07 plays through `helpers.play.EmbedPlayer(widget)`, which keeps one listener for the
widget: with `sessions`, the live loop runs in the background thread and each next playlist
replaces the last in the same widget.

anywidget carries the state to the browser (a synced trait) and the page's events back
(`model.send`), with the same ES module as the local page (`helpers/static/embed_player.js`).
The kernel takes a widget's messages only while no cell is running, so the listener waits in a
thread of its own (`in_background`) and the cell ends at once; the events are taken, and each
song logged, in the kernel's main thread as they arrive.
"""
from __future__ import annotations

import contextvars
import threading
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

import anywidget
import traitlets

from helpers.embed import PLAYER_SCRIPT, PLAYER_STYLE, embed_api_url

T = TypeVar("T")


class EmbedWidget(anywidget.AnyWidget):
    """Spotify's embed player with the song list, a like, a skip and a stop button (a `PlayerView`)."""

    _esm = PLAYER_SCRIPT
    _css = PLAYER_STYLE
    state = traitlets.Dict().tag(sync=True)
    api_url = traitlets.Unicode().tag(sync=True)

    def __init__(self, api_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(api_url=api_url or embed_api_url(), **kwargs)
        self._handler: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
        self.on_msg(self._on_message)

    def _on_message(self, widget: "EmbedWidget", content: Any, buffers: list[bytes]) -> None:
        if self._handler is None or not isinstance(content, dict):
            return
        try:
            self._handler(content)
        except ValueError as error:
            warnings.warn(f"the player sent an event that was refused: {error}", stacklevel=2)
        except Exception:  # noqa: BLE001 - a song that could not be logged: listen() raises it
            pass

    # helpers.embed.PlayerView
    def attach(self, handler: Callable[[Mapping[str, Any]], dict[str, Any]]) -> None:
        self._handler = handler

    def publish(self, state: dict[str, Any]) -> None:
        self.state = state

    def gone_for(self) -> float | None:
        return None  # the kernel outlives the notebook's tab: reopening it shows the player again

    def failure(self) -> str | None:
        return None


def in_background(work: Callable[[], T]) -> Future[T]:
    """Run `work` in a thread and return its Future (its result, or the error it raised).

    In a notebook, the cell that starts it ends at once, so that the kernel can take the
    widget's events; `ended(future)` in a later cell gives the outcome. The thread runs in a
    copy of the caller's context, so what it prints shows below the cell that started it.
    """
    future: Future[T] = Future()
    context = contextvars.copy_context()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work())
        except BaseException as error:  # noqa: BLE001 - handed to whoever reads the Future
            future.set_exception(error)

    threading.Thread(target=context.run, args=(run,), name="embed-session", daemon=True).start()
    return future


def ended(session: Future[T]) -> T:
    """The outcome of a session started with `in_background` (or the error it raised).

    While it still plays this raises RuntimeError rather than wait: waiting in a cell would hold
    the kernel, and with it the player's events.
    """
    if not session.done():
        raise RuntimeError("the playlist is still playing in the player above: run this cell again when it has "
                           "ended, or press ■ Stop there (what you heard so far is logged)")
    return session.result()
