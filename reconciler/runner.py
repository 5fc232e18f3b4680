"""Running the reconciliation jobs: mismatches become integrity alerts, runs are recorded.

Each (job, site) run turns every :class:`~reconciler.jobs.Mismatch` into an
:class:`~schemas.alerts.IntegrityAlert` (rule ``reconcile-<job>``) whose id depends only
on the job, the site and what disagrees, so the same mismatch found again updates its
alert instead of adding one; an alert of the same job and site that is no longer found
is published again as ``WITHDRAWN`` (the discrepancy was fixed). Alerts go straight to the
store, like the stream's sink does, so ``lothub reconcile`` needs no running worker. The
run itself (when, how long, what it found) is kept in ``reconcile_runs``.

Example::

    results = run_reconciliation(store, ["ALP", "BRK"], since=week_ago, until=now)
    for r in results:
        print(r.job, r.site, r.mismatches, r.duration_ms)
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import func, insert, select

from genealogy import tables
from genealogy.alerts import upsert_alerts
from genealogy.store import GenealogyStore, utc
from reconciler.jobs import JOBS, Mismatch, ReconcileContext, SourceReader
from schemas.alerts import AlertState, IntegrityAlert, Rule, Severity
from schemas.errors import ConfigurationError

log = logging.getLogger("lothub.reconciler")

#: Namespace of reconciliation alert ids (UUIDv5 of job, site and key).
RECONCILE_NAMESPACE = uuid.UUID("5d2c2e59-8f0e-5b7d-a3d4-7265636f6e63")
RULES: dict[str, Rule] = {
    "on-hand": Rule.RECONCILE_ON_HAND,
    "consumption": Rule.RECONCILE_CONSUMPTION,
    "disposition": Rule.RECONCILE_DISPOSITION,
    "transfers": Rule.RECONCILE_TRANSFER,
    "capture": Rule.RECONCILE_CAPTURE,
}

_LABELS = ("check", "site")
MISMATCHES = Gauge("lothub_reconcile_mismatches", "Mismatches the last run found", _LABELS)
LAST_RUN = Gauge(
    "lothub_reconcile_last_run_timestamp_seconds", "When the job last ran for the site", _LABELS
)
DURATION = Gauge("lothub_reconcile_duration_seconds", "How long the last run took", _LABELS)
RUNS = Counter("lothub_reconcile_runs_total", "Reconciliation runs", (*_LABELS, "outcome"))


@dataclass(frozen=True, kw_only=True)
class ReconcileOptions:
    """How strict the jobs are (see :class:`~reconciler.jobs.ReconcileContext`)."""

    tolerance: Decimal = Decimal("0.001")
    relative_tolerance: Decimal = Decimal("0.001")
    transfer_sla: timedelta = timedelta(hours=72)
    status_grace: timedelta = timedelta(hours=1)


@dataclass
class RunResult:
    """What one job found at one site."""

    run_id: str
    job: str
    site: str
    since: datetime
    until: datetime
    started_at: datetime
    duration_ms: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    opened: int = 0
    withdrawn: int = 0
    error: str | None = None


def alert_id(job: str, site: str, key: str) -> str:
    """The id of the alert for one mismatch: the same whatever its figures are today."""
    return str(uuid.uuid5(RECONCILE_NAMESPACE, f"{job}\x1f{site}\x1f{key}"))


def _subject(job: str, site: str, key: str) -> str:
    return f"reconcile:{job}:{site}:{key}"


def to_alert(mismatch: Mismatch, state: AlertState, at: datetime) -> IntegrityAlert:
    """The integrity alert of a mismatch."""
    return IntegrityAlert(
        alert_id=alert_id(mismatch.job, mismatch.site, mismatch.key),
        rule=RULES[mismatch.job],
        severity=Severity.WARNING,
        state=state,
        subject=_subject(mismatch.job, mismatch.site, mismatch.key),
        sites=sorted({mismatch.site, *[lot.split(":", 1)[0] for lot in mismatch.lots]}),
        lots=sorted(set(mismatch.lots)),
        source_systems=sorted(set(mismatch.systems)),
        evidence_event_ids=sorted(set(mismatch.evidence_event_ids)),
        detected_at=at,
        summary=mismatch.summary,
        details=dict(sorted(mismatch.figures.items())),
    )


def _open_alerts(store: GenealogyStore, job: str, site: str) -> dict[str, Any]:
    a = tables.integrity_alerts
    prefix = _subject(job, site, "")
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(a).where(
                a.c.rule == RULES[job].value,
                a.c.state == AlertState.OPEN.value,
                a.c.subject.startswith(prefix, autoescape=True),
            )
        ).all()
    return {r.alert_id: r for r in rows}


def _withdrawn(row: Any, at: datetime) -> IntegrityAlert:
    return IntegrityAlert(
        alert_id=row.alert_id, rule=Rule(row.rule), severity=Severity(row.severity),
        state=AlertState.WITHDRAWN, subject=row.subject, sites=json.loads(row.sites),
        lots=json.loads(row.lots), source_systems=json.loads(row.source_systems),
        evidence_event_ids=json.loads(row.evidence_event_ids), detected_at=at,
        summary=f"no longer found by the reconciliation of {at:%Y-%m-%d %H:%M} UTC: {row.summary}",
        details=json.loads(row.details),
    )  # fmt: skip


def run_reconciliation(
    store: GenealogyStore,
    sites: Sequence[str],
    *,
    since: datetime,
    until: datetime,
    jobs: Sequence[str] | None = None,
    options: ReconcileOptions | None = None,
    connectors: dict[str, list[str]] | None = None,
    read_source: SourceReader | None = None,
) -> list[RunResult]:
    """Run ``jobs`` (default: all) for each of ``sites``; store alerts and runs.

    ``connectors`` names each site's pull connectors and ``read_source`` reads one again,
    for the ``capture`` job. A job that fails is recorded with its error and the others
    still run.
    """
    names = list(jobs or JOBS)
    unknown = sorted(set(names) - set(JOBS))
    if unknown:
        raise ConfigurationError(f"unknown reconciliation job(s) {unknown}; known: {sorted(JOBS)}")
    options = options or ReconcileOptions()
    shared: dict[str, Any] = {}  # every-site views, loaded once per call
    results = []
    for site in sites:
        cache: dict[str, Any] = shared
        for job in names:
            ctx = ReconcileContext(
                store=store, site=site, since=utc(since), until=utc(until),
                tolerance=options.tolerance, relative_tolerance=options.relative_tolerance,
                transfer_sla=options.transfer_sla,
                status_grace=options.status_grace, connectors=(connectors or {}).get(site, []),
                read_source=read_source, cache=cache,
            )  # fmt: skip
            results.append(_run_one(store, job, ctx))
        shared = {k: v for k, v in cache.items() if not k.startswith("events:")}
    return results


def _run_one(store: GenealogyStore, job: str, ctx: ReconcileContext) -> RunResult:
    started = time.perf_counter()
    now = utc(datetime.now(ctx.until.tzinfo))
    result = RunResult(
        run_id=str(uuid.uuid4()), job=job, site=ctx.site, since=ctx.since, until=ctx.until,
        started_at=now,
    )  # fmt: skip
    try:
        result.mismatches = JOBS[job](ctx)
        current = {alert_id(m.job, m.site, m.key): m for m in result.mismatches}
        before = _open_alerts(store, job, ctx.site)
        alerts = [to_alert(m, AlertState.OPEN, now) for m in current.values()]
        alerts += [
            _withdrawn(row, now) for aid, row in sorted(before.items()) if aid not in current
        ]
        result.opened = len([aid for aid in current if aid not in before])
        result.withdrawn = len(before.keys() - current.keys())
        upsert_alerts(store, alerts)
    except Exception as exc:  # one broken job must not stop the others; it is recorded
        log.exception("reconciliation %s at %s failed", job, ctx.site)
        result.error = f"{type(exc).__name__}: {exc}"
    result.duration_ms = int((time.perf_counter() - started) * 1000)
    _record(store, result)
    labels = (job, ctx.site)
    MISMATCHES.labels(*labels).set(len(result.mismatches))
    LAST_RUN.labels(*labels).set(now.timestamp())
    DURATION.labels(*labels).set(result.duration_ms / 1000)
    RUNS.labels(*labels, "error" if result.error else "ok").inc()
    return result


def _record(store: GenealogyStore, r: RunResult) -> None:
    with store.engine.begin() as conn:
        conn.execute(insert(tables.reconcile_runs).values(
            run_id=r.run_id, job=r.job, site=r.site, since=r.since, until=r.until,
            started_at=r.started_at, duration_ms=r.duration_ms, mismatches=len(r.mismatches),
            opened=r.opened, withdrawn=r.withdrawn, error=r.error,
        ))  # fmt: skip


def list_runs(
    store: GenealogyStore, *, limit: int = 50, offset: int = 0, job: str | None = None,
    site: str | None = None,
) -> tuple[int, list[dict[str, Any]]]:  # fmt: skip
    """Recorded runs, newest first, with the total matching."""
    runs = tables.reconcile_runs
    where = [c for c in (runs.c.job == job if job else None,
                         runs.c.site == site if site else None) if c is not None]  # fmt: skip
    with store.engine.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(runs).where(*where)).scalar_one())
        page = conn.execute(
            select(runs).where(*where).order_by(runs.c.started_at.desc(), runs.c.run_id)
            .limit(limit).offset(offset)
        ).all()  # fmt: skip
    return total, [
        {
            "run_id": r.run_id,
            "job": r.job,
            "site": r.site,
            "since": utc(r.since).isoformat(),
            "until": utc(r.until).isoformat(),
            "started_at": utc(r.started_at).isoformat(),
            "duration_ms": r.duration_ms,
            "mismatches": r.mismatches,
            "opened": r.opened,
            "withdrawn": r.withdrawn,
            "error": r.error,
        }
        for r in page
    ]
