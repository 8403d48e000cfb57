"""Segments (engine/segments.py, engine/membership.py): files, validation, membership kept in
the state by decide, the exact instant a rule flips with time alone, and journeys triggered by
segment_entered."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.engine import CustomerState, JourneyError, WakeUp, decide, merge_states
from orchestrator.engine.conditions import EvalContext
from orchestrator.engine.dsl import JourneyParseError
from orchestrator.engine.rules import Rules, load_rules
from orchestrator.engine.segments import (
    Segment,
    evaluate,
    parse_segment,
    segment_problems,
)
from orchestrator.engine.state import next_wakeup_at

from .factories import T0, Customer, at, contactable, event, journey_rules, order, product

REPO = Path(__file__).resolve().parents[3]

AT_RISK = """\
id: at_risk
version: 1
name: At risk
rule:
  all:
    - {field: profile.orders, op: gte, value: 1}
    - {field: profile.days_since_last_order, op: gte, value: 60}
"""

BROWSERS = """\
id: browsers_not_buyers
version: 1
name: Browsers, not buyers
rule:
  all:
    - {field: profile.views_last_7d, op: gte, value: 3}
    - {field: profile.orders, op: eq, value: 0}
"""

VIP = """\
id: vip
version: 1
name: VIP
rule: {field: profile.spend_last_365d, op: gt, value: 50000}
"""

RESCUE = """\
id: at_risk_rescue
version: 1
name: At-risk rescue
category: marketing
entry: {segment_entered: at_risk}
re_entry: always
steps:
  - id: come_back
    send: {channel: email, template: win_back_offer}
