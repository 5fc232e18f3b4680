"""HTTP API over the genealogy store (FastAPI). Reads the store only, never Kafka.

Errors are RFC 9457 problem details (``application/problem+json``).

Example::

    app = create_app(store, readiness=lambda: {"broker": True, "worker": True})
    uvicorn.run(app, port=8000)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from decimal import Decimal
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from genealogy.store import GenealogyStore
from genealogy.trace import MAX_DEPTH, Direction, LotNotFoundError, TraceResult, trace

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


def create_app(
    store: GenealogyStore,
    readiness: Readiness | None = None,
    metrics: CollectorRegistry = REGISTRY,
) -> FastAPI:
    """The trace API on ``store``; ``readiness`` adds checks to ``/readyz``.

    ``/metrics`` serves ``metrics`` (the process's default registry unless given),
    which carries the connectors' metrics when they run in the same process.
    """
    app = FastAPI(
        title="lothub trace API",
        version="0.1.0",
        description="Forward and backward lot genealogy across every plant.",
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), str(exc.detail), request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_problem(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem(422, "Invalid request", detail, request.url.path, errors=errors)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Answers while the process lives."""
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        """Prometheus text exposition."""
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """200 only once every part (store, and what the runtime adds) is up."""
        checks = {"store": store.ping(), "api": True}
        if readiness is not None:
            checks.update(readiness())
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/api/v1/lots/{lot_id}/trace")
    def get_trace(
        request: Request,
        lot_id: str,
        direction: Direction = Direction.BACKWARD,
        max_depth: Annotated[int, Query(ge=1, le=MAX_DEPTH)] = 50,
    ) -> Any:
        """Backward (to supplier lots) or forward (to customers) genealogy of a lot.

        ``lot_id`` is the enterprise id (``SITE:CODE``) or any alias (site lot code,
        supplier lot).
        """
        try:
            result = trace(store, lot_id, direction, max_depth=max_depth)
        except LotNotFoundError as exc:
            return problem(404, "Lot not found", str(exc), request.url.path)
        return trace_to_json(result)

    return app
