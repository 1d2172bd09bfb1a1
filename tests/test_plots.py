"""Figures whose content is computed, not only drawn."""
import pandas as pd
import plotly.graph_objects as go

from helpers.plots import reward_map_figure, session_feedback_figure, taste_map_figure


def test_the_taste_map_rings_only_the_songs_heard_by_each_panel_on_one_colour_scale():
    points = pd.DataFrame({"id": list("abcd"), "umap_x": [0.0, 1.0, 2.0, 3.0], "umap_y": 0.0,
                           "true taste": [0.9, 0.2, 0.5, 0.7], "after 0 playlists": 0.6,
                           "after 1 playlists": [0.8, 0.3, 0.6, 0.6], "after 3 playlists": [0.9, 0.2, 0.5, 0.6],
                           "heard_in": [1, 3, 0, 0]})
    fig = taste_map_figure(points, max_points=None)
    assert [trace.name for trace in fig.data] == ["true taste", "after 0 playlists", "after 1 playlists",
                                                  "after 3 playlists"]
    rings = [list(trace.marker.line.width) for trace in fig.data]
    assert rings[0] == rings[1] == [0, 0, 0, 0], "nothing is heard before the first playlist, nor on the truth"
    assert rings[2] == [1.5, 0, 0, 0] and rings[3] == [1.5, 1.5, 0, 0]
    assert {(trace.marker.cmin, trace.marker.cmax) for trace in fig.data} == {(0.0, 1.0)}
    assert [trace.marker.showscale for trace in fig.data] == [False, False, False, True]
    assert list(fig.data[2].marker.color) == [0.8, 0.3, 0.6, 0.6]


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
