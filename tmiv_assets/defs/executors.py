"""Executors: steps in processes of their own by default (two at a time, forked from a server that preloads the
project), on Celery workers in the distributed profile, or one after another in the run's own process."""

import os

import dagster as dg
from dagster_celery import celery_executor

CELERY_BROKER = "TMIV_CELERY_BROKER"
# Forked by every step: a step starts in about a second instead of re-importing pandas, MLflow, SHAP for several.
# The project imports Evidently only where it reports, so it is preloaded by name.
PRELOADED = ["tmiv_assets.definitions", "evidently"]


def local_executor(steps_in_process: bool) -> dg.ExecutorDefinition:
    """The multiprocess executor with a preloading forkserver, or, with `steps_in_process` (run config can set it
    either way), the in-process one: no step start-up, for runs launched side by side or of a few short steps."""
    return dg.multi_or_in_process_executor.configured(
        lambda config: {"in_process": {}} if config["steps_in_process"] else
        {"multiprocess": {"start_method": {"forkserver": {"preload_modules": PRELOADED}}}},
        config_schema={"steps_in_process": dg.Field(bool, default_value=steps_in_process, description=(
            "Run the steps one after another in the run's process instead of two at a time in processes of their "
            "own: no step start-up, for runs that are launched side by side or have only a few short steps."))},
    )


def default_executor() -> dg.ExecutorDefinition:
    """Every step a task on the broker, run by whichever Celery worker takes it, when TMIV_CELERY_BROKER names one
    (README "Scaling out"; the broker doubles as result backend); local processes otherwise."""
    if os.getenv(CELERY_BROKER):
        return celery_executor.configured({"broker": {"env": CELERY_BROKER}, "backend": {"env": CELERY_BROKER}})
    return local_executor(steps_in_process=False)


# Scoring a batch, refreshing a history and the lifecycle jobs are a few steps of a second or two each: starting a
# step server and a process per step (about ten seconds) cost more than the work, on any profile.
short_steps_executor = local_executor(steps_in_process=True)
