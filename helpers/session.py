"""A listening session: let a listener play a planned playlist and log each track as it is heard.

Nothing here talks to Spotify. Any listener of the contract in `helpers.playback` plays the
playlist (`helpers.listeners.SimulatedListener` offline, `helpers.spotify.SpotifyListener` on
a person's device); `play_session` appends one record per reported track to the interaction
log (`helpers.feedback`) the moment it is reported, under the catalogue's id. Plan the
playlist first with `helpers.playlists.plan_playlist`.
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from helpers.feedback import Interaction, append_interaction, utc_timestamp
from helpers.playback import STOP_MESSAGES, Listener, PlaybackError, StopReason
from helpers.playlists import PlaylistRecommender, choice_at, playlist_tracks

if TYPE_CHECKING:
    from helpers.recommend import PlaylistStep


@dataclass(frozen=True)
class SessionResult:
    """What one played playlist left in the log."""

    session_id: str
    stop_reason: StopReason
    interactions: list[Interaction]
    planned: int
    log_path: Path

    def summary(self) -> str:
        return (f"{STOP_MESSAGES[self.stop_reason]}; logged {len(self.interactions)} of {self.planned} "
                f"tracks to {self.log_path} (session {self.session_id})")


def play_session(recommender: PlaylistRecommender, listener: Listener, steps: Sequence[PlaylistStep],
                 log_path: str | Path, *, progress: bool = True) -> SessionResult:
    """Let `listener` play the playlist and append one record per finished track to `log_path`."""
    session_id = uuid.uuid4().hex
    log_path = Path(log_path)
    track_ids = playlist_tracks(steps)
    latents = {track_id: recommender.latent(track_id) for track_id in track_ids}
    logged: list[Interaction] = []
    bar = tqdm(total=len(track_ids), desc=f"listening ({listener.source})", unit="track", disable=not progress)

    def on_finished(position: int, percentage_listened: float, liked: int | None,
                    played_id: str | None = None, *, preview_duration_ms: int | None = None) -> None:
        track_id = track_ids[position]
        candidates, probs = choice_at(steps, position)
        interaction = Interaction(
            timestamp=utc_timestamp(), session_id=session_id, track_id=track_id, position=position,
            latent=latents[track_id], percentage_listened=percentage_listened, liked=liked,
            source=listener.source, model_version=recommender.model_version,
            candidates=list(candidates), probs=[float(p) for p in probs], played_id=played_id,
            preview=preview_duration_ms is not None, preview_duration_ms=preview_duration_ms,
        )
        append_interaction(log_path, interaction)
        logged.append(interaction)
        liked_text = "unknown" if liked is None else liked
        heard = f"{percentage_listened:.0%}" + (f" of a {preview_duration_ms / 1000:.0f} s preview"
                                                 if preview_duration_ms is not None else "")
        bar.set_postfix_str(f"logged {track_id}: listened {heard}, liked {liked_text}")
        bar.update()

    try:
        reason = listener.listen(track_ids, on_finished)
    except (PlaybackError, OSError) as error:
        if not logged:
            raise
        raise type(error)(f"{error} The {len(logged)} track(s) finished before are logged in "
                          f"{log_path}.") from None
    finally:
        bar.close()
    return SessionResult(session_id, reason, logged, len(track_ids), log_path)