"""


def rules_with(*segment_texts: str, journeys: tuple[str, ...] = ()) -> Rules:
    rules = journey_rules(*journeys)
    for i, text in enumerate(segment_texts):
        rules = rules.with_segment(parse_segment(text, f"s{i}.yaml"))
    return rules


def consented() -> CustomerState:
    from orchestrator.engine.state import ConsentRecord

    state = contactable()
    state.consent["email:marketing"] = ConsentRecord("opted_in", T0 - timedelta(days=400))
    return state


# --- files and validation ---------------------------------------------------------------------
def test_the_shipped_segments_load_and_describe_what_their_names_say() -> None:
    rules = load_rules(REPO / "journeys", segments_dir=REPO / "segments")
    ids = {s.id for s in rules.latest_segments()}
    assert {"vip", "at_risk", "browsers_not_buyers", "rfm_champions"} <= ids
    c = Customer(rules, consented())
    c.send(event("order_placed", at(days=-10), order=order("o1", 30000)))
    assert "vip" not in ((c.state and c.state.segments) or {})
    c.send(event("order_placed", at(days=-1), order=order("o2", 30000)))
    assert c.state is not None and "vip" in c.state.segments  # 600 € in a year


@pytest.mark.parametrize(
    ("text", "line", "field", "expected"),
    [
        (
            "id: x\nversion: 1\nname: X\nrule: {field: event.type, op: eq, value: a}\n",
            4,
            "rule.field",
            "a profile.* or score.* field",
        ),
        (
            "id: x\nversion: 1\nname: X\nrule:\n  all:\n    - {segment: vip}\n",
            6,
            "rule.all[0].segment",
            "cannot use another",
        ),
        (
            "id: x\nversion: 1\nname: X\nrule: {field: profile.views_last_0d, op: gt, value: 1}\n",
            4,
            "rule.field",
            "a known field",
        ),
        (
            "id: X!\nversion: 1\nname: X\nrule: {field: profile.orders, op: gt, value: 1}\n",
            1,
            "id",
            "an id of lowercase",
        ),
        (
            "id: x\nversion: 0\nname: X\nrule: {field: profile.orders, op: gt, value: 1}\n",
            2,
            "version",
            "a whole number",
        ),
        (
            "id: x\nversion: 1\nname: X\nrules: {field: profile.orders, op: gt, value: 1}\n",
            4,
            "rules",
            "in a segment",
        ),
        ("id: x\nversion: 1\nname: X\n", 1, "rule", "the required field 'rule'"),
        (
            "id: x\nversion: 1\nname: X\nrule: {field: profile.orders, op: in, value: 3}\n",
            4,
            "rule.value",
            "a list for op in",
        ),
    ],
)
def test_a_bad_segment_file_names_the_line_and_the_field(
    text: str, line: int, field: str, expected: str
) -> None:
    problems = segment_problems(text, "segments/x.yaml")
    assert problems, "the file must be refused"
    hit = [p for p in problems if p.field == field]
    assert hit, [str(p) for p in problems]
    assert hit[0].line == line and hit[0].source == "segments/x.yaml"
    assert expected in hit[0].expected


def test_load_rules_reports_every_bad_segment_file_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "journeys").mkdir()
    seg = tmp_path / "segments"
    seg.mkdir()
    (seg / "good.yaml").write_text(AT_RISK)
    (seg / "bad.yaml").write_text("id: bad\nversion: 1\nname: B\nrule: {field: nope, op: eq}\n")
    with pytest.raises(JourneyError) as err:
        load_rules(tmp_path / "journeys", segments_dir=seg)
    assert f"{seg / 'bad.yaml'}:4: rule.field" in str(err.value)


def test_a_published_segment_version_cannot_change() -> None:
    rules = rules_with(AT_RISK)
    changed = AT_RISK.replace("value: 60", "value: 30")
    with pytest.raises(JourneyError, match="already published"):
        rules.with_segment(parse_segment(changed, "s.yaml"))
    newer = rules.with_segment(parse_segment(changed.replace("version: 1", "version: 2"), "s"))
    seg = newer.segment("at_risk")
    assert seg is not None and seg.version == 2


def test_a_journey_entry_on_a_segment_is_checked() -> None:
    with pytest.raises(JourneyParseError) as err:
        journey_rules(RESCUE.replace("segment_entered: at_risk", "segment_entered: At Risk"))
    assert "entry.segment_entered" in str(err.value)
    with pytest.raises(JourneyParseError, match="one of event, inactivity"):
        journey_rules(
            RESCUE.replace("{segment_entered: at_risk}", "{segment_entered: a, event: x}")
        )


# --- flip instants ----------------------------------------------------------------------------
def _segment(text: str) -> Segment:
    return parse_segment(text, "s.yaml")


def test_no_order_for_60_days_flips_exactly_60_days_after_the_last_order() -> None:
    state = CustomerState("c1")
    c = Customer(rules_with(AT_RISK), state)
    c.send(event("order_placed", at(), order=order("o1")))
    assert c.state is not None
    verdict = evaluate(c.state, [_segment(AT_RISK)], at(days=1))
    assert verdict.entered == () and verdict.next_flip == at(days=60)
    assert next_wakeup_at(c.state) == at(days=60)
    # A minute before: not yet. At the instant: in.
    assert evaluate(c.state, [_segment(AT_RISK)], at(days=60, minutes=-1)).entered == ()
    assert evaluate(c.state, [_segment(AT_RISK)], at(days=60)).entered == ("at_risk",)


def test_the_third_newest_view_leaving_the_window_is_the_flip() -> None:
    c = Customer(rules_with(BROWSERS), CustomerState("c1"))
    for i, pid in enumerate(["p1", "p2", "p3", "p4"]):
        c.send(event("product_view", at(days=i), product=product(pid)))
    s = c.state
    assert s is not None and "browsers_not_buyers" in s.segments
    # Views on days 0..3: three are left in 7 days until the day-1 view leaves, on day 8.
    assert next_wakeup_at(s) == at(days=7)  # first the day-0 view leaves (still 3 left)
    c.wake(at(days=7))
    assert c.state is not None and "browsers_not_buyers" in c.state.segments
    assert next_wakeup_at(c.state) == at(days=8)
    d = c.wake(at(days=8))
    assert c.state is not None and "browsers_not_buyers" not in c.state.segments
    assert [o.kind for o in d.outcomes] == ["segment_exited"]
    assert d.outcomes[0].journey_id == "segment:browsers_not_buyers"


def test_gt_flips_just_after_the_threshold_and_lte_just_after_too() -> None:
    text = "id: x\nversion: 1\nname: X\nrule: {field: profile.days_since_last_order, op: gt, value: 2}\n"
    s = CustomerState("c1")
    s.commerce.last_order_at = T0
    verdict = evaluate(s, [_segment(text)], T0)
    assert verdict.next_flip == at(days=2, microseconds=1)
    assert evaluate(s, [_segment(text)], at(days=2)).entered == ()
    assert evaluate(s, [_segment(text)], at(days=2, microseconds=1)).entered == ("x",)


def test_a_rule_that_cannot_flip_with_time_sets_no_timer() -> None:
    c = Customer(rules_with(VIP), CustomerState("c1"))
    c.send(event("customer_registered", at()))
    assert c.state is not None and not c.state.timers


def test_a_wrongly_typed_value_leaves_membership_as_it_was() -> None:
    text = "id: x\nversion: 1\nname: X\nrule: {field: profile.language, op: gt, value: 3}\n"
    s = CustomerState("c1")
    s.preferences.language = "fr"
    s.segments["x"] = T0
    verdict = evaluate(s, [_segment(text)], T0)
    assert verdict.faulty == ("x",) and verdict.exited == ()


# --- membership in decide ---------------------------------------------------------------------
def test_a_customer_drifts_into_at_risk_with_no_event_and_leaves_on_the_next_order() -> None:
    c = Customer(rules_with(AT_RISK, journeys=(RESCUE,)), consented())
    first = c.send(event("order_placed", at(), order=order("o1")))
    assert [w.due_at for w in first.wakeups] == [at(days=60)]
    assert c.state is not None and c.state.segments == {}
    early = c.wake(at(days=59))
    assert early.outcomes == () and early.actions == ()
    # The wake-up the state asked for, and nothing else: the customer drifts in.
    due = next_wakeup_at(c.state)
    assert due == at(days=60)
    drift = c.send(WakeUp("c1", due, "x"), due)
    assert c.state is not None and c.state.segments == {"at_risk": at(days=60)}
    kinds = [(o.journey_id, o.kind) for o in drift.outcomes]
    assert ("segment:at_risk", "segment_entered") in kinds
    assert ("at_risk_rescue", "entered") in kinds
    assert [a.template_id for a in drift.actions] == ["win_back_offer"]
    # The next order ends it, in the same call that records the order.
    back = c.send(event("order_placed", at(days=70), order=order("o2")))
    assert c.state is not None and "at_risk" not in c.state.segments
    assert [o.kind for o in back.outcomes if o.journey_id == "segment:at_risk"] == [
        "segment_exited"
    ]
    assert next_wakeup_at(c.state) == at(days=130)


def test_a_journey_on_segment_entered_runs_once_per_entry() -> None:
    c = Customer(rules_with(AT_RISK, journeys=(RESCUE,)), consented())
    c.send(event("order_placed", at(), order=order("o1")))
    c.wake(at(days=60))
    c.wake(at(days=61))  # still at risk: no second entry
    c.send(event("message_opened", at(days=62), channel="email"))
    c.send(event("order_placed", at(days=70), order=order("o2")))
    c.wake(at(days=130))  # at risk again: a second entry
    c.wake(at(days=131))
    entries = [
        o
        for d in c.decisions
        for o in d.outcomes
        if (o.journey_id, o.kind) == ("at_risk_rescue", "entered")
    ]
    assert [o.occurred_at for o in entries] == [at(days=60), at(days=130)]
    sends = [a for a in c.actions() if a.template_id == "win_back_offer"]
    assert len(sends) == 2 and len({a.action_id for a in sends}) == 2


def test_a_late_wakeup_still_enters_before_the_event_that_would_have_ended_it() -> None:
    """The flip was due before this event (a wake-up late or lost): it goes first, as the
    simulator's clock would have it, then the order ends it."""
    c = Customer(rules_with(AT_RISK), CustomerState("c1"))
    c.send(event("order_placed", at(), order=order("o1")))
    d = c.send(event("order_placed", at(days=61), order=order("o2")))
    assert [o.kind for o in d.outcomes] == ["segment_entered", "segment_exited"]
    assert c.state is not None and c.state.segments == {}


