"""The interaction log: exact keys, validation on write, append-only, malformed lines reported and kept."""
from __future__ import annotations

import json
import os
import resource
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import feedback
from helpers.feedback import (INTERACTION_KEYS, Interaction, MalformedLineWarning, append_interaction,
                              read_interactions)

DOCUMENTED_KEYS = ("timestamp", "session_id", "track_id", "position", "latent", "percentage_listened",
                   "liked", "source", "model_version", "candidates", "probs", "played_id", "preview",
                   "preview_duration_ms", "skipped", "share_from_evidence")


def record(**changes) -> dict:
    """A valid record (the track chosen at step 3 of a playlist), with `changes` applied."""
    values = dict(timestamp="2026-11-27T18:44:00.123+00:00", session_id="session-1", track_id="b",
                  position=3, latent=[0.1, 0.5, 0.9, 0.2, 0.4], percentage_listened=0.75, liked=1,
                  source="spotify", model_version="ppo-v1", candidates=["a", "b", "c", "d"],
                  probs=[0.1, 0.6, 0.2, 0.1])
    return {**values, **changes}


def test_keys_are_exactly_the_documented_ones():
    assert INTERACTION_KEYS == DOCUMENTED_KEYS
    assert list(json.loads(Interaction(**record()).to_json_line())) == list(DOCUMENTED_KEYS)


def test_written_records_read_back_as_a_tidy_frame(tmp_path):
    log = tmp_path / "feedback" / "log.jsonl"
    written = [Interaction(**record(position=0, track_id="s", candidates=[], probs=[], liked=0)),
               Interaction(**record()),
               Interaction(**record(session_id="session-2", source="simulated", percentage_listened=0.0))]
    for interaction in written:
        append_interaction(log, interaction)

    frame = read_interactions(log)

    assert list(frame.columns) == list(DOCUMENTED_KEYS)
    assert str(frame["timestamp"].dtype) == "datetime64[us, UTC]"
    assert frame["position"].tolist() == [0, 3, 3] and frame["liked"].tolist() == [0, 1, 1]
    assert frame["percentage_listened"].dtype == np.float64
    assert frame.loc[1, "candidates"] == ["a", "b", "c", "d"] and frame.loc[1, "probs"] == [0.1, 0.6, 0.2, 0.1]
    assert frame.loc[0, "candidates"] == [] and frame.loc[0, "probs"] == []
    assert frame["latent"].tolist() == [w.latent for w in written]


def test_numpy_values_are_stored_as_plain_json(tmp_path):
    interaction = Interaction(**record(position=np.int64(3), latent=np.array([0.25, 0.5], dtype=np.float32),
                                       percentage_listened=np.float64(0.5), liked=np.int64(1),
                                       probs=np.array([0.25, 0.25, 0.25, 0.25])))
    append_interaction(tmp_path / "log.jsonl", interaction)
    stored = json.loads((tmp_path / "log.jsonl").read_text())
    assert stored["latent"] == [0.25, 0.5] and stored["liked"] == 1 and stored["position"] == 3


@pytest.mark.parametrize("changes, complaint", [
    (dict(percentage_listened=1.2), "percentage_listened"),
    (dict(percentage_listened=float("nan")), "percentage_listened"),
    (dict(liked=2), "liked"),
    (dict(liked=0.5), "liked"),
    (dict(source="radio"), "source"),
    (dict(position=-1), "position"),
    (dict(latent=[]), "latent"),
    (dict(latent=[0.1, float("inf")]), "latent"),
    (dict(track_id="z"), "candidates"),
    (dict(probs=[0.5, 0.5, 0.5, 0.5]), "probs"),
    (dict(probs=[0.5, 0.5]), "differ in length"),
    (dict(timestamp="2026-11-27T18:44:00"), "time zone"),
    (dict(timestamp="yesterday"), "ISO 8601"),
    (dict(session_id=""), "session_id"),
    (dict(candidates="abcd"), "candidates"),
])
def test_invalid_records_are_refused_with_the_key_named(changes, complaint):
    with pytest.raises(ValueError, match=complaint):
        Interaction(**record(**changes))


