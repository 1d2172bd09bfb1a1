"""Figures whose content is computed, not only drawn."""
import pandas as pd
import pytest

from helpers.plots import drift_rounds_figure


def test_the_drift_figure_states_the_share_closed_and_marks_the_target():
    rounds = pd.DataFrame({"round": [0, 1, 2], "fine_tuned": [930.0, 950.0, 975.0], "untuned": 930.0,
                           "optimum": 1010.0, "gap_closed": [0.0, 0.25, 0.5625]})
    fig = drift_rounds_figure(rounds)
    assert "56% of the gap closed after 2 rounds" in fig.layout.title.text
    (target,) = fig.layout.shapes
    assert target.y0 == target.y1 == pytest.approx(970.0)
    assert {trace.name for trace in fig.data} == {"fine-tuned after each round", "not fine-tuned", "exact optimum"}
