"""The Definitions object loads, and the layers keep their boundaries."""

import ast
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from tmiv_assets.definitions import defs
from tmiv_assets.defs.assets.automl import TrainingConfig
from tmiv_assets.defs.launch import workspace_location
from tmiv_assets.defs.metadata import markdown_table
from tmiv_assets.ml.plots import missing_values_plot
from tmiv_assets_tests.conftest import PROJECT_ROOT

ENGINE = Path(__file__).resolve().parents[1] / "tmiv_assets" / "ml"


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_every_asset_is_partitioned():
    graph = defs.resolve_asset_graph()
    unpartitioned = [key.to_user_string() for key in graph.get_all_asset_keys()
                     if graph.get(key).partitions_def is None]
    assert unpartitioned == []


def test_jobs_sensors_and_schedule_exist():
    assert {job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")} == {
        "full_pipeline", "retrain", "score_batch", "forecast_series", "promote_model", "rollback_model",
        "archive_model", "predict_file", "conclude_ab_test", "refresh_monitoring",
        "evaluate_batch", "explain_champion"}
    assert {s.name for s in defs.sensors} == {"new_data_files_sensor", "incoming_batches_sensor",
                                              "drift_retrain_sensor", "performance_retrain_sensor",
                                              "monitoring_history_sensor", "champion_explanations_sensor",
                                              "dead_runs_sensor"}
    assert {s.name: s.cron_schedule for s in defs.schedules} == {"weekly_retrain_schedule": "0 3 * * 1",
                                                                 "daily_forecast_schedule": "0 4 * * *"}


def test_engine_never_imports_dagster():
    offenders = []
    for path in ENGINE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names
                          if n.split(".")[0] == "dagster" or n.startswith("tmiv_assets.defs")]
    assert offenders == []


LIFECYCLE_JOBS = ("promote_model", "rollback_model", "archive_model", "predict_file")


@pytest.mark.parametrize("path", sorted(p for p in (PROJECT_ROOT / "config").glob("*.yaml")
                                        if p.stem not in LIFECYCLE_JOBS), ids=lambda p: p.name)
@pytest.mark.parametrize("job", ["full_pipeline", "retrain"])
def test_shipped_run_configs_are_valid_for_the_training_jobs(path, job):
    result = dg.validate_run_config(defs.resolve_job_def(job), yaml.safe_load(path.read_text()))
    # The graph asset maps its config onto each of its steps.
    assert result["ops"]["model_candidates.assemble_candidates"]["config"]["time_budget_s"] > 0


def test_the_default_search_budget_is_sized_to_the_training_rows():
    sized = TrainingConfig()
    assert sized.budget_for(500, 10) == pytest.approx(10.125)  # small sets: 10 s buys hundreds of trials
    assert sized.budget_for(20_000, 19) == pytest.approx(19.5)
    assert sized.budget_for(1_000_000, 50) == 120
    assert TrainingConfig(time_budget_s=7).budget_for(1_000_000, 50) == 7  # a configured budget is kept


@pytest.mark.parametrize("job", LIFECYCLE_JOBS)
def test_shipped_lifecycle_configs_are_valid_for_their_jobs(job):
    config = yaml.safe_load((PROJECT_ROOT / "config" / f"{job}.yaml").read_text())
    [op] = dg.validate_run_config(defs.resolve_job_def(job), config)["ops"].values()
    assert op["config"]["dataset"] == "titanic" and (op["config"].get("reason") or op["config"].get("path"))


def test_metadata_tables_show_a_missing_score_as_a_dash():
    board = pd.DataFrame({"model": ["automl", "lightgbm"], "test_roc_auc": [0.912345678, np.nan]})
    table = markdown_table(board).value
    assert "0.9123" in table and "nan" not in table
    assert re.search(r"\| lightgbm\s+\|\s+–\s+\|", table)


def test_the_missing_values_plot_of_complete_data_has_no_negative_axis():
    profile = pd.DataFrame({"column": ["a", "b"], "missing_pct": [0.0, 0.0]})
    figure = missing_values_plot(profile)
    assert figure.axes[0].get_xlim()[0] == 0 and figure.axes[0].get_title() == "no missing values"


def test_the_workspace_names_its_code_location_after_the_project():
    assert workspace_location()[:2] == ("tmiv_assets.definitions", "tmiv_assets")