def test_appending_never_rewrites_what_is_there(tmp_path):
    log = tmp_path / "log.jsonl"
    before = b'{"not": "a record"}\n' + Interaction(**record()).to_json_line().encode() + b"\n"
    log.write_bytes(before)
    append_interaction(log, Interaction(**record(track_id="c", position=4)))
    after = log.read_bytes()
    assert after.startswith(before) and after.count(b"\n") == 3


def test_each_record_is_synced_to_disk_as_it_is_written(tmp_path, monkeypatch):
    synced = []
    real_fsync = feedback.os.fsync
    monkeypatch.setattr(feedback.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    for position in range(3):
        append_interaction(tmp_path / "log.jsonl", Interaction(**record(position=position)))
    assert len(synced) == 3


def test_malformed_lines_are_reported_skipped_and_left_in_the_file(tmp_path):
    log = tmp_path / "log.jsonl"
    good = Interaction(**record()).to_json_line()
    missing_key = json.dumps({k: v for k, v in record().items() if k != "liked"})
    other = Interaction(**record(position=4)).to_json_line()
    lines = [good, "{this is not json", json.dumps(record(percentage_listened=1.5)), missing_key, "", other]
    log.write_text("\n".join(lines) + "\n")
    before = log.read_bytes()

    with pytest.warns(MalformedLineWarning) as caught:
        frame = read_interactions(log)

    message = str(caught[0].message)
    assert "line 2:" in message and "line 3: percentage_listened" in message and "line 4:" in message
    assert "missing ['liked']" in message and "line 1:" not in message and "line 6:" not in message
    assert len(frame) == 2
    assert log.read_bytes() == before


def test_a_torn_last_line_does_not_swallow_the_next_record(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(Interaction(**record()).to_json_line() + "\n" + '{"timestamp": "2026-11-2')
    append_interaction(log, Interaction(**record(track_id="c", position=4)))
    with pytest.warns(MalformedLineWarning, match="line 2:"):
        frame = read_interactions(log)
    assert frame["track_id"].tolist() == ["b", "c"]


def test_sources_filter(tmp_path):
    log = tmp_path / "log.jsonl"
    for position, source in enumerate(("spotify", "simulated", "spotify"), start=1):
        append_interaction(log, Interaction(**record(source=source, position=position)))
    assert len(read_interactions(log, sources="spotify")) == 2
    assert read_interactions(log, sources=["simulated"])["source"].tolist() == ["simulated"]
    with pytest.raises(ValueError, match="sources must be among"):
        read_interactions(log, sources=["radio"])


def test_missing_and_empty_logs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl: play a playlist first"):
        read_interactions(tmp_path / "nowhere.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    empty = read_interactions(tmp_path / "empty.jsonl")
    assert empty.empty and list(empty.columns) == list(DOCUMENTED_KEYS)
    assert isinstance(empty["timestamp"].dtype, pd.DatetimeTZDtype)


def test_liked_unknown_and_the_played_id_round_trip(tmp_path):
    log = tmp_path / "log.jsonl"
    append_interaction(log, Interaction(**record(liked=None, played_id="relinked-b")))
    append_interaction(log, Interaction(**record(position=4)))
    stored = json.loads(log.read_text().splitlines()[0])
    assert stored["liked"] is None and stored["played_id"] == "relinked-b"
    frame = read_interactions(log)
    assert str(frame["liked"].dtype) == "Int64" and frame["liked"].isna().tolist() == [True, False]
    assert frame["played_id"].tolist() == ["relinked-b", None]


def test_a_record_without_played_id_from_an_older_log_still_reads(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps(record()) + "\n")
    assert read_interactions(log)["played_id"].tolist() == [None]


def test_a_preview_round_trips_and_an_older_log_reads_as_no_preview(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps(record()) + "\n")  # written before previews were recorded
    append_interaction(log, Interaction(**record(position=4, source="embed", preview=True, preview_duration_ms=30_000)))
    frame = read_interactions(log)
    assert frame["preview"].tolist() == [False, True] and frame["preview"].dtype == bool
    assert str(frame["preview_duration_ms"].dtype) == "Int64"
    assert frame["preview_duration_ms"].isna().tolist() == [True, False] and frame["preview_duration_ms"][1] == 30_000


@pytest.mark.parametrize("changes", [dict(preview=True), dict(preview=False, preview_duration_ms=30_000),
                                     dict(preview=True, preview_duration_ms=0), dict(preview="yes"),
                                     dict(preview=True, preview_duration_ms=True)])
def test_a_preview_needs_its_duration_and_only_a_preview_has_one(changes):
    with pytest.raises(ValueError, match="preview"):
        Interaction(**record(**changes))


def test_the_log_is_created_readable_by_its_owner_only(tmp_path):
    append_interaction(tmp_path / "log.jsonl", Interaction(**record()))
    assert (tmp_path / "log.jsonl").stat().st_mode & 0o777 == 0o600
    older = tmp_path / "older.jsonl"
    older.write_text("")
    older.chmod(0o644)
    append_interaction(older, Interaction(**record()))
    assert older.stat().st_mode & 0o777 == 0o600, "a log others could read is made private"


def test_reading_keeps_the_first_record_of_a_session_position(tmp_path):
    log = tmp_path / "log.jsonl"
    for share in (0.25, 0.5, 0.75):
        append_interaction(log, Interaction(**record(percentage_listened=share)))
    append_interaction(log, Interaction(**record(position=4)))
    with pytest.warns(feedback.DuplicateRecordWarning) as caught:
        frame = read_interactions(log)
    assert frame["percentage_listened"].tolist() == [0.25, 0.75] and frame["position"].tolist() == [3, 4]
    message = str(caught[0].message)
    assert "line 2: session session-1 position 3 is already at line 1" in message and "line 3:" in message


@pytest.mark.parametrize("bad_line", [
    b"[" * 100_000 + b"]" * 100_000,                                    # RecursionError in json
    json.dumps(record(position=5, timestamp="2026-13-45T99:00:00+00:00")).encode(),   # impossible date
    json.dumps(record(position=5, timestamp="2026-11-27T18:44:00+25:00")).encode(),   # impossible time zone
    json.dumps(record(position=5, track_id="caf\u00e9", candidates=[], probs=[])).encode().replace(b"\\u00e9", b"\xe9"),  # Latin-1, not UTF-8
    b'{"timestamp": ' + b"9" * 5000 + b"}",                             # a huge malformed line
])
def test_any_malformed_line_is_skipped_with_a_short_warning(tmp_path, bad_line):
    log = tmp_path / "log.jsonl"
    log.write_bytes(Interaction(**record()).to_json_line().encode() + b"\n" + bad_line + b"\n"
                    + Interaction(**record(position=4)).to_json_line().encode() + b"\n")
    with pytest.warns(MalformedLineWarning) as caught:
        frame = read_interactions(log)
    assert frame["position"].tolist() == [3, 4]
    problem = str(caught[0].message).splitlines()[1].strip()
    assert problem.startswith("line 2: ") and len(problem) <= len("line 2: ") + 200


def test_check_appendable_refuses_what_cannot_be_appended_to(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(feedback.LogNotWritable, match=f"cannot append to the interaction log {tmp_path} "
                                                      r"\(Is a directory\)"):
        feedback.check_appendable(tmp_path)
    for inside_a_file in (tmp_path / "a-file" / "log.jsonl", tmp_path / "a-file" / "deeper" / "log.jsonl"):
        with pytest.raises(feedback.LogNotWritable, match=f"{tmp_path / 'a-file'} is a file, not a folder"):
            feedback.check_appendable(inside_a_file)
    log = feedback.check_appendable(tmp_path / "new" / "log.jsonl")
    assert not log.exists(), "a log that did not exist is not left behind, empty"
    log.write_text("earlier\n")
    assert feedback.check_appendable(log).read_text() == "earlier\n"

    class Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(feedback.os, "fstatvfs", lambda fd: Full())
    with pytest.raises(feedback.LogNotWritable, match="is full"):
        feedback.check_appendable(tmp_path / "new" / "log.jsonl")


def test_fine_tuning_learns_from_real_plays_when_there_are_any_else_from_simulated_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="play a playlist first"):
        feedback.learning_log(tmp_path)
    simulated = tmp_path / feedback.SIMULATED_LOG_NAME
    append_interaction(simulated, Interaction(**record(source="simulated", session_id="sim")))
    frame, which = feedback.learning_log(tmp_path)
    assert frame["session_id"].tolist() == ["sim"] and "simulated" in which and "no real plays" in which

    real = tmp_path / feedback.DEFAULT_LOG_NAME
    append_interaction(real, Interaction(**record(source="simulated", session_id="old-make-run")))
    assert feedback.learning_log(tmp_path)[0]["session_id"].tolist() == ["sim"], "simulated records never count as real"
    append_interaction(real, Interaction(**record(session_id="person")))
    frame, which = feedback.learning_log(tmp_path)
    assert frame["session_id"].tolist() == ["person"] and "1 spotify records" in which
    assert feedback.learning_log(tmp_path, "simulated")[0]["session_id"].tolist() == ["sim"]


# --- the log cannot be redirected ---------------------------------------------------------------

def test_a_log_that_is_a_symbolic_link_is_not_followed(tmp_path):
    target = tmp_path / "someone_elses.txt"
    target.write_text("theirs\n")
    target.chmod(0o644)
    log = tmp_path / "log.jsonl"
    log.symlink_to(target)
    for attempt in (lambda: feedback.check_appendable(log), lambda: append_interaction(log, Interaction(**record()))):
        with pytest.raises(feedback.LogNotWritable, match=f"the interaction log {log} is a symbolic link, which "
                                                          "is not followed"):
            attempt()
    assert target.read_text() == "theirs\n" and target.stat().st_mode & 0o777 == 0o644
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(feedback.LogNotWritable, match="is a symbolic link"):
        feedback.check_appendable(dangling)
    assert not (tmp_path / "nowhere").exists() and dangling.is_symlink()


def test_a_log_must_be_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path in (Path("/dev/full"), fifo):
        with pytest.raises(feedback.LogNotWritable, match=f"the interaction log {path} is not a regular file"):
            feedback.check_appendable(path)


def test_the_pre_check_writes_and_syncs_a_probe_and_write_errors_name_the_path(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    assert feedback.check_appendable(log) == log and sorted(tmp_path.iterdir()) == [], "no probe is left behind"
    monkeypatch.setattr(feedback, "PROBE_BYTES", 128 << 10)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, hard))
        with pytest.raises(feedback.LogNotWritable, match=f"cannot append to the interaction log {log} "
                                                          r"\(File too large\)"):
            feedback.check_appendable(log)
        with log.open("wb") as file:
            file.write(b"\n" * ((64 << 10) - 10))
        with pytest.raises(feedback.LogNotWritable, match=rf"could not write the record of track 'b' \(position 3\) "
                                                          rf"to the interaction log {log} \(File too large\)"):
            append_interaction(log, Interaction(**record()))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert sorted(tmp_path.iterdir()) == [log]


def test_embed_plays_are_real_plays_and_previews_are_left_out_of_learning(tmp_path):
    real = tmp_path / feedback.DEFAULT_LOG_NAME
    assert feedback.default_log_name("embed") == feedback.DEFAULT_LOG_NAME
    append_interaction(real, Interaction(**record(source="embed", session_id="free", preview=True,
                                                  preview_duration_ms=30_000, percentage_listened=1.0)))
    append_interaction(tmp_path / feedback.SIMULATED_LOG_NAME, Interaction(**record(source="simulated")))
    frame, which = feedback.learning_log(tmp_path)
    assert frame["source"].tolist() == ["simulated"], "a whole preview is no whole listen"
    append_interaction(real, Interaction(**record(source="embed", session_id="logged-in")))
    append_interaction(real, Interaction(**record(session_id="premium")))
    frame, which = feedback.learning_log(tmp_path)
    assert frame["session_id"].tolist() == ["logged-in", "premium"]
    assert "2 spotify and embed records" in which and "1 preview(s) left out" in which
    assert feedback.learning_log(tmp_path, "embed")[0]["session_id"].tolist() == ["logged-in"]
