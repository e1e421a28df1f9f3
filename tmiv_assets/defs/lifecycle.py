"""Model lifecycle by hand: promote, roll back and archive registry versions from the UI launchpad or the
shell (`dagster job execute -j rollback_model -c config/rollback_model.yaml`); every decision is recorded
in the registry and shown by `champion_history`."""

from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from tmiv_assets.defs.assets.deploy import champion_history, history_metadata
from tmiv_assets.resources.model_registry import ModelRegistry


class LifecycleConfig(dg.Config):
    dataset: str = Field(description="Dataset whose model is changed, e.g. titanic.")
    version: int | None = Field(default=None, description="Model version (rollback: empty = the previous champion).")
    reason: str = Field(default="", description="Why: recorded with the decision.")


def _decide(context: dg.OpExecutionContext, config: LifecycleConfig, registry: ModelRegistry,
            action: str) -> Iterator[dg.AssetMaterialization]:
    try:
        if action == "promote":
            if config.version is None:
                raise ValueError("promote needs a version; set 'version' in the run config")
            decision = registry.promote(config.dataset, config.version, reason=config.reason or "promoted by hand",
                                        run_id=context.run_id)
        elif action == "rollback":
            decision = registry.rollback(config.dataset, config.version, reason=config.reason, run_id=context.run_id)
        else:
            if config.version is None:
                raise ValueError("archive needs a version; set 'version' in the run config")
            decision = registry.archive(config.dataset, config.version, reason=config.reason, run_id=context.run_id)
    except (LookupError, ValueError) as error:
        raise dg.Failure(description=f"[{config.dataset}] {action}: {error}") from error
    context.log.info(f"{config.dataset}: {action} -> champion v{decision.after} (was v{decision.before})")
    yield dg.AssetMaterialization(asset_key=champion_history.key, partition=config.dataset,
                                  metadata=history_metadata(registry, config.dataset))


@dg.op(out={})
def promote_version(context: dg.OpExecutionContext, config: LifecycleConfig, registry: ModelRegistry):
    """Make `version` the champion."""
    yield from _decide(context, config, registry, "promote")


@dg.op(out={})
def rollback_champion(context: dg.OpExecutionContext, config: LifecycleConfig, registry: ModelRegistry):
    """Make the previous champion (or `version`) the champion again."""
    yield from _decide(context, config, registry, "rollback")


@dg.op(out={})
def archive_version(context: dg.OpExecutionContext, config: LifecycleConfig, registry: ModelRegistry):
    """Tag `version` archived (never the champion) and drop its challenger alias."""
    yield from _decide(context, config, registry, "archive")


@dg.job(description="Make a registered model version the champion.")
def promote_model():
    promote_version()


@dg.job(description="Roll the champion back to the previous one (or a named version).")
def rollback_model():
    rollback_champion()


@dg.job(description="Archive a model version.")
def archive_model():
    archive_version()
