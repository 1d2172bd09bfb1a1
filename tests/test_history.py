"""Importing a listener's own history: Spotify's data export and the Web API's lists, as real feedback."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fake_spotify import FakeSpotify, FakeTrack
from helpers import history
from helpers.feedback import HISTORY_LOG_NAME, learning_log, read_interactions
from helpers.history import HistoryEntryWarning, HistoryFormatError, import_history, read_export
from helpers.live import LiveLearner, records_reader
from helpers.paths import ProjectPaths
from helpers.playlists import plan_playlist, playlist_tracks
from helpers.recommend import Recommender, load_chain
from helpers.spotify import SpotifyPlayer, SpotifySettings
from conftest import LIVE_LENGTH as LENGTH

PRIVATE = {"ip_addr": "203.0.113.77", "ip_addr_decrypted": "198.51.100.23", "user_agent_decrypted": "Secret-Agent/9.1",
           "username": "private-username-xyz", "platform": "PlatformOS 42 (Secret Phone)", "conn_country": "QX-private-country"}


@pytest.fixture
def chain(live_run) -> ProjectPaths:
    """The live loop's run with notebook 01's and 02's files: songs "Song i" by Adele (and someone
    else), each song also listed under another release id (`other{i}`) in the aliases."""
    table = live_run.read_table("rewards")
    tracks = table[["id", "name"]].assign(artist="Adele, Someone Else")
    tracks.to_parquet(live_run.file("tracks"), index=False)
    pd.DataFrame({"id": [*tracks["id"], *("other" + tracks["id"])], "song_id": [*tracks["id"], *tracks["id"]]}
                 ).to_parquet(live_run.file("aliases"), index=False)
    table.filter(regex=r"^(id|latent_\d+)$").to_parquet(live_run.file("latents"), index=False)
    return live_run


def extended_entry(ts: str, track_id: str | None, ms_played: int = 180_000, **changes) -> dict:
    """One entry of the extended streaming history, private fields included, as Spotify writes it."""
    entry = {"ts": ts, **PRIVATE, "ms_played": ms_played,
             "master_metadata_track_name": None if track_id is None else f"Song {track_id[-5:].lstrip('0') or 0}",
             "master_metadata_album_artist_name": "Adele", "master_metadata_album_album_name": "An Album",
             "spotify_track_uri": None if track_id is None else f"spotify:track:{track_id}",
             "episode_name": None, "episode_show_name": None, "spotify_episode_uri": None,
             "audiobook_title": None, "audiobook_uri": None, "audiobook_chapter_uri": None,
             "audiobook_chapter_title": None, "reason_start": "trackdone", "reason_end": "trackdone",
             "shuffle": False, "skipped": False, "offline": False, "offline_timestamp": None, "incognito_mode": False}
    return {**entry, **changes}


def extended_plays() -> list[dict]:
    """Five music plays (one skipped, one of another release), a podcast episode and an audiobook chapter."""
    return [extended_entry("2024-03-01T10:00:05Z", "track00001"),
            extended_entry("2024-03-01T10:03:10Z", "track00002", ms_played=4_000, skipped=True, reason_end="fwdbtn"),
            extended_entry("2024-03-01T10:06:00Z", "othertrack00003"),
            extended_entry("2024-03-02T09:00:00Z", "track00001", ms_played=90_000, reason_end="endplay"),
            extended_entry("2024-03-02T09:05:00Z", "zzzNotInCatalogue1", master_metadata_track_name="Elsewhere",
                           master_metadata_album_artist_name="Unknown Band"),
            extended_entry("2024-03-02T10:00:00Z", None, episode_name="A Talk", spotify_episode_uri="spotify:episode:x"),
            extended_entry("2024-03-02T11:00:00Z", None, audiobook_title="A Book", audiobook_uri="spotify:show:y")]


def account_plays() -> list[dict]:
    """The account data's view of the first plays (no ids: names only), one by another spelling."""
    return [{"endTime": "2024-03-01 10:00", "artistName": "Adele", "trackName": "Song 1", "msPlayed": 180_000},
            {"endTime": "2024-03-01 10:03", "artistName": "Adele", "trackName": "Song 2", "msPlayed": 4_000},
            {"endTime": "2024-03-05 08:00", "artistName": "ADÈLE", "trackName": "Song 4 - Remastered 2011",
             "msPlayed": 200_000}]


