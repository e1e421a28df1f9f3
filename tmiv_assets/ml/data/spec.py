"""Dataset and series specs: the small YAML files that describe a data file to the platform."""

from __future__ import annotations

import codecs
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from tmiv_assets.ml.explain.fairness import FairnessSettings
from tmiv_assets.ml.explain.what_if import WhatIfSettings
from tmiv_assets.ml.monitoring.policy import RetrainSettings
from tmiv_assets.ml.monitoring.statistics import DriftSettings

TASKS = ("binary", "multiclass", "regression")
CLASSIFICATION = ("binary", "multiclass")
COLUMN_TYPES = ("numeric", "categorical", "datetime", "boolean", "text")
CLEANING_OPTIONS = {
    "missing": ("none", "mean", "median", "mode", "drop", "ffill", "bfill", "constant"),
    "outliers": ("none", "iqr", "zscore"),
    "outlier_action": ("clip", "drop"),
}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class SpecError(ValueError):
    """A spec file is missing, malformed or names something that does not exist."""


def validate_name(name: str, what: str = "dataset") -> str:
    """Names become partition keys, file names and SQL values, so only a safe alphabet is accepted."""
    if not _NAME.match(name):
        raise SpecError(
            f"{what} name {name!r} is not allowed: use 1-63 lowercase letters, digits and '_', "
            "starting with a letter (rename the spec file)"
        )
    return name


@dataclass(frozen=True)
class DatasetSpec:
    """A tabular dataset registered with the platform."""

    name: str
    """Partition key of the dataset; the spec file's stem."""
    path: Path
    """Data file (CSV or Parquet), resolved next to the spec."""
    target: str
    """Column to predict."""
    task: str
    """One of 'binary', 'multiclass', 'regression'."""
    id_column: str | None = None
    """Unique row identifier, never used as a feature."""
    time_column: str | None = None
    """Event time; expanded into calendar features and used to cut incoming batches."""
    positive_class: str | int | None = None
    """Label treated as positive for binary metrics."""
    sensitive_columns: tuple[str, ...] = ()
    """Columns reported on by fairness checks; still used as features unless excluded."""
    exclude_columns: tuple[str, ...] = ()
    """Columns never used as features."""
    spec_path: Path | None = None
    dtypes: dict[str, str] = field(default_factory=dict)
    """Explicit column types overriding inference: column -> one of COLUMN_TYPES."""
    cleaning: dict[str, object] = field(default_factory=dict)
    """DatasetCleaner options: missing, fill_value, outliers, outlier_action, outlier_threshold."""
    delimiter: str | None = None
    """CSV delimiter; sniffed from the file when absent."""
    encoding: str | None = None
    """CSV encoding; detected when absent."""
    sheet: str | int | None = None
    """Excel sheet name or index; the first sheet when absent."""
    ab_test: dict[str, float] = field(default_factory=dict)
    """A/B test of incoming batches: challenger_share in (0, 1), min_detectable_effect > 0."""
    performance: dict[str, float] = field(default_factory=dict)
    """Live-performance thresholds: max_drop (in the metric's units) and max_relative_drop (a share) below the
    champion's test score."""
    drift: dict[str, object] = field(default_factory=dict)
    """Drift settings of incoming batches (monitoring.statistics.DriftSettings): method, alpha, correction,
    distance_threshold, psi_threshold, large_sample, drift_share."""
    retrain: dict[str, object] = field(default_factory=dict)
    """The monitoring loop's retrain policy (monitoring.policy.RetrainSettings): triggers, cool-down, minimum
    new labelled rows, training window, auto_deploy, rollback margin."""
    fairness: dict[str, float] = field(default_factory=dict)
    """Bounds of the fairness check (explain.fairness.FairnessSettings): min_disparate_impact,
    max_equalized_odds_difference."""
    what_if: dict[str, object] = field(default_factory=dict)
    """The what-if analysis (explain.what_if.WhatIfSettings): immutable_columns, max_changes, features."""

    @property
    def key_columns(self) -> list[str]:
        return [c for c in (self.id_column, self.time_column) if c]

    @property
    def is_classification(self) -> bool:
        return self.task in CLASSIFICATION

    def to_record(self) -> dict:
        """JSON-ready fields, so the spec a version was built with travels in its lineage."""
        record = asdict(self)
        return record | {"path": str(self.path), "spec_path": str(self.spec_path) if self.spec_path else None}

    @classmethod
    def from_record(cls, record: dict) -> DatasetSpec:
        tuples = {k: tuple(record[k]) for k in ("sensitive_columns", "exclude_columns")}
        paths = {"path": Path(record["path"]), "spec_path": Path(record["spec_path"]) if record["spec_path"] else None}
        return cls(**(record | tuples | paths))


