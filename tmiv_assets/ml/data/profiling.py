"""Column profiles: what a data scientist looks at first."""

from __future__ import annotations

import pandas as pd


def profile_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per column: dtype, missing values, distinct values and numeric summary statistics."""
    rows = []
    for column in frame.columns:
        values = frame[column]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        rows.append(
            {
                "column": column,
                "dtype": str(values.dtype),
                "missing": int(values.isna().sum()),
                "missing_pct": round(100 * float(values.isna().mean()), 2),
                "distinct": int(values.nunique(dropna=True)),
                "mean": float(values.mean()) if numeric else None,
                "std": float(values.std()) if numeric else None,
                "min": float(values.min()) if numeric else None,
                "max": float(values.max()) if numeric else None,
            }
        )
    return pd.DataFrame(rows)