def test_conditions_can_test_membership() -> None:
    only_vip = """\
id: vip_thanks
version: 1
name: VIP thanks
category: marketing
entry:
  event: order_placed
  conditions: {segment: vip}
steps:
  - id: thanks
    send: {channel: email, template: vip_thanks}
"""
    field_form = only_vip.replace("{segment: vip}", "{field: segment.vip, op: eq, value: true}")
    for text in (only_vip, field_form):
        c = Customer(rules_with(VIP, journeys=(text,)), consented())
        c.send(event("order_placed", at(), order=order("o1", 30000)))
        assert c.actions() == []
        # This order makes her a VIP: the entry condition already sees it.
        c.send(event("order_placed", at(days=1), order=order("o2", 30000)))
        assert [a.template_id for a in c.actions()] == ["vip_thanks"]


def test_a_wakeup_only_applies_time_flips_and_a_new_segment_waits_for_a_profile_change() -> None:
    """A segment published after the customer's last signal: their next wake-up (another
    journey's) does not evaluate it at the worker's clock; their next event does."""
    c = Customer(journey_rules(), CustomerState("c1"))
    c.send(event("order_placed", at(), order=order("o1")))
    c.rules = rules_with(AT_RISK)
    c.wake(at(days=70))
    assert c.state is not None and c.state.segments == {}
    c.send(event("product_view", at(days=71), product=product()))
    assert c.state is not None and c.state.segments == {"at_risk": at(days=71)}


