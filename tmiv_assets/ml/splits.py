"""Train / validation / test splits and cross-validation that respect classes and time.

With a time column every split is chronological: all training rows are strictly earlier than all
validation rows, which are strictly earlier than all test rows; rows sharing a timestamp are never
split across the boundary, so no fold sees its own future.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit, train_test_split

CLASSIFICATION = ("binary", "multiclass")


@dataclass(frozen=True)
class DatasetSplits:
    """Features and target of the three splits; indexes are those of the input frame."""

    X_train: pd.DataFrame
    X_validation: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_validation: pd.Series
    y_test: pd.Series
    strategy: str
    """'chronological', 'stratified' or 'random'."""


def split_train_validation_test(frame: pd.DataFrame, target: str, task: str, validation_size: float = 0.2,
                                test_size: float = 0.2, time_column: str | None = None,
                                seed: int = 0) -> DatasetSplits:
    """Split rows into train / validation / test: chronological with a time column, else stratified
    for classification and random for regression."""
    if target not in frame.columns:
        raise ValueError(f"target column {target!r} not found (columns: {list(frame.columns)})")
    if not (0 < test_size < 1 and 0 <= validation_size < 1 and validation_size + test_size < 1):
        raise ValueError(f"validation_size={validation_size} and test_size={test_size} must be fractions "
                         "that leave rows for training")
    if time_column:
        train, validation, test = _chronological(frame, time_column, validation_size, test_size)
        strategy = "chronological"
    else:
        stratify = task in CLASSIFICATION
        strategy = "stratified" if stratify else "random"
        rest, test = train_test_split(frame, test_size=test_size, random_state=seed,
                                      stratify=frame[target] if stratify else None)
        if validation_size:
            train, validation = train_test_split(rest, test_size=validation_size / (1 - test_size),
                                                 random_state=seed, stratify=rest[target] if stratify else None)
        else:
            train, validation = rest, rest.iloc[:0]
    parts = [(p.drop(columns=[target]), p[target]) for p in (train, validation, test)]
    return DatasetSplits(parts[0][0], parts[1][0], parts[2][0], parts[0][1], parts[1][1], parts[2][1], strategy)


def _chronological(frame: pd.DataFrame, time_column: str, validation_size: float,
                   test_size: float) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    times = pd.to_datetime(frame[time_column])
    if times.isna().any():
        raise ValueError(f"time column {time_column!r} has {int(times.isna().sum())} missing values; "
                         "drop or fill them before a chronological split")
    # Cut at timestamp quantiles, then move each cut to a timestamp boundary so ties stay together.
    ordered = np.sort(times.to_numpy())
    n = len(ordered)
    test_start = ordered[min(n - 1, int(np.floor(n * (1 - test_size))))]
    validation_start = ordered[min(n - 1, int(np.floor(n * (1 - test_size - validation_size))))]
    train = frame[times < validation_start]
    validation = frame[(times >= validation_start) & (times < test_start)]
    test = frame[times >= test_start]
    if train.empty or test.empty:
        raise ValueError(f"time column {time_column!r} has too few distinct timestamps "
                         f"({times.nunique()}) for a chronological train/test split")
    return train, validation, test


def cross_validator(task: str, n_splits: int = 5, time_column: str | None = None, seed: int = 0):
    """The sklearn splitter the spec calls for: TimeSeriesSplit with a time column, else
    StratifiedKFold for classification and KFold for regression (both shuffled with `seed`)."""
    if time_column:
        return TimeSeriesSplit(n_splits=n_splits)
    if task in CLASSIFICATION:
        return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return KFold(n_splits=n_splits, shuffle=True, random_state=seed)


def cv_folds(frame: pd.DataFrame, target: str, task: str, n_splits: int = 5, time_column: str | None = None,
             seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(train positions, validation positions) per fold, positions into `frame` as given.

    With a time column the folds are cut between distinct timestamps (TimeSeriesSplit over them), so a
    validation fold is strictly later than its training rows even when rows are unsorted or tied.
    """
    splitter = cross_validator(task, n_splits, time_column, seed)
    if not time_column:
        yield from splitter.split(frame, frame[target])
        return
    codes, stamps = pd.factorize(pd.to_datetime(frame[time_column]), sort=True)
    if len(stamps) <= n_splits:
        raise ValueError(f"time column {time_column!r} has {len(stamps)} distinct timestamps; "
                         f"{n_splits}-fold time-series CV needs more")
    for train_stamps, validation_stamps in splitter.split(np.arange(len(stamps))):
        yield (np.flatnonzero(np.isin(codes, train_stamps)), np.flatnonzero(np.isin(codes, validation_stamps)))
