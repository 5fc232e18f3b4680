"""HTTP API over the genealogy store (FastAPI). Reads the store only, never Kafka.

Errors are RFC 9457 problem details (``application/problem+json``).

Example::

    app = create_app(store, readiness=lambda: {"broker": True, "worker": True})
    uvicorn.run(app, port=8000)
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from genealogy.alerts import (
    AlertFilter,
    AlertNotFoundError,
    AlertStateError,
    ack_alert,
    get_alert,
    list_alerts,
    resolve_alert,
)
from genealogy.audit import append as append_audit
from genealogy.audit import entries as audit_entries
from genealogy.epcis_export import MEDIA_TYPE as EPCIS_MEDIA_TYPE
from genealogy.epcis_export import EpcisExportError, EpcisScope, epcis_document
from genealogy.epcis_export import dumps as epcis_dumps
from genealogy.fsma204 import ExportRequestError, fsma204_rows, to_csv, to_xlsx
from genealogy.graph import graph_of
from genealogy.kpis import compute_kpis
from genealogy.lots import lot_card, lot_history, search_lots
from genealogy.operations import connector_health, lot_counts
from genealogy.recall import (
    RecallRequest,
    RecallRequestError,
    list_recalls,
    load_recall,
    recall_requester,
    run_recall,
    seed_lots,
)
from genealogy.recall_pdf import recall_pdf
from genealogy.store import GenealogyStore, site_of
from genealogy.trace import (
    MAX_DEPTH,
    Direction,
    LotNotFoundError,
    TraceRequestError,
    TraceResult,
    resolve_lot,
    trace,
)
from reconciler.runner import list_runs
from schemas.alerts import Rule, Severity
from trace_api.auth import (
    AccessControl,
    Permission,
    Principal,
    Role,
    redact_alert,
    redact_recall,
    redact_refs,
    redact_trace,
)
from trace_api.kpi_metrics import KpiCollector
from trace_api.ui import mount_ui

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
#: Named readiness checks supplied by whoever runs the API (broker, worker, ...).
Readiness = Callable[[], dict[str, bool]]


def problem(status: int, title: str, detail: str, instance: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem details response."""
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def trace_to_json(result: TraceResult) -> dict[str, Any]:
    """The trace as JSON: quantities as exact decimal strings with their unit."""
    return {
        "root": result.root,
        "direction": result.direction.value,
        "truncated": result.truncated,
        "window": None
        if result.window is None
        else {"from": result.window[0].isoformat(), "to": result.window[1].isoformat()},
        "lots": [_jsonable(asdict(lot)) for lot in result.lots],
        "edges": [
            {
                "parent_lot": e.parent_lot,
                "child_lot": e.child_lot,
                "kind": e.kind,
                "via": e.via,
                "quantity_used": {"value": str(e.quantity_used), "unit": e.unit_used},
                "quantity_produced": {"value": str(e.quantity_produced), "unit": e.unit_produced},
                "occurred_at": e.occurred_at.isoformat(),
            }
            for e in result.edges
        ],
        "documents": [_jsonable(asdict(d)) for d in result.documents],
    }