def write_json(path: Path, value: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


def export_zip(path: Path, members: dict[str, object]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, value in members.items():
            archive.writestr(name, value if isinstance(value, (str, bytes)) else json.dumps(value))
    return path


def imported(paths: ProjectPaths, *sources: Path) -> history.ImportReport:
    return import_history(read_export(sources), paths)


def test_a_zipped_extended_history_imports_its_music_and_counts_the_rest(chain, tmp_path):
    archive = export_zip(tmp_path / "my_spotify_data.zip", {
        "Spotify Extended Streaming History/Streaming_History_Audio_2024_0.json": extended_plays(),
        "Spotify Extended Streaming History/ReadMeFirst_ExtendedStreamingHistory.pdf": "%PDF-1.4"})
    report = imported(chain, archive)
    assert report.counts["entries"] == 7 and report.counts["podcast"] == 1 and report.counts["audiobook"] == 1
    assert (report.music_plays, report.matched_plays, report.unmatched_plays) == (5, 4, 1)
    assert report.matched_tracks == 3 and report.top_unmatched_artists == [("Unknown Band", 1)]
    log = read_interactions(chain.feedback / HISTORY_LOG_NAME)
    assert log["track_id"].tolist() == ["track00001", "track00002", "track00003", "track00001"], \
        "another release's id is its song's"
    assert log["source"].eq("export").all() and log["liked"].isna().all()
    assert log["skipped"].tolist() == [False, True, False, False]
    assert log["percentage_listened"].tolist() == [1.0, 0.0, 1.0, 0.5], \
        "no durations in the catalogue: a song's length is its play heard to the end (180 s), 90 s of it is 0.5"
    assert log["share_from_evidence"].tolist() == [False, True, False, False], \
        "a skip of a song never heard to its end is the export's evidence, and marked so"
    assert report.no_share == 0 and report.export_durations == 2 and report.evidence_shares == 1
    assert "the catalogue has no durations" in report.describe()
    assert "2 songs' lengths taken from the export" in report.describe()


def test_a_play_without_any_length_and_neither_finished_nor_skipped_is_left_out(chain, tmp_path):
    ended = extended_entry("2024-03-02T09:00:00Z", "track00001", ms_played=90_000, reason_end="endplay")
    report = imported(chain, write_json(tmp_path / "Streaming_History_Audio_2024.json", [ended]))
    assert report.no_share == 1 and report.new_records == 0, "no share is invented"
    assert "1 matched plays left out: no duration" in report.describe()


def with_durations(paths: ProjectPaths, duration_ms: float = 200_000.0) -> ProjectPaths:
    """The chain's tracks with a duration each, as notebook 01 keeps it from a catalogue that has one."""
    paths.read_table("tracks").assign(duration_ms=duration_ms).to_parquet(paths.file("tracks"), index=False)
    return paths


def test_the_share_is_ms_played_over_the_catalogues_duration(chain, tmp_path):
    with_durations(chain)
    report = imported(chain, write_json(tmp_path / "Streaming_History_Audio_2024.json", extended_plays()))
    log = read_interactions(chain.feedback / HISTORY_LOG_NAME)
    assert log["percentage_listened"].tolist() == [0.9, 0.02, 0.9, 0.45] and report.no_share == 0


def test_a_second_import_and_the_account_data_beside_the_extended_history_add_nothing(chain, tmp_path):
    with_durations(chain)
    extended = write_json(tmp_path / "export" / "Streaming_History_Audio_2024_0.json", extended_plays())
    first = imported(chain, extended)
    again = imported(chain, tmp_path / "export")
    assert first.new_records == 4 and again.new_records == 0 and again.already_imported == 4
    account = write_json(tmp_path / "account" / "Spotify Account Data" / "StreamingHistory_music_0.json",
                         account_plays())
    report = imported(chain, tmp_path / "account")
    assert report.by_name == 3 and report.new_records == 1, "the same minute and song is the same play"
    log = read_interactions(chain.feedback / HISTORY_LOG_NAME)
    assert log["track_id"].tolist()[-1] == "track00004", "matched by normalised title and artist"
    assert len(log) == 5 and imported(chain, account).new_records == 0


def test_a_single_file_of_any_name_is_read_by_its_shape(chain, tmp_path):
    with_durations(chain)
    report = imported(chain, write_json(tmp_path / "plays.json", account_plays()))
    assert report.matched_plays == 3 and report.new_records == 3


def test_saved_tracks_of_the_library_are_liked(chain, tmp_path):
    with_durations(chain)
    folder = tmp_path / "export"
    write_json(folder / "StreamingHistory_music_0.json", account_plays())
    write_json(folder / "YourLibrary.json", {"tracks": [{"artist": "Adele", "album": "A", "track": "Song 1",
                                                         "uri": "spotify:track:track00001"}]})
    imported(chain, folder)
    log = read_interactions(chain.feedback / HISTORY_LOG_NAME)
    assert log.set_index("track_id")["liked"].eq(1).fillna(False).to_dict() == {
        "track00001": True, "track00002": False, "track00004": False}, "liked 1 for a saved track, else unknown"
    assert log["liked"].isna().sum() == 2


def test_private_fields_never_reach_a_written_file_or_the_report(chain, tmp_path, capsys):
    archive = export_zip(tmp_path / "export.zip", {"Streaming_History_Audio_2024_0.json": extended_plays()})
    assert history.main(["--output-dir", str(chain.root), str(archive)]) == 0
    printed = capsys.readouterr()
    written = [path for path in chain.root.rglob("*") if path.is_file()]
    assert any(path.name == HISTORY_LOG_NAME for path in written) and any("taste_v1" in path.name for path in written)
    for value in PRIVATE.values():
        assert value not in printed.out + printed.err
        for path in written:
            assert value.encode() not in path.read_bytes(), f"{value} in {path}"
    assert (chain.feedback / HISTORY_LOG_NAME).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("content, complaint", [
    (b"not json at all", "expected a JSON list of plays"),
    (b'{"plays": []}', "expected a JSON list of plays"),
    (b'[{"ts": "2024-01-01T00:00:00Z", "ms_played": 1}, 3]', "entry 2 is not a JSON object"),
    (b'[{"ts": "2024-01-01T00:00:00Z", "ms_played": 1', "not JSON"),
    (b'\xff\xfe[]', "not UTF-8"),
])
def test_a_file_that_is_no_history_names_itself_and_what_was_expected(chain, tmp_path, content, complaint):
    path = tmp_path / "Streaming_History_Audio_2024_0.json"
    path.write_bytes(content)
    with pytest.raises(HistoryFormatError, match=complaint) as raised:
        read_export([path])
    assert str(path) in str(raised.value)


def test_invalid_entries_are_skipped_with_a_warning_naming_file_entry_and_field(chain, tmp_path):
    entries = extended_plays()[:3] + [
        {key: value for key, value in extended_entry("2024-04-01T00:00:00Z", "track00005").items() if key != "ms_played"},
        extended_entry("2024-04-01T00:05:00Z", "track00006", ms_played=-5),
        extended_entry("2024-04-01T00:10:00Z", "track00007", ms_played=10**12),
        extended_entry("yesterday", "track00008"),
        extended_entry("2024-04-01T00:20:00Z", "track00009", a_field_of_a_newer_format=1)]
    path = write_json(tmp_path / "Streaming_History_Audio_2024_0.json", entries)
    with pytest.warns(HistoryEntryWarning) as caught:
        report = imported(chain, path)
    message = next(str(warning.message) for warning in caught if warning.category is HistoryEntryWarning)
    assert str(path) in message and "skipped 4 entries" in message
    assert "entry 4: ms_played must be" in message and "entry 5: ms_played" in message and "entry 6" in message
    assert "entry 7: ts must be a time, got 'yesterday'" in message
    assert report.counts["bad"] == 4 and report.new_records == 4, "extra fields are tolerated"


def test_archives_without_history_or_with_escaping_or_linked_members_are_refused(chain, tmp_path):
    with pytest.raises(HistoryFormatError, match="holds no Spotify listening history"):
        read_export([export_zip(tmp_path / "empty.zip", {"ReadMeFirst.pdf": "%PDF"})])
    with pytest.raises(HistoryFormatError, match="leaves the export's folder"):
        read_export([export_zip(tmp_path / "evil.zip", {"../Streaming_History_Audio_2024_0.json": []})])
    linked = tmp_path / "linked.zip"
    with zipfile.ZipFile(linked, "w") as archive:
        member = zipfile.ZipInfo("Streaming_History_Audio_2024_0.json")
        member.external_attr = (0o120777 << 16)
        archive.writestr(member, "/etc/passwd")
    with pytest.raises(HistoryFormatError, match="symbolic link"):
        read_export([linked])
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "StreamingHistory_music_0.json").symlink_to(write_json(tmp_path / "elsewhere.json", account_plays()))
    with pytest.raises(HistoryFormatError, match="symbolic link is not followed"):
        read_export([folder])
    assert not (chain.feedback / HISTORY_LOG_NAME).exists()


def test_a_large_file_is_streamed_entry_by_entry(tmp_path, monkeypatch):
    monkeypatch.setattr(history, "READ_CHARS", 64)
    path = write_json(tmp_path / "Streaming_History_Audio_2024_0.json", extended_plays() * 20)
    plays = read_export([path]).plays
    assert len(plays) == 100 and plays["track_id"].notna().sum() == 100


def test_spotify_top_recent_and_saved_tracks_are_imported_with_the_sign_in(chain):
    tracks = {f"track{i:05d}": FakeTrack(f"Song {i}") for i in range(1, 8)}
    top = {"short_term": ["track00001", "track00002"], "long_term": ["track00003"]}
    recent = [("track00004", "2025-02-01T10:00:00.123Z"), ("track00005", "2025-02-01T09:55:00Z")]
    with FakeSpotify(tracks, liked={"track00006", "track00001"}, top=top, recent=recent) as fake:
        player = SpotifyPlayer.connect(SpotifySettings(access_token=fake.token, api_base=fake.api_base))
        lists = player.top_tracks(), player.recently_played(), player.saved_tracks()
        assert fake.count("GET", "/me/top/tracks") == 3
    report = import_history(history.api_history(*lists, now=pd.Timestamp("2025-02-03T12:00Z")), chain)
    log = read_interactions(chain.feedback / HISTORY_LOG_NAME)
    assert report.new_records == 7 and log["source"].eq("spotify-api").all()
    assert sorted(log.loc[log["liked"].eq(1).fillna(False), "track_id"]) == ["track00001", "track00001", "track00006"]
    assert import_history(history.api_history(*lists, now=pd.Timestamp("2025-02-03T18:00Z")), chain).new_records == 0


def test_the_learning_log_reads_the_history_with_the_live_plays(chain, tmp_path):
    imported(chain, write_json(tmp_path / "Streaming_History_Audio_2024_0.json", extended_plays()))
    records, sentence = learning_log(chain.feedback)
    assert records["source"].eq("export").sum() == 4 and HISTORY_LOG_NAME in sentence


def test_the_first_playlist_after_an_import_favours_the_historys_songs_and_neighbours(chain, tmp_path):
    table = chain.read_table("rewards")
    loved = table["cluster"].to_numpy() == table["cluster"].value_counts().index[0]
    rng = np.random.default_rng(0)
    heard = np.concatenate([rng.choice(np.flatnonzero(loved), loved.sum() // 2, replace=False),
                            rng.choice(np.flatnonzero(~loved), 40, replace=False)])
    entries = [extended_entry(f"2024-05-01T{index // 60:02d}:{index % 60:02d}:00Z", table["id"][row],
                              ms_played=200_000 if loved[row] else 3_000, skipped=not loved[row],
                              reason_end="trackdone" if loved[row] else "fwdbtn")
               for index, row in enumerate(heard)]
    starts = table["id"][rng.choice(len(table), 20, replace=False)]
    before = playlists(Recommender.load(chain.root), starts)
    assert history.main(["--output-dir", str(chain.root),
                         str(write_json(tmp_path / "Streaming_History_Audio_2024_0.json", entries))]) == 0
    learner = LiveLearner(load_chain(chain), records_reader(chain, simulated=False))
    assert learner.version == 1, "the import saved a taste version"
    learner.update()
    unheard = np.setdiff1d(np.arange(len(table)), heard)
    taste, _ = learner.model.predict(unheard)
    assert taste[loved[unheard]].mean() > taste[~loved[unheard]].mean() + 0.05, "neighbours of loved songs rank higher"
    served = Recommender.load(chain.root)
    rewards = served.track_table["reward"].reindex(table["id"]).to_numpy()
    assert rewards[unheard][loved[unheard]].mean() > rewards[unheard][~loved[unheard]].mean(), "served at once"
    assert playlists(served, starts) != before, "the first playlist is planned on the history's model"


def playlists(recommender: Recommender, starts: pd.Series) -> list[list[str]]:
    return [playlist_tracks(plan_playlist(recommender, start, LENGTH, greedy=True)) for start in starts]


def test_notebook_07_imports_the_history_before_its_playlist(chain, tmp_path):
    from helpers import pipeline
    from helpers.recommend import taste_versions

    export = export_zip(tmp_path / "my_spotify_data.zip",
                        {"Spotify Extended Streaming History/Streaming_History_Audio_2024_0.json": extended_plays()})
    runs = pipeline.run_chain({"offline": True, "playlist_length": LENGTH, "history_paths": str(export)},
                              only=["07"], output_dir=chain.root, progress=False, png=False)
    log = chain.feedback / HISTORY_LOG_NAME
    assert len(read_interactions(log)) == 4 and log.stat().st_mode & 0o777 == 0o600
    assert taste_versions(chain.models) == [1], "the import saved a taste version before the playlist"
    printed = runs[0].executed_copy.read_text()
    assert "4 new records" in printed and "taste version 1" in printed
    written = [path for path in chain.root.rglob("*") if path.is_file()]
    for value in PRIVATE.values():
        assert not any(value.encode() in path.read_bytes() for path in written), f"{value} was written"
