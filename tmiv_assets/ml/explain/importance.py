"""Permutation importance of the model's input columns (what ELI5 offered), through scikit-learn's inspection module.

Columns are shuffled as they enter the served pipeline (raw columns, before feature engineering and encoding), so a
column's importance includes everything derived from it: how much the metric drops when that column carries no
information, over `repeats` shuffles, with its spread.
"""

from __future__ import annotations

import pandas as pd
from sklearn.inspection import permutation_importance
from threadpoolctl import threadpool_limits

from tmiv_assets.ml.metrics import LOWER_IS_BETTER, score_model

# Rows shuffled and scored, drawn once (seeded) so the baseline and every shuffle see the same rows: the metric's
# own noise on 2,000 rows (about 0.01 of ROC AUC) is well under the drops that rank columns, and each of the
# columns x repeats scorings costs a full prediction of the rows.
IMPORTANCE_ROWS = 2000


def input_importance(model, X: pd.DataFrame, y: pd.Series, task: str, metric: str, positive_class=None,
                     repeats: int = 5, seed: int = 0, max_rows: int = IMPORTANCE_ROWS) -> pd.DataFrame:
    """feature, importance_mean, importance_std (drop of `metric` when the column is shuffled; positive: the
    model relies on it), largest first; on up to `max_rows` rows of X."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0

    def scorer(estimator, rows, truth) -> float:  # higher is better, as scikit-learn expects
        return sign * score_model(estimator, rows, truth, task, positive_class)[metric]

    columns = list(model.feature_names_in_)
    if len(X) > max_rows:
        X = X.sample(max_rows, random_state=seed)
        y = y.loc[X.index]
    with threadpool_limits(1):
        result = permutation_importance(model, X[columns], y, scoring=scorer, n_repeats=repeats, random_state=seed,
                                        n_jobs=1)
    frame = pd.DataFrame({"feature": columns, "importance_mean": result.importances_mean,
                          "importance_std": result.importances_std})
    return frame.sort_values("importance_mean", ascending=False, kind="stable").reset_index(drop=True).round(5)
