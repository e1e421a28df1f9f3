"""Reading data files (CSV, Parquet, Excel) and validating them against their spec before anything is stored."""

from __future__ import annotations

import codecs
import csv
import zipfile
from pathlib import Path

import charset_normalizer
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tmiv_assets.ml.data.spec import DatasetSpec

READERS = {".csv", ".tsv", ".txt", ".parquet", ".xlsx", ".xlsm"}
SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"


class DataValidationError(ValueError):
    """The data file does not match its spec; the message names the file, the column and the fix."""

    def __init__(self, message: str, path: Path, column: str | None = None):
        super().__init__(message)
        self.path = path
        self.column = column


def read_dataset(spec: DatasetSpec) -> pd.DataFrame:
    """Read the spec's data file with the spec's delimiter, encoding and sheet where given."""
    return read_table(spec.path, delimiter=spec.delimiter, encoding=spec.encoding, sheet=spec.sheet)


def read_table(path: Path, delimiter: str | None = None, encoding: str | None = None,
               sheet: str | int | None = None) -> pd.DataFrame:
    """Read a CSV, Parquet or Excel file; an empty, malformed or ambiguous file is a validation error.

    CSV delimiter and encoding are sniffed from the first 64 KiB unless given.
    """
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise DataValidationError(
            f"{path}: unsupported file type {path.suffix!r}; save it as one of {sorted(READERS)}", path
        )
    if not path.exists():
        raise DataValidationError(f"{path}: file not found; check the 'file' field of the spec", path)
    if path.stat().st_size == 0:
        raise DataValidationError(f"{path}: file is empty (0 bytes); export the data again", path)
    if suffix == ".parquet":
        frame = _read_parquet(path)
    elif suffix in (".xlsx", ".xlsm"):
        frame = _read_excel(path, sheet)
    else:
        frame = _read_csv(path, delimiter, encoding)
    if frame.empty:
        raise DataValidationError(f"{path}: file has a header but no rows; export the data again", path)
    return frame


def sniff_csv(path: Path) -> tuple[str, str]:
    """(delimiter, encoding) of a CSV file, guessed from its first bytes."""
    sample = path.read_bytes()[:SNIFF_BYTES]
    encoding = _detect_encoding(sample, path)
    text = sample.decode(encoding, errors="ignore")
    lines = text.splitlines()
    # The last line of the sample may be cut mid-row, which would confuse the sniffer.
    head = "\n".join(lines[:-1] if len(lines) > 2 else lines)
    try:
        delimiter = csv.Sniffer().sniff(head, delimiters=DELIMITERS).delimiter
    except csv.Error:
        delimiter = ","  # a single-column file has no delimiter to find
    return delimiter, encoding


def _detect_encoding(sample: bytes, path: Path) -> str:
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as error:
        if error.start > len(sample) - 4:
            return "utf-8"  # the sample cut a multi-byte character in half
    matches = list(charset_normalizer.from_bytes(sample))
    if not matches:
        raise DataValidationError(f"{path}: cannot detect the text encoding; set 'encoding' in the spec "
                                  "(e.g. latin-1) or save the file as UTF-8", path)
    # Short samples fit several code pages equally well; among the best, prefer cp1252, the usual
    # non-UTF-8 export (Excel on Windows), over a Central European or DOS code page.
    best = [m.encoding for m in matches if (m.chaos, -m.coherence) == (matches[0].chaos, -matches[0].coherence)]
    return "cp1252" if "cp1252" in best else best[0]


