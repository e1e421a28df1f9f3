"""The retrain policy and the rollback rule (engine), the spec's `retrain` settings, and per-batch hold-outs."""

import numpy as np
import pandas as pd
import pytest

from tmiv_assets.ml.data.spec import SpecError, load_dataset_spec
from tmiv_assets.ml.data.splits import split_dataset
from tmiv_assets.ml.monitoring.policy import (
    RetrainSettings,
    RetrainSignals,
    decide_retrain,
    decide_rollback,
)

SETTINGS = RetrainSettings(cool_down_hours=6, min_new_labelled_rows=100)


def signals(triggers: dict[str, tuple[str, ...]], rows: int = 500, hours: float | None = None) -> RetrainSignals:
    return RetrainSignals(triggered_days=triggers, new_labelled_rows=rows, hours_since_last_retrain=hours)


def test_a_drifted_batch_with_new_labels_retrains_once_for_all_its_days():
    decision = decide_retrain(signals({"drift": ("2013-07-23", "2013-07-22")}, hours=30), SETTINGS)
    assert decision.retrain and decision.trigger == "drift"
    assert decision.days == ("2013-07-22", "2013-07-23")
    assert "500 new labelled rows" in decision.reason


def test_nothing_raised_is_no_retrain():
    decision = decide_retrain(signals({"drift": ()}), SETTINGS)
    assert not decision.retrain and decision.reason == "no trigger"


def test_a_measured_drop_outranks_drift_and_the_days_of_every_trigger_are_kept():
    decision = decide_retrain(signals({"drift": ("2013-07-22",), "performance": ("2013-07-23",)}), SETTINGS)
    assert decision.trigger == "performance"
    assert decision.days == ("2013-07-22", "2013-07-23")


@pytest.mark.parametrize(("hours", "retrain"), [(1.0, False), (5.9, False), (6.0, True), (None, True)])
def test_cool_down_counts_from_the_last_retrain(hours, retrain):
    decision = decide_retrain(signals({"drift": ("2013-07-22",)}, hours=hours), SETTINGS)
    assert decision.retrain is retrain
    if not retrain:
        assert f"{hours:.1f} h ago (cool-down 6 h)" in decision.reason


@pytest.mark.parametrize(("rows", "retrain"), [(0, False), (99, False), (100, True)])
def test_a_retrain_waits_for_enough_labelled_rows_the_champion_did_not_train_on(rows, retrain):
    decision = decide_retrain(signals({"performance": ("2013-07-22",)}, rows=rows), SETTINGS)
    assert decision.retrain is retrain
    if not retrain:
        assert f"only {rows} labelled rows" in decision.reason and "waiting for labels" in decision.reason


@pytest.mark.parametrize(("new_rows", "trained_rows", "share", "retrain"), [
    (500, 1000, 0.5, True),    # half as many new labelled rows as it trained on: worth a retrain on its own
    (499, 1000, 0.5, False),
    (500, 1000, None, False),  # switched off
    (500, None, 0.5, False),   # no champion to compare with
])
def test_enough_new_labelled_data_is_a_trigger_by_itself(new_rows, trained_rows, share, retrain):
    quiet = RetrainSignals(triggered_days={}, new_labelled_rows=new_rows, hours_since_last_retrain=None,
                           trained_rows=trained_rows, new_days=("2013-02-12", "2013-02-13"))
    decision = decide_retrain(quiet, RetrainSettings(new_data_share=share))
    assert decision.retrain is retrain
    if retrain:
        assert decision.trigger == "new data" and decision.days == ("2013-02-12", "2013-02-13")
    # a drift day outranks plain growth, and its days and the new days are all named
    drifted = RetrainSignals({"drift": ("2013-07-22",)}, new_rows, None, trained_rows, ("2013-02-12",))
    assert decide_retrain(drifted, RetrainSettings(new_data_share=share)).trigger == "drift"


