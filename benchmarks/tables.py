"""Markdown tables for the benchmarks' reports."""
from __future__ import annotations

import numpy as np
import pandas as pd


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table; floats with 3 decimals."""
    def cell(value) -> str:
        if value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            return ""
        if isinstance(value, float):
            return f"{value:,.3f}"
        return f"{value:,}" if isinstance(value, (int, np.integer)) else str(value)
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])
