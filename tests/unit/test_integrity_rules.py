"""The integrity rules as pure functions: each fires on its case and not on its near miss,
and the open alerts after every fact are the same in any arrival order."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from genealogy.store import Conflict
from schemas.alerts import AlertState, IntegrityAlert, Rule, alert_id, decode_alert, encode_alert
from schemas.errors import DecodeError, UnmappedValueError
from schemas.model import LotEventBase
from schemas.sites import SitesConfig
from schemas.topics import INTEGRITY_FACTS
from streams.integrity import (
    Fact,
    FactRole,
    SubjectState,
    Thresholds,
    by_partition,
    conflict_alert,
    decode_facts,
    encode_facts,
    evaluate,
    facts_of,
    late_finding,
    partition_of,
    step,
    tick,
    unmapped_alert,
)
from streams.normalize import normalize
from tests import integrity_scenario as sc

TH = Thresholds()
NOW = datetime(2026, 11, 3, tzinfo=UTC)


def fact(role: FactRole, minute: int, *, subject: str = "lot:ALP:L1", lot: str = "ALP:L1",
         qty: str | None = None, status: str = "", event: str | None = None, index: int = 0,
         unit: str = "KGM", event_type: str = "X") -> Fact:  # fmt: skip
    return Fact(subject=subject, role=role, event_id=event or f"e-{role.value}-{minute}-{lot}",
                event_type=event_type, at=sc.T0 + timedelta(minutes=minute), source="ERP/erp-alp",
                site="ALP", lot=lot, status=status,
                quantity=None if qty is None else Decimal(qty), unit=unit, index=index)  # fmt: skip


def rules(subject: str, facts: list[Fact], th: Thresholds = TH) -> list[Rule]:
    return sorted(f.rule for f in evaluate(subject, facts, th))


# --------------------------------------------------------------------------- hold violation


def test_hold_violation_fires_on_a_use_while_on_hold() -> None:
    facts = [fact(FactRole.ORIGIN, 0, qty="100"), fact(FactRole.STATUS, 5, status="ON_HOLD"),
             fact(FactRole.USE, 10, qty="10")]  # fmt: skip
    (finding,) = evaluate("lot:ALP:L1", facts, TH)
    assert finding.rule is Rule.HOLD_VIOLATION
    assert finding.evidence_event_ids == [facts[1].event_id, facts[2].event_id]
    assert "ON_HOLD" in finding.summary
    assert "ALP:L1" in finding.summary


@pytest.mark.parametrize("status", ["QUARANTINE", "REJECTED", "EXPIRED"])
def test_every_blocking_status_blocks_shipments_too(status: str) -> None:
    facts = [fact(FactRole.ORIGIN, 0, qty="100"), fact(FactRole.STATUS, 5, status=status),
             fact(FactRole.SHIP, 10, qty="10")]  # fmt: skip
    assert rules("lot:ALP:L1", facts) == [Rule.HOLD_VIOLATION]


def test_hold_near_miss_status_by_event_time_not_arrival() -> None:
    # released at 8 before the use at 10; the hold at 12 came after the use
    facts = [fact(FactRole.ORIGIN, 0, qty="100"), fact(FactRole.STATUS, 5, status="ON_HOLD"),
             fact(FactRole.STATUS, 8, status="RELEASED"), fact(FactRole.USE, 10, qty="10"),
             fact(FactRole.STATUS, 12, status="ON_HOLD")]  # fmt: skip
    for order in itertools.permutations(facts):
        assert rules("lot:ALP:L1", list(order)) == []


# --------------------------------------------------------------------------- orphan


def test_orphan_fires_per_use_of_a_lot_never_received_or_produced() -> None:
    facts = [fact(FactRole.USE, 10, qty="10"), fact(FactRole.SHIP, 11, qty="5"),
             fact(FactRole.RETURN, 12, qty="1")]  # fmt: skip
    assert rules("lot:ALP:L1", facts) == [Rule.ORPHAN_LOT, Rule.ORPHAN_LOT]


def test_orphan_near_miss_origin_known_even_if_later_in_event_time() -> None:
    facts = [fact(FactRole.USE, 10, qty="10"), fact(FactRole.ORIGIN, 20, qty="10")]
    assert rules("lot:ALP:L1", facts) == []


# --------------------------------------------------------------------------- on hand


def test_negative_on_hand_fires_when_more_left_than_entered() -> None:
    facts = [fact(FactRole.ORIGIN, 0, qty="100"), fact(FactRole.USE, 10, qty="60"),
             fact(FactRole.SHIP, 11, qty="50")]  # fmt: skip
    (finding,) = evaluate("lot:ALP:L1", facts, TH)
    assert finding.rule is Rule.NEGATIVE_ON_HAND
    assert finding.details["on_hand"] == "-10"
    assert finding.evidence_event_ids == sorted([facts[1].event_id, facts[2].event_id])


def test_negative_on_hand_near_miss_scrap_and_adjustment_balance_to_zero() -> None:
    facts = [fact(FactRole.ORIGIN, 0, qty="100"), fact(FactRole.ADJUST, 1, qty="5"),
             fact(FactRole.SCRAP, 2, qty="-5"), fact(FactRole.SHIP, 3, qty="100"),
             fact(FactRole.ORIGIN, 4, qty="3", unit="H87")]  # fmt: skip
    assert rules("lot:ALP:L1", facts) == []


# --------------------------------------------------------------------------- mass balance


def batch(role: FactRole, lot: str, qty: str, minute: int, unit: str = "KGM") -> Fact:
    return fact(role, minute, subject="batch:ALP:B-1", lot=lot, qty=qty, unit=unit)


def test_mass_balance_fires_when_outputs_outweigh_inputs_beyond_tolerance() -> None:
    facts = [batch(FactRole.INPUT, "ALP:A", "600", 1), batch(FactRole.INPUT, "ALP:B", "400", 2),
             batch(FactRole.OUTPUT, "ALP:C", "1010.01", 3)]  # fmt: skip
    (finding,) = evaluate("batch:ALP:B-1", facts, TH)
    assert finding.rule is Rule.MASS_BALANCE
    assert finding.lots == ["ALP:A", "ALP:B", "ALP:C"]
    assert finding.details["difference_pct"] == "1.00"  # 1.001 %, over the 1 % allowed


def test_mass_balance_near_misses() -> None:
    within = [batch(FactRole.INPUT, "ALP:A", "1000", 1), batch(FactRole.OUTPUT, "ALP:C", "1010", 2)]
    assert rules("batch:ALP:B-1", within) == []
    loss = [batch(FactRole.INPUT, "ALP:A", "1000", 1), batch(FactRole.OUTPUT, "ALP:C", "400", 2)]
    assert rules("batch:ALP:B-1", loss) == []  # losses are accepted by default
    strict = Thresholds(mass_loss_tolerance=Decimal("0.5"))
    assert rules("batch:ALP:B-1", loss, strict) == [Rule.MASS_BALANCE]
    units = [
        batch(FactRole.INPUT, "ALP:A", "1", 1),
        batch(FactRole.OUTPUT, "ALP:C", "40", 2, "H87"),
    ]
    assert rules("batch:ALP:B-1", units) == []  # kilograms against pieces: not weighable
    only_outputs = [batch(FactRole.OUTPUT, "ALP:C", "400", 2)]
    assert rules("batch:ALP:B-1", only_outputs) == []  # judged once inputs exist


# --------------------------------------------------------------------------- alias


def test_alias_conflict_fires_when_one_alias_names_two_lots() -> None:
    subject = "alias:ALP:LICENSE_PLATE:LP-1"
    facts = [fact(FactRole.ALIAS, 1, subject=subject, lot="ALP:A"),
             fact(FactRole.ALIAS, 2, subject=subject, lot="ALP:B")]  # fmt: skip
    assert rules(subject, facts) == [Rule.ALIAS_CONFLICT]
    assert rules(subject, [facts[0], fact(FactRole.ALIAS, 3, subject=subject, lot="ALP:A")]) == []


# --------------------------------------------------------------------------- late


def test_late_event_beyond_the_horizon_only() -> None:
    newest = sc.T0 + timedelta(days=3)
    old = fact(FactRole.SEEN, 0, subject="source:erp-alp")
    finding = late_finding(old, newest, TH)
    assert finding is not None
    assert finding.rule is Rule.LATE_EVENT
    assert finding.details["behind_s"] == str(3 * 86400)
    assert late_finding(old, sc.T0 + timedelta(hours=23), TH) is None
    assert late_finding(old, None, TH) is None


def test_a_late_event_is_published_once_and_the_newest_time_moves_forward() -> None:
    state = SubjectState()
    s = "source:erp-alp"
    assert step(state, [fact(FactRole.SEEN, 3 * 24 * 60, subject=s)], TH, NOW) == (True, [])
    changed, alerts = step(state, [fact(FactRole.SEEN, 0, subject=s)], TH, NOW)
    assert not changed
    assert [a.rule for a in alerts] == [Rule.LATE_EVENT]


def test_late_is_judged_by_the_order_of_one_raw_partition() -> None:
    # The source sent both in order, through two partitions; the worker happened to read
    # partition 1's newer event first. Only an older event behind it in its own partition
    # is late.
    state = SubjectState()
    s = "source:erp-alp"
    newer = dataclasses.replace(fact(FactRole.SEEN, 3 * 24 * 60, subject=s), partition=1)
    older = dataclasses.replace(fact(FactRole.SEEN, 0, subject=s), partition=0)
    assert step(state, [newer], TH, NOW) == (True, [])
    assert step(state, [older], TH, NOW) == (True, []), "sent in order on its own partition"
    behind = dataclasses.replace(fact(FactRole.SEEN, 10, subject=s, event="e-old"), partition=1)
    assert [a.rule for a in step(state, [behind], TH, NOW)[1]] == [Rule.LATE_EVENT]
    again = SubjectState.from_json(state.to_json())
    assert again.newest == state.newest, "kept per partition across a restart"
    earlier = {**state.to_json(), "newest": sc.T0.isoformat()}  # one time for all partitions
    assert SubjectState.from_json(earlier).newest == {}, "an earlier version's state still loads"


# --------------------------------------------------------------------------- sink-side rules


def test_unmapped_and_conflict_alerts_name_the_event_and_what_to_do() -> None:
    event = sc.received(1, 10, 0)
    exc = UnmappedValueError(site="ALP", kind="unit", value="sacks", hint="add it")
    alert = unmapped_alert(event, exc, NOW)
    assert alert.alert_id == alert_id("unmapped-value", f"event:{event.envelope.event_id}",
                                      [event.envelope.event_id])  # fmt: skip
    assert "replay-dlq" in alert.summary
    first = conflict_alert(event, Conflict(event.envelope.event_id, "a", "b"), NOW)
    other_way = conflict_alert(event, Conflict(event.envelope.event_id, "b", "a"), NOW)
    assert first.same_finding(other_way), "whichever version arrived first"


# --------------------------------------------------------------------------- engine


def test_a_late_origin_withdraws_the_orphan_alert_with_the_same_id() -> None:
    state = SubjectState()
    use, origin = fact(FactRole.USE, 10, qty="1"), fact(FactRole.ORIGIN, 0, qty="5")
    _, opened = step(state, [use], TH, NOW)
    assert [(a.rule, a.state) for a in opened] == [(Rule.ORPHAN_LOT, AlertState.OPEN)]
    assert step(state, [use], TH, NOW) == (False, []), "a re-delivered fact changes nothing"
    _, withdrawn = step(SubjectState.from_json(state.to_json()), [origin], TH, NOW)
    assert [(a.alert_id, a.state) for a in withdrawn] == [
        (opened[0].alert_id, AlertState.WITHDRAWN)
    ]


def test_alerts_waiting_to_be_sent_survive_in_the_state() -> None:
    # The worker writes the state with the alerts it decided before sending them; the
    # changelog's copy must give a successor exactly those alerts, in order.
    state = SubjectState()
    _, opened = step(state, [fact(FactRole.USE, 10, qty="1")], TH, NOW)
    state.outbox = opened
    again = SubjectState.from_json(state.to_json())
    assert [(a.alert_id, a.state) for a in again.outbox] == [(opened[0].alert_id, AlertState.OPEN)]
    assert SubjectState.from_json({**state.to_json(), "outbox": []}).outbox == []
    del_outbox = {k: v for k, v in state.to_json().items() if k != "outbox"}
    assert SubjectState.from_json(del_outbox).outbox == [], "an earlier version's state loads"


def final_open(facts: list[Fact]) -> set[str]:
    states: dict[str, SubjectState] = {}
    opened: dict[str, IntegrityAlert] = {}
    for f in facts:
        state = states.setdefault(f.subject, SubjectState())
        _, alerts = step(state, [f], TH, NOW)
        for a in alerts:
            opened[a.alert_id] = a
    return {a.alert_id for a in opened.values() if a.state is AlertState.OPEN}


def test_open_alerts_are_a_function_of_the_facts_not_their_order(demo_sites: SitesConfig) -> None:
    scenario = sc.build()
    facts = [f for e in scenario.events for f in facts_of(normalize(e, demo_sites))
             if not f.subject.startswith("source:")]  # fmt: skip
    expected = final_open(facts)
    assert len(expected) == len(scenario.expected)  # one alert per rule of the scenario
    rng = random.Random(11)
    for _ in range(20):
        shuffled = list(facts)
        rng.shuffle(shuffled)
        assert final_open(shuffled) == expected
    assert final_open(facts[::-1]) == expected


# --------------------------------------------------------------------------- wire formats


def test_facts_grouped_by_partition_keep_each_subject_whole_and_in_order(
    demo_sites: SitesConfig,
) -> None:
    facts = [f for e in sc.build().events for f in facts_of(normalize(e, demo_sites))]
    grouped = by_partition(facts)
    assert Counter(f for part in grouped.values() for f in part) == Counter(facts)
    homes: dict[str, set[int]] = {}
    for partition, part in grouped.items():
        assert 0 <= partition < INTEGRITY_FACTS.partitions
        assert part == [f for f in facts if partition_of(f.subject) == partition], "order kept"
        for f in part:
            homes.setdefault(f.subject, set()).add(partition)
    assert all(len(h) == 1 for h in homes.values()), "a subject's facts meet on one partition"
    assert len(grouped) > 1, "the scenario's subjects spread over several partitions"


def test_a_batch_stepped_at_once_ends_with_the_alerts_of_fact_by_fact(
    demo_sites: SitesConfig,
) -> None:
    facts = [f for e in sc.build().events for f in facts_of(normalize(e, demo_sites))]
    one_by_one: dict[str, SubjectState] = {}
    for f in facts:
        step(one_by_one.setdefault(f.subject, SubjectState()), [f], Thresholds(), NOW)
    batched: dict[str, SubjectState] = {}
    for part in by_partition(facts).values():
        subjects: dict[str, list[Fact]] = {}
        for f in part:
            subjects.setdefault(f.subject, []).append(f)
        for subject, subject_facts in subjects.items():
            step(batched.setdefault(subject, SubjectState()), subject_facts, Thresholds(), NOW)
    assert {s: sorted(st.open) for s, st in batched.items()} == {
        s: sorted(st.open) for s, st in one_by_one.items()
    }
    assert any(st.open for st in batched.values()), "the scenario raises alerts"


def test_facts_and_alerts_round_trip(demo_sites: SitesConfig) -> None:
    events: list[LotEventBase] = [normalize(e, demo_sites) for e in sc.build().events]
    for event in events:
        for facts in by_partition(facts_of(event)).values():
            assert decode_facts(encode_facts(facts)) == facts
    alert = unmapped_alert(events[0], UnmappedValueError(site="ALP", kind="unit", value="x",
                                                         hint="h"), NOW)  # fmt: skip
    assert decode_alert(encode_alert(alert)) == alert
    with pytest.raises(DecodeError, match="not an IntegrityAlert"):
        decode_alert(b"\xc3\x01garbage!")


# --------------------------------------------------------------------------- clock-driven rules


def test_a_silent_source_is_stalled_until_it_speaks_again() -> None:
    th = Thresholds(stall_after=timedelta(hours=1))
    state, subject = SubjectState(), "source:erp-alp"
    seen = fact(FactRole.SEEN, 0, subject=subject)
    step(state, [seen], th, NOW)
    assert step(state, [tick(subject, NOW + timedelta(minutes=50))], th, NOW)[1] == [], (
        "near miss: silent, but not yet for an hour"
    )
    later = NOW + timedelta(hours=2)
    changed, (alert,) = step(state, [tick(subject, later)], th, later)
    assert (changed, alert.rule, alert.state) == (True, Rule.SOURCE_STALL, AlertState.OPEN)
    assert alert.evidence_event_ids == [seen.event_id], "the last event it sent"
    assert step(state, [tick(subject, later)], th, later)[1] == [], "one alert per silence"
    back = later + timedelta(minutes=1)
    _, (withdrawn,) = step(state, [fact(FactRole.SEEN, 200, subject=subject)], th, back)
    assert (withdrawn.alert_id, withdrawn.state) == (alert.alert_id, AlertState.WITHDRAWN)


def test_a_source_with_its_own_limit_or_none_is_not_stalled_early() -> None:
    subject = "source:lims-alp"
    th = Thresholds(stall_after=None, stall_after_by_source={"lims-alp": timedelta(days=1)})
    state = SubjectState()
    step(state, [fact(FactRole.SEEN, 0, subject=subject)], th, NOW)
    assert (
        step(state, [tick(subject, NOW + timedelta(hours=5))], th, NOW + timedelta(hours=5))[1]
        == []
    )
    late = NOW + timedelta(days=2)
    assert [a.rule for a in step(state, [tick(subject, late)], th, late)[1]] == [Rule.SOURCE_STALL]
    other = SubjectState()
    step(other, [fact(FactRole.SEEN, 0, subject="source:erp-alp")], th, NOW)
    assert step(other, [tick("source:erp-alp", late)], th, late)[1] == [], "no limit: never"


def test_a_transfer_not_received_within_the_sla_is_overdue_until_received() -> None:
    th = Thresholds(transfer_sla=timedelta(hours=72))
    subject, state = "transfer:TO-9001", SubjectState()
    ship = fact(FactRole.SHIP, 0, subject=subject, qty="1000")
    step(state, [ship], th, NOW)
    shipped_at = ship.at
    assert step(state, [tick(subject, shipped_at)], th, shipped_at + timedelta(hours=71))[1] == []
    overdue = shipped_at + timedelta(hours=73)
    _, (alert,) = step(state, [tick(subject, overdue)], th, overdue)
    assert (alert.rule, alert.lots) == (Rule.TRANSFER_OVERDUE, ["ALP:L1"])
    assert step(state, [tick(subject, overdue)], th, overdue + timedelta(hours=1))[1] == [], (
        "the same alert, not one per tick"
    )
    receipt = fact(FactRole.ORIGIN, 4500, subject=subject, lot="BRK:26313-01", qty="1000")
    _, (withdrawn,) = step(state, [receipt], th, overdue + timedelta(hours=2))
    assert (withdrawn.alert_id, withdrawn.state) == (alert.alert_id, AlertState.WITHDRAWN)


def test_a_transfer_received_in_time_never_alerts() -> None:
    th = Thresholds(transfer_sla=timedelta(hours=72))
    subject, state = "transfer:TO-9002", SubjectState()
    step(state, [fact(FactRole.SHIP, 0, subject=subject, qty="200")], th, NOW)
    step(state, [fact(FactRole.ORIGIN, 60, subject=subject, lot="CRV:L26310A", qty="200")], th, NOW)
    far = NOW + timedelta(days=30)
    assert step(state, [tick(subject, far)], th, far)[1] == []


def test_transfers_state_their_own_facts(demo_sites: SitesConfig) -> None:
    from connectors.simulator import build_scenario
    from schemas.model import TransferReceived, TransferShipped

    events = [e for e in build_scenario(demo_sites).events
              if isinstance(e, TransferShipped | TransferReceived)]  # fmt: skip
    subjects = {f.subject for e in events for f in facts_of(normalize(e, demo_sites))}
    assert {"transfer:TO-9001", "transfer:TO-9002"} <= subjects


# --------------------------------------------------------------------------- sequence gaps

WMS = "source:wms-brk"
DENSE = Thresholds(dense_sources=frozenset({"wms-brk"}), sequence_gap_after=timedelta(minutes=5))
GRACE = DENSE.sequence_gap_after


def numbered(n: int, *, subject: str = WMS, minute: int | None = None) -> Fact:
    """The source fact of the event a densely numbering WMS numbered ``n``."""
    return Fact(subject=subject, role=FactRole.SEEN, event_id=f"wms-{n}", event_type="LotMoved",
                at=sc.T0 + timedelta(minutes=n if minute is None else minute),
                source="WMS/wms-brk", site="BRK", sequence=n)  # fmt: skip


def feed(state: SubjectState, facts: list[Fact], at: datetime = NOW) -> list[IntegrityAlert]:
    return [a for f in facts for a in step(state, [f], DENSE, at)[1]]


def gaps_open(alerts: list[IntegrityAlert]) -> dict[tuple[str, str], str]:
    """The gap alerts whose last message is OPEN, by missing range: their ids."""
    last = {a.alert_id: a for a in alerts if a.rule is Rule.SEQUENCE_GAP}
    return {(a.details["first_missing"], a.details["last_missing"]): a.alert_id
            for a in last.values() if a.state is AlertState.OPEN}  # fmt: skip


def test_a_skipped_number_is_a_gap_once_the_grace_has_passed() -> None:
    state = SubjectState()
    assert feed(state, [numbered(1), numbered(2), numbered(5)]) == [], (
        "noticed, not yet raised: other partitions may still bring 3 and 4"
    )
    later = NOW + GRACE
    (alert,) = step(state, [tick(WMS, later)], DENSE, later)[1]
    assert (alert.rule, alert.state, alert.subject) == (Rule.SEQUENCE_GAP, AlertState.OPEN, WMS)
    assert alert.evidence_event_ids == ["wms-2", "wms-5"], "the events either side of the gap"
    assert alert.details == {"first_missing": "3", "last_missing": "4", "missing": "2"}
    assert "3-4" in alert.summary
    assert "backfill wms-brk" in alert.summary
    assert step(state, [tick(WMS, later)], DENSE, later)[1] == [], "one alert per gap"


def test_sequence_gap_near_misses() -> None:
    later = NOW + GRACE
    repeats = SubjectState()
    feed(repeats, [numbered(1), numbered(2), numbered(2), numbered(1), numbered(3)])
    assert feed(repeats, [tick(WMS, later)], later) == [], "a number seen again is no gap"
    reordered = SubjectState()
    feed(reordered, [numbered(4), numbered(1), numbered(3), numbered(2)])
    assert feed(reordered, [tick(WMS, later)], later) == [], "filled within the grace"
    assert reordered.numbering is not None
    assert reordered.numbering.gaps == []
    unnumbered = SubjectState()
    feed(unnumbered, [numbered(1), numbered(0), numbered(2)])
    assert feed(unnumbered, [tick(WMS, later)], later) == [], "0 is not numbered"
    other = "source:erp-alp"
    undeclared = SubjectState()
    feed(undeclared, [numbered(1, subject=other), numbered(9, subject=other)])
    assert feed(undeclared, [tick(other, later)], later) == [], "not declared dense: not checked"
    assert undeclared.numbering is None


def test_the_missing_events_arriving_late_withdraw_the_gap() -> None:
    state = SubjectState()
    feed(state, [numbered(1), numbered(6)])
    later = NOW + GRACE
    (opened,) = published = feed(state, [tick(WMS, later)], later)
    assert gaps_open(published) == {("2", "5"): opened.alert_id}
    state = SubjectState.from_json(state.to_json())  # a restarted worker: the changelog's copy
    (withdrawn,) = feed(state, [numbered(3)], later)
    assert (withdrawn.alert_id, withdrawn.state) == (opened.alert_id, AlertState.WITHDRAWN)
    assert withdrawn.same_finding(opened.withdrawn(later)), "the alert it withdraws, rebuilt"
    published += [withdrawn, *feed(state, [tick(WMS, later)], later)]
    assert set(gaps_open(published)) == {("2", "2"), ("4", "5")}, "what is still missing"
    published += feed(state, [numbered(2), numbered(5), numbered(4)], later)
    assert gaps_open(published) == {}
    assert state.numbering is not None
    assert state.numbering.gaps == []


def test_the_open_gaps_are_the_same_in_any_arrival_order() -> None:
    sent = [n for n in range(1, 41) if n not in {7, 8, 20, 33}]
    rng = random.Random(5)
    later = NOW + GRACE
    results = set()
    for _ in range(20):
        order = [numbered(n) for n in sent] + [numbered(rng.choice(sent)) for _ in range(5)]
        rng.shuffle(order)
        state = SubjectState()
        halfway = len(order) // 2
        published = feed(state, order[:halfway])  # a tick in the middle raises what is
        published += feed(state, [tick(WMS, later)], later)  # missing then, withdrawn later
        published += feed(state, order[halfway:], later)
        end = later + GRACE
        published += feed(state, [tick(WMS, end)], end)
        found = gaps_open(published)
        results.add(frozenset(found.values()))
        assert set(found) == {("7", "8"), ("20", "20"), ("33", "33")}
        assert state.numbering is not None
        assert len(state.numbering.gaps) == 3, "ranges, not sets"
    assert len(results) == 1, "the same ids, so a restart or another order adds none"


def test_a_re_delivered_event_is_not_judged_late_again() -> None:
    state = SubjectState()
    first = numbered(1, minute=0)
    assert feed(state, [first, numbered(2, minute=3 * 24 * 60)]) == []
    assert feed(state, [first]) == [], "a worker restarted and read it again: not late"
    behind = numbered(3, minute=0)
    assert [a.rule for a in feed(state, [behind])] == [Rule.LATE_EVENT], "a new one is judged"