def test_triggers_switched_off_in_the_settings_are_named_in_the_skip_reason():
    settings = RetrainSettings(on_drift=False, on_estimated_drop=False)
    decision = decide_retrain(signals({"drift": ("d",), "estimated performance": ("d",), "prediction drift": ("d",)}),
                              settings)
    assert not decision.retrain
    assert decision.reason == "no trigger (switched off: drift, estimated performance, prediction drift)"
    assert decide_retrain(signals({"prediction drift": ("d",)}),
                          RetrainSettings(on_prediction_drift=True)).trigger == "prediction drift"


@pytest.mark.parametrize(("metric", "champion", "previous", "rollback"), [
    ("roc_auc", 0.80, 0.85, True),    # 0.05 worse than its predecessor: back
    ("roc_auc", 0.845, 0.85, False),  # within the margin
    ("roc_auc", 0.90, 0.85, False),
    ("rmse", 4.2, 4.0, True),         # lower is better
    ("rmse", 3.9, 4.0, False),
])
def test_rollback_when_worse_than_the_predecessor_by_more_than_the_margin(metric, champion, previous, rollback):
    decision = decide_rollback(metric, champion, previous, margin=0.01, rows="batch 2013-07-30's 858 labelled rows")
    assert decision.rollback is rollback
    assert decision.reason.startswith("roll back: " if rollback else "keep: ")
    assert "858 labelled rows" in decision.reason


@pytest.mark.parametrize(("values", "message"), [
    ({"cool_down": 3}, "unknown retrain settings ['cool_down']"),
    ({"cool_down_hours": -1}, "cool_down_hours must be a number at or above 0"),
    ({"min_new_labelled_rows": 2.5}, "min_new_labelled_rows must be a whole number"),
    ({"auto_deploy": "no"}, "auto_deploy must be true or false"),
])
def test_bad_retrain_settings_name_the_setting(values, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RetrainSettings.from_mapping(values)


def test_the_spec_checks_its_retrain_mapping(tmp_path):
    (tmp_path / "d.csv").write_text("x,y\n1,0\n2,1\n")
    spec_path = tmp_path / "d.yaml"
    spec_path.write_text("file: d.csv\ntarget: y\ntask: binary\nretrain: {window_days: 30, auto_deploy: false}\n")
    assert load_dataset_spec(spec_path).retrain == {"window_days": 30, "auto_deploy": False}
    spec_path.write_text("file: d.csv\ntarget: y\ntask: binary\nretrain: {window_days: -3}\n")
    with pytest.raises(SpecError, match=r"d.yaml: retrain settings: retrain window_days must be a whole number"):
        load_dataset_spec(spec_path)


def test_labelled_batches_are_held_out_batch_by_batch_and_stably():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=1500), "y": rng.integers(0, 2, 1500)})
    ids = pd.Series(np.arange(1500) * 7919)
    times = pd.Series(pd.date_range("2013-01-01", periods=1500, freq="h"))
    days = pd.Series([None] * 1000 + ["2013-07-22"] * 300 + ["2013-07-23"] * 200, dtype="string")
    split = split_dataset(frame, "y", "binary", ids=ids, times=times, batch_days=days)
    assert split.strategy == "chronological + 2 labelled batches by id hash"
    held = split.test_batch_days.value_counts(dropna=False)
    assert held[pd.NA] == 200  # the reference's latest fifth, cut in time as without batches
    assert split.X_test.index[:200].tolist() == list(range(800, 1000))
    assert abs(held["2013-07-22"] - 60) <= 2 and abs(held["2013-07-23"] - 40) <= 2  # a fifth of each batch
    assert len(split.X_train) + len(split.X_test) == 1500
    # A row keeps its side when the next batch arrives, so a retrain and its champion share held-out rows.
    grown = split_dataset(pd.concat([frame, frame.head(100)], ignore_index=True), "y", "binary",
                          ids=pd.concat([ids, ids.head(100) + 1], ignore_index=True),
                          times=pd.concat([times, times.head(100)], ignore_index=True),
                          batch_days=pd.concat([days, pd.Series(["2013-07-30"] * 100, dtype="string")],
                                               ignore_index=True))
    assert set(split.X_test.index[split.test_batch_days.notna().to_numpy()]) <= set(grown.X_test.index)
    with pytest.raises(ValueError, match="held out by id"):
        split_dataset(frame, "y", "binary", batch_days=days)