def test_a_wakeup_hours_late_enters_at_the_flip_instant() -> None:
    c = Customer(rules_with(AT_RISK, journeys=(RESCUE,)), consented())
    c.send(event("order_placed", at(), order=order("o1")))
    on_time = decide(c.state, WakeUp("c1", at(days=60), "x"), at(days=60), c.rules)
    late = decide(c.state, WakeUp("c1", at(days=60), "x"), at(days=60, hours=3), c.rules)
    assert late.state is not None and late.state.segments == {"at_risk": at(days=60)}
    assert [a.action_id for a in late.actions] == [a.action_id for a in on_time.actions]
    assert len(late.actions) == 1


def test_the_run_exposes_entered_and_exited_segments() -> None:
    from orchestrator.engine.membership import update_segments
    from orchestrator.engine.run import Run

    s = CustomerState("c1")
    s.commerce.orders_online = 1
    s.commerce.last_order_at = T0
    s.segments["vip"] = T0
    run = Run(s, at(days=60), rules_with(AT_RISK, VIP))
    update_segments(run)
    assert run.segments_entered == ["at_risk"] and run.segments_exited == ["vip"]


def test_an_unpublished_segment_keeps_its_members_and_the_timer_goes() -> None:
    c = Customer(rules_with(AT_RISK), CustomerState("c1"))
    c.send(event("order_placed", at(), order=order("o1")))
    c.wake(at(days=60))
    c.rules = journey_rules()
    d = c.send(event("product_view", at(days=61), product=product()))
    assert c.state is not None and "at_risk" in c.state.segments
    assert d.outcomes == () and not c.state.timers


def test_decide_with_segments_is_deterministic_and_does_not_mutate() -> None:
    rules = rules_with(AT_RISK, BROWSERS, VIP, journeys=(RESCUE,))
    c = Customer(rules, consented())
    c.send(event("order_placed", at(), order=order("o1")))
    state = c.state
    assert state is not None
    before = state.to_dict()
    a = decide(state, WakeUp("c1", at(days=60), "x"), at(days=60), rules)
    b = decide(state, WakeUp("c1", at(days=60), "x"), at(days=60), rules)
    assert state.to_dict() == before
    assert a == b and a.state is not None and "at_risk" in a.state.segments


def test_membership_survives_the_state_codec_and_old_states_load_without_it() -> None:
    c = Customer(rules_with(AT_RISK), CustomerState("c1"))
    c.send(event("order_placed", at(), order=order("o1", 1234)))
    c.wake(at(days=60))
    assert c.state is not None
    again = CustomerState.from_dict(c.state.to_dict())
    assert again.segments == {"at_risk": at(days=60)}
    assert again.commerce.recent_orders == c.state.commerce.recent_orders
    old = c.state.to_dict()
    del old["segments"]
    del old["commerce"]["recent_orders"]
    loaded = CustomerState.from_dict(old)
    assert loaded.segments == {} and loaded.commerce.recent_orders == []


def test_merge_keeps_the_earliest_entry_and_both_order_histories() -> None:
    a = CustomerState("a")
    b = CustomerState("b")
    a.segments["vip"] = at(days=5)
    b.segments["vip"] = at(days=2)
    b.segments["at_risk"] = at(days=3)
    ca = Customer(rules_with(VIP), a)
    ca.send(event("order_placed", at(), customer_id="a", order=order("o1", 100)))
    cb = Customer(rules_with(), b)
    cb.send(event("order_placed", at(days=1), customer_id="b", order=order("o2", 200)))
    assert ca.state is not None and cb.state is not None
    merged = merge_states(ca.state.clone(), cb.state)
    assert [o.order_id for o in merged.commerce.recent_orders] == ["o1", "o2"]
    assert merged.segments["at_risk"] == at(days=3)
    assert merge_states(merged, cb.state).segments == merged.segments  # idempotent


