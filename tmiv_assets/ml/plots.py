"""Matplotlib figures rendered as Markdown images, the form Dagster's UI shows in asset metadata."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # no display on servers and in the daemon
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay  # noqa: E402


def figure_to_markdown(figure: plt.Figure, title: str = "plot") -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"![{title}](data:image/png;base64,{encoded})"


def missing_values_plot(profile: pd.DataFrame) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(6, 0.3 * len(profile) + 1))
    axis.barh(profile["column"], profile["missing_pct"], color="tab:orange")
    axis.set_xlabel("missing values (%)")
    axis.set_xlim(0, max(1.0, 1.05 * float(profile["missing_pct"].max())))  # never a negative axis for all zeros
    if not profile["missing_pct"].any():
        axis.set_title("no missing values")
    axis.invert_yaxis()
    return figure


def roc_plot(model, X: pd.DataFrame, y: pd.Series, positive) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(5, 4))
    RocCurveDisplay.from_estimator(model, X, y, pos_label=positive, ax=axis)
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
    return figure


def predicted_vs_actual_plot(model, X: pd.DataFrame, y: pd.Series) -> plt.Figure:
    predicted = model.predict(X)
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.scatter(y, predicted, s=8, alpha=0.6)
    low, high = float(np.min(y)), float(np.max(y))
    axis.plot([low, high], [low, high], linestyle="--", color="grey")
    axis.set_xlabel("actual")
    axis.set_ylabel("predicted")
    return figure


def importance_plot(importance: pd.DataFrame, top: int = 15, value: str = "mean_abs_shap",
                    label: str = "mean |SHAP value|") -> plt.Figure:
    shown = importance.head(top)
    figure, axis = plt.subplots(figsize=(6, 0.35 * len(shown) + 1))
    axis.barh(shown["feature"], shown[value], color="tab:blue")
    axis.invert_yaxis()
    axis.set_xlabel(label)
    return figure


def drift_plot(per_column: pd.DataFrame) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(6, 0.35 * len(per_column) + 1))
    colours = ["tab:red" if d else "tab:green" for d in per_column["drifted"]]
    axis.barh(per_column["column"], per_column["score"], color=colours)
    for threshold in per_column["threshold"].unique():
        axis.axvline(threshold, linestyle="--", color="grey")
    axis.invert_yaxis()
    axis.set_xlabel("drift score (red: drifted)")
    return figure


def forecast_plot(history: pd.Series, forecast: pd.DataFrame, title: str) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(8, 4))
    axis.plot(history.index, history.values, label="observed", color="black")
    axis.plot(forecast["ds"], forecast["yhat"], label="forecast", color="tab:blue")
    axis.fill_between(
        forecast["ds"], forecast["yhat_lower"], forecast["yhat_upper"], alpha=0.25, label="95% interval"
    )
    axis.set_title(title)
    axis.legend(loc="upper left")
    return figure


def confusion_matrix_plot(model, X: pd.DataFrame, y: pd.Series) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(5, 4))
    ConfusionMatrixDisplay.from_estimator(model, X, y, ax=axis, colorbar=False)
    return figure


def pareto_plot(trials: pd.DataFrame, front: pd.DataFrame, cost: str, metric: str) -> plt.Figure:
    """Every finished trial's cost against its score, the Pareto front joined up and the pick starred."""
    figure, axis = plt.subplots(figsize=(6, 4))
    done = trials[trials["state"] == "COMPLETE"]
    axis.scatter(done[cost], done["value"], s=10, alpha=0.4, color="grey", label="trials")
    axis.plot(front[cost], front["value"], marker="o", color="tab:blue", label="Pareto front")
    picked = front[front["picked"]]
    axis.scatter(picked[cost], picked["value"], marker="*", s=250, color="tab:red", label="picked", zorder=3)
    axis.set_xscale("log")
    axis.set_xlabel(cost.replace("_", " "))
    axis.set_ylabel(f"CV {metric}")
    axis.legend()
    return figure


