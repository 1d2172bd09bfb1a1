"""Play a recommended playlist and log how it is heard: in your browser, on Spotify, or by a simulated listener.

    python -m helpers.play --browser                  # Spotify's embed player: no Premium, no sign-in
    python -m helpers.play                            # offline unless Spotify credentials are set
    python -m helpers.play --start 2cQ9D0cQjUJmLs8rWFkcRH --device "Kitchen speaker"
    python -m helpers.play --offline --length 10 --log /tmp/interactions.jsonl
    python -m helpers.play --browser --sessions 3         # learn between playlists: 3 in a row

The Recommender turns a start track into a playlist: at each step the policy gives the
candidates probabilities and one is chosen. A listener then plays the playlist, and each
finished track is appended to the interaction log as it happens (`helpers.session`):

- `EmbedListener` (helpers.embed, `--browser`): a person, in Spotify's embed player on a local
  page (127.0.0.1 only, with a random token in its address) that the command opens; logged in to
  Spotify in that browser you hear whole songs, otherwise 30-second previews (logged as such).
  It ends when the playlist has been heard, on the page's stop button, on Ctrl-C, or when the
  page has been closed for a few seconds;
- `SpotifyListener` (helpers.spotify): a person, on their own Spotify device (Premium);
- `SimulatedListener` (helpers.listeners): notebook 04's listener model, instant and seeded
  (offline mode).

With `--sessions N` the command learns between playlists (`helpers.live`): it fits the
listener model (a taste posterior from the population prior) to every play of the learning log
so far (`helpers.feedback.learning_log`: your real plays, or the simulated ones offline;
previews left out), saves it as a new taste version in `models/` when the log changed, plans
the playlist on a Thompson draw of it (seeded by `--seed` and the session number) and plays it;
a session ends when its last song ends or is skipped, the model is updated from its plays and
the next session begins. With `--browser` every playlist plays in the one page (`EmbedPlayer`),
which says what comes next meanwhile and starts the next playlist by itself once you pressed
play. Each record's `model_version` names the policy and the taste version that chose it
("candidate-<digest>+taste-v2"); afterwards `Recommender.load()` (and this command without
`--sessions`) serves the newest version's posterior-mean table. A version is written
table first and JSON last, so an interrupted update leaves the previous version served. Without
`--sessions`, one playlist from the model `Recommender.load()` serves, and nothing is learnt.

Before any play request the command checks its input: the numbers are finite and positive, the
length fits the catalogue, the log can be appended to, and the trained models and the neighbour
index exist. Real plays are logged to `data/feedback/user_song_interactions.jsonl`, simulated
ones to `data/feedback/simulated_interactions.jsonl` (a simulated listener never enters a
person's history), unless `--log` says otherwise.

Exit status of the command: 0 played and logged to the end; 1 an error, before anything played
or during the session (one line says what to do; playback is paused); 2 a malformed command
line; 3 stopped early (playback paused too long, left the playlist, or never started); 130
interrupted. With `--sessions`, the first session that does not play to the end stops the loop
(after its plays are learnt) and gives the status. In every case each track played so far is in
the log, once.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import webbrowser
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from helpers.embed import EmbedListener, PlayerView
from helpers.embed_server import EmbedServer
from helpers.feedback import DEFAULT_LOG_NAME, SIMULATED_LOG_NAME, check_appendable, default_log_name
from helpers.listeners import simulated_listener
from helpers.live import LiveLearner, records_reader
from helpers.paths import ProjectPaths
from helpers.playback import Listener, PlaybackError
from helpers.playlists import check_length, format_steps, missing_names, plan_playlist, playlist_table, playlist_tracks
from helpers.recommend import PlaylistStep, Recommender, load_chain
from helpers.session import SessionResult, play_session
from helpers.spotify import SpotifyListener, SpotifyPlayer, SpotifySettings

EXIT_STOPPED_EARLY = 3
EXIT_INTERRUPTED = 130
ListenerKind = Literal["simulated", "spotify", "embed"]  # also the source its plays are logged under


def resolve_offline(offline: bool | None, settings: SpotifySettings) -> bool:
    """Offline when asked, or, when `offline` is None, when no Spotify credentials are set."""
    return not settings.has_credentials if offline is None else bool(offline)


def load_recommender(paths: ProjectPaths) -> Recommender:
    """The trained recommender of the run at `paths`; a clear FileNotFoundError naming the
    notebook to run when the policy or the neighbour index is missing."""
    paths.existing("neighbours")
    return load_chain(paths).recommender()


def check_seconds(name: str, value: float) -> float:
    """`value` if it is a finite number of seconds > 0, else ValueError naming the option."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value}")
    return value


