"""Journey files: the library parses; bad files are rejected with file, line, field, expectation."""

from __future__ import annotations

import textwrap

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.engine import JourneyError, journey_problems, parse_journey
from orchestrator.engine.journey import BranchStep, SendStep, WaitForStep, WaitStep
from orchestrator.journeys_cli import journeys

from .factories import LIBRARY, library

GOOD = """\
id: demo
version: 1
name: Demo
category: marketing
entry:
  event: add_to_cart
steps:
  - id: wait_1h
    wait: 1h
  - id: remind
    send: {channels: [push, email], template: t1}
"""


def test_the_shipped_library_loads() -> None:
    rules = library()
    assert {j.id for j in rules.latest()} >= {
        "welcome",
        "browse_abandonment",
        "cart_abandonment",
        "post_purchase",
        "back_in_stock",
        "price_drop",
        "loyalty_onboarding",
        "loyalty_tier_change",
        "win_back",
        "service_recovery",
    }
    assert rules.policy.global_cap.per_day == 3


def test_nested_step_lists_continue_after_their_parent() -> None:
    j = parse_journey(
        textwrap.dedent("""\
        id: demo
        version: 2
        name: Demo
        category: marketing
        entry: {event: add_to_cart}
        steps:
          - id: check
            branch:
              - when: {field: profile.orders, op: eq, value: 0}
                then:
                  - id: first
                    send: {channel: email, template: a}
              - else: exit
          - id: after
            wait: {until: "10:00", day_offset: 1}
          - id: w
            wait_for: {event: order_placed, timeout: 1d, on_timeout: exit}
        """),
        "demo.yaml",
    )
    assert j.first_step == "check"
    check = j.steps["check"]
    assert isinstance(check, BranchStep) and check.otherwise is None
    first = j.steps["first"]
    assert isinstance(first, SendStep) and first.next == "after"
    after = j.steps["after"]
    assert isinstance(after, WaitStep) and after.day_offset == 1
    w = j.steps["w"]
    assert isinstance(w, WaitForStep) and w.on_timeout is None and w.on_event is None


def replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


# (the broken file, line, field, words of the expectation)
BAD = [
    (replace("event: add_to_cart", "event: add_to_kart"), 6, "entry.event", "known event type"),
    (
        replace("send: {channels: [push, email], template: t1}", "teleport: {}"),
        11,
        "steps[1].teleport",
        "step type",
    ),
    (replace("wait: 1h", "wait: {}"), 9, "steps[0].wait.duration", "duration"),
    (replace("wait: 1h", "wait: soon"), 9, "steps[0].wait", "duration like"),
    (GOOD + "holdout: 120\n", 12, "holdout", "percentage from 0 to 100"),
    (
        GOOD + "variants:\n  - {id: a, weight: 60}\n  - {id: b, weight: 60}\n",
        13,
        "variants",
        "adding up to 100",
    ),
    (replace("id: remind", "id: wait_1h"), 10, "steps[1].id", "unique step id"),
    (replace("category: marketing", "category: spam"), 4, "category", "one of marketing"),
    (replace("version: 1", "version: one"), 2, "version", "whole number"),
    (replace("[push, email]", "[push, fax]"), 11, "steps[1].send.channels[1]", "action channel"),
    (replace("wait: 1h", "wait: 1h\n    next: nowhere"), 10, "steps[0].next", "no step 'nowhere'"),
    (GOOD + "colour: red\n", 12, "colour", "one of"),
    (GOOD.replace("id: demo\n", ""), 1, "id", "required field"),
    (
        replace(
            "event: add_to_cart",
            "event: add_to_cart\n  conditions: {field: profile.shoe_size, op: eq, value: 3}",
        ),
        7,
        "entry.conditions.field",
        "known field",
    ),
    (
        replace(
            "event: add_to_cart",
            "event: add_to_cart\n  conditions: {field: profile.orders, op: like, value: 3}",
        ),
        7,
        "entry.conditions.op",
        "one of eq",
    ),
    (
        replace(
            "event: add_to_cart",
            "event: add_to_cart\n  conditions: {field: profile.orders, op: in, value: 3}",
        ),
        7,
        "entry.conditions.value",
        "a list",
    ),
    (replace("wait: 1h", "wait: 1h\n    next: wait_1h"), 8, "steps[0]", "only move forward"),
    ("id: x\n  bad: [\n", 2, "(file)", "valid YAML"),
]


