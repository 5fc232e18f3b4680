"""Integrity alerts in the store: upserted from the stream, listed, acknowledged, resolved.

The stream owns an alert's content and its ``state`` (OPEN while the condition
holds, WITHDRAWN once later facts made it false); people own its acknowledgement
and resolution, which an update from the stream never touches. An alert's status
as the API shows it combines both::

    withdrawn     the stream withdrew it (nothing left to do)
    resolved      someone resolved it
    acknowledged  someone took it on, not resolved yet
    open          nobody has looked at it yet

Example::

    new = upsert_alerts(store, [alert])           # the alerts not stored before
    total, page = list_alerts(store, AlertFilter(status="open"), limit=50, offset=0)
    resolve_alert(store, alert.alert_id, user="qa.brunner", comment="lot blocked again")
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update
from sqlalchemy.exc import OperationalError

from genealogy import tables
from genealogy.store import (
    GenealogyStore,
    StoreUnavailableError,
    _chunks,
    _insert_ignore,
    one_of,
    utc,
)
from schemas.alerts import AlertState, IntegrityAlert, Rule
from schemas.errors import DataError

#: What ``status`` may filter on (see the module docstring); ``unresolved`` = open or acknowledged.
STATUSES = ("open", "acknowledged", "resolved", "withdrawn", "unresolved")


class AlertNotFoundError(DataError):
    """No alert has this id (or the caller may not see it)."""

    reason_code = "alert-not-found"


class AlertStateError(DataError):
    """The alert cannot be acknowledged or resolved in its current status."""

    reason_code = "alert-state"


@dataclass(frozen=True, kw_only=True)
class AlertFilter:
    """Filters of :func:`list_alerts`; ``None`` means any."""

    status: str | None = None
    rule: str | None = None
    severity: str | None = None
    #: alerts naming this site
    site: str | None = None
    #: alerts naming this enterprise lot id
    lot_id: str | None = None
    #: first detected at or after / before
    since: datetime | None = None
    until: datetime | None = None
    #: only alerts naming one of these sites (a site user's scope)
    visible_sites: frozenset[str] | None = None


def upsert_alerts(store: GenealogyStore, alerts: Sequence[IntegrityAlert]) -> list[IntegrityAlert]:
    """Store alerts by id, in order; return those never stored before (to count them).

    An update changes what the stream owns (state, content, ``updated_at``) and keeps
    the first detection time, the acknowledgement and the resolution.
    """
    if not alerts:
        return []
    try:
        with store.engine.begin() as conn:
            return _upsert(conn, alerts)
    except OperationalError as exc:
        raise StoreUnavailableError(f"integrity alerts not stored: {exc}") from exc


def _upsert(conn: Connection, alerts: Sequence[IntegrityAlert]) -> list[IntegrityAlert]:
    a = tables.integrity_alerts
    ids = sorted({x.alert_id for x in alerts})
    known: set[str] = set()
    for chunk in _chunks(ids, 500):
        known |= {
            r.alert_id for r in conn.execute(select(a.c.alert_id).where(a.c.alert_id.in_(chunk)))
        }
    stored = _stored_events(conn, alerts)
    new: list[IntegrityAlert] = []
    for alert in alerts:
        state = alert.state
        if alert.rule is Rule.UNMAPPED_VALUE and set(alert.evidence_event_ids) <= stored:
            state = AlertState.WITHDRAWN  # the parked event was replayed and stored since
        content = {
            "rule": alert.rule.value, "severity": alert.severity.value, "state": state.value,
            "subject": alert.subject, "sites": json.dumps(alert.sites), "lots": json.dumps(alert.lots),
            "source_systems": json.dumps(alert.source_systems),
            "evidence_event_ids": json.dumps(alert.evidence_event_ids), "summary": alert.summary,
            "details": json.dumps(alert.details, sort_keys=True), "updated_at": alert.detected_at,
        }  # fmt: skip
        if alert.alert_id in known:
            conn.execute(update(a).where(a.c.alert_id == alert.alert_id).values(**content))
            continue
        conn.execute(insert(a).values(alert_id=alert.alert_id, detected_at=alert.detected_at,
                                      **content))  # fmt: skip
        known.add(alert.alert_id)
        new.append(alert)
        if alert.lots:
            _insert_ignore(conn, tables.integrity_alert_lots,
                           [{"alert_id": alert.alert_id, "lot_id": lot} for lot in alert.lots])  # fmt: skip
        if alert.sites:
            _insert_ignore(conn, tables.integrity_alert_sites,
                           [{"alert_id": alert.alert_id, "site": s} for s in alert.sites])  # fmt: skip
    return new


def _stored_events(conn: Connection, alerts: Sequence[IntegrityAlert]) -> set[str]:
    wanted = sorted(
        {e for x in alerts if x.rule is Rule.UNMAPPED_VALUE for e in x.evidence_event_ids}
    )
    ev = tables.events
    found: set[str] = set()
    for chunk in _chunks(wanted, 500):
        found |= {
            r.event_id for r in conn.execute(select(ev.c.event_id).where(ev.c.event_id.in_(chunk)))
        }
    return found


def _status_clause(status: str) -> Any:
    a = tables.integrity_alerts
    live = a.c.state == AlertState.OPEN.value
    if status == "withdrawn":
        return a.c.state == AlertState.WITHDRAWN.value
    if status == "resolved":
        return and_(live, a.c.resolved_at.is_not(None))
    if status == "acknowledged":
        return and_(live, a.c.resolved_at.is_(None), a.c.acked_at.is_not(None))
    if status == "open":
        return and_(live, a.c.resolved_at.is_(None), a.c.acked_at.is_(None))
    if status == "unresolved":
        return and_(live, a.c.resolved_at.is_(None))
    raise AlertStateError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")


def _where(f: AlertFilter) -> list[Any]:
    a, lots, sites = (
        tables.integrity_alerts,
        tables.integrity_alert_lots,
        tables.integrity_alert_sites,
    )
    where: list[Any] = []
    if f.status is not None:
        where.append(_status_clause(f.status))
    if f.rule is not None:
        where.append(a.c.rule == f.rule)
    if f.severity is not None:
        where.append(a.c.severity == f.severity)
    if f.site is not None:
        where.append(a.c.alert_id.in_(select(sites.c.alert_id).where(sites.c.site == f.site)))
    if f.visible_sites is not None:
        where.append(a.c.alert_id.in_(
            select(sites.c.alert_id).where(sites.c.site.in_(sorted(f.visible_sites)))))  # fmt: skip
    if f.lot_id is not None:
        where.append(a.c.alert_id.in_(select(lots.c.alert_id).where(lots.c.lot_id == f.lot_id)))
    if f.since is not None:
        where.append(a.c.detected_at >= f.since.astimezone(UTC))
    if f.until is not None:
        where.append(a.c.detected_at < f.until.astimezone(UTC))
    return where


def list_alerts(
    store: GenealogyStore, f: AlertFilter, *, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """Alerts matching ``f``, newest first: the total and one page."""
    a = tables.integrity_alerts
    where = _where(f)
    with store.engine.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(a).where(*where)).scalar_one())
        rows = conn.execute(
            select(a).where(*where).order_by(a.c.detected_at.desc(), a.c.alert_id)
            .limit(limit).offset(offset)
        ).all()  # fmt: skip
    return total, [_row_json(r) for r in rows]


def get_alert(store: GenealogyStore, alert_id: str) -> dict[str, Any]:
    """One alert; raises :class:`AlertNotFoundError`."""
    a = tables.integrity_alerts
    with store.engine.connect() as conn:
        row = conn.execute(select(a).where(a.c.alert_id == alert_id)).first()
    if row is None:
        raise AlertNotFoundError(f"no integrity alert {alert_id!r}")
    return _row_json(row)


def status_of(row: Any) -> str:
    """The status a person sees (module docstring)."""
    if row.state == AlertState.WITHDRAWN.value:
        return "withdrawn"
    if row.resolved_at is not None:
        return "resolved"
    return "acknowledged" if row.acked_at is not None else "open"


def _at(value: datetime | None) -> str | None:
    return None if value is None else utc(value).isoformat()


def _row_json(r: Any) -> dict[str, Any]:
    return {
        "alert_id": r.alert_id, "rule": r.rule, "severity": r.severity, "status": status_of(r),
        "state": r.state, "subject": r.subject, "sites": json.loads(r.sites),
        "lots": json.loads(r.lots), "source_systems": json.loads(r.source_systems),
        "evidence_event_ids": json.loads(r.evidence_event_ids), "summary": r.summary,
        "details": json.loads(r.details), "detected_at": _at(r.detected_at),
        "updated_at": _at(r.updated_at),
        "acknowledged": None if r.acked_at is None else
        {"by": r.acked_by, "at": _at(r.acked_at), "comment": r.ack_comment},
        "resolved": None if r.resolved_at is None else
        {"by": r.resolved_by, "at": _at(r.resolved_at), "comment": r.resolve_comment},
    }  # fmt: skip


def ack_alert(store: GenealogyStore, alert_id: str, *, user: str, comment: str) -> dict[str, Any]:
    """Record that ``user`` took the alert on; only an open alert can be acknowledged."""
    return _act(store, alert_id, ("open",), {"acked_by": user, "acked_at": datetime.now(UTC),
                                             "ack_comment": comment}, "acknowledged")  # fmt: skip


def resolve_alert(
    store: GenealogyStore, alert_id: str, *, user: str, comment: str
) -> dict[str, Any]:
    """Record that ``user`` resolved the alert (open or acknowledged) and how."""
    return _act(store, alert_id, ("open", "acknowledged"), {"resolved_by": user,
                "resolved_at": datetime.now(UTC), "resolve_comment": comment}, "resolved")  # fmt: skip


def _act(store: GenealogyStore, alert_id: str, allowed: tuple[str, ...], values: dict[str, Any],
         verb: str) -> dict[str, Any]:  # fmt: skip
    a = tables.integrity_alerts
    with store.engine.begin() as conn:
        row = conn.execute(select(a).where(a.c.alert_id == alert_id)).first()
        if row is None:
            raise AlertNotFoundError(f"no integrity alert {alert_id!r}")
        status = status_of(row)
        if status not in allowed:
            raise AlertStateError(f"alert {alert_id} is {status} and cannot be {verb}; "
                                  f"only {' or '.join(allowed)} alerts can")  # fmt: skip
        conn.execute(update(a).where(a.c.alert_id == alert_id).values(**values))
    return get_alert(store, alert_id)


def unresolved_for_lots(store: GenealogyStore, lots: Sequence[str]) -> list[dict[str, Any]]:
    """Alerts still open or acknowledged that name any of ``lots``, with the lot they name."""
    a, al = tables.integrity_alerts, tables.integrity_alert_lots
    out: list[dict[str, Any]] = []
    with store.engine.connect() as conn:
        for chunk in _chunks(sorted(set(lots)), 20_000):
            rows = conn.execute(
                select(al.c.lot_id, a.c.alert_id, a.c.rule, a.c.severity, a.c.acked_at)
                .join(a, a.c.alert_id == al.c.alert_id)
                .where(one_of(conn, al.c.lot_id, list(chunk)), _status_clause("unresolved"))
                .order_by(al.c.lot_id, a.c.rule, a.c.alert_id)
            )
            out += [{"lot_id": r.lot_id, "alert_id": r.alert_id, "rule": r.rule,
                     "severity": r.severity,
                     "status": "acknowledged" if r.acked_at is not None else "open"}
                    for r in rows]  # fmt: skip
    return out
