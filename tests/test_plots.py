"""Figures whose content is computed, not only drawn."""
import pandas as pd
import plotly.graph_objects as go
import pytest

from helpers.plots import drift_rounds_figure, reward_map_figure, session_feedback_figure


def test_the_drift_figure_states_the_share_closed_and_marks_the_target():
    rounds = pd.DataFrame({"round": [0, 1, 2], "fine_tuned": [930.0, 950.0, 975.0], "untuned": 930.0,
                           "optimum": 1010.0, "gap_closed": [0.0, 0.25, 0.5625]})
    fig = drift_rounds_figure(rounds)
    assert "56% of the gap closed after 2 rounds" in fig.layout.title.text
    (target,) = fig.layout.shapes
    assert target.y0 == target.y1 == pytest.approx(970.0)
    assert {trace.name for trace in fig.data} == {"fine-tuned after each round", "not fine-tuned", "exact optimum"}


def test_map_hover_names_the_track_where_the_catalogue_has_names():
    points = pd.DataFrame({"id": ["a", "b"], "artist": ["Queen", "Adele"], "name": ["Flash", None],
                           "genre": ["rock", "pop"], "cluster": [0, 1], "umap_x": [0.0, 1.0], "umap_y": [0.0, 1.0],
                           "reward": [50.0, 60.0]})
    fig = reward_map_figure(points, max_points=None)
    (trace,) = fig.data
    assert trace.hovertemplate.startswith("name: %{customdata[0]}<br>artist: %{customdata[1]}<br>genre:")
    assert trace.customdata[0].tolist()[:4] == ["Flash", "Queen", "rock", "a"]
    assert trace.customdata[1].tolist()[0] == "", "an unknown name is blank, not nan"


def test_session_hover_names_each_track():
    heard = pd.DataFrame({"position": [0, 1], "track_id": ["a", "b"], "percentage_listened": [0.5, 1.0],
                          "liked": [0, 1], "source": "simulated", "name": ["Flash", None], "artist": ["Queen", "Adele"]})
    fig = session_feedback_figure(heard)
    assert [trace.customdata.tolist() for trace in fig.data] == [[["a", "Flash by Queen"]], [["b", "Adele"]]]
    unnamed = session_feedback_figure(heard.drop(columns=["name", "artist"]))
    assert unnamed.data[0].customdata.tolist() == [["a", "track"]]


def test_a_figure_of_listening_data_is_created_owner_only(tmp_path):
    from helpers.plots import save_figure

    fig = go.Figure(go.Bar(x=["a"], y=[1]))
    (tmp_path / "07_old.html").write_text("an earlier run's")
    (tmp_path / "07_old.html").chmod(0o644)
    written = save_figure(fig, "07_old", tmp_path, png=False, private=True)
    assert written["html"].stat().st_mode & 0o777 == 0o600 and "an earlier" not in written["html"].read_text()
    assert save_figure(fig, "03_map", tmp_path, png=False)["html"].stat().st_mode & 0o777 == 0o644
