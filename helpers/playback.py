"""The listener contract: what a session asks of anything that plays a playlist.

A listener has a `source` (the name its plays are logged under) and

    listen(track_ids, on_finished) -> stop reason

It calls `on_finished(position, percentage_listened, liked, played_id=None,
preview_duration_ms=None)` exactly once per track it finished or partly heard before stopping,
whatever stopped it (`liked` None: unknown; `played_id`: the id really played when Spotify
relinked the track; `preview_duration_ms`: what played was a preview that long, and
`percentage_listened` is a share of it), and returns why it stopped.
When it cannot go on it raises `PlaybackError` (or OSError) with a message that says what to do.

Listeners: `helpers.listeners.SimulatedListener` (offline, instant, seeded),
`helpers.spotify.SpotifyListener` (a person on their own device, with Premium) and
`helpers.embed.EmbedListener` (a person in Spotify's embed player, in a notebook or a page). `helpers.session` plays and
logs a playlist with any of them. This module imports nothing of the project.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

StopReason = Literal["finished", "left_playlist", "paused", "not_started", "interrupted", "closed"]
STOP_MESSAGES: dict[str, str] = {
    "finished": "played to the end",
    "left_playlist": "stopped: playback left the playlist (another track was started)",
    "paused": "stopped: nothing of the playlist played for longer than the pause timeout",
    "not_started": "stopped: the playlist did not start playing within the pause timeout",
    "interrupted": "interrupted",
    "closed": "stopped: the player page was closed",
}


class PlaybackError(RuntimeError):
    """The listener could not go on playing; the message says why and what to do."""


class OnFinished(Protocol):
    """The session's callback: one call per track heard, in playing order."""

    def __call__(self, position: int, percentage_listened: float, liked: int | None,
                 played_id: str | None = None, *, preview_duration_ms: int | None = None) -> None: ...


class Listener(Protocol):
    """Plays tracks in order, reports each finished one, and says why it stopped."""

    source: str

    def listen(self, track_ids: Sequence[str], on_finished: OnFinished) -> StopReason: ...
