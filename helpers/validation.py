"""Input checks shared by every step, in one place and one wording (as scikit-learn's `utils.validation`).

Each check takes the table and a `source` (the file or object it came from) and raises a
`ValueError` that starts with that source and names the column and what was expected.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

ID_COLUMN = "id"
LATENT_PREFIX = "latent_"


def latent_names(latent_dim: int) -> list[str]:
    """Names of the latent columns: latent_0 ... latent_{d-1}."""
    return [f"{LATENT_PREFIX}{j}" for j in range(latent_dim)]


def check_columns(frame: pd.DataFrame, required: Sequence[str], source: str, hint: str = "") -> None:
    """Every column of `required` is in `frame`; `hint` says where a complete table comes from."""
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {list(frame.columns)}"
                         + (f". {hint}" if hint else ""))


def check_unique_ids(frame: pd.DataFrame, source: str, column: str = ID_COLUMN) -> pd.Series:
    """The `column` of `frame`, checked to be present, never missing and unique (joins are on it)."""
    check_columns(frame, [column], source)
    ids = frame[column]
    if ids.isna().any():
        raise ValueError(f"{source}: column '{column}' has {int(ids.isna().sum())} missing id(s); "
                         "expected one id per track.")
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise ValueError(f"{source}: column '{column}' has {len(duplicated)} duplicate id(s), "
                         f"e.g. {duplicated.iloc[0]!r}; expected unique ids.")
    return ids.reset_index(drop=True)


def latent_columns(frame: pd.DataFrame, source: str) -> list[str]:
    """The columns latent_0 ... latent_{d-1} of `frame` in numeric order, checked to have no gaps."""
    numbers = sorted(int(match.group(1)) for column in frame.columns
                     if (match := re.fullmatch(rf"{LATENT_PREFIX}(\d+)", str(column))))
    if not numbers:
        raise ValueError(f"{source}: expected columns latent_0 ... latent_{{d-1}}, "
                         f"found none among {list(frame.columns)}")
    if numbers != list(range(len(numbers))):
        found = ", ".join(f"{LATENT_PREFIX}{number}" for number in numbers)
        raise ValueError(f"{source}: expected columns latent_0 ... latent_{{d-1}} without gaps, found {found}")
    return latent_names(len(numbers))


def numeric_matrix(frame: pd.DataFrame, columns: Sequence[str], source: str) -> np.ndarray:
    """The finite numeric values of `columns` as a float64 matrix (n_rows, len(columns))."""
    check_columns(frame, columns, source)
    if len(frame) == 0:
        raise ValueError(f"{source}: no rows; expected at least one track.")
    for column in columns:
        if not pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column]):
            raise ValueError(f"{source}: column '{column}' has dtype {frame[column].dtype}; expected numbers.")
    values = frame[list(columns)].to_numpy(dtype=np.float64)
    not_finite = (~np.isfinite(values)).sum(axis=0)
    if not_finite.any():
        position = int(np.flatnonzero(not_finite)[0])
        raise ValueError(f"{source}: column '{columns[position]}' has {int(not_finite[position])} missing or "
                         "infinite value(s); expected finite numbers.")
    return values


def shorten(text: object, limit: int) -> str:
    """`text` on one line (runs of whitespace become one space), cut to `limit` characters, so that a
    huge value gives a short message."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


PLAIN_SCALARS = (str, int, float, bool, type(None))


def check_plain_data(value: object, source: str) -> None:
    """`value` is plain data: a str, int, float (finite), bool or None, or a list or a dict with
    str keys of such values, checked recursively. Anything else (bytes, tuples, sets, objects) is
    a ValueError naming `source` and where inside the value it is."""
    stack = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, float) and not np.isfinite(item):
            raise ValueError(f"{source}{where} is {item}; expected a finite number.")
        if isinstance(item, list):
            stack.extend((element, f"{where}[{i}]") for i, element in enumerate(item))
        elif isinstance(item, dict):
            for key, element in item.items():
                if not isinstance(key, str):
                    raise ValueError(f"{source}{where} has the key {key!r} of type {type(key).__name__}; "
                                     "expected string keys.")
                stack.append((element, f"{where}[{key!r}]"))
        elif type(item) not in PLAIN_SCALARS:
            raise ValueError(f"{source}{where} is a {type(item).__name__}; expected a str, int, float, bool, "
                             "None, or a list or dict (string keys) of these.")


@dataclass(frozen=True)
class ValueRange:
    """The values a column may hold: [low, high], whole numbers only if `whole`; `expected` says so in words."""

    low: float
    high: float
    expected: str
    whole: bool = False

    def outside(self, values: np.ndarray) -> np.ndarray:
        """Which values are outside the range (infinite ones too); missing ones (NaN) are not."""
        values = np.asarray(values, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = (values < self.low) | (values > self.high)
            if self.whole:
                bad |= np.isfinite(values) & (values % 1 != 0)
        return bad | np.isinf(values)


def check_value_ranges(columns: Mapping[str, np.ndarray], ranges: Mapping[str, ValueRange], source: str,
                       names: Mapping[str, str] | None = None) -> None:
    """Every value of each column of `columns` that `ranges` names is in its range (NaN: missing, not
    checked). ValueError naming, for each column with a value outside, the column (as `names` calls
    it), the first such value, its data row (from 1) and how many there are."""
    problems = []
    for field, values in columns.items():
        if field not in ranges:
            continue
        bad = np.flatnonzero(ranges[field].outside(values))
        if len(bad):
            more = f" (and {len(bad) - 1:,} more row(s))" if len(bad) > 1 else ""
            problems.append(f"column '{(names or {}).get(field, field)}' has the value {float(values[bad[0]])!r} in data row "
                            f"{bad[0] + 1}{more}; expected {ranges[field].expected}")
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems) + ".")


def check_finite(values: np.ndarray, source: str, columns: Sequence[str] | None = None) -> np.ndarray:
    """`values` (a vector or a rows x columns matrix), checked to be finite before anything uses or
    writes them: a ValueError naming `source`, the column and the first row that is NaN or infinite."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        matrix = bad.reshape(len(bad), -1)
        column = int(np.flatnonzero(matrix.any(axis=0))[0])
        row = int(np.flatnonzero(matrix[:, column])[0])
        name = f" column '{columns[column]}'" if columns is not None else ""
        raise ValueError(f"{source}:{name} {int(matrix[:, column].sum()):,} value(s) are NaN or infinite, the first "
                         f"in row {row + 1}; nothing was written.")
    return values
