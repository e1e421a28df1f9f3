"""Reading data files and validating them against their spec before anything is stored."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tmiv_assets.ml.spec import DatasetSpec

READERS = {".csv": pd.read_csv, ".parquet": pd.read_parquet}


class DataValidationError(ValueError):
    """The data file does not match its spec; the message names the file, the column and the fix."""

    def __init__(self, message: str, path: Path, column: str | None = None):
        super().__init__(message)
        self.path = path
        self.column = column


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file; an empty or unreadable file is a validation error."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataValidationError(
            f"{path}: unsupported file type {path.suffix!r}; save it as one of {sorted(READERS)}", path
        )
    if not path.exists():
        raise DataValidationError(f"{path}: file not found; check the 'file' field of the spec", path)
    if path.stat().st_size == 0:
        raise DataValidationError(f"{path}: file is empty (0 bytes); export the data again", path)
    try:
        frame = reader(path)
    except pd.errors.EmptyDataError as error:
        raise DataValidationError(f"{path}: file has no columns ({error}); export the data again", path) from error
    if frame.empty:
        raise DataValidationError(f"{path}: file has a header but no rows; export the data again", path)
    return frame


def validate_dataset(frame: pd.DataFrame, spec: DatasetSpec) -> None:
    """Check what training relies on: named columns exist and the target fits the task."""
    path = spec.path
    columns = list(frame.columns)
    named = {"target": spec.target, "id_column": spec.id_column, "time_column": spec.time_column}
    for field_name, column in named.items():
        if column and column not in frame.columns:
            raise DataValidationError(
                f"{path}: {field_name.replace('_', ' ')} '{column}' not found (columns: {columns}); "
                f"fix the '{field_name}' field in {spec.spec_path}",
                path,
                column,
            )
    target = frame[spec.target]
    if target.notna().sum() == 0:
        raise DataValidationError(
            f"{path}: target column '{spec.target}' has no values; fill it or pick another target",
            path,
            spec.target,
        )
    if spec.task == "regression" and not pd.api.types.is_numeric_dtype(target):
        examples = target.dropna().astype(str).unique()[:3].tolist()
        raise DataValidationError(
            f"{path}: target column '{spec.target}' must be numeric for regression "
            f"(found values like {examples}); clean the column or set task to 'binary'/'multiclass'",
            path,
            spec.target,
        )
    if spec.is_classification:
        n_classes = target.dropna().nunique()
        expected = "exactly 2" if spec.task == "binary" else "at least 2"
        if n_classes < 2 or (spec.task == "binary" and n_classes != 2):
            raise DataValidationError(
                f"{path}: target column '{spec.target}' has {n_classes} classes, {spec.task} needs "
                f"{expected}; fix the data or the 'task' field",
                path,
                spec.target,
            )
    if spec.id_column and frame[spec.id_column].duplicated().any():
        duplicates = int(frame[spec.id_column].duplicated().sum())
        raise DataValidationError(
            f"{path}: id column '{spec.id_column}' has {duplicates} duplicate values; ids must be unique",
            path,
            spec.id_column,
        )


def read_series(spec) -> pd.Series:
    """A regular time series indexed by date, as described by a `SeriesSpec`."""
    frame = read_table(spec.path)
    for column in (spec.time_column, spec.value_column):
        if column not in frame.columns:
            raise DataValidationError(
                f"{spec.path}: column '{column}' not found (columns: {list(frame.columns)}); "
                f"fix {spec.spec_path}",
                spec.path,
                column,
            )
    values = pd.to_numeric(frame[spec.value_column], errors="coerce")
    if values.isna().any():
        raise DataValidationError(
            f"{spec.path}: value column '{spec.value_column}' has {int(values.isna().sum())} missing or "
            "non-numeric values; fill them before forecasting",
            spec.path,
            spec.value_column,
        )
    index = pd.DatetimeIndex(pd.to_datetime(frame[spec.time_column]))
    series = pd.Series(values.to_numpy(), index=index, name=spec.name).sort_index()
    try:
        series = series.asfreq(spec.freq)
    except ValueError as error:
        raise DataValidationError(
            f"{spec.path}: time column '{spec.time_column}' is not a regular '{spec.freq}' series ({error})",
            spec.path,
            spec.time_column,
        ) from error
    if series.isna().any():
        raise DataValidationError(
            f"{spec.path}: time column '{spec.time_column}' has {int(series.isna().sum())} gaps at "
            f"frequency '{spec.freq}'; add the missing periods",
            spec.path,
            spec.time_column,
        )
    return series


def append_labelled_batches(
    frame: pd.DataFrame, spec: DatasetSpec, batches: dict[str, tuple[pd.DataFrame, pd.DataFrame]]
) -> pd.DataFrame:
    """Add scored batches whose labels have arrived (`{day: (batch, labels)}`) to the training rows.

    Labels are joined on the id column; rows already in `frame` (same id) are not added twice.
    """
    if not batches:
        return frame
    if not spec.id_column:
        raise ValueError(f"{spec.spec_path}: labels can only be joined with an 'id_column'; add one to the spec")
    added = []
    for day, (batch, labels) in sorted(batches.items()):
        for column in (spec.id_column, spec.target):
            if column not in labels.columns:
                raise DataValidationError(
                    f"labels for {spec.name} {day}: column '{column}' not found (columns: {list(labels.columns)}); "
                    "label files hold the id column and the target",
                    spec.path,
                    column,
                )
        labelled = batch.drop(columns=[spec.target], errors="ignore").merge(
            labels[[spec.id_column, spec.target]], on=spec.id_column, how="inner"
        )
        added.append(labelled[[c for c in frame.columns if c in labelled.columns]])
    combined = pd.concat([frame, *added], ignore_index=True)
    return combined.drop_duplicates(subset=[spec.id_column], keep="first").reset_index(drop=True)