def champion_timeline_plot(history: pd.DataFrame) -> plt.Figure:
    """The champion version after each lifecycle decision, as steps over time, each decision marked."""
    figure, axis = plt.subplots(figsize=(7, 3))
    times = pd.to_datetime(history["at"])
    axis.step(times, history["after"], where="post", color="tab:blue")
    for action, rows in history.assign(at=times).groupby("action"):
        axis.scatter(rows["at"], rows["after"], label=action, zorder=3)
    axis.set_ylabel("champion version")
    axis.yaxis.get_major_locator().set_params(integer=True)
    axis.legend(fontsize=8)
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


def version_scores_plot(scores: pd.DataFrame, metric: str) -> plt.Figure:
    """One bar per model version: its score on the same test rows."""
    figure, axis = plt.subplots(figsize=(6, 3))
    axis.bar(scores["version"].astype(str), scores[metric], color="tab:blue")
    axis.set_xlabel("model version")
    axis.set_ylabel(metric)
    figure.tight_layout()
    return figure


def monitoring_history_plot(history: pd.DataFrame, metric: str) -> plt.Figure:
    """Per batch day: drift (share of drifted columns, prediction drift score) above, and the served model's
    estimated metric with its band next to the realised one below."""
    figure, (drift_axis, metric_axis) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    days = history["day"].astype(str)
    for column, label in (("drifted_share", "drifted column share"), ("prediction_drift_score", "prediction drift")):
        if column in history:
            drift_axis.plot(days, history[column].astype(float), marker="o", label=label)
    drift_axis.set_ylabel("drift")
    drift_axis.legend(fontsize=8)
    if "estimated" in history:
        metric_axis.plot(days, history["estimated"].astype(float), marker="o", label=f"estimated {metric}")
        metric_axis.fill_between(days, history["estimated_lower"].astype(float),
                                 history["estimated_upper"].astype(float), alpha=0.2, label="95% band")
    if "realised" in history:
        metric_axis.plot(days, history["realised"].astype(float), marker="s", label=f"realised {metric}")
    if "test_score" in history:
        metric_axis.plot(days, history["test_score"].astype(float), linestyle="--", color="grey", label="test score")
    metric_axis.set_ylabel(metric)
    metric_axis.legend(fontsize=8)
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


def backtest_plot(history: pd.Series, folds: pd.DataFrame, model: str) -> plt.Figure:
    """The series and `model`'s forecast from each rolling backtest origin, with its interval."""
    figure, axis = plt.subplots(figsize=(8, 4))
    axis.plot(history.index, history.values, label="observed", color="black")
    for fold, rows in folds[folds["model"] == model].groupby("fold"):
        axis.plot(rows["ds"], rows["yhat"], label=f"fold {fold}")
        axis.fill_between(rows["ds"], rows["yhat_lower"], rows["yhat_upper"], alpha=0.2)
    axis.set_title(f"backtest of {model}")
    axis.legend(loc="upper left", fontsize=8)
    return figure


def decomposition_plot(components: pd.DataFrame, title: str) -> plt.Figure:
    """Observed, trend, seasonal and remainder panels on one time axis."""
    figure, axes = plt.subplots(len(components.columns), 1, figsize=(8, 6), sharex=True)
    for axis, column in zip(axes, components.columns, strict=True):
        axis.plot(components.index, components[column], color="black" if column == "observed" else None)
        axis.set_ylabel(column, fontsize=8)
    axes[0].set_title(f"{title}: decomposition")
    figure.tight_layout()
    return figure


def fairness_plot(tables: dict[str, pd.DataFrame], measure: str) -> plt.Figure:
    """`measure` (e.g. selection rate, mean prediction) per group, one panel per sensitive column."""
    figure, axes = plt.subplots(1, len(tables), figsize=(4 * len(tables), 3.5), squeeze=False)
    for axis, (column, table) in zip(axes[0], tables.items(), strict=True):
        axis.bar(table["group"].astype(str), table[measure], color="tab:blue")
        axis.set_title(column)
        axis.set_ylabel(measure.replace("_", " "))
        axis.tick_params(axis="x", rotation=30, labelsize=8)
    figure.tight_layout()
    return figure
