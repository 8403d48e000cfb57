"""PRODUCT.md scenarios 1-8 end to end through Kafka: events in, action records out.

One worker and one set of topics serve the module, and every scenario script is played at once in
its own thread (they use distinct customers), so the module lasts as long as its longest one. The
journeys are the shipped library with waits shortened to seconds (fast_journeys.py) plus the
four "sale" journeys of scenario 5. Every scenario checks what PRODUCT.md promises *and* that
the live actions equal the simulator's for the same inputs at the same times.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.admin import create_topics
from orchestrator.config import KafkaSettings, Settings, TopicSettings
from orchestrator.control import publish_journeys
from orchestrator.engine.enrollment import bucket

from .conftest import WorkerProcess
from .fast_journeys import ROOT, write_fast_library
from .journey_helpers import (
    Collector,
    Script,
    collect_until,
    contact,
    event,
    live_sends,
    play,
    product,
    simulated_sends,
    start_worker,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]


Context = dict[str, Any]
#: name -> builder of (script, seconds to watch, slack, context for the assertions)
SCENARIOS: dict[str, Callable[[], tuple[Script, float, float, Context]]] = {}


def scenario(name: str) -> Callable[[Any], Any]:
    def register(builder: Any) -> Any:
        SCENARIOS[name] = builder
        return builder

    return register


@dataclass
class Played:
    inputs: list[Any]
    until: datetime
    records: list[dict[str, Any]]


@dataclass
class Live:
    """One worker for the module; every scenario's script is played at once, in its own thread
    (they use distinct customers), so the module takes as long as the longest scenario."""

    settings: Settings
    library: Path
    worker: WorkerProcess
    pending: dict[str, tuple[Future[Played], float, Context]] = field(default_factory=dict)
    inputs: dict[str, list[Any]] = field(default_factory=dict)  # what each script produced

    def start(self, pool: ThreadPoolExecutor) -> None:
        for name, build in SCENARIOS.items():
            script, seconds, slack, context = build()
            collector = Collector.actions(self.settings)
            future = pool.submit(self._play, script, seconds, slack, collector)
            self.pending[name] = (future, slack, context)

    def _play(self, script: Script, seconds: float, slack: float, actions: Collector) -> Played:
        """Play the script, watch ``seconds`` from its start (+ ``slack``: how much later than
        the simulator the live pipeline may decide when a burst queues; only for scripts with
        nothing due in that margin)."""
        try:
            start, inputs = play(self.settings, script)
            until = start + timedelta(seconds=seconds)
            records = collect_until(actions, until + timedelta(seconds=slack))
            return Played(inputs, until, records)
        finally:
            actions.close()

    def result(self, name: str) -> tuple[set[Any], list[dict[str, Any]], Context]:
        """The scenario's live sends (checked equal to the simulator's) and action records."""
        future, slack, context = self.pending[name]
        played = future.result(timeout=80)
        inputs, until = played.inputs, played.until
        self.inputs[name] = inputs
        customers = {i.identities.customer_id for i in inputs if hasattr(i, "identities")}
        mine = [r for r in played.records if r["customer_id"] in customers]
        live = live_sends(mine, until + timedelta(seconds=slack))
        expected = simulated_sends(self.library, inputs, until)
        assert live == expected, f"live - sim: {live - expected}\nsim - live: {expected - live}"
        return live, mine, context


@pytest.fixture(scope="module")
def live(kafka_settings: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    workdir = tmp_path_factory.mktemp("scenarios")
    settings = Settings(
        kafka=kafka_settings,
        topics=TopicSettings(prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=4),
    )
    create_topics(settings)
    library = write_fast_library(workdir / "library")
    (library / "welcome.yaml").write_text(
        (library / "welcome.yaml").read_text().replace("holdout: 5", f"holdout: {WELCOME_HOLDOUT}")
    )
    for sale in (ROOT / "tests" / "scenarios" / "journeys_cap").glob("sale_*.yaml"):
        shutil.copy(sale, library / sale.name)
    # Scenario 5 is about the global cap (3 a day): the e-mail channel cap must not bite first.
    policy = library / "policy.yaml"
    policy.write_text(
        policy.read_text().replace(
            "email: {per_day: 2, per_week: 7}", "email: {per_day: 3, per_week: 7}"
        )
    )
    publish_journeys(settings, [library])
    worker = start_worker(settings, workdir)
    live = Live(settings, library, worker)
    with ThreadPoolExecutor(max_workers=len(SCENARIOS)) as pool:
        live.start(pool)
        yield live
    worker.stop()


def sends_of(live: set[Any], journey: str) -> list[tuple[Any, ...]]:
    return sorted(s for s in live if s[1] == journey)


def decisions(live: Live, cid: str) -> list[dict[str, Any]]:
    view = live.worker.customer(cid)
    assert view is not None
    return list(view["last_decisions"])


#: The welcome journey's holdout in this module's library (the fixture raises it from 5 %).
WELCOME_HOLDOUT = 10


def treated_customer(
    prefix: str, journey: str = "welcome", holdout: float = WELCOME_HOLDOUT
) -> str:
    """A fresh customer id outside ``journey``'s holdout group (``holdout`` percent): a
    scenario that checks what the journey decides for a treated customer must not draw one who
    receives nothing (s1 failed on exactly that in two fresh-clone CIs: a holdout enrolment
    ends with reason ``holdout``)."""
    while True:
        c = prefix + uuid.uuid4().hex[:6]
        if bucket(c, journey, "holdout") >= holdout:
            return c


@scenario("s1")
def s1_script() -> tuple[Script, float, float, Context]:
    c = treated_customer("s1-")
    script = (
        Script()
        .at(0, *contact(c))
        .at(0.3, event(c, "add_to_cart", product=product("p1", 5999)))
        .at(
            1.0,
            event(
                c,
                "order_placed",
                channel="store",
                order={
                    "order_id": f"o-{c}",
                    "total": {"amount_minor": 5999, "currency": "EUR"},
                    "store_id": "paris-01",
                },
            ),
        )
        .at(1.5, event(c, "signup", identities={"customer_id": c, "email": f"{c}@example.test"}))
    )
    return script, 8.0, 0.0, {"c": c}


def test_s1_cart_then_store_purchase_sends_no_reminder_and_starts_post_purchase(
    live: Live,
) -> None:
    sent, _, context = live.result("s1")
    c = context["c"]
    assert sends_of(sent, "cart_abandonment") == []
    assert [s[2] for s in sends_of(sent, "post_purchase")] == ["confirmation"]
    assert sends_of(sent, "welcome") == []  # acquisition offer suppressed after the order

    # How the welcome ends depends on which of the two records the worker reads first, and
    # Kafka gives no order across topics: the order (store topic) is produced 0.5 s before the
    # sign-up (web topic), but when both wait in a backlog the worker may read the sign-up
    # first. Order first: the welcome is suppressed at entry (suppressed_after_purchase).
    # Sign-up first: it enters, and the order in the same batch ends it before its arbitration
    # window closes (exit_on:order_placed); wake-ups wait until every input partition has been
    # read up to their due time, so the order cannot be overtaken. Either way nothing is sent;
    # reproduced with three CPU hogs on the 2-vCPU VM, which failed the fresh-clone CI of
    # 6 December when only the first ending was accepted. Read on the outcomes topic, as in s3:
    # the customer view keeps only the last 10 decisions.
    def welcome_ended(rs: list[dict[str, Any]]) -> bool:
        return any(
            r["customer_id"] == c
            and r["journey_id"] == "welcome"
            and (
                r["reason"] == "suppressed_after_purchase"
                or (r["kind"] == "exited" and r["reason"] == "exit_on:order_placed")
            )
            for r in rs
        )

    outcomes = Collector.outcomes(live.settings)
    try:
        seen = outcomes.wait_for(
            welcome_ended, timeout=60, what="the welcome's end by the purchase, without a send"
        )
    finally:
        outcomes.close()
    welcome_sends = [
        r
        for r in seen
        if r["customer_id"] == c and r["journey_id"] == "welcome" and r["kind"] == "sent"
    ]
    assert welcome_sends == []


@scenario("s2")
def s2_script() -> tuple[Script, float, float, Context]:
    a, b = ("s2a-" + uuid.uuid4().hex[:6]), ("s2b-" + uuid.uuid4().hex[:6])
    script = (
        Script()
        .at(0, *contact(a, sms_marketing=True, preferred="push"), *contact(b, preferred="push"))
        .at(0.5, event(a, "add_to_cart", product=product("p1")))
        .at(0.5, event(b, "add_to_cart", product=product("p1")))
        .at(
            7.0,
            event(a, "message_opened", channel="push", message={"journey_id": "cart_abandonment"}),
            event(b, "message_opened", channel="push", message={"journey_id": "cart_abandonment"}),
        )
    )
    return script, 25.0, 0.0, {"a": a, "b": b}


def test_s2_opened_push_then_no_order_sms_if_consented_else_email(live: Live) -> None:
    sent, _, context = live.result("s2")
    a = context["a"]
    b = context["b"]
    steps = {(s[0], s[2], s[3]) for s in sends_of(sent, "cart_abandonment")}
    assert steps == {
        (a, "reminder", "push"),
        (b, "reminder", "push"),
        (a, "last_call", "sms"),
        (b, "last_call", "email"),
    }


@scenario("s3")
def s3_script() -> tuple[Script, float, float, Context]:
    c = "s3-" + uuid.uuid4().hex[:6]
    script = (
        Script()
        .at(0, *contact(c))
        .at(0.3, event(c, "support_ticket_opened", channel="support", support={"ticket_id": "t1"}))
        .at(0.6, event(c, "loyalty_enrolled", channel="loyalty", loyalty={"tier": "silver"}))
        .at(
            1.0,
            event(
                c,
                "order_placed",
                order={"order_id": f"o-{c}", "total": {"amount_minor": 2500, "currency": "EUR"}},
            ),
        )
        .at(
            5.0, event(c, "support_ticket_resolved", channel="support", support={"ticket_id": "t1"})
        )
    )
    return script, 29.0, 0.0, {"c": c}


def test_s3_open_ticket_holds_promotions_until_resolved_then_follow_up(live: Live) -> None:
    sent, records, context = live.result("s3")
    c = context["c"]
    by_step = {s[2]: r for s in sent for r in records if r["action_id"] == s[5]}
    assert "confirmation" in by_step  # transactional: not held by the ticket
    welcome = by_step["programme_welcome"]  # marketing: held until the ticket was resolved
    resolved_at = min(r["created_at"] for r in records if r["step_id"] == "programme_welcome")
    assert welcome["created_at"] == resolved_at
    # Held until the resolution was produced (not compared with the confirmation's time: when
    # all scripts run at once the worker may decide both in one burst).
    resolved = next(
        i.event_time
        for i in live.inputs["s3"]
        if getattr(i, "event_type", None) == "support_ticket_resolved"
    )
    assert welcome["created_at"] >= resolved - timedelta(milliseconds=50)
    assert "satisfaction_follow_up" in by_step
    # The hold itself, read on the outcomes topic: the customer view keeps only the last 10
    # decisions, and what follows the resolution (caps re-checked, the follow-up) can push the
    # hold out of them when the worker decides the script in a burst (seen once in CI).
    outcomes = Collector.outcomes(live.settings)
    try:
        outcomes.wait_for(
            lambda rs: any(r["customer_id"] == c and r["reason"] == "ticket_open" for r in rs),
            timeout=30,
            what="the welcome held for the open ticket",
        )
    finally:
        outcomes.close()


@scenario("s4")
def s4_script() -> tuple[Script, float, float, Context]:
    c = "s4-" + uuid.uuid4().hex[:6]
    script = (
        Script()
        .at(0, *contact(c, sms_marketing=True, preferred="push"))
        .at(0.5, event(c, "add_to_cart", product=product("p1")))
        .at(
            6.5,
            event(c, "message_opened", channel="push", message={"journey_id": "cart_abandonment"}),
        )
        .at(8.0, event(c, "message_replied", channel="sms", message={"reply_text": "STOP"}))
    )
    return script, 25.0, 0.0, {"c": c}


def test_s4_stop_reply_blocks_sms_from_every_journey(live: Live) -> None:
    sent, _, _ = live.result("s4")
    channels = {(s[2], s[3]) for s in sends_of(sent, "cart_abandonment")}
    assert channels == {("reminder", "push"), ("last_call", "email")}
    assert all(s[3] != "sms" for s in sent)


@scenario("s5")
def s5_script() -> tuple[Script, float, float, Context]:
    c = "s5-" + uuid.uuid4().hex[:6]
    script = Script().at(0, *contact(c)).at(0.5, event(c, "custom.sale_day"))
    # Three rounds of a 1 s arbitration window and a 3 s deferral: the third send at ~9.5 s.
    return script, 13.0, 0.0, {"c": c}


def test_s5_four_journeys_same_day_cap_of_three_suppresses_the_lowest(live: Live) -> None:
    sent, _, context = live.result("s5")
    c = context["c"]
    sale = sorted(s[1] for s in sent if s[1].startswith("sale_"))
    assert sale == ["sale_p20", "sale_p30", "sale_p40"]
    codes = {(d["journey_id"], d["code"]) for d in decisions(live, c)}
    assert ("sale_p10", "frequency_cap") in codes


@scenario("s7")
def s7_script() -> tuple[Script, float, float, Context]:

    run = uuid.uuid4().hex[:6]
    customers = [f"s7-{run}-{n:03d}" for n in range(150)]
    script = Script()
    for n, c in enumerate(customers):
        script.at(
            0.01 * n,
            event(c, "signup", identities={"customer_id": c, "email": f"{c}@example.test"}),
        )
    for n, c in enumerate(customers[::3]):
        script.at(
            3.0 + 0.01 * n,
            event(
                c,
                "order_placed",
                order={"order_id": f"o-{c}", "total": {"amount_minor": 1000, "currency": "EUR"}},
            ),
        )
    return script, 7.0, 2.5, {"customers": customers}


def test_s7_holdout_receives_nothing_its_conversions_count_and_the_report_shows_lift(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from orchestrator.traffic_cli import report

    sent, _, context = live.result("s7")
    customers = context["customers"]
    welcomed = {s[0] for s in sends_of(sent, "welcome")}
    holdout = {c for c in customers if c not in welcomed}
    assert 3 <= len(holdout) <= 35  # ~10 % of 150
    for c in sorted(holdout - set(customers[::3]))[:3]:  # not converted yet
        view = live.worker.customer(c)
        assert view is not None and "welcome" in view["holdouts"]

    # The outcomes (analytics agent's table, and `tutti report` over the topic) count both arms.
    def stats() -> Any:
        status, body = live.worker.get("/journeys/stats")
        welcome = body.get("welcome") if status == 200 else None
        arms = welcome["arms"] if welcome else {}
        done = "holdout" in arms and sum(a["converted"] for a in arms.values()) >= 50
        return done and arms

    arms = live.worker.wait_for(stats, timeout=20, what="the welcome journey's counters")
    assert arms["holdout"]["entered"] >= len(holdout)
    assert arms["holdout"]["sent"] == 0
    monkeypatch.setenv("TUTTI_KAFKA_BOOTSTRAP_SERVERS", live.settings.kafka.bootstrap_servers)
    monkeypatch.setenv("TUTTI_KAFKA_SCHEMA_REGISTRY_URL", live.settings.kafka.schema_registry_url)
    monkeypatch.setenv("TUTTI_TOPICS_PREFIX", live.settings.topics.prefix)
    out = CliRunner().invoke(report, [])
    assert out.exit_code == 0, out.output
    assert "welcome" in out.output and "lift" in out.output and "95% CI" in out.output


@scenario("s8")
def s8_script() -> tuple[Script, float, float, Context]:
    c = "s8-" + uuid.uuid4().hex[:6]
    anon = {"anonymous_id": f"a-{c}"}
    view = {"channel": "app", "product": product("p1", 5999)}
    script = (
        Script()
        .at(0, *contact(c))
        .at(0.3, event(c, "product_view", **view))
        .at(0.6, event(c, "product_view", **view))
        .at(1.0, event(c, "product_view", identities=anon, **view))
        .at(1.3, event(c, "product_view", identities=anon, **view))
        .at(2.0, event(c, "login", channel="app", identities={"customer_id": c, **anon}))
    )
    return script, 11.0, 0.0, {"c": c}


def test_s8_anonymous_browsing_then_login_merges_and_journeys_continue_once(live: Live) -> None:
    sent, records, context = live.result("s8")
    c = context["c"]
    assert [(s[0], s[2]) for s in sends_of(sent, "browse_abandonment")] == [(c, "recommendation")]
    assert len([r for r in records if r["journey_id"] == "browse_abandonment"]) == 1
    merged = live.worker.customer(c)
    assert merged is not None
    assert merged["event_counts"]["product_view"] == 4  # the anonymous history came along
    assert live.worker.customer(f"anon:anonymous_id:a-{c}") is None


def test_s6_quiet_hours_defer_the_send_to_their_end_in_the_customers_time_zone(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """Quiet hours from an hour ago to 20 s from now (local, to the second): sent then.

    20 s, not 10: the worker starts after the policy is written, and on a loaded machine (two
    test processes) starting it and seeing the deferral took 10 s once, so the send was due
    before the check that nothing goes during quiet hours."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Asia/Tokyo")
    local = datetime.now(tz)
    end = (local + timedelta(seconds=20)).replace(microsecond=0)
    start = local - timedelta(hours=1)
    settings = Settings(
        kafka=kafka_settings,
        topics=TopicSettings(prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=2),
    )
    create_topics(settings)
    library = write_fast_library(tmp_path / "library", {"loyalty_tier_change"})
    policy = library / "policy.yaml"
    policy.write_text(
        policy.read_text().replace(
            "quiet_hours: off",
            f'quiet_hours: {{start: "{start:%H:%M}", end: "{end:%H:%M:%S}", '
            "categories: [marketing, service]}",
        )
    )
    publish_journeys(settings, [library])
    worker = start_worker(settings, tmp_path)
    actions = Collector.actions(settings)
    try:
        c = "s6-" + uuid.uuid4().hex[:6]
        script = (
            Script()
            .at(0, *contact(c, time_zone="Asia/Tokyo"))
            .at(0.3, event(c, "loyalty_tier_changed", channel="loyalty", loyalty={"tier": "gold"}))
        )
        _, inputs = play(settings, script)
        view = worker.wait_for(
            lambda: (v := worker.customer(c)) and v["next_wakeup_at"] and v,
            what="the deferral",
        )
        assert view["last_decisions"][0]["code"] == "quiet_hours"
        assert datetime.fromisoformat(view["next_wakeup_at"]) == end.astimezone(UTC)
        assert actions.poll(1.0) == []  # nothing goes during quiet hours
        until = end.astimezone(UTC) + timedelta(seconds=3)
        records = collect_until(actions, until)
        (upgrade,) = records
        assert upgrade["step_id"] == "upgrade"
        assert upgrade["created_at"] >= end.astimezone(UTC)
        assert live_sends(records) == simulated_sends(library, inputs, until)
    finally:
        actions.close()
        worker.stop()
