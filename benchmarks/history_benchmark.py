"""History benchmark: how far a person's imported Spotify history takes the taste model before any playlist.

    .venv/bin/python benchmarks/history_benchmark.py                      # the repository's run
    .venv/bin/python benchmarks/history_benchmark.py --prepare --catalogues embedded tidytuesday=/tmp/tt

For every catalogue (a finished chain 01-06, see `catalogues.py`) and listener seed, a hidden
"smooth taste" person (`helpers.people`) gets a listening history of 100, 1,000 and 10,000
plays, written as Spotify writes the extended streaming history
(`Streaming_History_Audio_*.json`, private fields included, which the import must drop):

- which songs: people play what they like, so a play is of song i with probability
  proportional to exp(t_i / `CHOICE_TEMPERATURE`), t_i the person's taste;
- how much: the share heard is a play of the person (`Person.listen`); a play heard to 95 %
  or more ends `trackdone` with the whole song's `ms_played`, any other is skipped
  (`reason_end` fwdbtn, `skipped` true) at that share of the song's duration (the
  catalogue's `duration_ms`, or 3.5 minutes where it has none).

The export goes through the real import (`helpers.history.read_export`, `import_history`,
into a copy of the chain's tables), and the records it writes are observed as one session
before any playlist, as the live loop observes them (`helpers.live.LiveLearner`). Then the
adaptation measure runs as for a person without history (`helpers.adaptation.Study`): the
share of the knowable gap after 0, 1, 3 and 10 playlists.

Also measured: the import's time for `--speed-plays` plays (default 100,000) on the first catalogue.
Writes `history_benchmark.md` and `.csv` to `--results-dir` (default: the first catalogue's runs/).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from catalogues import ChainRun, add_catalogue_arguments, results_folder
from tables import markdown_table

from helpers.adaptation import CHECKPOINTS, ServedChain, Study, TasteLearner, load_served_chain, playlist_returns
from helpers.feedback import HISTORY_LOG_NAME, HISTORY_SOURCES, read_interactions
from helpers.history import import_history, read_export
from helpers.paths import ProjectPaths, write_text_atomic
from helpers.people import Person, make_person

CHOICE_TEMPERATURE = 0.1  # taste 0.9 against 0.4: e^5, about 150 times as likely to be played
FINISHED_SHARE = 0.95  # heard this far, a play ends on its own (`trackdone`)
NOMINAL_DURATION_MS = 210_000  # a song's length where the catalogue has none
ENTRIES_PER_FILE = 15_000  # Spotify splits the extended history into files of about this many plays
HISTORY_SIZES = (0, 100, 1_000, 10_000)


def synthetic_export(person: Person, tracks: pd.DataFrame, n_plays: int, folder: Path, seed: int) -> list[Path]:
    """`n_plays` plays of `person` over the songs of `tracks` (rows aligned with the person's songs)
    as Spotify's extended streaming history files in `folder`, one play every 4 minutes."""
    rng = np.random.default_rng(seed)
    weights = np.exp((person.taste - person.taste.max()) / CHOICE_TEMPERATURE)
    rows = rng.choice(len(tracks), n_plays, p=weights / weights.sum())
    listened, _ = person.listen(rows)
    duration = (tracks["duration_ms"].to_numpy(np.float64)[rows] if "duration_ms" in tracks
                else np.full(n_plays, float(NOMINAL_DURATION_MS)))
    duration = np.where(np.isfinite(duration) & (duration > 0), duration, NOMINAL_DURATION_MS)
    finished = listened >= FINISHED_SHARE
    ms_played = np.where(finished, duration, np.round(listened * duration)).astype(np.int64)
    ended = pd.Timestamp("2020-01-01T08:00:00Z") + pd.to_timedelta(np.arange(n_plays) * 4, unit="min")
    names = tracks["name"].astype(str).to_numpy() if "name" in tracks else np.full(len(tracks), "")
    artists = tracks["artist"].astype(str).to_numpy() if "artist" in tracks else np.full(len(tracks), "")
    ids = tracks["id"].astype(str).to_numpy()
    entries = [{"ts": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "platform": "android", "ms_played": int(ms),
                "conn_country": "SE", "ip_addr": "192.0.2.1", "master_metadata_track_name": names[row],
                "master_metadata_album_artist_name": artists[row], "master_metadata_album_album_name": "",
                "spotify_track_uri": f"spotify:track:{ids[row]}", "episode_name": None, "reason_start": "clickrow",
                "reason_end": "trackdone" if done else "fwdbtn", "shuffle": False, "skipped": not done,
                "offline": False, "incognito_mode": False}
               for when, ms, row, done in zip(ended, ms_played, rows, finished)]
    files = []
    for number, start in enumerate(range(0, n_plays, ENTRIES_PER_FILE)):
        path = folder / f"Streaming_History_Audio_2020_{number}.json"
        path.write_text(json.dumps(entries[start:start + ENTRIES_PER_FILE]))
        files.append(path)
    return files


def chain_copy(paths: ProjectPaths, folder: Path) -> ProjectPaths:
    """A run at `folder` holding copies of the tables the import reads (its history log starts empty)."""
    copy = ProjectPaths.at(folder)
    copy.processed.mkdir(parents=True)
    for artefact in ("tracks", "aliases", "latents"):
        if paths.file(artefact).exists():
            shutil.copyfile(paths.file(artefact), copy.file(artefact))
    return copy


def imported_learner(chain: ServedChain, run: ProjectPaths, person: Person, n_plays: int, seed: int,
                     ) -> tuple[TasteLearner, float]:
    """The taste learner after observing `n_plays` imported history plays of `person` (one session,
    as the live loop does), and the import's seconds (reading the export, matching, writing the log)."""
    learner = TasteLearner(chain, seed=seed)
    if not n_plays:
        return learner, 0.0
    with tempfile.TemporaryDirectory(prefix="history-benchmark-") as scratch:
        copy = chain_copy(run, Path(scratch) / "run")
        export = Path(scratch) / "export"
        export.mkdir()
        synthetic_export(person, run.read_table("tracks").set_index("id").loc[chain.pool.ids].reset_index(),
                         n_plays, export, seed)
        began = time.perf_counter()
        import_history(read_export([export]), copy)
        seconds = time.perf_counter() - began
        records = read_interactions(copy.feedback / HISTORY_LOG_NAME, sources=HISTORY_SOURCES)
    rows = chain.pool.rows_of(records["track_id"])
    learner.model.observe(rows, records["percentage_listened"].to_numpy(np.float64),
                          records["share_from_evidence"].to_numpy(bool))
    learner.model.end_session()
    return learner, seconds


def measure(catalogue: ChainRun, seed: int, n_eval_starts: int) -> pd.DataFrame:
    """One smooth-taste person (seed `seed`): the taste model with each history size, after 0, 1, 3, 10 playlists."""
    chain = load_served_chain(catalogue.paths)
    person = make_person("smooth taste", chain.pool.table, chain.listener_model, seed=seed)
    study = Study.build(chain, person, seed=seed, n_eval_starts=n_eval_starts)
    references = study.references(person)
    truth = person.true_rewards(chain.proximity, chain.weights)
    frames = []
    for n_plays in HISTORY_SIZES:
        history_person = make_person("smooth taste", chain.pool.table, chain.listener_model, seed=seed)
        history_person.rng = np.random.default_rng([seed, n_plays])  # the history's plays, apart from the study's
        learner, seconds = imported_learner(chain, catalogue.paths, history_person, n_plays, seed)
        before = playlist_returns(learner.playlists(study.eval_starts), truth).mean()
        start = pd.DataFrame([{"playlists": 0, "return": before, "regret": 0.0,
                               **{f"R_{name}": value for name, value in references.items()}}])
        after = study.run(learner, plan=False)
        frame = pd.concat([start, after], ignore_index=True)
        frame["share_knowable"] = (frame["return"] - frame["R_none"]) / (frame["R_knowable"] - frame["R_none"])
        frames.append(frame.assign(history_plays=n_plays, import_seconds=seconds))
    return pd.concat(frames, ignore_index=True).assign(catalogue=catalogue.name, seed=seed,
                                                      n_songs=chain.pool.n_tracks)


def import_speed(catalogue: ChainRun, n_plays: int, seed: int = 0) -> float:
    """Seconds to read and import `n_plays` plays of a smooth-taste person (the export's writing not counted)."""
    chain = load_served_chain(catalogue.paths)
    person = make_person("smooth taste", chain.pool.table, chain.listener_model, seed=seed)
    return imported_learner(chain, catalogue.paths, person, n_plays, seed)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_catalogue_arguments(parser, "history_benchmark", "notebooks 01-06")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="listener seeds (default 0-4)")
    parser.add_argument("--eval-starts", type=int, default=100, help="held-out starts per measure (default 100)")
    parser.add_argument("--speed-plays", type=int, default=100_000, help="plays of the speed measure (default 100,000)")
    args = parser.parse_args()
    if args.prepare:
        for catalogue in args.catalogues:
            catalogue.prepare()
    began = time.perf_counter()
    folder = results_folder(args)
    frames = []
    for catalogue in args.catalogues:
        for seed in args.seeds:
            frames.append(measure(catalogue, seed, args.eval_starts))
            write_text_atomic(folder / "history_benchmark.csv", pd.concat(frames).to_csv(index=False))
            print(f"{catalogue.name} / seed {seed}: done ({time.perf_counter() - began:.0f} s)", flush=True)
    results = pd.concat(frames, ignore_index=True)
    grouped = results.groupby(["catalogue", "history_plays", "playlists"], sort=False)
    summary = grouped["share_knowable"].agg(["mean", "std", "size"])
    summary["ci95"] = 1.96 * summary["std"] / np.sqrt(summary["size"])
    summary = summary.join(grouped["regret"].mean()).drop(columns="std").rename(columns={"size": "seeds"})
    table = summary["mean"].unstack("playlists").round(2)
    speed = import_speed(args.catalogues[0], args.speed_plays)
    report = [f"# History benchmark\n\n{len(args.seeds)} smooth-taste listener seeds, {args.eval_starts} held-out "
              f"starts, histories of {', '.join(map(str, HISTORY_SIZES))} plays, checkpoints after 0 and "
              f"{', '.join(map(str, CHECKPOINTS))} playlists; {os.cpu_count()} CPUs, "
              f"{time.perf_counter() - began:.0f} s in all.\n",
              "Share of the knowable gap (mean over seeds), by history plays and playlists heard:\n",
              markdown_table(table.reset_index()), "\nWith 95 % intervals and regret:\n",
              markdown_table(summary.reset_index().round(3)),
              f"\nImport of {args.speed_plays:,} plays on {args.catalogues[0].name}: {speed:.1f} s "
              f"(reading the export, matching, writing the log).\n"]
    write_text_atomic(folder / "history_benchmark.md", "\n".join(report) + "\n")
    print("\n".join(report))


if __name__ == "__main__":
    main()
