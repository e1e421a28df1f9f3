"""Held-out test splits and cross-validation folds that respect classes, ids and time.

With event times every split of the reference rows is chronological: all their training rows are strictly
earlier than all their test rows and rows sharing a timestamp are never split across the boundary.
With ids (and no time) the split is stable: a row keeps its side when labelled rows are added, so a
retrained model is compared with the champion on rows neither trained on.
Rows of labelled batches are held out batch by batch, by the same stable id hash, so a retrain learns from
every batch and is judged on rows of each that it did not see, the newest included.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit, train_test_split

from tmiv_assets.ml.data.spec import CLASSIFICATION

logger = logging.getLogger(__name__)
Folds = list[tuple[np.ndarray, np.ndarray]]
HOLDOUT_SHARE = 0.2


@dataclass(frozen=True)
class TrainTestSplit:
    """Features and target of both sides; indexes are those of the input frame."""

    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series
    strategy: str
    """'chronological', 'stable_id_hash', 'stratified' or 'random'."""
    times_train: pd.Series | None = None
    """Event times of the training rows (chronological splits), for time-ordered CV folds."""
    test_batch_days: pd.Series | None = None
    """The labelled batch each test row came from (missing for reference rows); None without batches."""


def split_dataset(features: pd.DataFrame, target: str, task: str, test_size: float = 0.2, seed: int = 0,
                  ids: pd.Series | None = None, times: pd.Series | None = None,
                  batch_days: pd.Series | None = None) -> TrainTestSplit:
    """Hold out `test_size` of the rows: the latest ones with `times`, the lowest id hashes per class with
    `ids`, else a seeded split stratified on the target for classification. Rows with a `batch_days` value
    (labelled batches, which always have ids) are held out per batch by id hash instead."""
    if target not in features.columns:
        raise ValueError(f"target column {target!r} not found (columns: {list(features.columns)})")
    if not 0 < test_size < 1:
        raise ValueError(f"test_size={test_size} must be a fraction between 0 and 1")
    X, y = features.drop(columns=[target]), features[target]
    from_batch = batch_days.notna() if batch_days is not None else pd.Series(False, index=features.index)
    reference = ~from_batch
    if from_batch.any() and ids is None:
        raise ValueError("rows of labelled batches are held out by id; pass their ids")
    test = np.zeros(len(features), dtype=bool)
    if times is not None:
        test[reference.to_numpy()] = _latest(pd.to_datetime(times[reference]), test_size).to_numpy()
        strategy = "chronological"
    elif ids is not None:
        test[reference.to_numpy()] = _lowest_id_hashes(ids[reference], y[reference], task, test_size).to_numpy()
        strategy = "stable_id_hash"
    else:
        stratify = y if task in CLASSIFICATION else None
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, random_state=seed,
                                                            stratify=stratify)
        return TrainTestSplit(X_train, X_test, y_train, y_test, "stratified" if stratify is not None else "random")
    if from_batch.any():
        test[from_batch.to_numpy()] = _lowest_id_hashes(ids[from_batch], y[from_batch], task, test_size,
                                                        groups=batch_days[from_batch].astype(str)).to_numpy()
        strategy += f" + {batch_days[from_batch].nunique()} labelled batches by id hash"
    test = pd.Series(test, index=features.index)
    train = ~test
    return TrainTestSplit(X[train], X[test], y[train], y[test], strategy,
                          times[train] if times is not None else None,
                          batch_days[test] if from_batch.any() else None)


def _lowest_id_hashes(ids: pd.Series, y: pd.Series, task: str, share: float,
                      groups: pd.Series | None = None) -> pd.Series:
    """The `share` of rows with the lowest id hashes, per class (classification) and per group."""
    rank = pd.Series(pd.util.hash_pandas_object(ids.astype(str), index=False).to_numpy(), index=ids.index)
    keys = [y if task in CLASSIFICATION else pd.Series(0, index=ids.index)]
    keys += [groups] if groups is not None else []
    return rank.groupby(keys).rank(method="first", pct=True) <= share


def _latest(times: pd.Series, test_size: float) -> pd.Series:
    """Rows at or after the (1 - test_size) time quantile, moved to a timestamp boundary so ties stay together."""
    if times.isna().any():
        raise ValueError(f"time column has {int(times.isna().sum())} missing values; drop or fill them before a "
                         "chronological split")
    ordered = np.sort(times.to_numpy())
    cut = ordered[min(len(ordered) - 1, int(np.floor(len(ordered) * (1 - test_size))))]
    test = times >= cut
    if test.all() or not test.any():
        raise ValueError(f"time column has too few distinct timestamps ({times.nunique()}) for a chronological "
                         "train/test split")
    return test


def cv_folds(y: pd.Series, task: str, n_splits: int = 5, seed: int = 0, times: pd.Series | None = None) -> Folds:
    """(train positions, validation positions) per fold; `n_splits=1` is a single holdout of a fifth of the
    rows (the latest fifth with `times`, stratified for classification).

    With `times`, TimeSeriesSplit over the distinct timestamps, so a validation fold is strictly later than
    its training rows even when rows are unsorted or tied (the earliest block is never validated). Else
    shuffled StratifiedKFold for classification, with K lowered to the smallest class (at least 2), and
    shuffled KFold for regression.
    """
    if n_splits == 1:
        return [_holdout(y, task, seed, times)]
    if times is not None:
        codes, stamps = pd.factorize(pd.to_datetime(pd.Series(times)).to_numpy(), sort=True)
        if len(stamps) <= n_splits:
            raise ValueError(f"time column has {len(stamps)} distinct timestamps; {n_splits}-fold time-series CV "
                             "needs more")
        return [(np.flatnonzero(np.isin(codes, train)), np.flatnonzero(np.isin(codes, valid)))
                for train, valid in TimeSeriesSplit(n_splits=n_splits).split(np.arange(len(stamps)))]
    positions = np.arange(len(y))
    if task not in CLASSIFICATION:
        return list(KFold(n_splits, shuffle=True, random_state=seed).split(positions))
    smallest = int(pd.Series(y).value_counts().min())
    if smallest < n_splits:
        logger.warning("smallest class has %d rows: using %d CV folds instead of %d", smallest, smallest, n_splits)
    return list(StratifiedKFold(min(n_splits, smallest), shuffle=True, random_state=seed).split(positions, y))


def _holdout(y: pd.Series, task: str, seed: int, times: pd.Series | None) -> tuple[np.ndarray, np.ndarray]:
    positions = np.arange(len(y))
    if times is not None:
        valid = _latest(pd.to_datetime(pd.Series(times)).reset_index(drop=True), HOLDOUT_SHARE).to_numpy()
        return positions[~valid], positions[valid]
    stratify = y if task in CLASSIFICATION else None
    train, valid = train_test_split(positions, test_size=HOLDOUT_SHARE, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(valid)