def session_log(paths: ProjectPaths, log_path: str | Path | None, kind: ListenerKind) -> Path:
    """`log_path`, or the run's log for this kind of listener (a simulated listener never enters
    a person's history), checked to accept appended records."""
    return check_appendable(Path(log_path) if log_path else paths.feedback / default_log_name(kind))


@dataclass(frozen=True)
class PlannedSession:
    """A checked playlist and how to make the listener that will play it."""

    recommender: Recommender
    steps: list[PlaylistStep]
    table: pd.DataFrame  # the playlist as a table (`helpers.playlists.playlist_table`)
    make_listener: Callable[[], Listener]  # called when the playlist starts (the embed page opens then)

    def describe(self) -> str:
        """The policy's steps: each track's candidates by probability, and the choice."""
        return format_steps(self.steps, self.recommender.track_table)

    def play(self, log_path: Path, *, progress: bool = True) -> SessionResult:
        """Play the playlist, logging each track to `log_path` as it is heard."""
        return play_session(self.recommender, self.make_listener(), self.steps, log_path, progress=progress)


class EmbedPlayer:
    """Spotify's embed player, one page for every playlist of a run, and its one listener.

    The page is `view` (notebook 07's widget, `helpers.embed_widget.EmbedWidget`), or else a
    local page (`helpers.embed_server`) served as long as `stack` and opened in the default
    browser (only its address printed when not `open_page`). The listener, and the local page,
    are made when the first playlist starts; each next playlist replaces the last on the page.
    """

    def __init__(self, view: PlayerView | None = None, *, stack: ExitStack | None = None, open_page: bool = True,
                 announce: Callable[[str], None] = print) -> None:
        if view is None and stack is None:
            raise ValueError("the embed player needs a `view` (notebook 07's widget), or a `stack` to hold its "
                             "local page's server")
        self.view, self.stack, self.open_page, self.announce = view, stack, open_page, announce
        self._listener: EmbedListener | None = None

    def listener(self, table: pd.DataFrame) -> EmbedListener:
        """The page's listener, with the songs of `table` (`helpers.playlists.playlist_table`) to show."""
        if self._listener is None:
            self._listener = EmbedListener(self.view if self.view is not None else self._open_local_page())
        self._listener.label(table)
        return self._listener

    def note(self, text: str) -> None:
        """Say on the page what comes next (until the next playlist starts)."""
        if self._listener is not None:
            self._listener.note(text)

    def _open_local_page(self) -> EmbedServer:
        server = self.stack.enter_context(EmbedServer())
        self.announce(f"The player is at {server.url}" + ("" if self.open_page else ": open it in your browser") +
                      "\nPress play there; Ctrl-C or the page's stop button ends the session.")
        if self.open_page:
            webbrowser.open(server.url)
        return server


def set_up_session(paths: ProjectPaths, settings: SpotifySettings, *, kind: ListenerKind, start_id: str | None,
                   length: int, greedy: bool, seed: int | None, device_name: str | None = None,
                   poll_interval: float = 2.0, pause_timeout: float = 120.0, player: EmbedPlayer | None = None,
                   announce: Callable[[str], None] = print, recommender: Recommender | None = None) -> PlannedSession:
    """Everything before the first play, checked, for `python -m helpers.play` and notebook 07.

    Loads the run's recommender, checks the length and the seconds, signs in to Spotify for a
    "spotify" listener, plans the playlist from `start_id` (random when None; drawn from the
    policy unless `greedy`, with `seed`) and makes its listener: notebook 04's simulated
    listener, the person's Spotify device `device_name`, or Spotify's embed player ("embed":
    `player`'s page, the same for every playlist it plays). `recommender` replaces the run's
    (the live loop's, planning on its listener model).
    """
    if kind == "embed" and player is None:
        raise ValueError("the embed player's listener needs an EmbedPlayer (its widget, or a stack for its local page)")
    check_seconds("poll_interval", poll_interval)
    check_seconds("pause_timeout", pause_timeout)
    recommender = recommender or load_recommender(paths)
    check_length(recommender, length)
    spotify = SpotifyPlayer.connect(settings) if kind == "spotify" else None
    if spotify:
        announce(f"Signed in to Spotify as {spotify.user_name}.")
    steps = plan_playlist(recommender, start_id, length, greedy=greedy, seed=seed)
    names = spotify.track_names(missing_names(steps, recommender.track_table)) if spotify else {}
    table = playlist_table(steps, recommender.track_table, names)

    def make_listener() -> Listener:
        if kind == "embed":
            return player.listener(table)
        if spotify is None:
            return simulated_listener(paths, recommender.track_table["cluster"], seed=seed)
        return SpotifyListener(spotify, device_name=device_name, poll_interval=poll_interval,
                               pause_timeout=pause_timeout, announce=announce,
                               aliases=recommender.aliases_of(playlist_tracks(steps)))

    return PlannedSession(recommender, steps, table, make_listener)


