"""Every source system the pipeline knows, by the name used in pipeline.toml.

The modules are the ones `pipeline.registry` lists; each declares `SOURCE`, named as its module.
"""

from __future__ import annotations

from importlib import import_module

from pipeline.registry import SOURCE_NAMES
from pipeline.streams import SourceSpec


def _declared(name: str) -> SourceSpec:
    spec = import_module(f"{__name__}.{name}").SOURCE
    if not isinstance(spec, SourceSpec) or spec.name != name:
        raise ImportError(
            f"pipeline/sources/{name}.py: SOURCE must be a SourceSpec named {name!r} "
            "(a source is known by its module's name)"
        )
    return spec


# Sorted by name: the order `pipeline status` lists streams in.
SOURCES: dict[str, SourceSpec] = {name: _declared(name) for name in sorted(SOURCE_NAMES)}
