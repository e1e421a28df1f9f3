"""Reading data files (CSV, Parquet, Excel) and validating them against their spec before anything is stored."""

from __future__ import annotations

import codecs
import csv
import io
import logging
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
MIN_ROWS = 20
"""Rows with a target a dataset needs: a held-out test split and cross-validation folds of a few rows each."""
MIN_CLASS_ROWS = 5
"""Rows every class needs: at least one in the test split and one in each training fold's validation rows."""
MAX_MAGNITUDE = 1e100
"""Beyond this, squares and sums of a column overflow to infinity inside scalers and models."""
logger = logging.getLogger(__name__)
DELIMITERS = ",;\t|"


BATCH_DAY = "batch_day"
"""Column of the labelled-rows frame: the batch day of a training row (`labelled_rows` in the feature store)."""


class DataValidationError(ValueError):
    """The data file does not match its spec; the message names the file, the column and the fix."""

    def __init__(self, message: str, path: Path, column: str | None = None):
        super().__init__(message)
        self.path = path
        self.column = column


def read_dataset(spec: DatasetSpec) -> pd.DataFrame:
    """Read the spec's data file with the spec's delimiter, encoding and sheet where given."""
    if not spec.path.exists():
        raise DataValidationError(f"{spec.path}: file not found; check the 'file' field in {spec.spec_path}",
                                  spec.path)
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
    if not path.is_file():
        raise DataValidationError(f"{path}: is a directory, not a data file; point 'file' in the spec at the "
                                  "CSV, Parquet or Excel file inside it", path)
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
    # Short samples fit several code pages equally well: prefer cp1252, the usual non-UTF-8 export (Excel on
    # Windows), whenever it reads the bytes as cleanly as the best guess (a Mac or DOS code page would turn
    # 'ä' into '‰'); Cyrillic, Greek and other scripts read worse in cp1252 and keep their own code page.
    western = charset_normalizer.from_bytes(sample, cp_isolation=["cp1252"]).best()
    return "cp1252" if western is not None and western.chaos <= matches[0].chaos else matches[0].encoding


def decode_rows(data: bytes, path: Path) -> tuple[str, int, int, str]:
    """Decode each line as UTF-8 where it is valid UTF-8, else in the code page detected from the other lines:
    files appended to by tools with different settings mix both. Returns the text, the lines that needed
    UTF-8 (non-ASCII), the lines decoded in the code page, and its name."""
    lines = data.splitlines(keepends=True)
    decoded: list[str | None] = []
    for line in lines:
        try:
            decoded.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            decoded.append(None)
    legacy = _detect_encoding(b"".join(line for line, text in zip(lines, decoded, strict=True) if text is None)
                              [:SNIFF_BYTES], path)
    utf8_lines = sum(text is not None and not line.isascii() for line, text in zip(lines, decoded, strict=True))
    legacy_lines = decoded.count(None)
    text = "".join(line.decode(legacy, errors="replace") if text is None else text
                   for line, text in zip(lines, decoded, strict=True))
    return text, utf8_lines, legacy_lines, legacy


def _read_csv(path: Path, delimiter: str | None, encoding: str | None) -> pd.DataFrame:
    sniffed_delimiter, sniffed_encoding = sniff_csv(path)
    delimiter, source, decoding = delimiter or sniffed_delimiter, path, None
    if encoding is None:  # the sample guessed one encoding; the whole file may mix UTF-8 and a legacy code page
        data = path.read_bytes()
        try:
            data.decode("utf-8")
            encoding = "utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-8"
        except UnicodeDecodeError:
            text, utf8_lines, legacy_lines, legacy = decode_rows(data, path)
            encoding = legacy
            if utf8_lines:
                source, decoding = io.StringIO(text), (
                    f"{path}: mixed text encodings, decoded row by row: {utf8_lines} lines UTF-8, {legacy_lines} "
                    f"lines {legacy}; save the file as UTF-8 to silence this")
                logger.warning(decoding)
    with open(path, newline="", encoding=encoding, errors="replace") as handle:
        header = next(csv.reader(handle, delimiter=delimiter), [])
    _check_header([h.strip() for h in header], path)
    try:
        frame = pd.read_csv(source, sep=delimiter, encoding=encoding if decoding is None else None)
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
    if decoding:
        frame.attrs["decoding"] = decoding
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
    if collision := case_collision(names):
        raise DataValidationError(f"{path}: columns '{collision[0]}' and '{collision[1]}' collide (names that "
                                  "differ only by case are one column in SQL); rename one", path, collision[1])


