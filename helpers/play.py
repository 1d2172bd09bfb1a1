"""Play a recommended playlist and log how it is heard: on Spotify, or by a simulated listener.

    python -m helpers.play                            # offline unless Spotify credentials are set
    python -m helpers.play --start 2cQ9D0cQjUJmLs8rWFkcRH --device "Kitchen speaker"
    python -m helpers.play --offline --length 10 --log /tmp/interactions.jsonl

The Recommender turns a start track into a playlist: at each step the policy gives the
candidates probabilities and one is chosen. A listener then plays the playlist, and each
finished track is appended to the interaction log as it happens (`helpers.session`):

- `SpotifyListener` (helpers.spotify): a person, on their own Spotify device;
- `SimulatedListener` (helpers.listeners): notebook 04's listener model, instant and seeded
  (offline mode).

Exit status of the command: 0 played and logged to the end; 1 an error (one line says what to
do); 3 stopped early (playback paused too long, left the playlist, or never started); 130
interrupted. In every case each track played so far is in the log.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helpers.feedback import DEFAULT_LOG_NAME
from helpers.paths import ProjectPaths
from helpers.recommend import Recommender
from helpers.session import (Listener, format_steps, missing_names, plan_playlist, play_session, playlist_table,
                             playlist_tracks, simulated_listener)
from helpers.spotify import SpotifyError, SpotifyListener, SpotifyPlayer, SpotifySettings

EXIT_STOPPED_EARLY = 3
EXIT_INTERRUPTED = 130


def resolve_offline(offline: bool | None, settings: SpotifySettings) -> bool:
    """Offline when asked, or, when `offline` is None, when no Spotify credentials are set."""
    return not settings.has_credentials if offline is None else bool(offline)


def load_recommender(paths: ProjectPaths) -> Recommender:
    """The trained recommender of the run at `paths` (its models/ and data/processed/)."""
    return Recommender.load(models_dir=paths.models, data_dir=paths.processed)


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
        steps = plan_playlist(recommender, args.start, args.length, greedy=args.greedy, seed=args.seed)
        names = player.track_names(missing_names(steps, recommender.catalogue)) if player else {}
        print(format_steps(steps, recommender.catalogue))
        print(playlist_table(steps, recommender.catalogue, names).to_string(index=False))
        if player is None:
            listener: Listener = simulated_listener(recommender, paths, seed=args.seed)
        else:
            listener = SpotifyListener(player, device_name=args.device, poll_interval=args.poll_interval,
                                       pause_timeout=args.pause_timeout, announce=print,
                                       aliases=recommender.aliases_of(playlist_tracks(steps)))
        result = play_session(recommender, listener, steps, log_path, progress=not args.no_progress)
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
