"""Runs started from Python (the demo) as ordinary runs of the code location that `make ui` serves.

`execute_in_process` and `dagster job execute` record no code-location origin, so the UI lists such runs under
no job and warns on re-execution. A run created here carries the origin of workspace.yaml's location, as a run
the webserver or daemon launched would, and executes with the job's own executor.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin, RemoteRepositoryOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REPOSITORY_NAME = "__repository__"  # the name Dagster gives the repository of a module's `Definitions`


def workspace_location(workspace: Path = PROJECT_ROOT / "workspace.yaml") -> tuple[str, str, Path]:
    """The module, location name and working directory of the workspace's one code location."""
    entry = yaml.safe_load(workspace.read_text())["load_from"][0]["python_module"]
    return (entry["module_name"], entry["location_name"],
            (workspace.parent / entry.get("working_directory", ".")).resolve())


def execute_location_run(instance: dg.DagsterInstance, job_name: str, partition_key: str | None = None,
                         tags: dict[str, str] | None = None, run_config: dict | None = None) -> dg.DagsterRun:
    """Create `job_name`'s run with the workspace location's origin, execute it, and return the finished run."""
    module, location_name, working_directory = workspace_location()
    recon_job = ReconstructableRepository.for_module(
        module, "defs", working_directory=str(working_directory)).get_reconstructable_job(job_name)
    job = recon_job.get_definition()
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=module,
                             working_directory=str(working_directory)), location_name)
    partition_tags = job.get_tags_for_partition_key(partition_key, selected_asset_keys=None) if partition_key else {}
    run = instance.create_run_for_job(
        job_def=job, run_config=run_config or {}, tags={**(tags or {}), **partition_tags},
        remote_job_origin=RemoteRepositoryOrigin(location, REPOSITORY_NAME).get_job_origin(job_name),
        job_code_origin=recon_job.get_python_origin())
    execute_run(recon_job, run, instance)
    return instance.get_run_by_id(run.run_id)


def run_events(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> list:
    """The dagster events of one type that a finished run logged."""
    return [record.event_log_entry.dagster_event for record in instance.get_records_for_run(
        run_id, of_type=event_type, limit=10_000).records]
