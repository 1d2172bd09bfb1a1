"""Play a recommended playlist and log how it is heard: on Spotify, or by a simulated listener.

    python -m helpers.play                            # offline unless Spotify credentials are set
    python -m helpers.play --start 2cQ9D0cQjUJmLs8rWFkcRH --device "Kitchen speaker"
    python -m helpers.play --offline --length 10 --log /tmp/interactions.jsonl

The Recommender turns a start track into a playlist: at each step the policy gives the
candidates probabilities and one is chosen. A listener then plays the playlist, and each
finished track is appended to the interaction log (`helpers.feedback`) as it happens. Both
listeners have one interface, `listen(track_ids, on_finished) -> stop reason`, where
`on_finished(position, percentage_listened, liked)` is called once per finished track:

- `SpotifyListener` (helpers.spotify): a person, on their own Spotify device;
- `SimulatedListener`: notebook 04's listener model, instant and seeded (offline mode).

Exit status of the command: 0 played and logged to the end; 1 an error (one line says what to
do); 3 stopped early (playback paused too long, left the playlist, or never started); 130
interrupted. In every case each track played so far is in the log.
"""
from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.feedback import DEFAULT_LOG_NAME, Interaction, append_interaction, utc_timestamp
from helpers.listeners import ListenerModel
from helpers.paths import ProjectPaths
from helpers.recommend import Recommender
from helpers.spotify import SpotifyError, SpotifyListener, SpotifyPlayer, SpotifySettings, StopReason

EXIT_STOPPED_EARLY = 3
EXIT_INTERRUPTED = 130
STOP_MESSAGES = {
    "finished": "played to the end",
    "left_playlist": "stopped: playback left the playlist (another track was started)",
    "paused": "stopped: nothing of the playlist played for longer than the pause timeout",
    "not_started": "stopped: the playlist did not start playing within the pause timeout",
    "interrupted": "interrupted",
}


class PlaylistRecommender(Protocol):
    """What playing needs from a `helpers.recommend.Recommender` (tests pass small fakes)."""

    catalogue: pd.DataFrame
    model_version: str

    def playlist(self, start_id: str | None = None, length: int = 10, greedy: bool = True,
                 seed: int | None = None) -> list: ...

    def latent(self, track_id: str) -> list[float]: ...


class Listener(Protocol):
    """Plays tracks in order, reports each finished one, and says why it stopped."""

    source: str

    def listen(self, track_ids: Sequence[str],
               on_finished: Callable[[int, float, int], None]) -> StopReason: ...


@dataclass(frozen=True)
class PlaylistEntry:
    """One track of a planned playlist, with the step that chose it (none for the start track)."""

    position: int
    track_id: str
    candidates: list[str]
    probs: list[float]

    @property
    def probability(self) -> float:
        """The policy's probability of this choice (NaN for the start track)."""
        return self.probs[self.candidates.index(self.track_id)] if self.candidates else float("nan")


def catalogue_by_id(catalogue: pd.DataFrame) -> pd.DataFrame:
    """The catalogue indexed by track id (it may come keyed by an `id` column or by its index)."""
    return catalogue.set_index("id") if "id" in catalogue.columns else catalogue


def plan_playlist(recommender: PlaylistRecommender, start_id: str | None = None, length: int = 10,
                  greedy: bool = False, seed: int | None = None) -> list[PlaylistEntry]:
    """The playlist the recommender builds from `start_id` (random when None), checked.

    `greedy=False` draws each choice from the policy's probabilities, so the logged `probs` are
    the probabilities the tracks were really chosen with (what off-policy evaluation needs);
    `greedy=True` takes the most probable candidate every time.
    """
    if length < 2:
        raise ValueError(f"a playlist needs at least 2 tracks (a start and one choice), got length={length}")
    if start_id is not None and start_id not in catalogue_by_id(recommender.catalogue).index:
        raise ValueError(f"start track {start_id!r} is not in the recommender's catalogue")
    steps = recommender.playlist(start_id=start_id, length=length, greedy=greedy, seed=seed)
    if len(steps) != length - 1:
        raise ValueError(f"the recommender returned {len(steps)} steps for a playlist of {length} tracks "
                         f"(expected {length - 1})")
    entries = [PlaylistEntry(0, steps[0]["track_id"], [], [])]
    for position, step in enumerate(steps, start=1):
        candidates, probs = list(step["candidates"]), [float(p) for p in step["probs"]]
        if step["track_id"] != entries[-1].track_id:
            raise ValueError(f"step {position} starts from {step['track_id']}, but the playlist is at "
                             f"{entries[-1].track_id}")
        if step["chosen"] not in candidates or len(candidates) != len(probs):
            raise ValueError(f"step {position} chose {step['chosen']} outside its {len(candidates)} candidates "
                             f"(or gave {len(probs)} probabilities)")
        entries.append(PlaylistEntry(position, step["chosen"], candidates, probs))
    track_ids = [entry.track_id for entry in entries]
    if len(set(track_ids)) != len(track_ids):
        raise ValueError(f"the playlist repeats a track: {track_ids}")
    return entries