def case_collision(names: list[str]) -> tuple[str, str] | None:
    """The first two names equal but for case (or equal): DuckDB identifiers ignore case, so SQL would see one
    column."""
    lowered: dict[str, str] = {}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()], name
        lowered[name.lower()] = name
    return None


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
    for field_name in ("id_column", "time_column"):
        if getattr(spec, field_name) == spec.target:
            raise DataValidationError(f"{path}: target '{spec.target}' is also the {field_name.replace('_', ' ')}; "
                                      f"fix 'target' or '{field_name}' in {spec.spec_path}", path, spec.target)
    if spec.target in spec.exclude_columns:
        raise DataValidationError(f"{path}: target '{spec.target}' is listed in exclude_columns; remove it there "
                                  f"in {spec.spec_path}", path, spec.target)
    features = [c for c in columns if c not in {spec.target, spec.id_column, *spec.exclude_columns}]
    if not features:
        raise DataValidationError(f"{path}: no feature columns besides the target, id and excluded columns "
                                  f"(columns: {columns}); add the columns a model should learn from", path)
    named = [(c, "sensitive_columns") for c in spec.sensitive_columns] + [
        (c, "what_if: immutable_columns") for c in spec.what_if.get("immutable_columns", ())]
    for column, field_name in named:  # checked here, before anything is trained, not at the explain steps
        if column not in frame.columns:
            raise DataValidationError(f"{path}: {field_name} names '{column}', not a column (columns: {columns}); "
                                      f"fix '{field_name}' in {spec.spec_path}", path, column)
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
    if spec.task == "binary" and spec.positive_class is not None:
        labels = target.dropna().astype(str).unique()
        if str(spec.positive_class) not in labels:
            raise DataValidationError(
                f"{path}: positive_class {spec.positive_class!r} is not a value of target column '{spec.target}' "
                f"(values: {sorted(labels)[:5]}); fix 'positive_class' in {spec.spec_path}", path, spec.target)
    if spec.id_column and frame[spec.id_column].duplicated().any():
        duplicates = int(frame[spec.id_column].duplicated().sum())
        raise DataValidationError(
            f"{path}: id column '{spec.id_column}' has {duplicates} duplicate values; ids must be unique",
            path,
            spec.id_column,
        )
    _check_values(frame, spec)
    _check_size(target, spec)


def _check_size(target: pd.Series, spec: DatasetSpec) -> None:
    """Enough labelled rows, and of every class, for a test split and cross-validation."""
    path = spec.path
    if target.notna().sum() < MIN_ROWS:
        raise DataValidationError(
            f"{path}: only {target.notna().sum()} rows have a value in target column '{spec.target}'; training "
            f"needs at least {MIN_ROWS} (for a test split and cross-validation); add rows", path, spec.target)
    if spec.is_classification:
        counts = target.dropna().astype(str).value_counts()
        rare = counts[counts < MIN_CLASS_ROWS]
        if not rare.empty:
            raise DataValidationError(
                f"{path}: in target column '{spec.target}', class {rare.index[0]!r} has {rare.iloc[0]} rows"
                f"{f' (and {len(rare) - 1} more classes under {MIN_CLASS_ROWS})' if len(rare) > 1 else ''}; "
                f"every class needs at least {MIN_CLASS_ROWS}: add examples, merge it into another class, or "
                "drop those rows", path, spec.target)


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
    numeric = frame.select_dtypes(include="number")
    if numeric.shape[1]:
        huge = (numeric.abs() > MAX_MAGNITUDE).sum()
        for column, count in huge[huge > 0].items():
            raise DataValidationError(
                f"{path}: column '{column}' has {count} values beyond ±{MAX_MAGNITUDE:g} (e.g. "
                f"{numeric.loc[numeric[column].abs() > MAX_MAGNITUDE, column].iloc[0]:g}), which overflow in "
                "training; rescale or log-transform the column, or mark such values missing", path, column)
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


def split_series(frame: pd.DataFrame, name: str) -> tuple[pd.Series, pd.DataFrame | None]:
    """(the observed series, its regressors over the history and the future rows or None) of a
    `read_series_frame` frame."""
    series = frame["y"].iloc[:observed_rows(frame)].astype(float).rename(name)
    return series, frame.drop(columns="y") if frame.shape[1] > 1 else None


