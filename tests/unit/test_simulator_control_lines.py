"""Input lines that are not customer events: a journeys folder published at a point in time,
pauses and kill switches, arrival times (``received_at``), and the summary's count of people.

Publications fold through orchestrator.control's Publication and ControlPlane, the very code
`tutti journeys publish` and every worker use, so a version upgrade can be tried offline.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.engine import load_rules
from orchestrator.errors import ValidationError
from orchestrator.simulator import (
    Arrival,
    PublishEntry,
    load_inputs,
    read_inputs,
    simulate,
    summarize,
)

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)

POLICY = "arbitration: {window: 0s}\nquiet_hours: off\n"

WELCOME = """\
id: hello
version: {version}
name: Hello
category: marketing
priority: 40
entry:
  event: signup
re_entry: never
steps:
  - id: first
    send:
      channel: email
      template: {template}
  - id: pause
    wait: 1d
  - id: second
    send:
      channel: email
      template: follow_up
"""


def library(folder: Path, version: int, template: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hello.yaml").write_text(WELCOME.format(version=version, template=template))
    (folder / "policy.yaml").write_text(POLICY)
    return folder


def signup(cid: str, at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"{cid}-signup",
        "event_time": at.isoformat(),
        "channel": "web",
        "event_type": "signup",
        "identities": {"customer_id": cid, "email": f"{cid}@example.test"},
        **extra,
    }


def write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    return path


def sends(result: Any, cid: str) -> list[tuple[str | None, datetime]]:
    return [(t.template_id, t.at) for t in result.actions() if t.customer_id == cid]


def test_a_version_published_mid_stream_takes_new_customers_and_in_flight_ones_keep_theirs(
    tmp_path: Path,
) -> None:
    v1 = library(tmp_path / "v1", 1, "hello_v1")
    library(tmp_path / "v2", 2, "hello_v2")
    publish_at = T0 + timedelta(hours=1)
    events = write(
        tmp_path / "events.jsonl",
        [
            signup("early", T0),
            # relative to the events file's folder, as the file travels with its folders
            {"kind": "publish", "path": "v2", "issued_at": publish_at.isoformat()},
            signup("late", T0 + timedelta(hours=2)),
        ],
    )
    result = simulate(load_rules(v1), load_inputs(events), T0 + timedelta(days=3))
    # The customer enrolled under v1 finishes v1; the one who signed up after gets v2.
    assert sends(result, "early") == [("hello_v1", T0), ("follow_up", T0 + timedelta(days=1))]
    later = T0 + timedelta(hours=2)
    assert sends(result, "late") == [("hello_v2", later), ("follow_up", later + timedelta(days=1))]
    published = [t for t in result.timeline if t.reason == "journeys_published"]
    assert [(t.at, t.detail) for t in published] == [(publish_at, "hello v2 published, policy")]


def test_publishing_changed_text_under_a_published_version_is_refused_naming_the_line(
    tmp_path: Path,
) -> None:
    v1 = library(tmp_path / "v1", 1, "hello_v1")
    library(tmp_path / "changed", 1, "hello_other")  # same version, different text
    events = write(
        tmp_path / "events.jsonl",
        [signup("c-1", T0), {"kind": "publish", "path": "changed", "issued_at": T0.isoformat()}],
    )
    with pytest.raises(ValidationError) as err:
        simulate(load_rules(v1), load_inputs(events), T0 + timedelta(days=1))
    message = str(err.value)
    assert f"{events}:2" in message
    assert "'hello' version 1 is already published with different content" in message


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ({"kind": "publish", "path": "missing", "issued_at": T0.isoformat()}, "does not exist"),
        ({"kind": "publish", "issued_at": T0.isoformat()}, '"path" must name'),
        ({"kind": "pause", "target": "hello", "issued_at": T0.isoformat()}, "not known"),
    ],
)
def test_a_bad_control_line_is_an_error_naming_the_line(
    tmp_path: Path, line: dict[str, Any], words: str
) -> None:
    events = write(tmp_path / "events.jsonl", [signup("c-1", T0), line])
    with pytest.raises(ValidationError, match=words) as err:
        load_inputs(events)
    assert str(err.value).startswith(f"{events}:2:")


def test_an_invalid_journey_in_a_published_folder_names_its_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "hello.yaml").write_text("id: hello\nversion: 2\nsteps: 7\n")
    events = write(tmp_path / "e.jsonl", [{"kind": "publish", "path": "broken", "issued_at": 0}])
    with pytest.raises(ValidationError, match=r"hello\.yaml"):
        load_inputs(events)


def test_a_pause_outlives_a_later_publication_as_in_the_live_fold(tmp_path: Path) -> None:
    v1 = library(tmp_path / "v1", 1, "hello_v1")
    library(tmp_path / "v2", 2, "hello_v2")
    lines = [
        {"kind": "pause_journey", "target": "hello", "issued_at": T0.isoformat()},
        {"kind": "publish", "path": "v2", "issued_at": (T0 + timedelta(minutes=1)).isoformat()},
        signup("paused", T0 + timedelta(minutes=2)),
        {"kind": "resume_journey", "target": "hello", "issued_at": "2026-03-02T10:00:00Z"},
        signup("resumed", T0 + timedelta(hours=2)),
    ]
    result = simulate(
        load_rules(v1), load_inputs(write(tmp_path / "e.jsonl", lines)), T0 + timedelta(days=2)
    )
    assert sends(result, "paused") == []
    assert [t for t, _ in sends(result, "resumed")] == ["hello_v2", "follow_up"]


def test_a_late_line_is_handled_at_its_arrival_in_arrival_order(tmp_path: Path) -> None:
    v1 = library(tmp_path / "v1", 1, "hello_v1")
    arrives = T0 + timedelta(hours=1)
    inputs = read_inputs(
        [
            json.dumps(signup("late", T0, received_at=arrives.isoformat())),
            json.dumps(signup("on-time", T0 + timedelta(minutes=30))),
        ]
    )
    assert isinstance(inputs[0], Arrival) and inputs[0].at == arrives
    result = simulate(load_rules(v1), inputs, T0 + timedelta(hours=3))
    # The message goes when the pipeline learns of the signup, after the on-time customer's
    # (whose signup happened later but arrived first).
    assert [t.customer_id for t in result.actions()] == ["on-time", "late"]
    assert sends(result, "late") == [("hello_v1", arrives)]
    assert next(t.at for t in result.timeline if t.customer_id == "late") == arrives


def test_far_future_is_judged_against_arrival_not_the_file_order(tmp_path: Path) -> None:
    v1 = library(tmp_path / "v1", 1, "hello_v1")
    ahead = T0 + timedelta(hours=2)
    # Dated two hours ahead of its arrival: dead-lettered, as the worker would.
    early = signup("early", ahead, received_at=T0.isoformat())
    # Arriving after its event time: fine.
    fine = signup("fine", ahead, received_at=(ahead + timedelta(minutes=5)).isoformat())
    result = simulate(load_rules(v1), read_inputs([json.dumps(early), json.dumps(fine)]))
    dead = [t for t in result.timeline if t.what == "dead_letter"]
    assert [(t.at, "in the future" in (t.reason or "")) for t in dead] == [(T0, True)]
    assert [t.customer_id for t in result.actions()][:1] == ["fine"]


def test_the_summary_counts_a_person_merged_from_an_anonymous_profile_once(
    tmp_path: Path,
) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "policy.yaml").write_text(POLICY)
    (tmp_path / "lib" / "browse.yaml").write_text(
        WELCOME.format(version=1, template="hello_v1").replace("event: signup", "event: page_view")
    )
    anon = {"anonymous_id": "a-1", "email": "x@example.test"}
    lines = [
        {
            "event_id": "v-1",
            "event_time": T0.isoformat(),
            "channel": "web",
            "event_type": "page_view",
            "identities": anon,
        },
        {
            "event_id": "login",
            "event_time": (T0 + timedelta(hours=1)).isoformat(),
            "channel": "web",
            "event_type": "login",
            "identities": {**anon, "customer_id": "c-1"},
        },
    ]
    result = simulate(
        load_rules(tmp_path / "lib"),
        read_inputs(json.dumps(d) for d in lines),
        T0 + timedelta(days=2),
    )
    ids = {t.customer_id for t in result.timeline if t.customer_id != "-"}
    assert ids == {"anon:anonymous_id:a-1", "c-1"}  # one person under two ids over time
    assert result.person("anon:anonymous_id:a-1") == "c-1"
    assert summarize(result.timeline, result.person).startswith("2 sent to 1 customer(s)")
    assert summarize(result.timeline).startswith("2 sent to 2 customer(s)")


def test_publish_entries_carry_their_paths(tmp_path: Path) -> None:
    library(tmp_path / "v2", 2, "hello_v2")
    [entry] = read_inputs(
        [json.dumps({"kind": "publish", "path": ["v2"], "issued_at": T0.isoformat()})],
        base=tmp_path,
    )
    assert isinstance(entry, PublishEntry)
    assert entry.paths == (str(tmp_path / "v2"),)
    assert [j.key for j in entry.publication.journeys] == ["hello@v2"]