def test_windowed_fields_count_only_inside_the_window() -> None:
    from orchestrator.engine.conditions import compile_condition
    from orchestrator.engine.yamlnodes import compose

    s = CustomerState("c1")
    c = Customer(rules_with(), s)
    c.send(event("order_placed", at(days=-400), order=order("o0", 99999)))
    c.send(event("order_placed", at(days=-10), order=order("o1", 20000)))
    c.send(event("order_placed", at(days=-1), order=order("o2", 40000)))
    assert c.state is not None
    for field, value in (
        ("profile.spend_last_365d", 60000),
        ("profile.orders_last_365d", 2),
        ("profile.orders_last_5d", 1),
        ("profile.spend_last_48h", 40000),
    ):
        node = compose(f"{{field: {field}, op: eq, value: {value}}}", "t")
        assert not isinstance(node, type(None))
        problems: list = []
        cond = compile_condition(node, problems)  # type: ignore[arg-type]
        assert problems == []
        assert cond(EvalContext(c.state, None, None, at())), field


def test_an_erased_customer_leaves_every_segment_so_sizes_stay_right() -> None:
    from orchestrator.engine import CustomerCommand

    c = Customer(rules_with(AT_RISK, VIP), CustomerState("c1"))
    c.send(event("order_placed", at(), order=order("o1", 60000)))
    c.wake(at(days=60))
    assert c.state is not None and set(c.state.segments) == {"at_risk", "vip"}
    cmd = CustomerCommand.from_dict(
        {
            "command_id": "x",
            "kind": "erase_customer",
            "target": "c1",
            "customer_id": "c1",
            "issued_by": "dpo",
            "issued_at": at(days=61),
        }
    )
    d = decide(c.state, cmd, at(days=61), c.rules)
    assert d.state is None
    assert sorted((o.journey_id, o.kind) for o in d.outcomes) == [
        ("segment:at_risk", "segment_exited"),
        ("segment:vip", "segment_exited"),
    ]


def test_the_documented_rescue_journey_runs_on_the_shipped_at_risk_segment() -> None:
    from orchestrator.engine import parse_journey_file

    rules = load_rules(REPO / "journeys", segments_dir=REPO / "segments")
    rules = rules.with_journey(parse_journey_file(REPO / "docs/examples/at_risk_rescue.yaml"))
    rules = replace(rules, policy=replace(rules.policy, arbitration_window=timedelta(0)))
    c = Customer(rules, consented())
    c.send(event("order_placed", at(), order=order("o1")))
    due = next_wakeup_at(c.state)
    assert due is not None and due <= at(days=60)
    while due is not None and due < at(days=60):  # other journeys' wake-ups on the way
        c.wake(due)
        due = next_wakeup_at(c.state)
    drift = c.wake(at(days=60))
    assert [a.journey_id for a in drift.actions] == ["at_risk_rescue"]


def test_the_analytics_fold_counts_a_segments_size() -> None:
    from orchestrator.analytics import JourneyStats
    from orchestrator.report_html import fold_outcomes

    c = Customer(rules_with(AT_RISK), CustomerState("c1"))
    c.send(event("order_placed", at(), order=order("o1")))
    c.wake(at(days=60))
    c2 = Customer(rules_with(AT_RISK), CustomerState("c2"))
    c2.send(event("order_placed", at(), customer_id="c2", order=order("o2")))
    c2.wake(at(days=60))
    c2.send(event("order_placed", at(days=61), customer_id="c2", order=order("o3")))
    records = [o.to_record() for d in c.decisions + c2.decisions for o in d.outcomes]
    stats = JourneyStats("segment:at_risk")
    for r in records:
        stats.apply(r)
        stats.apply(r)  # a redelivery counts once
    assert stats.active == 1
    journeys, _ = fold_outcomes(records)
    assert "segment:at_risk" not in journeys  # the report lists journeys only