def format_steps(entries: Sequence[PlaylistEntry]) -> str:
    """Each step of the policy: the current track, the candidates by probability, the choice."""
    lines = []
    for current, entry in zip(entries, entries[1:]):
        lines.append(f"step {entry.position}: from {current.track_id}")
        for candidate, prob in sorted(zip(entry.candidates, entry.probs), key=lambda pair: -pair[1]):
            lines.append(f"    {prob:6.3f}  {candidate}{'  <- chosen' if candidate == entry.track_id else ''}")
    return "\n".join(lines)


def missing_names(entries: Sequence[PlaylistEntry], catalogue: pd.DataFrame) -> list[str]:
    """Ids of the playlist's tracks whose name the catalogue does not know."""
    tracks = catalogue_by_id(catalogue)
    ids = [entry.track_id for entry in entries]
    if "name" not in tracks.columns:
        return ids
    names = tracks["name"].reindex(ids)
    return [track_id for track_id, name in zip(ids, names) if pd.isna(name) or not str(name).strip()]


def playlist_table(entries: Sequence[PlaylistEntry], catalogue: pd.DataFrame,
                   names: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The playlist as a table: position, track_id, artist, [name], cluster, probability of the choice.

    Names come from the catalogue, else from `names` (e.g. looked up on Spotify); the column is
    left out when no name is known.
    """
    tracks = catalogue_by_id(catalogue)
    ids = [entry.track_id for entry in entries]
    unknown = [track_id for track_id in ids if track_id not in tracks.index]
    if unknown:
        raise ValueError(f"tracks not in the catalogue: {unknown}")
    known = tracks["name"].reindex(ids) if "name" in tracks.columns else pd.Series(pd.NA, index=ids)
    name = [given if not pd.isna(given) else (names or {}).get(track_id, "") for track_id, given in known.items()]
    table = pd.DataFrame({"position": [entry.position for entry in entries], "track_id": ids,
                          "artist": tracks.loc[ids, "artist"].to_numpy()})
    if any(name):
        table["name"] = name
    table["cluster"] = tracks.loc[ids, "cluster"].to_numpy()
    table["probability"] = [entry.probability for entry in entries]
    return table


class SimulatedListener:
    """A simulated listener playing the playlist instantly (the offline mode).

    By default it is notebook 04's listener: a track of cluster c is heard
    `clip(N(mu_c, sigma_c), 0, 1)` of its length. Given a `taste` (a mean share per track id)
    it has an opinion of every track instead, as notebook 05's rewards assume: track i is heard
    `clip(N(taste_i, play_noise), 0, 1)`. Liked above the like threshold. The draws come from one
    generator seeded with `seed`, so successive playlists get fresh draws and the same seed
    replays the same sequence of sessions.
    """

    source = "simulated"

    def __init__(self, listener_model: ListenerModel, clusters: pd.Series, seed: int | None = None,
                 taste: pd.Series | None = None, play_noise: float = 0.05) -> None:
        if play_noise < 0:
            raise ValueError(f"play_noise must be >= 0, got {play_noise}")
        self.listener_model = listener_model
        self.clusters = clusters
        self.taste = taste
        self.play_noise = play_noise
        self.rng = np.random.default_rng(seed)

    def listen(self, track_ids: Sequence[str],
               on_finished: Callable[[int, float, int], None]) -> StopReason:
        """Report every track at once, in order; the playlist always plays to the end."""
        known = self.clusters.index if self.taste is None else self.taste.index
        unknown = [track_id for track_id in track_ids if track_id not in known]
        if unknown:
            raise ValueError(f"no {'cluster' if self.taste is None else 'taste'} known for the tracks {unknown}")
        if self.taste is None:
            clusters = self.clusters.loc[list(track_ids)].to_numpy()
            percentage_listened, liked = self.listener_model.sample(clusters, self.rng)
        else:
            heard = self.rng.normal(self.taste.loc[list(track_ids)].to_numpy(np.float64), self.play_noise)
            percentage_listened = np.clip(heard, 0.0, 1.0)
            liked = (percentage_listened > self.listener_model.like_threshold).astype(np.int64)
        for position, (percentage, like) in enumerate(zip(percentage_listened, liked)):
            on_finished(position, float(percentage), int(like))
        return "finished"


def simulated_listener(recommender: PlaylistRecommender, paths: ProjectPaths,
                       seed: int | None = None) -> SimulatedListener:
    """The offline listener: notebook 04's listener model and the catalogue's clusters."""
    model = ListenerModel.from_json(paths.processed_file("listener_model.json", produced_by="04_listeners"))
    return SimulatedListener(model, catalogue_by_id(recommender.catalogue)["cluster"], seed=seed)


def resolve_offline(offline: bool | None, settings: SpotifySettings) -> bool:
    """Offline when asked, or, when `offline` is None, when no Spotify credentials are set."""
    return not settings.has_credentials if offline is None else bool(offline)


def load_recommender(paths: ProjectPaths) -> Recommender:
    """The trained recommender of the run at `paths` (its models/ and data/processed/)."""
    return Recommender.load(models_dir=paths.models, data_dir=paths.processed)


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


def play_session(recommender: PlaylistRecommender, listener: Listener, entries: Sequence[PlaylistEntry],
                 log_path: str | Path, *, progress: bool = True) -> SessionResult:
    """Let `listener` play the playlist and append one record per finished track to `log_path`."""
    session_id = uuid.uuid4().hex
    log_path = Path(log_path)
    latents = {entry.track_id: recommender.latent(entry.track_id) for entry in entries}
    logged: list[Interaction] = []
    bar = tqdm(total=len(entries), desc=f"listening ({listener.source})", unit="track", disable=not progress)

    def on_finished(position: int, percentage_listened: float, liked: int) -> None:
        entry = entries[position]
        interaction = Interaction(
            timestamp=utc_timestamp(), session_id=session_id, track_id=entry.track_id, position=position,
            latent=latents[entry.track_id], percentage_listened=percentage_listened, liked=liked,
            source=listener.source, model_version=recommender.model_version,
            candidates=entry.candidates, probs=entry.probs,
        )
        append_interaction(log_path, interaction)
        logged.append(interaction)
        bar.set_postfix_str(f"logged {entry.track_id}: listened {percentage_listened:.0%}, liked {liked}")
        bar.update()

    try:
        reason = listener.listen([entry.track_id for entry in entries], on_finished)
    except SpotifyError as error:
        if not logged:
            raise
        raise type(error)(f"{error} The {len(logged)} track(s) finished before are logged in "
                          f"{log_path}.") from None
    finally:
        bar.close()
    return SessionResult(session_id, reason, logged, len(entries), log_path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.play", description=__doc__.split("\n")[0],
        epilog="Spotify sign-in comes from SPOTIPY_CLIENT_ID, SPOTIPY_CLIENT_SECRET (none with PKCE) and "
               "SPOTIPY_REDIRECT_URI, or SPOTIFY_ACCESS_TOKEN; SPOTIFY_API_BASE points at another server. "
               "Exit status: 0 played to the end, 1 error, 3 stopped early, 130 interrupted.")
    parser.add_argument("--start", metavar="ID", help="start track id (default: random)")
    parser.add_argument("--length", metavar="N", type=int, default=10, help="tracks in the playlist (default 10)")
    parser.add_argument("--device", metavar="NAME", help="Spotify device to play on (default: the active one)")
    parser.add_argument("--poll-interval", metavar="SECONDS", type=float, default=2.0,
                        help="seconds between two looks at the playback (default 2)")
    parser.add_argument("--pause-timeout", metavar="SECONDS", type=float, default=120.0,
                        help="stop when nothing of the playlist plays for this long (default 120)")
    parser.add_argument("--log", metavar="PATH",
                        help=f"interaction log (default data/feedback/{DEFAULT_LOG_NAME})")
    parser.add_argument("--offline", action="store_true", help="simulated listener, even with credentials")
    parser.add_argument("--greedy", action="store_true",
                        help="always the most probable candidate (default: drawn from the policy)")
    parser.add_argument("--seed", type=int, help="seed of the start track, the choices and the simulated listener")
    parser.add_argument("--pkce", action="store_true", help="sign in with PKCE (no client secret)")
    parser.add_argument("--open-browser", action="store_true",
                        help="open the sign-in page and catch the redirect on its port (default: paste the URL)")
    parser.add_argument("--output-dir", metavar="DIR",
                        help="root of the run to use (its models/, data/processed/, data/feedback/)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    paths = ProjectPaths.at(args.output_dir)
    log_path = Path(args.log) if args.log else paths.feedback / DEFAULT_LOG_NAME
    try:
        settings = SpotifySettings.from_environment(use_pkce=args.pkce or None, open_browser=args.open_browser)
        offline = resolve_offline(True if args.offline else None, settings)
        if offline and not args.offline:
            print("No Spotify credentials are set: playing offline with the simulated listener.")
        recommender = load_recommender(paths)
        player = None if offline else SpotifyPlayer.connect(settings)
        if player:
            print(f"Signed in to Spotify as {player.user_name}.")
        entries = plan_playlist(recommender, args.start, args.length, greedy=args.greedy, seed=args.seed)
        names = player.track_names(missing_names(entries, recommender.catalogue)) if player else {}
        print(format_steps(entries))
        print(playlist_table(entries, recommender.catalogue, names).to_string(index=False))
        if player is None:
            listener: Listener = simulated_listener(recommender, paths, seed=args.seed)
        else:
            listener = SpotifyListener(player, device_name=args.device, poll_interval=args.poll_interval,
                                       pause_timeout=args.pause_timeout)
        result = play_session(recommender, listener, entries, log_path, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"interrupted: the tracks finished so far, if any, are logged in {log_path}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (SpotifyError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if result.stop_reason == "finished":
        print(result.summary())
        return 0
    print(result.summary(), file=sys.stderr)
    return EXIT_INTERRUPTED if result.stop_reason == "interrupted" else EXIT_STOPPED_EARLY


if __name__ == "__main__":
    sys.exit(main())