@pytest.mark.parametrize(("text", "line", "field", "expected"), BAD)
def test_a_bad_journey_is_rejected_precisely(
    text: str, line: int, field: str, expected: str
) -> None:
    problems = journey_problems(text, "journeys/demo.yaml")
    assert problems, "the file should have been rejected"
    rendered = [str(p) for p in problems]
    assert any(
        p.line == line and p.field.startswith(field) and expected in p.expected for p in problems
    ), rendered
    assert all(r.startswith("journeys/demo.yaml:") for r in rendered)
    with pytest.raises(JourneyError):
        parse_journey(text, "journeys/demo.yaml")


@pytest.mark.parametrize(
    ("text", "second_line", "field", "first_line"),
    [
        # A second `steps:` used to be ignored silently: the first list won.
        (GOOD + "steps:\n  - id: other\n    wait: 2h\n", 12, "steps", 7),
        (replace("version: 1", "version: 1\nversion: 2"), 3, "version", 2),
        # Any depth: inside a step, inside an inline mapping.
        (replace("wait: 1h", "wait: 1h\n    wait: 2h"), 10, "steps[0].wait", 9),
        (
            replace("template: t1}", "template: t1, template: t2}"),
            11,
            "steps[1].send.template",
            11,
        ),
    ],
)
def test_a_key_given_twice_is_refused_with_both_lines(
    text: str, second_line: int, field: str, first_line: int
) -> None:
    problems = journey_problems(text, "journeys/demo.yaml")

    twice = [p for p in problems if "each key once" in p.expected]
    assert [(p.line, p.field) for p in twice] == [(second_line, field)], problems
    key = field.rsplit(".", 1)[-1].split("]")[-1]
    assert str(twice[0]) == (
        f"journeys/demo.yaml:{second_line}: {field}: expected each key once in a mapping, "
        f"got {key!r} on line {first_line} and again on line {second_line}"
    )


def test_a_repeated_key_through_an_alias_is_reported_once() -> None:
    text = GOOD + "variants:\n  - &a {id: a, weight: 50, id: b}\n  - *a\n"
    twice = [p for p in journey_problems(text, "demo.yaml") if "each key once" in p.expected]
    assert [p.line for p in twice] == [13]


def test_cli_validate_names_the_file_and_both_lines_of_a_repeated_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "twice.yaml").write_text(GOOD + "steps:\n  - id: other\n    wait: 2h\n")
    result = CliRunner().invoke(journeys, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'twice.yaml'}:12: steps:" in result.output
    assert "'steps' on line 7 and again on line 12" in result.output


def test_unreachable_step_is_reported() -> None:
    text = replace("wait: 1h", "wait: 1h\n    next: exit")
    problems = journey_problems(text, "demo.yaml")
    assert [(p.line, "reachable" in p.expected) for p in problems] == [(11, True)]


def test_cli_validate_exits_non_zero_and_names_the_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "ok.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(replace("event: add_to_cart", "event: add_to_kart"))
    result = CliRunner().invoke(journeys, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'bad.yaml'}:6: entry.event: expected a known event type" in result.output


def test_cli_validate_rejects_the_same_version_twice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD)
    result = CliRunner().invoke(journeys, ["validate", str(tmp_path)])
    assert result.exit_code == 1 and "new version" in result.output


def test_cli_validate_accepts_the_library() -> None:
    result = CliRunner().invoke(journeys, ["validate", str(LIBRARY)])
    assert result.exit_code == 0, result.output
    assert "10 journey file(s) valid" in result.output


LIBRARY_TEXTS = sorted(p.read_text() for p in LIBRARY.glob("*.yaml") if p.name != "policy.yaml")


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(LIBRARY_TEXTS),
    st.lists(
        st.tuples(
            st.integers(0, 10_000),
            st.sampled_from(["", "x", ":", "-", "{", "  ", "1h", "\n", "[", "exit"]),
        ),
        max_size=4,
    ),
)
def test_a_mangled_file_is_an_error_never_a_crash(text: str, edits: list[tuple[int, str]]) -> None:
    for pos, insert in edits:
        i = pos % (len(text) + 1)
        text = text[:i] + insert + text[i + 1 :]
    try:
        parse_journey(text, "mangled.yaml")
    except JourneyError as exc:
        assert str(exc).startswith("mangled.yaml:")
