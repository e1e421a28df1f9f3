"""Schema inference with explicit overrides, and data-quality checks as plain results.

The checks return `QualityCheck`s instead of raising, so a caller (an asset check) can report the
observed value next to its threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tmiv_assets.ml.data.ingest import DataValidationError, infinite_counts, mixed_type_columns, unparseable_dates
from tmiv_assets.ml.data.spec import DatasetSpec

QUALITY_CHECKS = ("schema_matches_spec", "target_is_valid", "missing_rate_within_threshold", "ids_are_unique",
                  "values_are_finite")
TRUE_WORDS = {"true", "yes", "y", "1", "t"}
FALSE_WORDS = {"false", "no", "n", "0", "f"}


@dataclass(frozen=True)
class QualityCheck:
    """One data-quality assertion about a frame."""

    name: str
    """What is asserted, e.g. 'ids_are_unique'."""
    passed: bool
    observed: float
    """The measured value, e.g. the number of duplicate ids or the worst missing rate."""
    threshold: float
    """The largest observed value that passes."""
    detail: str
    """Which columns or values are involved, in words."""


def infer_column_type(values: pd.Series, max_categories: int = 50) -> str:
    """numeric, categorical, datetime, boolean or text for one column.

    Object columns become datetime when every value parses as a date, categorical when they have at
    most `max_categories` distinct values (or at most half of the rows are distinct), text otherwise.
    """
    if pd.api.types.is_bool_dtype(values):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(values):
        return "datetime"
    if pd.api.types.is_numeric_dtype(values):
        return "numeric"
    present = values.dropna()
    if isinstance(values.dtype, pd.CategoricalDtype) or present.empty:
        return "categorical"
    as_text = present.astype(str).str.strip()
    if set(as_text.str.lower().unique()) <= TRUE_WORDS | FALSE_WORDS and as_text.nunique() == 2:
        return "boolean"
    if pd.to_numeric(as_text, errors="coerce").notna().all():
        return "numeric"
    # Dates need a digit and a separator, so words like 'may' or 'march' stay categorical.
    if as_text.str.contains(r"\d[-/:.]\d", regex=True).all() and not unparseable_dates(as_text):
        return "datetime"
    distinct = as_text.nunique()
    return "categorical" if distinct <= max_categories or distinct <= 0.5 * len(present) else "text"


def infer_schema(frame: pd.DataFrame, spec: DatasetSpec | None = None, max_categories: int = 50) -> pd.DataFrame:
    """One row per column: pandas dtype, semantic type, whether the spec overrode it, missing rate, distinct."""
    overrides = spec.dtypes if spec is not None else {}
    rows = []
    for column in frame.columns:
        values = frame[column]
        inferred = infer_column_type(values, max_categories)
        rows.append({
            "column": column,
            "dtype": str(values.dtype),
            "type": overrides.get(column, inferred),
            "inferred_type": inferred,
            "source": "spec" if column in overrides else "inferred",
            "missing_rate": float(values.isna().mean()),
            "distinct": int(values.nunique(dropna=True)),
        })
    return pd.DataFrame(rows, columns=["column", "dtype", "type", "inferred_type", "source", "missing_rate",
                                       "distinct"])


def apply_schema(frame: pd.DataFrame, spec: DatasetSpec, schema: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cast columns to their (spec-overridden or inferred) types; dates that do not parse are an error."""
    schema = infer_schema(frame, spec) if schema is None else schema
    typed = frame.copy()
    for column, kind in zip(schema["column"], schema["type"], strict=True):
        values = typed[column]
        if kind == "numeric" and not pd.api.types.is_numeric_dtype(values):
            typed[column] = pd.to_numeric(values, errors="coerce")
        elif kind == "datetime" and not pd.api.types.is_datetime64_any_dtype(values):
            bad = unparseable_dates(values)
            if bad:
                raise DataValidationError(
                    f"{spec.path}: datetime column '{column}' has {len(bad)} unparseable values (e.g. {bad[:3]}); "
                    f"use ISO dates like 2013-01-31 or change dtypes.{column} in {spec.spec_path}",
                    spec.path,
                    column,
                )
            typed[column] = pd.to_datetime(values, format="mixed")
        elif kind == "boolean" and not pd.api.types.is_bool_dtype(values):
            words = values.astype(str).str.strip().str.lower()
            typed[column] = pd.array(np.where(values.isna(), None, words.isin(TRUE_WORDS)), dtype="boolean")
        elif kind in ("categorical", "text") and pd.api.types.is_numeric_dtype(values):
            # Numeric codes declared categorical (zip codes, product ids) become labels, not magnitudes.
            typed[column] = values.map(lambda v: None if pd.isna(v) else str(v)).astype(object)
    return typed


