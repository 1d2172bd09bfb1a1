"""The notebook chain: selection, parameters, the whole quick run, determinism, failures."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import pipeline
from helpers.data import FEATURES
from helpers.paths import ProjectPaths
from helpers.plots import find_chrome
from tests.conftest import SHORT_TRAINING

NOTEBOOKS = pipeline.discover_notebooks()


def test_select_only_and_from():
    names = [nb.name[:2] for nb in NOTEBOOKS]
    assert [nb.name[:2] for nb in pipeline.select_notebooks(NOTEBOOKS, only=["2", "03"])] == ["02", "03"]
    assert [nb.name[:2] for nb in pipeline.select_notebooks(NOTEBOOKS, start="02")] == names[1:]
    with pytest.raises(pipeline.ChainError, match="no notebook numbered '99'"):
        pipeline.select_notebooks(NOTEBOOKS, only=["99"])


@pytest.mark.parametrize("text, value", [("3", 3), ("0.5", 0.5), ("True", True), ("None", None),
                                         ("false", False), ("TRUE", True), (" False ", False),
                                         ("[1, 2]", [1, 2]), ("{'a': [1, None]}", {"a": [1, None]}),
                                         ("some/path.csv", "some/path.csv"), ("'quoted'", "quoted")])
def test_parse_value(text, value):
    parsed = pipeline.parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def injection(marker) -> str:
    """The bytes literal that papermill wrote unescaped into the parameters cell: it runs a command."""
    return f"""b'";__import__("os").system("touch {marker}");"'"""


@pytest.mark.parametrize("text, expected", [
    (injection("/nonexistent/x"), "is a bytes"), ("(1, 2)", "is a tuple"), ("{1, 2}", "is a set"),
    ("{1: 'a'}", "has the key 1 of type int"), ("[1, {'a': (2,)}]", r"\[1\]\['a'\] is a tuple"),
    ("1e999", "is inf"), ("[1, 2", "starts like a Python literal"), ("'unclosed", "starts like"),
    ("{'a': 1", "starts like"), ("(", "starts like"),
])
def test_parameter_values_that_are_not_plain_data_are_refused(text, expected):
    with pytest.raises(pipeline.ChainError, match=rf"artists.*{expected}"):
        pipeline.parse_value(text, "artists")


def test_injected_code_in_a_parameter_never_runs(tmp_path, capsys):
    marker = tmp_path / "ran"
    code = pipeline.main(["--only", "01", "-p", "artists", injection(marker), "--output-dir", str(tmp_path),
                          "--no-progress"])
    assert code == 1 and "parameter 'artists' is a bytes" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "runs").exists()
    with pytest.raises(pipeline.ChainError, match="parameter 'artists' is a bytes"):
        pipeline.run_chain({"artists": b'";open("x", "w");"'}, only=["01"], output_dir=tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name, value, expected", [
    ("greedy", "false ", r"-p greedy: expected True or False \(its notebook default is False\), got 'false '"),
    ("greedy", 0, "expected True or False"), ("seed", True, "-p seed: expected a number"),
])
def test_parameter_with_a_bool_or_number_default_takes_only_that_type(tmp_path, name, value, expected):
    with pytest.raises(pipeline.ChainError, match=expected):
        pipeline.run_chain({name: value}, output_dir=tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda nb: nb.name)
def test_notebooks_are_committed_clean_and_parameterised(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert all(not cell.get("outputs") and cell.get("execution_count") is None for cell in code)
    assert json.loads(notebook.read_text())["metadata"]["kernelspec"]["name"] == "python3"
    assert cells[0]["cell_type"] == "markdown", "a notebook opens with a markdown cell that says what it does"
    assert {"seed", "output_dir"} <= pipeline.declared_parameters(notebook)


def test_every_kernel_has_sockets_of_its_own_in_the_private_runtime_folder():
    """Two chains at once (the suite's two workers) once shared `kernel-ipc` in the notebooks' folder
    and a runner reached the other's kernel ("Invalid Signature")."""
    from jupyter_core.paths import jupyter_runtime_dir

    first, second = (pipeline.kernel_config().KernelManager for _ in range(2))
    assert first.transport == second.transport == "ipc" and first.ip != second.ip
    runtime = Path(jupyter_runtime_dir())
    assert Path(first.ip).parent == runtime and runtime.stat().st_mode & 0o077 == 0


def test_unknown_parameter_is_an_error(tmp_path):
    with pytest.raises(pipeline.ChainError, match="no_such_parameter"):
        pipeline.run_chain({"no_such_parameter": 1}, output_dir=tmp_path, progress=False)


@pytest.mark.parametrize("name", ["client_secret", "spotify_access_token", "Refresh_Token", "PASSWORD",
                                  "my_secret_key"])
def test_parameters_named_like_a_secret_are_refused_before_anything_runs(tmp_path, capsys, name):
    code = pipeline.main(["--only", "07", "-p", name, "hunter2-value", "--output-dir", str(tmp_path), "--no-progress"])
    error = capsys.readouterr().err
    assert code == 1 and name in error and "SPOTIPY_CLIENT_SECRET" in error and "environment" in error
    assert "hunter2-value" not in error and not (tmp_path / "runs").exists()


def test_failing_notebook_is_named_with_its_error(tmp_path, capsys):
    code = pipeline.main(["--only", "01", "-p", "catalogue_path", str(tmp_path / "missing.csv"),
                          "--output-dir", str(tmp_path), "--no-progress"])
    error = capsys.readouterr().err
    assert code == 1
    assert "01_filter.ipynb failed in cell" in error and "missing.csv" in error


def test_notebook_01_reads_any_table_through_column_map_and_writes_songs(tmp_path):
    """The mapping parameter from the command line; twins in the table become one song."""
    values = dict(zip(FEATURES, [0.5, 0.6, 5, -6.0, 1, 0.05, 0.2, 0.0, 0.1, 0.4, 120.0]))
    rows = [{"song_id": "s1", "performer": "Adele", "title": "Hello", **values},
            {"song_id": "s2", "performer": "Adele", "title": "Hello - Single Version", **values, "tempo": 99.0},
            {"song_id": "s3", "performer": "Adele", "title": "Skyfall", **values, "energy": 0.1}]
    pd.DataFrame(rows).to_csv(tmp_path / "mine.csv", index=False)
    code = pipeline.main(["--only", "01", "-p", "catalogue_path", str(tmp_path / "mine.csv"),
                          "-p", "column_map", "{'id': 'song_id', 'artist': 'performer', 'name': 'title'}",
                          "--output-dir", str(tmp_path), "--no-progress", "--no-png"])
    assert code == 0
    assert not list(ProjectPaths.at(tmp_path).figures.glob("*.png")) and list(
        ProjectPaths.at(tmp_path).figures.glob("01_*.html")), "--no-png: interactive HTML figures only"
    (run_folder,) = ProjectPaths.at(tmp_path).runs.iterdir()
    assert run_folder.stat().st_mode & 0o777 == 0o700, "executed copies may hold listening data"
    assert (run_folder / "01_filter.ipynb").stat().st_mode & 0o777 == 0o600
    processed = ProjectPaths.at(tmp_path).processed
    tracks = pd.read_parquet(processed / "tracks.parquet")
    assert tracks[["id", "artist", "name"]].values.tolist() == [["s1", "Adele", "Hello"], ["s3", "Adele", "Skyfall"]]
    aliases = pd.read_parquet(processed / "aliases.parquet")
    assert aliases.values.tolist() == [["s1", "s1"], ["s2", "s1"], ["s3", "s3"]]


@pytest.fixture(scope="module")
def quick_chain(tmp_path_factory):
    """The whole chain in quick mode with short training, in a private folder."""
    root = tmp_path_factory.mktemp("chain")
    runs = pipeline.run_chain(SHORT_TRAINING, quick=True, output_dir=root, progress=False)
    return root, runs


def test_quick_chain_produces_every_artefact(quick_chain):
    root, runs = quick_chain
    paths = ProjectPaths.at(root)
    assert [run.notebook.name for run in runs] == [nb.name for nb in NOTEBOOKS]
    assert all(run.executed_copy.exists() and run.executed_copy.parent.parent == paths.runs for run in runs)
    for name in ("tracks.parquet", "aliases.parquet", "latents.parquet", "clusters.parquet",
                 "listeners.parquet", "listener_model.json", "rewards.parquet"):
        assert (paths.processed / name).stat().st_size > 0, name
    assert any(paths.models.iterdir()), "the chain saves its models"
    assert all(run.executed_copy.stat().st_mode & 0o777 == 0o600 for run in runs)
    assert (paths.figures / "07_session_feedback.html").stat().st_mode & 0o777 == 0o600
    for notebook in NOTEBOOKS:
        number = notebook.name[:2]
        assert list(paths.figures.glob(f"{number}_*.html")), f"{notebook.name} saved no figure"
        if find_chrome():
            assert list(paths.figures.glob(f"{number}_*.png")), f"{notebook.name} saved no PNG"


def test_rewards_table_has_the_documented_columns(quick_chain):
    root, _ = quick_chain
    rewards = pd.read_parquet(ProjectPaths.at(root).processed / "rewards.parquet")
    latents = [c for c in rewards.columns if c.startswith("latent_")]
    expected = ["id", "artist", *FEATURES, *latents, "cluster", "distance_to_centroid", "proximity_score",
                "umap_x", "umap_y", "percentage_listened", "liked", "interaction_score", "reward"]
    assert list(rewards.columns) == expected
    assert latents == [f"latent_{i}" for i in range(len(latents))] and len(latents) == 5
    # The embedded catalogue's 1,478 ids are 1,420 songs: 58 ids repeat another's recording.
    assert rewards["id"].is_unique and len(rewards) == 1420
    assert rewards[latents].min().min() >= 0 and rewards[latents].max().max() <= 1


def test_same_seed_gives_identical_rewards(quick_chain, tmp_path):
    root, _ = quick_chain
    pipeline.run_chain(quick=True, only=["01", "02", "03", "04", "05"], output_dir=tmp_path, progress=False, png=False)
    first = pd.read_parquet(ProjectPaths.at(root).processed / "rewards.parquet")
    second = pd.read_parquet(ProjectPaths.at(tmp_path).processed / "rewards.parquet")
    pd.testing.assert_frame_equal(first, second, check_exact=True)


def test_summary_names_what_was_produced(quick_chain):
    root, runs = quick_chain
    text = pipeline.summary(runs, root)
    assert "rewards.parquet" in text and "Figures in" in text
    assert all(run.notebook.name in text for run in runs)


def test_a_longer_playlist_runs_the_whole_trained_chain(quick_chain, tmp_path):
    """`-p playlist_length 12`: notebook 06 trains 12-song playlists, 07 plays one and 08 fine-tunes
    on the index width the checkpoint's config needs (it used to hard-code 10 songs)."""
    import shutil

    from helpers.recommend import load_chain, versions

    root, _ = quick_chain
    shutil.copytree(ProjectPaths.at(root).processed, ProjectPaths.at(tmp_path).processed)
    (ProjectPaths.at(tmp_path).processed / "neighbours.npz").unlink()
    pipeline.run_chain({**SHORT_TRAINING, "playlist_length": 12}, quick=True, start="06", output_dir=tmp_path,
                       progress=False, png=False)
    chain = load_chain(tmp_path)
    assert chain.run.config.playlist_length == 12 and versions(chain.paths.models) == [0, 1]
    assert chain.neighbours().shape[1] == 12 + chain.run.config.n_candidates - 2
