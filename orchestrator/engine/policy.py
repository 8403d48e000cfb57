"""The governance policy: consent rules per channel and purpose, frequency caps, quiet hours,
suppression windows, service recovery, offers in flight, expiry defaults, channel priors.

Read from `journeys/policy.yaml` (see docs/journeys.md); every field has a safe default, so an
absent file means a conservative policy (opt-in required everywhere but email/push/in-app).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path

from orchestrator.engine.errors import PolicyError
from orchestrator.engine.keywords import DEFAULT_KEYWORDS, Keywords, KeywordSet, normalise_reply
from orchestrator.engine.timeutil import parse_local_time
from orchestrator.engine.yamlnodes import FieldReader, YNode
from orchestrator.vocabulary import ACTION_CHANNELS, CATEGORIES

__all__ = [
    "DEFAULT_POLICY",
    "ChannelPrior",
    "FrequencyCap",
    "GovernancePolicy",
    "QuietHours",
    "SuppressionWindow",
    "load_policy",
    "parse_policy",
]


@dataclass(frozen=True, slots=True)
class FrequencyCap:
    per_day: int | None = None
    per_week: int | None = None


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: time
    end: time

    def contains(self, t: time) -> bool:
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end  # spans midnight, e.g. 21:00-08:00


@dataclass(frozen=True, slots=True)
class SuppressionWindow:
    tags: frozenset[str]
    duration: timedelta


@dataclass(frozen=True, slots=True)
class ChannelPrior:
    rate: float  # population engagement rate (opens or clicks per send)


_DEFAULT_CONSENT: Mapping[tuple[str, str], str] = {
    **{(ch, "transactional"): "opt_out" for ch in ACTION_CHANNELS},
    **{(ch, "marketing"): "opt_in" for ch in ACTION_CHANNELS},
    ("email", "marketing"): "opt_out",
    ("push", "marketing"): "opt_out",
    ("in_app", "marketing"): "opt_out",
    ("web", "marketing"): "opt_out",
}


@dataclass(frozen=True, slots=True)
class GovernancePolicy:
    # (channel, purpose) -> "opt_in" (needs an explicit opt-in) | "opt_out" (allowed unless opted out)
    consent: Mapping[tuple[str, str], str] = field(default_factory=lambda: dict(_DEFAULT_CONSENT))
    capped_categories: frozenset[str] = frozenset({"marketing"})
    global_cap: FrequencyCap = FrequencyCap(3, 10)
    channel_caps: Mapping[str, FrequencyCap] = field(default_factory=dict)
    quiet_hours: QuietHours | None = QuietHours(time(21, 0), time(8, 0))
    quiet_categories: frozenset[str] = frozenset({"marketing", "service"})
    default_time_zone: str = "UTC"
    suppress_after_order: tuple[SuppressionWindow, ...] = (
        SuppressionWindow(frozenset({"acquisition"}), timedelta(days=14)),
        SuppressionWindow(frozenset({"cart"}), timedelta(hours=12)),
    )
    ticket_pauses: frozenset[str] = frozenset({"marketing"})
    offer_in_flight_for: timedelta = timedelta(days=7)  # zero disables "one offer in flight"
    expiry: Mapping[str, timedelta] = field(
        default_factory=lambda: {
            "marketing": timedelta(days=1),
            "transactional": timedelta(hours=6),
            "service": timedelta(days=2),
        }
    )
    arbitration_defer: timedelta = timedelta(minutes=30)
    # Marketing sends due for one customer within this long are decided together (see
    # engine/arbitration.py). A minute: bursts (a page load, an app session) fall inside it, and
    # a minute's delay is unnoticeable on a marketing message that followed an hour's wait.
    # Zero turns it off; transactional and service messages never wait for it.
    arbitration_window: timedelta = timedelta(minutes=1)
    hold_retry: timedelta = timedelta(hours=1)
    prior_strength: float = 20.0
    channel_priors: Mapping[str, ChannelPrior] = field(
        default_factory=lambda: {
            "email": ChannelPrior(0.20),
            "push": ChannelPrior(0.10),
            "sms": ChannelPrior(0.25),
            "whatsapp": ChannelPrior(0.30),
            "in_app": ChannelPrior(0.15),
        }
    )
    send_time_min_engagements: int = 3
    kill_all: bool = False
    killed_channels: frozenset[str] = frozenset()
    killed_journeys: frozenset[str] = frozenset()
    paused_journeys: frozenset[str] = frozenset()
    #: Custom event attributes the profile keeps for messages (``profile.attributes``), each
    #: value cut to ``profile_attribute_max_length`` characters; others are not kept.
    profile_attributes: frozenset[str] = frozenset()
    #: SMS / WhatsApp reply keywords (engine/keywords.py): opt out, opt back in, help.
    keywords: Keywords = DEFAULT_KEYWORDS
    profile_attribute_max_length: int = 200

    def consent_mode(self, channel: str, purpose: str) -> str:
        return self.consent.get((channel, purpose), "opt_in")

    def expiry_for(self, category: str) -> timedelta:
        return self.expiry.get(category, timedelta(days=1))

    def prior(self, channel: str) -> float:
        p = self.channel_priors.get(channel)
        return p.rate if p else 0.1


DEFAULT_POLICY = GovernancePolicy()

_KEYS = {
    "default_time_zone",
    "keywords",
    "profile",
    "consent",
    "frequency_caps",
    "quiet_hours",
    "suppress_after_order",
    "service_recovery",
    "offers",
    "expiry",
    "arbitration",
    "holds",
    "channel_priors",
    "send_time",
    "kill_switches",
    "paused_journeys",
}


def load_policy(path: Path | str) -> GovernancePolicy:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read the policy file: {exc.strerror}") from exc
    return parse_policy(text, str(p))


def parse_policy(text: str, source: str) -> GovernancePolicy:
    """Parse policy YAML; raise PolicyError naming file, line, field and expectation."""
    reader = _Reader(source)
    root = reader.document(text)
    policy = reader.policy(root) if root is not None else DEFAULT_POLICY
    if reader.problems:
        raise PolicyError("\n".join(str(p) for p in reader.problems))
    return policy


class _Reader(FieldReader):
    """Policy sections on top of the shared typed readers; an absent or bad field keeps the
    default (a bad one is also reported, so the file is refused as a whole)."""

    def section(self, root: YNode, key: str) -> YNode | None:
        return self.mapping(root.get(key), f"a mapping under {key}")

    def cap(self, node: YNode) -> FrequencyCap:
        if not node.is_map:
            self.fail(node, "{per_day, per_week}")
            return FrequencyCap()
        self.unknown_keys(node, ("per_day", "per_week"), "a frequency cap")
        return FrequencyCap(
            self.integer(node.get("per_day"), 0), self.integer(node.get("per_week"), 0)
        )

    def keyword_set(
        self, node: YNode, where: str, defaults: KeywordSet, extra: tuple[str, ...] = ()
    ) -> KeywordSet:
        """opt_out / opt_in / help word lists; a list not given keeps ``defaults``'."""
        if not node.is_map:
            self.fail(node, "{opt_out: [...], opt_in: [...], help: [...]}")
            return defaults
        self.unknown_keys(node, ("opt_out", "opt_in", "help", *extra), where)
        lists = {}
        for name in ("opt_out", "opt_in", "help"):
            given = node.get(name)
            words = self.names(given, what="reply words") if given is not None else None
            lists[name] = (
                frozenset(w for w in map(normalise_reply, words) if w)
                if words is not None
                else getattr(defaults, name)
            )
        clash = (lists["opt_out"] & (lists["opt_in"] | lists["help"])) | (
            lists["opt_in"] & lists["help"]
        )
        if clash:
            self.fail(node, "each word in one list only", got=", ".join(sorted(clash)))
        return KeywordSet(lists["opt_out"], lists["opt_in"], lists["help"])

    def keywords(self, node: YNode) -> Keywords:
        base = self.keyword_set(node, "keywords", DEFAULT_KEYWORDS.base, ("languages",))
        languages = dict(DEFAULT_KEYWORDS.languages)
        if node.is_map and (langs := node.get("languages")) is not None:
            if not langs.is_map:
                self.fail(langs, "a mapping of language codes (fr, de) to word lists")
            else:
                for code, per in langs.items():
                    languages[code.lower()] = self.keyword_set(
                        per, f"keywords.languages.{code}", KeywordSet()
                    )
        return Keywords(base, languages)

    def policy(self, root: YNode) -> GovernancePolicy:
        d = DEFAULT_POLICY
        if not root.is_map:
            self.fail(root, "a mapping of policy sections")
            return d
        for key, child in root.items():
            if key not in _KEYS:
                self.problems.append(
                    child.problem("one of " + ", ".join(sorted(_KEYS)), show=False)
                )
        consent = dict(d.consent)
        if (node := self.section(root, "consent")) is not None:
            for channel, per in node.items():
                if channel not in ACTION_CHANNELS:
                    self.fail(per, "an action channel: " + ", ".join(ACTION_CHANNELS))
                    continue
                for purpose, mode in per.items():
                    if purpose not in ("marketing", "transactional"):
                        self.fail(mode, "marketing or transactional")
                    elif (
                        word := self.choice(
                            mode,
                            ("opt_in", "opt_out"),
                            "opt_in (explicit consent needed) or opt_out",
                        )
                    ) is not None:
                        consent[(channel, purpose)] = word
        global_cap, channel_caps, capped = d.global_cap, dict(d.channel_caps), d.capped_categories
        if (node := self.section(root, "frequency_caps")) is not None:
            if (g := node.get("global")) is not None:
                global_cap = self.cap(g)
            if (chs := node.get("channels")) is not None:
                for ch, c in chs.items():
                    if ch not in ACTION_CHANNELS:
                        self.fail(c, "an action channel")
                    else:
                        channel_caps[ch] = self.cap(c)
            if (cats := node.get("categories")) is not None:
                capped = self.names(cats, CATEGORIES, "categories")
        quiet, quiet_cats = d.quiet_hours, d.quiet_categories
        if (node := root.get("quiet_hours")) is not None:
            if node.is_scalar and node.text in ("none", "off"):
                quiet = None
            else:
                try:
                    start, end = node.get("start"), node.get("end")
                    if start is None or end is None:
                        raise ValueError
                    quiet = QuietHours(parse_local_time(start.text), parse_local_time(end.text))
                except ValueError:
                    self.fail(node, "{start: HH:MM, end: HH:MM} or off")
                if (cats := node.get("categories")) is not None:
                    quiet_cats = self.names(cats, CATEGORIES, "categories")
        suppress = d.suppress_after_order
        if (node := root.get("suppress_after_order")) is not None:
            windows = []
            for item in node.elements():
                windows.append(
                    SuppressionWindow(
                        self.names(item.get("tags"), what="tags"),
                        self.duration(item.get("for")) or timedelta(days=14),
                    )
                )
            suppress = tuple(windows)
        pauses = d.ticket_pauses
        if (node := self.section(root, "service_recovery")) is not None:
            pauses = self.names(node.get("pause_categories"), CATEGORIES, "categories")
        offer_for = d.offer_in_flight_for
        if (node := self.section(root, "offers")) is not None:
            # Zero is allowed here: like one_in_flight: false, it turns the rule off.
            if (offer := self.duration(node.get("in_flight_for"), allow_zero=True)) is not None:
                offer_for = offer
            if self.boolean(node.get("one_in_flight")) is False:
                offer_for = timedelta(0)
        expiry = dict(d.expiry)
        if (node := self.section(root, "expiry")) is not None:
            for cat, dur in node.items():
                if cat not in CATEGORIES:
                    self.fail(dur, "a category: " + ", ".join(CATEGORIES))
                else:
                    expiry[cat] = self.duration(dur) or expiry.get(cat, timedelta(days=1))
        arb, arb_window = d.arbitration_defer, d.arbitration_window
        if (node := self.section(root, "arbitration")) is not None:
            self.unknown_keys(node, ("defer_by", "window"), "arbitration")
            arb = self.duration(node.get("defer_by")) or arb
            # Zero is allowed: it turns arbitration across events off.
            if (w := self.duration(node.get("window"), allow_zero=True)) is not None:
                arb_window = w
        hold = d.hold_retry
        if (node := self.section(root, "holds")) is not None:
            hold = self.duration(node.get("retry_every")) or hold
        strength, priors = d.prior_strength, dict(d.channel_priors)
        if (node := self.section(root, "channel_priors")) is not None:
            strength_expected = "a positive number (pseudo-sends of prior evidence)"
            if (s := node.get("strength")) is not None:
                v = self.number(s, strength_expected)
                if v is not None and v > 0:
                    strength = v
                elif v is not None:
                    self.fail(s, strength_expected)
            rates = node.get("rates")
            rate_expected = "an action channel with a rate between 0 and 1"
            for ch, r in rates.items() if rates is not None else []:
                v = self.number(r, rate_expected)
                if v is None:
                    continue
                if ch not in ACTION_CHANNELS or not 0 < v < 1:
                    self.fail(r, rate_expected)
                else:
                    priors[ch] = ChannelPrior(v)
        min_eng = d.send_time_min_engagements
        if (node := self.section(root, "send_time")) is not None and (
            n := self.integer(node.get("min_engagements"), 0)
        ) is not None:
            min_eng = n
        kill_all, killed_ch, killed_j = d.kill_all, d.killed_channels, d.killed_journeys
        if (node := self.section(root, "kill_switches")) is not None:
            kill_all = self.boolean(node.get("global")) or False
            killed_ch = self.names(node.get("channels"), ACTION_CHANNELS, "channels")
            killed_j = self.names(node.get("journeys"), what="journey ids")
        kept, kept_length = d.profile_attributes, d.profile_attribute_max_length
        if (node := self.section(root, "profile")) is not None:
            self.unknown_keys(node, ("attributes", "max_length"), "profile")
            kept = self.names(node.get("attributes"), what="attribute names")
            too_many = "at most 50 attribute names (a profile stays small)"
            if len(kept) > 50 and (names := node.get("attributes")) is not None:
                self.fail(names, too_many)
            if (n := self.integer(node.get("max_length"), 1)) is not None:
                kept_length = n
        keywords = d.keywords
        if (node := root.get("keywords")) is not None:
            keywords = self.keywords(node)
        tz = self.string(root.get("default_time_zone"), "a time zone name") or d.default_time_zone
        return GovernancePolicy(
            consent=consent,
            capped_categories=capped,
            global_cap=global_cap,
            channel_caps=channel_caps,
            quiet_hours=quiet,
            quiet_categories=quiet_cats,
            default_time_zone=tz,
            suppress_after_order=suppress,
            ticket_pauses=pauses,
            offer_in_flight_for=offer_for,
            expiry=expiry,
            arbitration_defer=arb,
            arbitration_window=arb_window,
            hold_retry=hold,
            prior_strength=strength,
            channel_priors=priors,
            send_time_min_engagements=min_eng,
            kill_all=kill_all,
            killed_channels=killed_ch,
            killed_journeys=killed_j,
            paused_journeys=self.names(root.get("paused_journeys"), what="journey ids"),
            keywords=keywords,
            profile_attributes=kept,
            profile_attribute_max_length=kept_length,
        )