def test_publishing_folds_segments_into_every_workers_rules(tmp_path: Path) -> None:
    """The control topic's records as `tutti segments publish` writes them, folded as a
    worker's control follower folds them; a changed published version is refused."""
    from orchestrator.control import ControlPlane, segment_publication

    (tmp_path / "at_risk.yaml").write_text(AT_RISK)
    (tmp_path / "vip.yaml").write_text(VIP)
    plane = ControlPlane()
    records = segment_publication([tmp_path]).records(plane, "2026-12-04T12:00:00Z", "ops")
    assert sorted(k.decode().split("#")[0] for k, _ in records) == [
        "segment:at_risk@v1",
        "segment:vip@v1",
    ]
    for key, value in records:
        assert plane.apply_definition(key.decode(), value)
    assert [s.id for s in plane.rules.latest_segments()] == ["at_risk", "vip"]
    assert plane.published["segment:vip@v1"].published_by == "ops"
    again = segment_publication([tmp_path]).records(plane, "later", "ops")
    assert again == []  # unchanged
    (tmp_path / "vip.yaml").write_text(VIP.replace("50000", "40000"))
    with pytest.raises(JourneyError, match="already published"):
        segment_publication([tmp_path]).records(plane, "later", "ops")
    (tmp_path / "vip.yaml").write_text("id: vip\nversion: 2\nname: V\nrule: {field: nope}\n")
    with pytest.raises(JourneyError, match=r"vip.yaml:4: rule"):
        segment_publication([tmp_path])


def test_tutti_segments_validate_names_the_file_line_and_field(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from orchestrator.segments_cli import segments as segments_cli

    good = CliRunner().invoke(segments_cli, ["validate", str(REPO / "segments")])
    assert good.exit_code == 0 and "segment file(s) valid" in good.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\nversion: 1\nname: B\nrule:\n  any:\n    - {field: event.type}\n")
    out = CliRunner().invoke(segments_cli, ["validate", str(bad)])
    assert out.exit_code == 1
    assert f"{bad}:6: rule.any[0].field: expected a profile.* or score.* field" in out.output


def test_an_entry_caused_by_an_event_is_named_after_the_event_not_the_clock() -> None:
    """The worker handles an event a little after the simulator's clock would: the enrolment
    that the entry starts (and its action) must get the same id either way."""
    thanks = RESCUE.replace("segment_entered: at_risk", "segment_entered: vip")
    rules = rules_with(VIP, journeys=(thanks,))
    c = Customer(rules, consented())
    c.send(event("order_placed", at(), order=order("o1", 30000)))
    big = event("order_placed", at(days=1), order=order("o2", 30000))
    on_time = decide(c.state, big, at(days=1), rules)
    later = decide(c.state, big, at(days=1, seconds=2), rules)
    assert [a.action_id for a in on_time.actions] == [a.action_id for a in later.actions]
    assert len(on_time.actions) == 1
    ids = {o.outcome_id for o in on_time.outcomes if o.kind == "segment_entered"}
    assert ids == {o.outcome_id for o in later.outcomes if o.kind == "segment_entered"}


def test_the_customer_view_says_which_segments_and_since_when() -> None:
    from agents.journey import journey_summary
    from agents.views import public_profile
    from orchestrator.customer_cli import format_customer

    c = Customer(rules_with(AT_RISK), CustomerState("c1"))
    c.send(event("order_placed", at(), order=order("o1")))
    c.wake(at(days=60))
    assert c.state is not None
    view = {**public_profile(c.state), **journey_summary(c.state)}
    assert view["segments"] == {"at_risk": "2026-05-01T09:00:00Z"}
    assert "Segments\n  at_risk  since 2026-05-01 09:00 UTC" in format_customer(view)


def test_a_journey_on_a_segment_the_folder_does_not_define_is_refused(tmp_path: Path) -> None:
    (tmp_path / "journeys").mkdir()
    (tmp_path / "segments").mkdir()
    (tmp_path / "segments" / "at_risk.yaml").write_text(AT_RISK)
    typo = RESCUE.replace("segment_entered: at_risk", "segment_entered: at_rsk")
    (tmp_path / "journeys" / "rescue.yaml").write_text(typo)
    with pytest.raises(
        JourneyError, match=r"entry.segment_entered: expected a segment of .*'at_rsk'"
    ):
        load_rules(tmp_path / "journeys", segments_dir=tmp_path / "segments")
    load_rules(tmp_path / "journeys")  # without segments (the worker's folder), not checked
