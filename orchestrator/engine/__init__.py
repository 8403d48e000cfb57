"""The pure decision engine of Tutti: journeys as data, governance, channel and time choice.

No Kafka, RocksDB, network, clock or unseeded randomness lives here; the Faust worker and the
offline simulator both drive it through one function::

    decide(state: CustomerState | None, signal: Signal, now: datetime, rules: Rules) -> Decision

- ``state``: the customer's `CustomerState` (``None`` for a customer seen for the first time).
  Store it with ``state.to_dict()`` (JSON-able, carries ``schema_version``) and load it with
  ``CustomerState.from_dict(d)`` (older/smaller dicts get defaults).
- ``signal``: one of
  ``CustomerEvent.from_dict(d)`` (fastavro dict of schemas/CustomerEvent.avsc, or the
  simulator's JSON), ``WakeUp(customer_id, due_at, token)`` (a timer; stale or duplicate ones
  are no-ops), ``DeliveryFeedback.from_dict(receipt)`` (schemas/DeliveryReceipt.avsc), or
  ``CustomerCommand`` (erase_customer, approve_action, reject_action).
- ``now``: processing time, timezone-aware UTC. ``decide`` never reads the clock.
- ``arrived_at`` (keyword, optional): when the signal reached the pipeline, for a worker
  working off a backlog (a record's time, a wake-up's due time). Sends reached in the call are
  due then and arbitration windows close on it (``arbitration``); the simulator leaves it out.
- ``rules``: `Rules` — every published version of every journey, the governance policy, paused
  journeys and kill switches. ``load_rules(dir)`` reads journeys/*.yaml + journeys/policy.yaml;
  ``parse_journey(text, source_name)`` + ``rules.with_journey(j)`` publish one received from
  the control topic; ``rules.with_control(kind, target)`` applies pause/resume/kill commands.

The `Decision` holds:

- ``state``: the new state, or ``None`` when the customer was erased (delete every record);
- ``actions``: `Action`s due now (``to_record()`` matches schemas/Action.avsc); ``action_id``
  is sha256 of customer, journey, version, enrolment and step, so a replay yields the same id;
- ``wakeups``: `WakeUp`s to schedule (only new ones; ``pending_wakeups(state)`` lists all,
  ``next_wakeup_at(state)`` gives the earliest for a timer index);
- ``outcomes``: `Outcome`s (``to_record()`` matches schemas/JourneyOutcome.avsc);
- ``explanations``: `Explanation`s for every action, suppression, deferral and hold, with
  reason codes (``REASON_CODES``). They never contain personal data.

``merge_states(survivor, absorbed)`` folds a linked profile into another (identity resolution):
pure, idempotent, history kept, enrolments not duplicated.

Where ``decide``'s work lives:

- ``dispatch``: ``decide`` itself — each kind of signal, in the order a call handles it, and
  the finished `Decision`;
- ``run``: the working memory of one call (``Run``) and the outcomes and explanations it records;
- ``interpreter``: walks an enrolment through its journey's steps until it has to wait;
- ``enrollment``: entries (re-entry, holdout, variants), inactivity checks, exit rules,
  ``wait_for`` events, released holds, goals;
- ``enrollment_status``: an enrolment's statuses and the only moves between them;
- ``sending``: due sends arbitrated, put through governance, and the verdicts carried out;
- ``governance``: the entry checks (``admit``) and the checks on every due send (``evaluate``).
"""

from __future__ import annotations

from orchestrator.engine.decision import (
    REASON_CODES,
    Action,
    Decision,
    Explanation,
    Outcome,
    stable_id,
)
from orchestrator.engine.dispatch import decide
from orchestrator.engine.dsl import journey_problems, parse_journey, parse_journey_file
from orchestrator.engine.enrollment import bucket
from orchestrator.engine.errors import JourneyError, PolicyError, SignalError
from orchestrator.engine.journey import Journey
from orchestrator.engine.policy import GovernancePolicy, load_policy, parse_policy
from orchestrator.engine.rules import Rules, load_rules
from orchestrator.engine.signals import (
    CustomerCommand,
    CustomerEvent,
    DeliveryFeedback,
    Signal,
    WakeUp,
)
from orchestrator.engine.state import (
    SCHEMA_VERSION,
    CustomerState,
    Enrollment,
    merge_states,
    next_wakeup_at,
    pending_wakeups,
)

__all__ = [
    "REASON_CODES",
    "SCHEMA_VERSION",
    "Action",
    "CustomerCommand",
    "CustomerEvent",
    "CustomerState",
    "Decision",
    "DeliveryFeedback",
    "Enrollment",
    "Explanation",
    "GovernancePolicy",
    "Journey",
    "JourneyError",
    "Outcome",
    "PolicyError",
    "Rules",
    "Signal",
    "SignalError",
    "WakeUp",
    "bucket",
    "decide",
    "journey_problems",
    "load_policy",
    "load_rules",
    "merge_states",
    "next_wakeup_at",
    "parse_journey",
    "parse_journey_file",
    "parse_policy",
    "pending_wakeups",
    "stable_id",
]
