"""Artefacts are written atomically, and a damaged one is caught with the notebook to re-run."""
from __future__ import annotations

import io
import stat
import warnings

import numpy as np
import pytest
import torch

from helpers import paths as paths_module
from helpers.env import TrackPool, build_neighbour_index, load_neighbour_index
from helpers.paths import DamagedArtefact, ProjectPaths, atomic_write, save_parquet, write_bytes_atomic
from helpers.ppo import TrainingRun
from helpers.vae import TrainedVAE
from tests.conftest import make_rewards_table


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "artefact.bin"
    write_bytes_atomic(target, b"old and complete")
    target.chmod(0o640)
    with pytest.raises(RuntimeError, match="crash mid-write"):
        with atomic_write(target) as temporary:
            temporary.write_bytes(b"half of the n")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old and complete"
    assert [p.name for p in tmp_path.iterdir()] == ["artefact.bin"]
    write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o640, "mode kept"


def test_every_artefact_is_synced_before_it_replaces_the_old_one(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = paths_module.os.fsync, paths_module.os.replace
    monkeypatch.setattr(paths_module.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(paths_module.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b)))
    save_parquet(make_rewards_table(n_tracks=12, n_duplicates=2), tmp_path / "table.parquet")
    assert events == ["fsync", "replace"]


def test_a_damaged_neighbour_index_is_rebuilt_with_a_warning(tmp_path):
    pool = TrackPool.from_table(make_rewards_table(n_tracks=40))
    cache = tmp_path / "neighbours.npz"
    built = load_neighbour_index(pool, 6, cache)
    whole = cache.read_bytes()
    for damaged in (whole[: len(whole) // 2], b"not an index at all", b"PK\x03\x04" + b"\0" * 40):
        cache.write_bytes(damaged)
        with pytest.warns(UserWarning, match="neighbour index .* cannot be read .* rebuilding it"):
            again = load_neighbour_index(pool, 6, cache)
        np.testing.assert_array_equal(again, built)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_array_equal(load_neighbour_index(pool, 6, cache), built)
    np.testing.assert_array_equal(built, build_neighbour_index(pool.latents, 6))


def checkpoint_bytes(content: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(content, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("name, load, notebook", [
    ("ppo_candidate.pt", TrainingRun.load, "06_ppo"),
    ("ppo_candidate_v3.pt", TrainingRun.load, "08_adaptation"),
    ("vae.pt", TrainedVAE.load, "02_vae"),
])
def test_a_truncated_or_foreign_checkpoint_names_the_notebook_to_re_run(tmp_path, name, load, notebook):
    path = tmp_path / name
    whole = checkpoint_bytes({"config": {}, "weights": torch.zeros(1000)})
    for damaged, says in ((whole[: len(whole) // 2], "truncated or not a checkpoint"),
                          (b"garbage", "truncated or not a checkpoint"),
                          (whole, "is not a checkpoint of notebook")):
        path.write_bytes(damaged)
        with pytest.raises(DamagedArtefact, match=f"{says}.*re-run notebook {notebook}"):
            load(path)


def test_a_truncated_or_foreign_table_names_the_notebook_to_re_run(tmp_path):
    paths = ProjectPaths.at(tmp_path).ensure()
    table = paths.processed / "rewards.parquet"
    save_parquet(make_rewards_table(n_tracks=12, n_duplicates=2), table)
    assert len(paths.read_table("rewards")) == 12
    whole = table.read_bytes()
    for damaged in (whole[: len(whole) // 2], b"id,reward\na,1\n"):
        table.write_bytes(damaged)
        with pytest.raises(DamagedArtefact, match="truncated or not a parquet table .*re-run notebook 05_rewards"):
            paths.read_table("rewards")
        with pytest.raises(DamagedArtefact, match="re-run notebook 05_rewards"):
            TrackPool.from_parquet(table)
    with pytest.raises(FileNotFoundError, match="run notebook 04_listeners first"):
        paths.read_table("listeners")


def test_the_file_contract_names_every_artefact_once_and_who_writes_it(tmp_path):
    from helpers.paths import ARTEFACTS, produced_by

    paths = ProjectPaths.at(tmp_path)
    files = [paths.file(name, architecture="candidate", version=3) for name in ARTEFACTS]
    assert len(set(files)) == len(ARTEFACTS) and all(path.is_relative_to(tmp_path) for path in files)
    assert [produced_by(path) for path in files] == [artefact.produced_by for artefact in ARTEFACTS.values()]
    assert produced_by("ppo_original_v12.pt") == "08_adaptation" and produced_by("ppo_original.pt") == "06_ppo"
    assert produced_by("notes.txt") is None
    with pytest.raises(FileNotFoundError, match="neighbours.npz does not exist: run notebook 06_ppo first"):
        paths.existing("neighbours")


def test_every_notebook_named_in_the_file_contract_exists():
    from helpers.paths import ARTEFACTS, NOTEBOOKS_DIR

    notebooks = {path.stem for path in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")}
    assert {artefact.produced_by for artefact in ARTEFACTS.values()} <= notebooks
