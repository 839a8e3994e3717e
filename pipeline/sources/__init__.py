"""Every source system the pipeline knows, by the name used in pipeline.toml."""

from __future__ import annotations

from pipeline.sources import afosto, digilocker, soho, sparkfly, valomnia
from pipeline.streams import SourceSpec

SOURCES: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (afosto.SOURCE, digilocker.SOURCE, soho.SOURCE, sparkfly.SOURCE, valomnia.SOURCE)
}