@dataclass(frozen=True)
class SeriesSpec:
    """A univariate time series to forecast."""

    name: str
    path: Path
    time_column: str
    value_column: str
    freq: str | None = None
    """pandas offset alias of the observations, e.g. 'MS' for month starts; None: inferred from the timestamps
    (pandas' infer_freq), which needs them regular."""
    season_length: int | None = None
    """Observations per season; None: from `freq` (forecasting.models.season_length_for)."""
    horizon: int = 24
    """Steps forecast ahead and held out in the backtest."""
    folds: int = 3
    """Backtest origins, `horizon` apart on an expanding window (fewer on a short series)."""
    log_transform: bool = False
    """Every model on log(y); false lets the backtest choose the scale of AutoARIMA (auto_arima_log)."""
    network: dict = field(default_factory=dict)
    """Sequence networks: `architectures` to backtest (none by default) and
    forecasting.neural.NetworkSettings fields (architecture of the transfer network, lookback, width, ...)."""
    prophet: dict = field(default_factory=dict)
    """forecasting.models.ProphetSettings fields: country_holidays, changepoint_prior_scale, seasonality_mode."""
    regressors: tuple[str, ...] = ()
    """Numeric columns known ahead of time (a holiday flag, a planned price, a weather forecast): given on every row,
    including `horizon` future rows after the last observation whose value column is empty."""
    spec_path: Path | None = field(default=None)


DATASET_FIELDS = ("file", "target", "task", "id_column", "time_column", "positive_class", "sensitive_columns",
                  "exclude_columns", "dtypes", "cleaning", "delimiter", "encoding", "sheet", "ab_test",
                  "performance", "drift", "retrain", "fairness", "what_if")
SERIES_FIELDS = ("file", "time_column", "value_column", "freq", "season_length", "horizon", "folds", "log_transform",
                 "network", "prophet", "regressors")