def _read_csv(path: Path, delimiter: str | None, encoding: str | None) -> pd.DataFrame:
    sniffed_delimiter, sniffed_encoding = sniff_csv(path)
    delimiter, encoding = delimiter or sniffed_delimiter, encoding or sniffed_encoding
    with open(path, newline="", encoding=encoding, errors="replace") as handle:
        header = next(csv.reader(handle, delimiter=delimiter), [])
    _check_header([h.strip() for h in header], path)
    try:
        frame = pd.read_csv(path, sep=delimiter, encoding=encoding)
    except pd.errors.EmptyDataError as error:
        raise DataValidationError(f"{path}: file has no columns ({error}); export the data again", path) from error
    except pd.errors.ParserError as error:
        raise DataValidationError(
            f"{path}: malformed CSV with delimiter {delimiter!r} ({error}); every row needs as many fields "
            "as the header: quote values containing the delimiter, or set 'delimiter' in the spec",
            path,
        ) from error
    except UnicodeDecodeError as error:
        raise DataValidationError(f"{path}: not valid {encoding} ({error}); set 'encoding' in the spec",
                                  path) from error
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        _check_header(pq.read_schema(path).names, path)
        return pd.read_parquet(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise DataValidationError(f"{path}: not a readable Parquet file ({error}); export it again", path) from error


def _read_excel(path: Path, sheet: str | int | None) -> pd.DataFrame:
    sheet_name = 0 if sheet is None else sheet
    try:
        header = pd.read_excel(path, sheet_name=sheet_name, header=None, nrows=1, engine="openpyxl")
        _check_header([str(h).strip() for h in header.iloc[0].tolist()] if len(header) else [], path)
        return pd.read_excel(path, sheet_name=sheet_name, engine="openpyxl")
    except (ValueError, KeyError, zipfile.BadZipFile) as error:
        if isinstance(error, DataValidationError):
            raise
        raise DataValidationError(
            f"{path}: cannot read sheet {sheet_name!r} ({error}); check the 'sheet' field of the spec "
            "or save the workbook again as .xlsx",
            path,
        ) from error


def _check_header(names: list[str], path: Path) -> None:
    seen: set[str] = set()
    duplicates = sorted({n for n in names if n in seen or seen.add(n)})
    if duplicates:
        raise DataValidationError(
            f"{path}: duplicate column names {duplicates}; give every column a unique header", path, duplicates[0]
        )


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
    _check_values(frame, spec)


def _check_values(frame: pd.DataFrame, spec: DatasetSpec) -> None:
    """Infinite numbers, columns mixing numbers and text, and dates that do not parse."""
    path = spec.path
    for column, count in infinite_counts(frame).items():
        raise DataValidationError(
            f"{path}: column '{column}' has {count} infinite values; replace them with empty cells or finite "
            "numbers (often a division by zero upstream)",
            path,
            column,
        )
    declared = spec.dtypes
    for column, examples in mixed_type_columns(frame).items():
        if column not in declared:
            raise DataValidationError(
                f"{path}: column '{column}' mixes numbers and text (e.g. {examples}); fix those values or "
                f"declare the type in {spec.spec_path}: `dtypes: {{{column}: categorical}}` (or numeric, which "
                "turns the text into missing values)",
                path,
                column,
            )
    date_columns = [c for c, kind in declared.items() if kind == "datetime"]
    for column in dict.fromkeys([*([spec.time_column] if spec.time_column else []), *date_columns]):
        if column not in frame.columns:
            raise DataValidationError(f"{path}: datetime column '{column}' not found (columns: "
                                      f"{list(frame.columns)}); fix 'dtypes' in {spec.spec_path}", path, column)
        bad = unparseable_dates(frame[column])
        if bad:
            raise DataValidationError(
                f"{path}: time column '{column}' has {len(bad)} unparseable values (e.g. {bad[:3]}); "
                "use ISO dates like 2013-01-31 10:00",
                path,
                column,
            )


def infinite_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Number of +/-inf values per numeric column, for columns that have any."""
    numeric = frame.select_dtypes(include="number")
    counts = np.isinf(numeric.to_numpy(dtype=float, na_value=np.nan)).sum(axis=0) if numeric.shape[1] else []
    return {c: int(n) for c, n in zip(numeric.columns, counts, strict=True) if n}


def mixed_type_columns(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Object columns that are mostly numbers with some text, or hold Python objects of several types.

    Returns examples of the odd values per column. Mostly-text columns with a few numbers (codes,
    names) are ordinary categoricals and are not reported.
    """
    mixed = {}
    for column in frame.select_dtypes(include="object").columns:
        values = frame[column].dropna()
        if values.empty:
            continue
        kind = pd.api.types.infer_dtype(values, skipna=True)
        if kind in ("mixed", "mixed-integer", "mixed-integer-float"):
            odd = values[values.map(type) != type(values.iloc[0])]  # noqa: E721 - exact type, not a subclass
            mixed[column] = odd.astype(str).head(3).tolist()
            continue
        if kind != "string":
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        if 0.5 <= numbers.notna().mean() < 1:
            mixed[column] = values[numbers.isna()].astype(str).unique()[:3].tolist()
    return mixed


def unparseable_dates(values: pd.Series) -> list[str]:
    """Values present but not parseable as dates (all of them examples, as text)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return []
    parsed = pd.to_datetime(values, errors="coerce", format="mixed")
    return values[parsed.isna() & values.notna()].astype(str).tolist()


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
