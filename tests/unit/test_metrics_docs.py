"""The README's Metrics section against the code: its table lists every metric there is, and
its alert rules parse as YAML and name only series that exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.metrics import Metrics

README = Path(__file__).resolve().parents[2] / "README.md"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n### Metrics\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _exported() -> dict[str, set[str]]:
    """Each metric's name as the table gives it, and the names of the series it exports."""
    exported = {}
    for family in Metrics().registry.collect():
        shown = family.name + ("_total" if family.type == "counter" else "")
        exported[shown] = {family.name + suffix for suffix in SUFFIXES[family.type]}
    return exported


def _yaml_blocks() -> list[Any]:
    return [
        yaml.safe_load(block)
        for block in re.findall(r"```yaml\n(.*?)```", _section(), flags=re.DOTALL)
    ]


def test_the_table_lists_every_metric_and_no_other() -> None:
    listed = re.findall(r"^\| `(pipeline_\w+)` \|", _section(), flags=re.MULTILINE)

    assert sorted(listed) == sorted(_exported())


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    [alerting] = [b for b in _yaml_blocks() if isinstance(b, dict) and "groups" in b]
    return [rule for group in alerting["groups"] for rule in group["rules"]]


def test_alert_rules_cover_late_failing_and_quarantine(rules: list[dict[str, Any]]) -> None:
    names = {rule["alert"] for rule in rules}

    assert names == {"PipelineStreamLate", "PipelineStreamFailing", "PipelineQuarantineGrowing"}
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_alert_rules_name_only_series_that_exist(rules: list[dict[str, Any]]) -> None:
    series = set().union(*_exported().values())
    for rule in rules:
        named = set(re.findall(r"\bpipeline_\w+", rule["expr"]))
        assert named, rule["alert"]
        assert named <= series, f"{rule['alert']}: no such series {named - series}"
        for matcher in re.findall(r"\{(.*?)\}", rule["expr"]):
            for label in re.findall(r"(\w+)\s*=~?", matcher):
                assert label in {"stream", "source", "kind", "status"}, (rule["alert"], label)


def test_the_scrape_config_parses() -> None:
    [scrape] = [b for b in _yaml_blocks() if isinstance(b, dict) and "scrape_configs" in b]
    [job] = scrape["scrape_configs"]
    assert job["dns_sd_configs"][0]["port"] == 9108