def _need(permission: Permission) -> Callable[[Request], Principal]:
    """A dependency: the caller, if its key grants ``permission`` (401/403 otherwise)."""

    def check(request: Request) -> Principal:
        access: AccessControl = request.app.state.access
        who = access.authenticate(request.headers)
        if who is None:
            raise StarletteHTTPException(401, "a valid API key is required",
                                         headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        if not who.can(permission):
            raise StarletteHTTPException(403, f"role {who.role} may not {permission.value}")
        return who

    return check


# Each endpoint names the permission it needs through one of these.
Reader = Annotated[Principal, Depends(_need(Permission.READ))]
Recaller = Annotated[Principal, Depends(_need(Permission.RECALL))]
Exporter = Annotated[Principal, Depends(_need(Permission.EXPORT))]
Auditor = Annotated[Principal, Depends(_need(Permission.AUDIT))]
Operator = Annotated[Principal, Depends(_need(Permission.OPERATE))]
AlertReader = Annotated[Principal, Depends(_need(Permission.ALERTS))]
Triager = Annotated[Principal, Depends(_need(Permission.TRIAGE))]
AlertStatus = Literal["open", "acknowledged", "resolved", "withdrawn", "unresolved"]


def create_app(
    store: GenealogyStore,
    readiness: Readiness | None = None,
    metrics: CollectorRegistry = REGISTRY,
    access: AccessControl | None = None,
) -> FastAPI:
    """The trace API on ``store``.

    ``readiness`` adds checks to ``/readyz``; ``/metrics`` serves ``metrics`` (the
    process's default registry unless given, which carries the connectors' metrics
    when they run in the same process); ``access`` holds the API keys (none: local
    mode, full access). Every endpoint but ``/healthz`` and ``/readyz`` needs a key
    once one is configured.
    """
    access = access or AccessControl.none()

    @asynccontextmanager
    async def load_graph(_app: FastAPI) -> AsyncIterator[None]:
        # before serving (and so before /readyz answers): on a million links the first
        # load takes tens of seconds, which no trace request should wait for
        try:
            with store.engine.connect() as conn:
                graph_of(store).catch_up(conn)
        except SQLAlchemyError as exc:
            log.warning("trace graph not loaded at start-up (the first trace will): %s", exc)
        yield

    app = FastAPI(
        title="lothub trace API",
        version="0.1.0",
        description="Forward and backward lot genealogy across every plant.",
        lifespan=load_graph,
    )

    app.state.access = access

    def visible_lot(who: Principal, lot: str) -> str:
        """The lot id, if ``who`` may see it; otherwise exactly as if it did not exist."""
        lot_id = resolve_lot(store, lot)
        if not who.sees(site_of(lot_id)):
            raise LotNotFoundError(f"no lot has the id or alias {lot!r}")
        return lot_id

    def audit(who: Principal, action: str, meaning: str, target: str, **details: Any) -> None:
        append_audit(store, user=who.user, role=who.role.value, site=who.site, action=action,
                     meaning=meaning, target=target, details=details)  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = problem(exc.status_code, str(exc.detail), str(exc.detail), request.url.path)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(LotNotFoundError)
    async def lot_not_found(request: Request, exc: LotNotFoundError) -> JSONResponse:
        return problem(404, "Lot not found", str(exc), request.url.path)

    @app.exception_handler(AlertNotFoundError)
    async def alert_not_found(request: Request, exc: AlertNotFoundError) -> JSONResponse:
        return problem(404, "Alert not found", str(exc), request.url.path)

    @app.exception_handler(AlertStateError)
    async def alert_state(request: Request, exc: AlertStateError) -> JSONResponse:
        return problem(409, "Alert cannot change so", str(exc), request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_problem(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem(422, "Invalid request", detail, request.url.path, errors=errors)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Answers while the process lives."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """200 only once every part (store, and what the runtime adds) is up."""
        checks = {"store": store.ping(), "api": True}
        if readiness is not None:
            checks.update(readiness())
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    kpi_metrics = CollectorRegistry(auto_describe=True)
    kpi_collector = KpiCollector(store)
    kpi_metrics.register(kpi_collector)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics(who: Operator) -> Response:
        """Prometheus text exposition: the process's metrics and the KPIs."""
        body = generate_latest(metrics) + generate_latest(kpi_metrics)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/reconcile/runs")
    def reconcile_runs(
        who: Operator,
        job: Annotated[str | None, Query(max_length=40)] = None,
        site: Annotated[str | None, Query(max_length=40)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Reconciliation runs, newest first: when, how long, what each found."""
        total, runs = list_runs(store, limit=limit, offset=offset, job=job, site=site)
        return {"total": total, "limit": limit, "offset": offset, "items": runs}

    @app.get("/api/v1/kpis")
    def kpis(
        who: Reader, site: Annotated[str | None, Query(max_length=40)] = None
    ) -> dict[str, Any]:
        """Traceability KPIs (see :mod:`genealogy.kpis`); a site user gets its own site's."""
        if who.site is not None and who.role is Role.SITE_QUALITY:
            if site is not None and site != who.site:
                raise StarletteHTTPException(403, f"{who.user} sees site {who.site} only")
            site = who.site
        if site is None:
            return kpi_collector.kpis().to_json()
        body = compute_kpis(store, now=datetime.now(UTC), site=site).to_json()
        for gap in body["genealogy_completeness"]["gaps"]:
            # where another site's genealogy ends is that site's business: say so, not which lot
            gap["ends_without_receipt"] = [
                lot if who.sees(site_of(lot)) else access.token(lot)
                for lot in gap["ends_without_receipt"]
            ]
        return body

    @app.get("/api/v1/sources")
    def get_sources(who: Operator) -> dict[str, Any]:
        """Events stored per source system instance, for reconciliation against the sources.

        ``events`` counts distinct events; ``missing_sequences`` counts the numbers within
        ``first_sequence..last_sequence`` with no event stored. Compare ``events`` with what
        the source or its connector sent: fewer here means events were lost on the way
        (for instance by a broker that lost its data) and must be re-sent (a connector
        backfill; the store keeps each event once).
        """
        items = []
        for c in store.source_counts():
            item = asdict(c)
            item["missing_sequences"] = c.missing_sequences
            items.append(item)
        return {"items": items}

    @app.get("/api/v1/whoami")
    def whoami(request: Request) -> dict[str, Any]:
        """The caller's user, role, site and permissions (any valid key; local mode says so)."""
        who = access.authenticate(request.headers)
        if who is None:
            raise StarletteHTTPException(401, "a valid API key is required",
                                         headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        return {
            "user": who.user,
            "role": who.role.value,
            "site": who.site,
            "local_mode": access.local_mode,
            "permissions": sorted(p.value for p in Permission if who.can(p)),
        }

    @app.get("/api/v1/stats")
    def get_stats(who: Reader) -> dict[str, Any]:
        """Lots by site and by status (a site user: its site's)."""
        return lot_counts(store, site=who.site if who.role is Role.SITE_QUALITY else None)

    @app.get("/api/v1/connectors")
    def get_connectors(who: Operator) -> dict[str, Any]:
        """Integration health per connector: last success, lag, counts, last error; worst first."""
        items = connector_health(store)
        return {"total": len(items), "items": items}

    @app.get("/api/v1/lots")
    def get_lots(
        who: Reader,
        q: Annotated[
            str, Query(min_length=1, max_length=200, description="start of an id or alias")
        ],
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Lots whose id or any alias (site lot code, supplier lot, licence plate) starts with ``q``."""
        site = who.site if who.role is Role.SITE_QUALITY else None
        total, items = search_lots(store, q, limit=limit, offset=offset, site=site)
        return {"total": total, "limit": limit, "offset": offset, "items": items}

    @app.get("/api/v1/lots/{lot_id}")
    def get_lot(who: Reader, lot_id: str) -> Any:
        """One lot by id or alias: aliases, status and status history."""
        return lot_card(store, visible_lot(who, lot_id))

    @app.get("/api/v1/lots/{lot_id}/events")
    def get_lot_events(
        who: Reader,
        lot_id: str,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Any:
        """Every event naming the lot, oldest first."""
        total, items = lot_history(store, visible_lot(who, lot_id), limit=limit, offset=offset)
        return {
            "total": total,
            "limit": limit,
            "offset": offset,
            "items": redact_refs(items, who, access),
        }

    @app.get("/api/v1/lots/{lot_id}/trace")
    def get_trace(
        request: Request,
        who: Reader,
        lot_id: str,
        direction: Direction = Direction.BACKWARD,
        max_depth: Annotated[int, Query(ge=1, le=MAX_DEPTH)] = 50,
        from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
        to: AwareDatetime | None = None,
    ) -> Any:
        """Backward (to supplier lots) or forward (to customers) genealogy of a lot.

        ``lot_id`` is the enterprise id (``SITE:CODE``) or any alias (site lot code,
        supplier lot, licence plate). A site user sees other sites' lots redacted.
        ``from`` and ``to`` (both, at most 366 days apart) keep only the links and
        documents whose event happened in that window.
        """
        lot = visible_lot(who, lot_id)
        try:
            result = trace(store, lot, direction, max_depth=max_depth, start=from_, end=to)
        except TraceRequestError as exc:
            return problem(422, "Invalid trace request", str(exc), request.url.path)
        return redact_trace(trace_to_json(result), who, access)

    @app.get("/api/v1/exports/fsma204")
    def export_fsma204(
        request: Request,
        who: Exporter,
        lot: str | None = None,
        from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
        to: AwareDatetime | None = None,
        format: Literal["csv", "xlsx"] = "csv",
    ) -> Any:
        """FSMA 204 sortable spreadsheet for a lot's genealogy or a date range (<= 366 days)."""
        try:
            rows = fsma204_rows(
                store, lot=visible_lot(who, lot) if lot else None, start=from_, end=to
            )
        except ExportRequestError as exc:
            return problem(422, "Invalid export request", str(exc), request.url.path)
        rows = [r for r in rows if who.sees(r["Site"])]
        audit(who, "export.fsma204", "FSMA 204 sortable spreadsheet exported",
              lot or f"{from_}..{to}", rows=len(rows), format=format)  # fmt: skip
        name = f"fsma204-{(lot or 'range').replace(':', '_')}"
        if format == "xlsx":
            return Response(to_xlsx(rows), headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'},
                            media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")  # fmt: skip
        return Response(to_csv(rows), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})  # fmt: skip

    @app.get("/api/v1/exports/epcis")
    def export_epcis(
        request: Request, who: Exporter, lot: Annotated[str, Query(min_length=1, max_length=200)],
        scope: EpcisScope = EpcisScope.LOT,
    ) -> Any:  # fmt: skip
        """EPCIS 2.0 JSON-LD document of a lot's events (``scope=trace``: its whole genealogy's).

        A site user gets only its site's events; other sites' lots named in them are redacted.
        """
        lot_id = visible_lot(who, lot)
        try:
            doc = epcis_document(store, lot_id, scope=scope, visible=who.sees, redact=access.token)
        except EpcisExportError as exc:
            return problem(422, "Invalid export request", str(exc), request.url.path)
        events = len(doc["epcisBody"]["eventList"])
        audit(who, "export.epcis", "EPCIS 2.0 document exported", lot_id, scope=scope.value,
              events=events)  # fmt: skip
        name = f"epcis-{lot_id.replace(':', '_')}-{scope.value}.jsonld"
        return Response(epcis_dumps(doc), media_type=EPCIS_MEDIA_TYPE,
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip

    @app.post("/api/v1/recalls", status_code=201)
    def post_recall(request: Request, who: Recaller, body: RecallBody) -> Any:
        """Run a mock recall from lots (any alias), a supplier, or an item and date range."""
        recall = RecallRequest(**body.model_dump())
        try:
            seeds = seed_lots(store, recall)
        except RecallRequestError as exc:
            return problem(422, "Invalid recall request", str(exc), request.url.path)
        visible = [s for s in seeds if who.sees(site_of(s))]
        if not visible or (recall.lots and len(visible) < len(seeds)):
            raise LotNotFoundError("nothing to recall among the lots you may see")
        packet = run_recall(store, recall, seeds=visible, created_by=who.user, site=who.site)
        audit(who, "recall.create", "mock recall run", f"recall/{packet.recall_id}",
              request=packet.request, affected_lots=len(packet.lots))  # fmt: skip
        return JSONResponse(redact_recall(packet.to_json(), who, access), status_code=201,
                            headers={"Location": f"/api/v1/recalls/{packet.recall_id}"})  # fmt: skip

    @app.get("/api/v1/recalls")
    def get_recalls(
        who: Recaller,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Stored recalls, newest first, one page at a time (a site user: its site's)."""
        site = who.site if who.role is Role.SITE_QUALITY else None
        total, items = list_recalls(store, limit=limit, offset=offset, site=site)
        return {"total": total, "limit": limit, "offset": offset, "items": items}

    def stored_recall(request: Request, who: Principal, recall_id: str) -> dict[str, Any]:
        found = load_recall(store, recall_id)
        if found is None or (who.role is Role.SITE_QUALITY and found[1] != who.site):
            raise StarletteHTTPException(404, f"no recall {recall_id!r}")
        return redact_recall(found[0], who, access)

    @app.get("/api/v1/recalls/{recall_id}")
    def get_recall(request: Request, who: Recaller, recall_id: str) -> Any:
        """One stored recall packet."""
        packet = stored_recall(request, who, recall_id)
        audit(who, "recall.view", "recall packet read", f"recall/{recall_id}")
        return packet

    @app.get("/api/v1/recalls/{recall_id}/export")
    def export_recall(
        request: Request,
        who: Exporter,
        recall_id: str,
        format: Literal["csv", "xlsx", "pdf"] = "csv",
    ) -> Any:
        """The packet as a spreadsheet (one row per affected lot and unit, then shipments) or
        as a printable PDF for a regulator (header, lots, customers, mass balance, gaps)."""
        packet = stored_recall(request, who, recall_id)
        audit(who, "recall.export", "recall packet exported", f"recall/{recall_id}", format=format)
        disposition = {"Content-Disposition": f'attachment; filename="recall-{recall_id}.{format}"'}
        if format == "pdf":
            pdf = recall_pdf(packet, requested_by=recall_requester(store, recall_id))
            return Response(pdf, media_type="application/pdf", headers=disposition)
        if format == "xlsx":
            return Response(recall_xlsx(packet), headers=disposition,
                            media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")  # fmt: skip
        return Response(
            recall_csv(packet), media_type="text/csv; charset=utf-8", headers=disposition
        )

    def alert_scope(who: Principal) -> frozenset[str] | None:
        return frozenset({who.site or ""}) if who.role is Role.SITE_QUALITY else None

    def visible_alert(who: Principal, alert_id: str) -> dict[str, Any]:
        """The alert, if ``who`` may see it; otherwise exactly as if it did not exist."""
        alert = get_alert(store, alert_id)
        scope = alert_scope(who)
        if scope is not None and not scope & set(alert["sites"]):
            raise AlertNotFoundError(f"no integrity alert {alert_id!r}")
        return alert

    @app.get("/api/v1/alerts")
    def get_alerts(
        request: Request,
        who: AlertReader,
        status: AlertStatus | None = None,
        rule: Rule | None = None,
        severity: Severity | None = None,
        site: Annotated[str | None, Query(max_length=200)] = None,
        lot: Annotated[str | None, Query(max_length=200, description="lot id or any alias")] = None,
        since: AwareDatetime | None = None,
        until: AwareDatetime | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Any:
        """Integrity alerts, newest first, filtered (a site user sees those naming its site).

        ``status``: open (nobody looked yet), acknowledged, resolved, withdrawn (the
        condition no longer holds), unresolved (open or acknowledged). ``since`` and
        ``until`` bound the first detection time.
        """
        if since is not None and until is not None and until <= since:
            return problem(422, "Invalid request", "until must be after since", request.url.path)
        found = AlertFilter(
            status=status, rule=rule.value if rule else None,
            severity=severity.value if severity else None, site=site,
            lot_id=visible_lot(who, lot) if lot else None, since=since, until=until,
            visible_sites=alert_scope(who),
        )  # fmt: skip
        total, items = list_alerts(store, found, limit=limit, offset=offset)
        return {"total": total, "limit": limit, "offset": offset,
                "items": [redact_alert(a, who, access) for a in items]}  # fmt: skip

    @app.get("/api/v1/alerts/{alert_id}")
    def get_one_alert(who: AlertReader, alert_id: str) -> Any:
        """One integrity alert with its evidence and who acknowledged or resolved it."""
        return redact_alert(visible_alert(who, alert_id), who, access)

    @app.post("/api/v1/alerts/{alert_id}/ack")
    def post_ack(who: Triager, alert_id: str, body: AlertAction) -> Any:
        """Take an open alert on (409 if it is no longer open)."""
        visible_alert(who, alert_id)
        alert = ack_alert(store, alert_id, user=who.user, comment=body.comment)
        audit(who, "alert.ack", "integrity alert acknowledged", f"alert/{alert_id}",
              comment=body.comment)  # fmt: skip
        return redact_alert(alert, who, access)

    @app.post("/api/v1/alerts/{alert_id}/resolve")
    def post_resolve(request: Request, who: Triager, alert_id: str, body: AlertAction) -> Any:
        """Resolve an open or acknowledged alert; the comment says what was done."""
        if not body.comment.strip():
            return problem(422, "Invalid request", "say in comment what resolved the alert",
                           request.url.path)  # fmt: skip
        visible_alert(who, alert_id)
        alert = resolve_alert(store, alert_id, user=who.user, comment=body.comment)
        audit(who, "alert.resolve", "integrity alert resolved", f"alert/{alert_id}",
              comment=body.comment)  # fmt: skip
        return redact_alert(alert, who, access)

    @app.get("/api/v1/audit")
    def get_audit(
        who: Auditor,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """The audit trail, newest first."""
        total, items = audit_entries(store, limit=limit, offset=offset)
        return {"total": total, "limit": limit, "offset": offset, "items": items}

    mount_ui(app)
    return app


class AlertAction(BaseModel):
    """Acknowledging or resolving an alert: what the person says about it."""

    model_config = ConfigDict(extra="forbid")

    comment: str = Field(default="", max_length=2000)


class RecallBody(BaseModel):
    """A mock recall request: exactly one of lots, supplier, or item with a date range."""

    model_config = ConfigDict(extra="forbid")

    lots: list[str] = Field(default_factory=list, max_length=1000)
    supplier: str | None = None
    item: str | None = None
    date_from: AwareDatetime | None = None
    date_to: AwareDatetime | None = None


BALANCE_COLUMNS = ["received", "produced", "returned", "consumed", "shipped", "transferred_out",
                   "scrapped", "adjusted", "on_hand", "residual"]  # fmt: skip


def recall_sheets(packet: dict[str, Any]) -> dict[str, list[list[Any]]]:
    """A stored packet as tables: affected lots with balances and exposure, shipments, gaps."""
    lots: list[list[Any]] = [["lot", "site", "item", "status", "seed", "depth", "suspect share",
                              "suspect kg", "unit", *BALANCE_COLUMNS, "closes"]]  # fmt: skip
    for lot in packet["lots"]:
        for b in lot["balances"] or [{"unit": ""}]:
            lots.append([lot["lot_id"], lot["site"], lot["item_code"], lot["status"], lot["seed"],
                         lot["depth"], lot.get("suspect_share"), lot.get("suspect_kg"), b["unit"],
                         *(b.get(c, "") for c in BALANCE_COLUMNS), b.get("closes", "")])  # fmt: skip
    shipments: list[list[Any]] = [["shipped lot", "customer", "ship to", "document", "shipped at",
                                   "quantity", "unit", "suspect kg"]]  # fmt: skip
    for s in packet["shipments"]:
        shipments.append([s["lot_id"], s["customer"], s["ship_to"], s["document"], s["shipped_at"],
                          s["quantity"], s["unit"], s.get("suspect_kg")])  # fmt: skip
    gaps: list[list[Any]] = [["gap lot", "data gap"]]
    gaps += [[gap["lot_id"], gap["message"]] for gap in packet["gaps"]]
    return {"lots": lots, "shipments": shipments, "gaps": gaps}


def recall_csv(packet: dict[str, Any]) -> str:
    """CSV of a stored packet: a header line, then the lots, shipments and gaps tables."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["recall", packet["recall_id"], "created", packet["created_at"],
                     "took_ms", packet["duration_ms"]])  # fmt: skip
    for rows in recall_sheets(packet).values():
        writer.writerow([])
        writer.writerows(rows)
    return out.getvalue()


def recall_xlsx(packet: dict[str, Any]) -> bytes:
    """The packet as a workbook, one sheet per table, headers frozen and filterable."""
    from openpyxl import Workbook

    book = Workbook()
    first = True
    for title, rows in recall_sheets(packet).items():
        sheet = book.active if first else book.create_sheet()
        assert sheet is not None  # a new workbook has one sheet
        first = False
        sheet.title = title
        for row in rows:
            sheet.append(["" if v is None else v for v in row])
        sheet.auto_filter.ref = sheet.dimensions
        sheet.freeze_panes = "A2"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