def _load_yaml(spec_path: Path, fields: tuple[str, ...]) -> dict:
    if not spec_path.is_file():
        raise SpecError(f"{spec_path}: spec file not found; add it next to the data file")
    try:
        raw = yaml.safe_load(spec_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise SpecError(f"{spec_path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
                        f"{error.start}); save the file as UTF-8") from error
    except yaml.YAMLError as error:
        raise SpecError(f"{spec_path}: not valid YAML ({error}); fix the file") from error
    if not isinstance(raw, dict):
        raise SpecError(f"{spec_path}: expected a mapping of fields, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in fields)
    if unknown:
        raise SpecError(f"{spec_path}: unknown fields {unknown}; the fields are {list(fields)}")
    return raw


def _optional_text(raw: dict, key: str, spec_path: Path) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise SpecError(f"{spec_path}: '{key}' must be a column name (text), got {value!r}; quote it if needed")
    return value or None


def _names(raw: dict, key: str, spec_path: Path) -> tuple[str, ...]:
    value = raw.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{spec_path}: '{key}' must be a list of column names, got {value!r}; "
                        f"write e.g. {key}: [gender, age]")
    return tuple(value)


def _scalar(raw: dict, key: str, spec_path: Path, kinds: tuple[type, ...]) -> object:
    value = raw.get(key)
    if value is not None and (not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds):
        raise SpecError(f"{spec_path}: '{key}' must be one of {[k.__name__ for k in kinds]}, got {value!r}")
    return value


def _integer(raw: dict, key: str, spec_path: Path, default: int | None) -> int | None:
    value = _scalar(raw, key, spec_path, (int,))
    if value is not None and value < 1:
        raise SpecError(f"{spec_path}: '{key}' must be a positive whole number, got {value!r}")
    return default if value is None else value


def _require(raw: dict, key: str, spec_path: Path) -> object:
    if raw.get(key) in (None, ""):
        raise SpecError(f"{spec_path}: required field '{key}' is missing; add it to the spec")
    return raw[key]


def _require_text(raw: dict, key: str, spec_path: Path) -> str:
    value = _require(raw, key, spec_path)
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise SpecError(f"{spec_path}: '{key}' must be text, got {value!r}")
    return str(value)


def _data_path(raw: dict, spec_path: Path) -> Path:
    file_name = _require_text(raw, "file", spec_path)
    path = (spec_path.parent / file_name).resolve()
    if spec_path.parent.resolve() not in path.parents:
        raise SpecError(f"{spec_path}: 'file' must name a file in the same folder, got {file_name!r}")
    return path


def load_dataset_spec(spec_path: Path) -> DatasetSpec:
    """Read `<name>.yaml`; the data file it names lives in the same folder."""
    raw = _load_yaml(spec_path, DATASET_FIELDS)
    task = str(_require(raw, "task", spec_path))
    if task not in TASKS:
        raise SpecError(f"{spec_path}: task {task!r} is not one of {TASKS}; fix the 'task' field")
    delimiter = _scalar(raw, "delimiter", spec_path, (str,))
    if delimiter is not None and len(delimiter) != 1:
        raise SpecError(f"{spec_path}: 'delimiter' must be one character, got {delimiter!r}")
    encoding = _scalar(raw, "encoding", spec_path, (str,))
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError as error:
            raise SpecError(f"{spec_path}: encoding {encoding!r} is unknown; use e.g. utf-8 or latin-1") from error
    return DatasetSpec(
        name=validate_name(spec_path.stem),
        path=_data_path(raw, spec_path),
        target=_require_text(raw, "target", spec_path),
        task=task,
        id_column=_optional_text(raw, "id_column", spec_path),
        time_column=_optional_text(raw, "time_column", spec_path),
        positive_class=_scalar(raw, "positive_class", spec_path, (str, int, bool, float)),
        sensitive_columns=_names(raw, "sensitive_columns", spec_path),
        exclude_columns=_names(raw, "exclude_columns", spec_path),
        spec_path=spec_path,
        dtypes=_dtypes(raw, spec_path),
        cleaning=_cleaning(raw, spec_path),
        delimiter=delimiter,
        encoding=encoding,
        sheet=_scalar(raw, "sheet", spec_path, (str, int)),
        ab_test=_bounded(raw, "ab_test", spec_path, AB_TEST_OPTIONS),
        performance=_bounded(raw, "performance", spec_path, PERFORMANCE_OPTIONS),
        drift=_settings(raw, "drift", spec_path, DriftSettings, "drift: {method: ks, correction: bh}"),
        retrain=_settings(raw, "retrain", spec_path, RetrainSettings, "retrain: {cool_down_hours: 24}"),
        fairness=_settings(raw, "fairness", spec_path, FairnessSettings, "fairness: {min_disparate_impact: 0.8}"),
        what_if=_settings(raw, "what_if", spec_path, WhatIfSettings, "what_if: {immutable_columns: [age]}"),
    )


def _dtypes(raw: dict, spec_path: Path) -> dict[str, str]:
    dtypes = raw.get("dtypes") or {}
    if not isinstance(dtypes, dict):
        raise SpecError(f"{spec_path}: 'dtypes' must map column names to types, got {type(dtypes).__name__}")
    for column, kind in dtypes.items():
        if kind not in COLUMN_TYPES:
            raise SpecError(f"{spec_path}: dtypes.{column} is {kind!r}; use one of {COLUMN_TYPES}")
    return {str(c): str(k) for c, k in dtypes.items()}


def _mapping(raw: dict, key: str, spec_path: Path, example: str) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise SpecError(f"{spec_path}: '{key}' must be a mapping of options, e.g. {example}; got "
                        f"{type(value).__name__}")
    return value


def _cleaning(raw: dict, spec_path: Path) -> dict[str, object]:
    cleaning = _mapping(raw, "cleaning", spec_path, "cleaning: {missing: median}")
    allowed = {*CLEANING_OPTIONS, "fill_value", "outlier_threshold"}
    for key, value in cleaning.items():
        if key not in allowed:
            raise SpecError(f"{spec_path}: unknown cleaning option {key!r}; use one of {sorted(allowed)}")
        if key in CLEANING_OPTIONS and value not in CLEANING_OPTIONS[key]:
            raise SpecError(f"{spec_path}: cleaning.{key} is {value!r}; use one of {CLEANING_OPTIONS[key]}")
        if key == "outlier_threshold" and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            raise SpecError(f"{spec_path}: cleaning.outlier_threshold must be a positive number, got {value!r}")
    return dict(cleaning)


AB_TEST_OPTIONS = {"challenger_share": (0.0, 1.0), "min_detectable_effect": (0.0, None)}
PERFORMANCE_OPTIONS = {"max_drop": (0.0, None), "max_relative_drop": (0.0, 1.0)}


def _bounded(raw: dict, key: str, spec_path: Path, options: dict[str, tuple[float, float | None]]) -> dict[str, float]:
    """A mapping of named numbers, each within its (exclusive) bounds."""
    values = _mapping(raw, key, spec_path, f"{key}: {{{next(iter(options))}: 0.2}}")
    for name, value in values.items():
        if name not in options:
            raise SpecError(f"{spec_path}: unknown {key} option {name!r}; use one of {sorted(options)}")
        low, high = options[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= low or high and value >= high:
            bounds = f"between {low:g} and {high:g} (both excluded)" if high else f"above {low:g}"
            raise SpecError(f"{spec_path}: {key}.{name} must be a number {bounds}, got {value!r}")
    return {str(k): float(v) for k, v in values.items()}


def _settings(raw: dict, key: str, spec_path: Path, settings: type, example: str) -> dict[str, object]:
    """A mapping the engine's `settings` dataclass checks (its `from_mapping` names unknown or bad values)."""
    values = _mapping(raw, key, spec_path, example)
    try:
        settings.from_mapping(values)
    except (TypeError, ValueError) as error:
        raise SpecError(f"{spec_path}: {key} settings: {error}") from error
    return dict(values)


def load_series_spec(spec_path: Path) -> SeriesSpec:
    raw = _load_yaml(spec_path, SERIES_FIELDS)
    freq = None if raw.get("freq") is None else str(raw["freq"])
    try:
        if freq is not None:
            pd.tseries.frequencies.to_offset(freq)
    except ValueError as error:
        raise SpecError(f"{spec_path}: freq {freq!r} is not a pandas frequency; use e.g. MS, D, h or W, or leave it "
                        "out to infer it from the timestamps") from error
    log_transform = _scalar(raw, "log_transform", spec_path, (bool,))
    time_column = _require_text(raw, "time_column", spec_path)
    value_column = _require_text(raw, "value_column", spec_path)
    regressors = _names(raw, "regressors", spec_path)
    clashes = sorted({time_column, value_column} & set(regressors))
    if clashes or len(set(regressors)) < len(regressors):
        raise SpecError(f"{spec_path}: regressors must be distinct columns other than the time and value columns, "
                        f"got {list(regressors)}; remove {clashes or 'the repeated names'}")
    return SeriesSpec(
        name=validate_name(spec_path.stem, "series"),
        path=_data_path(raw, spec_path),
        time_column=time_column,
        value_column=value_column,
        freq=freq,
        season_length=_integer(raw, "season_length", spec_path, None),
        horizon=_integer(raw, "horizon", spec_path, 24),
        folds=_integer(raw, "folds", spec_path, 3),
        log_transform=bool(log_transform),
        network=_network(raw, spec_path),
        prophet=_prophet(raw, spec_path, freq),
        regressors=regressors,
        spec_path=spec_path,
    )


def _prophet(raw: dict, spec_path: Path, freq: str | None) -> dict:
    """The spec's `prophet` mapping, checked by the settings it describes; holidays only on daily or finer data
    (checked here when the spec states its freq)."""
    from tmiv_assets.ml.forecasting.models import ProphetSettings  # statsforecast loads only where used

    settings = _settings(raw, "prophet", spec_path, ProphetSettings, "prophet: {country_holidays: US}")
    start = pd.Timestamp("2001-01-01")
    step = start + pd.tseries.frequencies.to_offset(freq) - start if freq else pd.Timedelta(0)
    if settings.get("country_holidays") and step > pd.Timedelta(days=1):
        raise SpecError(f"{spec_path}: prophet.country_holidays needs daily or finer data; at freq {freq!r} the "
                        "timestamps rarely fall on a holiday, so remove it")
    return settings


def _network(raw: dict, spec_path: Path) -> dict:
    """The spec's `network` mapping: the architectures to backtest, and the settings NetworkSettings checks."""
    from tmiv_assets.ml.forecasting.neural import ARCHITECTURES, NetworkSettings  # torch loads only where used

    example = "network: {architectures: [gru], width: 32}"
    network = _mapping(raw, "network", spec_path, example)
    architectures = network.get("architectures", [])
    if not isinstance(architectures, list) or not set(architectures) <= set(ARCHITECTURES):
        raise SpecError(f"{spec_path}: network.architectures must be a list of {list(ARCHITECTURES)} (empty: none), "
                        f"got {architectures!r}")
    settings = {key: value for key, value in network.items() if key != "architectures"}
    _settings({"network": settings}, "network", spec_path, NetworkSettings, example)
    return dict(network)
