"""When the monitoring loop retrains, and when it undoes a deployment.

A retrain pays only when there is something new to learn from: a batch that drifted or a champion whose
live (or label-free estimated) metric fell beyond the spec's thresholds says that the world moved, and
labelled rows the champion never trained on are what the new model can learn the move from. So a trigger
retrains only with at least `min_new_labelled_rows` such rows, and at most once per `cool_down_hours`
per dataset, whatever the number of triggering batches. Every decision carries its reason.

A champion put in place automatically is rolled back when, on labelled rows neither it nor its
predecessor trained on, it scores worse than the predecessor by more than `rollback_margin`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tmiv_assets.ml.metrics import LOWER_IS_BETTER
from tmiv_assets.ml.monitoring.settings import SpecSettings

TRIGGERS = ("performance", "estimated performance", "drift", "prediction drift", "new data")
"""In order of precedence: a measured drop outranks an estimated one, which outranks a changed input, which
outranks plain growth of the labelled data."""


@dataclass(frozen=True)
class RetrainSettings(SpecSettings):
    """Every field can be set in the dataset spec's `retrain` mapping."""

    KIND = "retrain"

    on_drift: bool = True
    """A batch whose data drift verdict fired is a trigger."""
    on_prediction_drift: bool = False
    """A batch whose prediction (output) drift fired is a trigger."""
    on_estimated_drop: bool = True
    """A label-free estimate below the performance thresholds is a trigger."""
    new_data_share: float | None = 0.5
    """Labelled rows the champion did not train on, as a share of the rows it trained on, that are a trigger by
    themselves (more data usually pays even without a visible shift; the gate still has to pass); empty: never."""
    cool_down_hours: float = 6.0
    """No automatic retrain of a dataset within this many hours of the previous one."""
    min_new_labelled_rows: int = 100
    """Labelled rows of scored batches the champion did not train on, needed before a retrain."""
    window_days: int | None = None
    """Training rows: the reference file plus labelled batches of the last `window_days` days before the
    newest one; empty: every labelled batch."""
    auto_deploy: bool = True
    """A retrained model that passes the champion gate becomes champion; false: it waits as `challenger`."""
    rollback_margin: float = 0.01
    """Roll back when the new champion scores this much worse (metric units) than its predecessor."""

    def __post_init__(self):
        for name in ("on_drift", "on_prediction_drift", "on_estimated_drop", "auto_deploy"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"retrain {name} must be true or false, got {getattr(self, name)!r}")
        for name in ("cool_down_hours", "rollback_margin", "new_data_share"):
            value = getattr(self, name)
            if name == "new_data_share" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"retrain {name} must be a number at or above 0, got {value!r}")
        for name in ("min_new_labelled_rows", "window_days"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"retrain {name} must be a whole number at or above 0, got {value!r}")


@dataclass(frozen=True)
class RetrainSignals:
    """What the monitoring assets reported for one dataset since the sensor last looked."""

    triggered_days: dict[str, tuple[str, ...]]
    """Trigger (one of TRIGGERS) -> the batch days that raised it."""
    new_labelled_rows: int
    hours_since_last_retrain: float | None
    """Since the newest automatic retrain of the dataset was requested; None: never."""
    trained_rows: int | None = None
    """Rows the champion's training data held (for `new_data_share`); None: unknown, no growth trigger."""
    new_days: tuple[str, ...] = ()
    """The labelled batch days behind `new_labelled_rows`."""


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    trigger: str | None
    days: tuple[str, ...]
    reason: str


def decide_retrain(signals: RetrainSignals, settings: RetrainSettings) -> RetrainDecision:
    """Retrain or skip, with the reason either way."""
    enabled = {"performance": True, "estimated performance": settings.on_estimated_drop,
               "drift": settings.on_drift, "prediction drift": settings.on_prediction_drift, "new data": True}
    triggered = dict(signals.triggered_days)
    if (settings.new_data_share is not None and signals.trained_rows and signals.new_days
            and signals.new_labelled_rows >= settings.new_data_share * signals.trained_rows):
        triggered["new data"] = signals.new_days
    raised = [t for t in TRIGGERS if triggered.get(t) and enabled[t]]
    if not raised:
        ignored = sorted(t for t, days in triggered.items() if days)
        return RetrainDecision(False, None, (), "no trigger" + (f" (switched off: {', '.join(ignored)})"
                                                                if ignored else ""))
    trigger = raised[0]
    days = tuple(sorted({day for t in raised for day in triggered[t]}))
    what = f"{trigger} on {', '.join(days)}"
    if signals.hours_since_last_retrain is not None and signals.hours_since_last_retrain < settings.cool_down_hours:
        return RetrainDecision(False, trigger, days, f"{what}, but the last retrain was "
                                                     f"{signals.hours_since_last_retrain:.1f} h ago (cool-down "
                                                     f"{settings.cool_down_hours:g} h)")
    if signals.new_labelled_rows < settings.min_new_labelled_rows:
        return RetrainDecision(False, trigger, days, f"{what}, but only {signals.new_labelled_rows} labelled rows "
                                                     f"the champion did not train on (need "
                                                     f"{settings.min_new_labelled_rows}); waiting for labels")
    return RetrainDecision(True, trigger, days, f"{what}; {signals.new_labelled_rows} new labelled rows")


@dataclass(frozen=True)
class RollbackDecision:
    rollback: bool
    reason: str


def decide_rollback(metric: str, champion_score: float, previous_score: float, margin: float,
                    rows: str) -> RollbackDecision:
    """Roll back when the champion is worse than its predecessor by more than `margin` on the same rows."""
    shortfall = champion_score - previous_score if metric in LOWER_IS_BETTER else previous_score - champion_score
    verdict = (f"{metric} {champion_score:.4f} vs the previous champion's {previous_score:.4f} on {rows} "
               f"(shortfall {shortfall:.4f}, margin {margin:g})")
    return RollbackDecision(shortfall > margin, ("roll back: " if shortfall > margin else "keep: ") + verdict)