def check_sessions(sessions: int) -> int:
    """`sessions` if it is a whole number >= 1, else ValueError."""
    if isinstance(sessions, bool) or not isinstance(sessions, int) or sessions < 1:
        raise ValueError(f"--sessions must be a whole number of playlists >= 1, got {sessions!r}")
    return sessions


def session_seed(seed: int | None, session: int) -> int | None:
    """The seed of session number `session` (0 first) of a loop seeded with `seed`."""
    return None if seed is None else int(np.random.SeedSequence([seed, session]).generate_state(1)[0])


def play_sessions(paths: ProjectPaths, settings: SpotifySettings, *, sessions: int | None, kind: ListenerKind,
                  log_path: Path, own_log: bool = False, seed: int | None = None, progress: bool = True,
                  show: Callable[[PlannedSession], None] | None = None, announce: Callable[[str], None] = print,
                  player: EmbedPlayer | None = None, **options) -> list[SessionResult]:
    """Play `sessions` playlists, learning between them (`helpers.live`), or with `sessions`
    None one playlist of the served model and no learning; `options` go to `set_up_session`.

    Each session's playlist is planned on a Thompson draw of the listener model fitted to the
    learning log (the run's, or `log_path` when `own_log`), played and logged; then the model is
    refitted and saved as a new version. The loop stops after the first session that does not
    play to the end. `show` sees each planned session before it plays. The embed `player` plays
    every playlist on its one page, which says between two what comes next.
    """
    if sessions is None:
        planned = set_up_session(paths, settings, kind=kind, seed=seed, announce=announce, player=player, **options)
        if show:
            show(planned)
        return [planned.play(log_path, progress=progress)]
    check_sessions(sessions)
    paths.existing("neighbours")
    learner = LiveLearner(load_chain(paths), records_reader(paths, kind == "simulated", log_path if own_log else None))
    learner.update()
    announce(f"Listener model: {learner.message}; taste version {learner.version}.")
    results: list[SessionResult] = []
    ended: float | None = None
    for number in range(sessions):
        planned = set_up_session(paths, settings, kind=kind, seed=session_seed(seed, number), announce=announce,
                                 recommender=learner.exploring(seed, number), player=player, **options)
        switch = "" if ended is None else f"; ready {time.perf_counter() - ended:.2f} s after the last play"
        announce(f"Session {number + 1} of {sessions}: planned on a Thompson draw of taste version "
                 f"{learner.version} ({planned.recommender.model_version}){switch}.")
        if show:
            show(planned)
        results.append(planned.play(log_path, progress=progress))
        ended = time.perf_counter()
        announce(results[-1].summary())
        if player is not None and results[-1].stop_reason == "finished" and number + 1 < sessions:
            player.note(f"Learning from what you heard: playlist {number + 2} of {sessions} comes next.")
        learner.update()
        announce(f"Listener model: {learner.message}; saved as taste version {learner.version} "
                 f"in {time.perf_counter() - ended:.2f} s.")
        if results[-1].stop_reason != "finished":
            break
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.play", description=__doc__.split("\n")[0],
        epilog="Spotify sign-in comes from SPOTIPY_CLIENT_ID, SPOTIPY_CLIENT_SECRET (none with PKCE) and "
               "SPOTIPY_REDIRECT_URI, or SPOTIFY_ACCESS_TOKEN; SPOTIFY_API_BASE points at another server. "
               "Exit status: 0 played to the end, 1 error, 2 bad command line, 3 stopped early, 130 interrupted.")
    parser.add_argument("--start", metavar="ID", help="start track id (default: random)")
    parser.add_argument("--length", metavar="N", type=int, default=10, help="tracks in the playlist (default 10)")
    parser.add_argument("--device", metavar="NAME", help="Spotify device to play on (default: the active one)")
    parser.add_argument("--poll-interval", metavar="SECONDS", type=float, default=2.0,
                        help="seconds between two looks at the playback (default 2)")
    parser.add_argument("--pause-timeout", metavar="SECONDS", type=float, default=120.0,
                        help="stop when nothing of the playlist plays for this long (default 120)")
    parser.add_argument("--log", metavar="PATH",
                        help=f"interaction log (default data/feedback/{DEFAULT_LOG_NAME} on Spotify, "
                             f"data/feedback/{SIMULATED_LOG_NAME} offline)")
    parser.add_argument("--browser", action="store_true",
                        help="listen in Spotify's embed player on a local page (no Premium, no sign-in)")
    parser.add_argument("--no-open", action="store_true",
                        help="with --browser: print the page's address instead of opening a browser")
    parser.add_argument("--offline", action="store_true", help="simulated listener, even with credentials")
    parser.add_argument("--greedy", action="store_true",
                        help="always the most probable candidate (default: drawn from the policy)")
    parser.add_argument("--sessions", metavar="N", type=int,
                        help="play N playlists in a row, learning your taste between them; each update is saved "
                             "as a taste version in models/ (default: one playlist, no learning)")
    parser.add_argument("--seed", type=int, help="seed of the start track, the choices and the simulated listener")
    parser.add_argument("--pkce", action="store_true", help="sign in with PKCE (no client secret)")
    parser.add_argument("--open-browser", action="store_true",
                        help="open the sign-in page and catch the redirect on its port (default: paste the URL)")
    parser.add_argument("--output-dir", metavar="DIR",
                        help="root of the run to use (its models/, data/processed/, data/feedback/)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sessions is not None and args.sessions < 1:
        parser.error(f"--sessions must be at least 1 (playlists to play in a row), got {args.sessions}")
    paths = ProjectPaths.at(args.output_dir)
    log_path: Path | str = args.log or "the interaction log"
    try:
        check_seconds("--poll-interval", args.poll_interval)
        check_seconds("--pause-timeout", args.pause_timeout)
        if args.browser and args.offline:
            raise ValueError("--browser and --offline exclude each other: a person listens in the browser")
        settings = SpotifySettings.from_environment(use_pkce=args.pkce or None, open_browser=args.open_browser)
        offline = not args.browser and resolve_offline(True if args.offline else None, settings)
        if offline and not args.offline:
            print("No Spotify credentials are set: playing offline with the simulated listener "
                  "(--browser: listen in Spotify's embed player).")
        kind: ListenerKind = "simulated" if offline else "embed" if args.browser else "spotify"
        log_path = session_log(paths, args.log, kind)
        with ExitStack() as stack:
            player = EmbedPlayer(stack=stack, open_page=not args.no_open) if kind == "embed" else None
            results = play_sessions(paths, settings, sessions=args.sessions, kind=kind, log_path=log_path,
                                    own_log=bool(args.log), seed=args.seed, progress=not args.no_progress,
                                    show=show_planned, start_id=args.start, length=args.length,
                                    greedy=args.greedy, device_name=args.device, poll_interval=args.poll_interval,
                                    pause_timeout=args.pause_timeout, player=player)
    except KeyboardInterrupt:
        print(f"interrupted: the tracks finished so far, if any, are logged in {log_path}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (PlaybackError, OSError, ValueError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    result = results[-1]
    if result.stop_reason == "finished":
        if args.sessions is None:
            print(result.summary())
        return 0
    if args.sessions is None:
        print(result.summary(), file=sys.stderr)
    return EXIT_INTERRUPTED if result.stop_reason == "interrupted" else EXIT_STOPPED_EARLY


def show_planned(planned: PlannedSession) -> None:
    """The planned playlist on the terminal: the policy's steps, then the table."""
    print(planned.describe())
    print(planned.table.to_string(index=False))


def one_line(error: Exception) -> str:
    """The error's message on one line (an OSError without a message says what it is)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