def run_quality_checks(frame: pd.DataFrame, spec: DatasetSpec, max_missing_rate: float = 0.5) -> list[QualityCheck]:
    """Schema matches the spec, target present and valid, missing rates bounded, ids unique, values finite."""
    return [
        _schema_matches_spec(frame, spec),
        _target_is_valid(frame, spec),
        _missing_rate(frame, spec, max_missing_rate),
        _ids_are_unique(frame, spec),
        _values_are_finite(frame),
    ]


def _schema_matches_spec(frame: pd.DataFrame, spec: DatasetSpec) -> QualityCheck:
    named = [c for c in (spec.target, spec.id_column, spec.time_column, *spec.exclude_columns, *spec.dtypes) if c]
    missing = [c for c in dict.fromkeys(named) if c not in frame.columns]
    problems = [f"missing columns {missing}"] if missing else []
    mixed = {c: v for c, v in mixed_type_columns(frame).items() if c not in spec.dtypes}
    if mixed:
        problems.append(f"mixed-type columns {sorted(mixed)}")
    for column, kind in spec.dtypes.items():
        if column in frame.columns and kind == "datetime" and unparseable_dates(frame[column]):
            problems.append(f"'{column}' is declared datetime but does not parse")
    return QualityCheck("schema_matches_spec", not problems, float(len(problems)), 0.0,
                        "; ".join(problems) or "all named columns present and typed as declared")


def _target_is_valid(frame: pd.DataFrame, spec: DatasetSpec) -> QualityCheck:
    if spec.target not in frame.columns:
        return QualityCheck("target_is_valid", False, 1.0, 0.0, f"target '{spec.target}' not found")
    target = frame[spec.target]
    problems = []
    if target.isna().any():
        problems.append(f"{int(target.isna().sum())} missing labels")
    if spec.task == "regression" and not pd.api.types.is_numeric_dtype(target):
        problems.append("not numeric")
    if spec.is_classification:
        classes = target.nunique(dropna=True)
        if classes < 2 or (spec.task == "binary" and classes != 2):
            problems.append(f"{classes} classes for a {spec.task} task")
    return QualityCheck("target_is_valid", not problems, float(len(problems)), 0.0,
                        "; ".join(problems) or f"'{spec.target}' fits a {spec.task} task")


def _missing_rate(frame: pd.DataFrame, spec: DatasetSpec, threshold: float) -> QualityCheck:
    rates = frame.drop(columns=[spec.target], errors="ignore").isna().mean()
    worst = rates[rates > threshold].sort_values(ascending=False)
    detail = ", ".join(f"{c}: {r:.0%}" for c, r in worst.items()) or "every column within the threshold"
    return QualityCheck("missing_rate_within_threshold", worst.empty, float(rates.max()) if len(rates) else 0.0,
                        threshold, detail)


def _ids_are_unique(frame: pd.DataFrame, spec: DatasetSpec) -> QualityCheck:
    if not spec.id_column or spec.id_column not in frame.columns:
        return QualityCheck("ids_are_unique", True, 0.0, 0.0, "no id column in the spec")
    duplicated = frame[spec.id_column][frame[spec.id_column].duplicated()]
    return QualityCheck("ids_are_unique", duplicated.empty, float(len(duplicated)), 0.0,
                        f"duplicate ids e.g. {duplicated.astype(str).unique()[:3].tolist()}" if len(duplicated)
                        else f"'{spec.id_column}' is unique")


def _values_are_finite(frame: pd.DataFrame) -> QualityCheck:
    counts = infinite_counts(frame)
    return QualityCheck("values_are_finite", not counts, float(sum(counts.values())), 0.0,
                        ", ".join(f"{c}: {n}" for c, n in counts.items()) or "no infinite values")
