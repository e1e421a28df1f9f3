"""Settings read from a dataset spec's mapping, with unknown keys named rather than ignored."""

from __future__ import annotations

from dataclasses import fields
from typing import ClassVar, Self


class SpecSettings:
    """Mixin for a settings dataclass; `KIND` names it in errors ("drift", "retrain")."""

    KIND: ClassVar[str] = "settings"

    @classmethod
    def from_mapping(cls, values: dict) -> Self:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.KIND} settings {unknown}; use {sorted(known)}")
        return cls(**values)