def observed_rows(frame: pd.DataFrame) -> int:
    """Rows of a `read_series_frame` frame that hold an observation (the rest are future rows of regressors)."""
    return int(frame["y"].notna().to_numpy().nonzero()[0][-1]) + 1


def read_series_frame(spec) -> pd.DataFrame:
    """The series at its regular frequency: column y (the value column) and one column per regressor, indexed by
    date. With regressors, rows after the last observation (value empty, regressors given) are the known future;
    at least `horizon` of them are needed. Gaps, missing values and non-numeric cells fail naming the column."""
    frame = read_table(spec.path)
    regressors = list(spec.regressors)
    for column in (spec.time_column, spec.value_column, *regressors):
        if column not in frame.columns:
            raise DataValidationError(
                f"{spec.path}: column '{column}' not found (columns: {list(frame.columns)}); "
                f"fix {spec.spec_path}",
                spec.path,
                column,
            )
    index = pd.DatetimeIndex(pd.to_datetime(frame[spec.time_column]))
    columns = {"y": spec.value_column} | {name: name for name in regressors}
    table = pd.DataFrame({key: _numbers(frame[column], spec, column) for key, column in columns.items()})
    table = table.set_axis(index).sort_index()
    filled = table["y"].notna().to_numpy().nonzero()[0]
    # Without regressors a row with no value is missing data; with them, rows after the last value are the future.
    history = int(filled[-1]) + 1 if regressors and len(filled) else len(table)
    missing = table["y"].iloc[:history].isna()
    if missing.any() or not len(filled):
        raise DataValidationError(
            f"{spec.path}: value column '{spec.value_column}' has {int(missing.sum()) or len(table)} missing or "
            f"non-numeric values; fill them before forecasting{_first(missing)}",
            spec.path,
            spec.value_column,
        )
    for column in regressors:
        unknown = table[column].isna()
        if unknown.any():
            raise DataValidationError(
                f"{spec.path}: regressor column '{column}' has {int(unknown.sum())} missing values; a regressor must "
                f"be known on every row, the future rows included{_first(unknown)}",
                spec.path,
                column,
            )
    freq = spec.freq or _inferred_freq(table.index, spec)
    try:
        table = table.asfreq(freq)
    except ValueError as error:
        raise DataValidationError(
            f"{spec.path}: time column '{spec.time_column}' is not a regular '{freq}' series ({error})",
            spec.path,
            spec.time_column,
        ) from error
    observed = observed_rows(table)
    # Cells were checked before: a missing one now is a period asfreq added.
    gaps = table["y"].isna() & (np.arange(len(table)) < observed) | table[regressors].isna().any(axis=1)
    if gaps.any():
        raise DataValidationError(
            f"{spec.path}: time column '{spec.time_column}' has {int(gaps.sum())} gaps at frequency '{freq}'; "
            f"add the missing periods{_first(gaps)}",
            spec.path,
            spec.time_column,
        )
    ahead = len(table) - observed
    if regressors and ahead < spec.horizon:
        raise DataValidationError(
            f"{spec.path}: regressors {regressors} are given for {ahead} rows after the last observation "
            f"({table.index[observed - 1]:%Y-%m-%d}); forecasting {spec.horizon} steps needs "
            f"{spec.horizon}: add the future rows (time and regressors, value empty) or lower horizon in "
            f"{spec.spec_path}",
            spec.path,
            regressors[0],
        )
    return table


def _inferred_freq(index: pd.DatetimeIndex, spec) -> str:
    """The frequency pandas reads from the timestamps; a spec without `freq` needs them regular and complete."""
    freq = pd.infer_freq(index) if len(index) >= 3 and index.is_unique else None
    if freq is None:
        steps = pd.Series(index).diff().dropna().value_counts()
        raise DataValidationError(
            f"{spec.path}: time column '{spec.time_column}' has no single step to infer the frequency from (steps "
            f"{', '.join(f'{step} x{count}' for step, count in steps.head(3).items())}; gaps or duplicate timestamps "
            f"make them uneven); set freq in {spec.spec_path}, e.g. freq: D, and fix the gaps",
            spec.path,
            spec.time_column,
        )
    return freq


