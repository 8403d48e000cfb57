"""The control-plane fold (`orchestrator.control.ControlPlane`) and publishing's local checks.

The fold is what every worker and `tutti journeys list` run over `control.journeys`; these
tests hand it records as they sit on the topic, no broker needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.config import KafkaSettings, Settings
from orchestrator.control import ControlPlane, definition_key, publish_journeys
from orchestrator.engine.dsl import parse_journey
from orchestrator.engine.errors import JourneyError

LIBRARY = Path(__file__).resolve().parents[2] / "journeys"
WELCOME = (LIBRARY / "welcome.yaml").read_text()
CHANGED = WELCOME.replace("priority: 40", "priority: 45")


def record(text: str, source: str = "journeys/welcome.yaml") -> bytes:
    return json.dumps(
        {"text": text, "source": source, "published_at": "", "published_by": "t"}
    ).encode()


def test_a_version_published_again_with_other_text_is_ignored_and_the_first_kept() -> None:
    plane = ControlPlane()
    assert plane.apply_definition("welcome@v1", record(WELCOME))

    assert not plane.apply_definition("welcome@v1", record(CHANGED, "elsewhere/welcome.yaml"))

    assert plane.rules.version("welcome", 1).priority == 40  # type: ignore[union-attr]
    assert plane.published["welcome@v1"].source == "journeys/welcome.yaml"
    [problem] = plane.problems
    assert "'welcome'" in problem and "version 1" in problem
    assert "already published with different content" in problem


def test_republishing_identical_text_changes_nothing_and_is_no_problem() -> None:
    plane = ControlPlane()
    plane.apply_definition("welcome@v1", record(WELCOME))
    rules = plane.rules

    assert not plane.apply_definition("welcome@v1", record(WELCOME))

    assert plane.rules is rules
    assert plane.problems == []


def test_a_changed_text_under_a_new_version_is_published_next_to_the_old_one() -> None:
    plane = ControlPlane()
    plane.apply_definition("welcome@v1", record(WELCOME))
    v2 = CHANGED.replace("version: 1", "version: 2")

    assert plane.apply_definition("welcome@v2", record(v2))

    assert sorted(plane.journeys["welcome"]) == [1, 2]
    assert plane.problems == []


def test_publication_keys_differ_by_text_so_compaction_keeps_a_versions_first_text() -> None:
    first = parse_journey(WELCOME, "welcome.yaml")
    again = parse_journey(WELCOME, "copy/welcome.yaml")
    other = parse_journey(CHANGED, "welcome.yaml")

    assert definition_key(first) == definition_key(again)
    assert definition_key(first) != definition_key(other)
    assert definition_key(first).startswith(b"welcome@v1#")


def test_two_files_giving_one_version_different_texts_are_refused_before_kafka(
    tmp_path: Path,
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "welcome.yaml").write_text(WELCOME)
    (b / "welcome.yaml").write_text(CHANGED)
    nowhere = Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"))

    with pytest.raises(JourneyError) as refused:
        publish_journeys(nowhere, [a, b])

    message = str(refused.value)
    assert "'welcome' version 1" in message
    assert str(a / "welcome.yaml") in message and str(b / "welcome.yaml") in message