def _numbers(values: pd.Series, spec, column: str) -> np.ndarray:
    """The column as numbers; text that is not a number fails naming it (an empty cell stays missing)."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna() & (values.astype(str).str.strip() != "")
    if bad.any():
        raise DataValidationError(
            f"{spec.path}: column '{column}' has {int(bad.sum())} non-numeric values (e.g. "
            f"{values[bad].astype(str).unique()[:3].tolist()}); a series holds numbers, fix them",
            spec.path,
            column,
        )
    return numbers.to_numpy()


def _first(flags: pd.Series) -> str:
    """' (first at <date>)' for the first flagged row of a date-indexed mask; empty when none is flagged."""
    hits = flags.index[flags.to_numpy(bool)]
    return f" (first at {hits[0]:%Y-%m-%d})" if len(hits) else ""


def append_labelled_batches(
    frame: pd.DataFrame, spec: DatasetSpec, batches: dict[str, tuple[pd.DataFrame, pd.DataFrame]]
) -> tuple[pd.DataFrame, pd.Series]:
    """Add scored batches whose labels have arrived (`{day: (batch, labels)}`) to the training rows; returns
    the rows and the batch day of each (missing for rows of `frame`).

    Labels are joined on the id column; rows already in `frame` (same id) are not added twice.
    """
    if not batches:
        return frame, pd.Series(None, index=frame.index, dtype="string")
    if not spec.id_column:
        raise ValueError(f"{spec.spec_path}: labels can only be joined with an 'id_column'; add one to the spec")
    added = []
    for day, (batch, labels) in sorted(batches.items()):
        labelled = join_labels(batch, labels, spec, day)
        added.append(labelled[[c for c in frame.columns if c in labelled.columns]].assign(**{BATCH_DAY: day}))
    combined = pd.concat([frame, *added], ignore_index=True)
    combined = combined.drop_duplicates(subset=[spec.id_column], keep="first").reset_index(drop=True)
    return combined.drop(columns=[BATCH_DAY]), combined[BATCH_DAY].astype("string")


def join_labels(batch: pd.DataFrame, labels: pd.DataFrame, spec: DatasetSpec, day: str) -> pd.DataFrame:
    """The batch rows whose labels arrived, with the target joined on the id column."""
    for column in (spec.id_column, spec.target):
        if column not in labels.columns:
            raise DataValidationError(
                f"labels for {spec.name} {day}: column '{column}' not found (columns: {list(labels.columns)}); "
                "label files hold the id column and the target",
                spec.path,
                column,
            )
    return batch.drop(columns=[spec.target], errors="ignore").merge(
        labels[[spec.id_column, spec.target]], on=spec.id_column, how="inner"
    )


def require_columns(frame: pd.DataFrame, needed: list[str], path: Path) -> list[str]:
    """Fail naming every column a model needs that `frame` lacks; return the extra columns it will ignore."""
    missing = [c for c in needed if c not in frame.columns]
    extra = [c for c in frame.columns if c not in needed]
    if missing:
        raise DataValidationError(f"{path}: columns {missing} the model needs are missing (it also got {extra} it "
                                  "does not use); send rows with the dataset's columns", path, missing[0])
    return extra


def validate_batch(batch: pd.DataFrame, schema: dict[str, str], path: Path, skip: set[str]) -> None:
    """A batch to score against the training schema (column -> dtype): no column the model saw may change
    kind (number, text, date) or arrive empty in every row."""
    for column, trained in schema.items():
        if column in skip or column not in batch.columns:
            continue
        values = batch[column]
        if len(values) and values.isna().all():
            raise DataValidationError(
                f"{path}: column '{column}' is empty in all {len(values)} rows of the batch (the training data had "
                f"values); fix the export that wrote the batch", path, column)
        was, now = _kind(trained), _kind(str(values.dtype))
        if was != now:
            examples = values.dropna().astype(str).head(3).tolist()
            raise DataValidationError(
                f"{path}: column '{column}' was {was} in training ({trained}) but is {now} in the batch "
                f"({values.dtype}, e.g. {examples}); send it as {was} as before, or retrain on data of the new "
                "type", path, column)


def _kind(dtype: str) -> str:
    resolved = pd.api.types.pandas_dtype(dtype)
    if pd.api.types.is_numeric_dtype(resolved):  # bool included, as the models treat it
        return "numeric"
    return "datetime" if pd.api.types.is_datetime64_any_dtype(resolved) else "text"
