"""EPCIS 2.0 capture interface (REST binding): ``POST /capture`` and its capture jobs.

What the GS1 EPCIS 2.0 REST binding (``openapi.yaml``, tag *Capture*) asks of a capture
endpoint, served by :func:`create_capture_app` with an injected sink (e.g. a
:class:`~connectors.publisher.KafkaPublisher`'s send-and-flush):

========================================  ==================================================
request                                   answer
========================================  ==================================================
``POST /capture``, an ``EPCISDocument``   ``202``, ``Location: /capture/{captureID}``; the
or ``EPCISQueryDocument`` as              body is the capture job as it starts. The document
``application/json`` or                   is parsed and schema-validated in the request; its
``application/ld+json``                   events are mapped and handed to the sink in a
                                          background task (the job says when it is done)
not JSON, not EPCIS, schema-invalid,      ``400`` problem details, type
unknown ``GS1-Capture-Error-Behaviour``   ``epcisException:ValidationException``, every schema
                                          error with its JSON pointer under ``errors``; no job
other media types                         ``415`` ``epcisException:UnsupportedMediaTypeException``
more than ``max_bytes`` / ``max_events``  ``413`` ``epcisException:CaptureLimitExceededException``
                                          with ``GS1-EPCIS-Capture-File-Size-Limit`` /
                                          ``GS1-EPCIS-Capture-Limit``
``GET /capture/{captureID}``              the ``CaptureJob``: ``captureID``, ``createdAt``,
                                          ``finishedAt``, ``running``, ``success``,
                                          ``captureErrorBehaviour``, ``errors`` (problem
                                          details); unknown id: ``404``
                                          ``epcisException:NoSuchResourceException``
``GET /capture?perPage=&nextPageToken=``  the jobs, oldest first, ``Link: <…>; rel="next"``
``OPTIONS /capture``                      ``204`` with the limits, versions and
                                          ``GS1-Capture-Error-Behaviour: all``
========================================  ==================================================

``GS1-Capture-Error-Behaviour``: ``rollback`` (the default) hands nothing to the sink if any
event cannot be mapped (``success: false``, one problem per failing event, its JSON pointer
in ``instance``); ``proceed`` hands over the events of every event that maps and reports the
others. Either way, if the sink fails the job fails with an
``epcisException:ImplementationException`` problem; send the document again: re-sent events
get the same ids, so what reached the broker before the failure is stored once. (All or
nothing therefore holds for the mapping; for publication it holds as far as the sink's own
batch is atomic.)

Beyond the binding's properties a job carries ``epcisEventCount``, ``lotEventCount`` (lot
events the sink took) and ``unmapped``: what the captured events say that no lot event
carries (see :mod:`connectors.epcis`).

Jobs are kept in memory, the last ``max_jobs`` (default 1000; finished jobs are dropped
first), so they do not survive a restart and are not shared between processes. The app has
no authentication of its own: serve it behind the hub's, or on a plant network only.

Example::

    app = create_capture_app(publisher.publish, EpcisMapping(system_instance="epcis-alp",
                                                             default_site="ALP"))
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import BackgroundTasks, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from connectors.epcis import (
    EpcisMapping,
    EpcisMappingError,
    EpcisValidationError,
    UnmappedNote,
    document_events,
    map_document_detailed,
    parse_document,
)
from schemas.errors import DataError, RetriableError
from schemas.model import LotEventBase

log = logging.getLogger("lothub.connectors.epcis_capture")

PROBLEM: Final = "application/problem+json"
#: Media types of an EPCIS 2.0 document in JSON (JSON-LD is JSON with a context).
JSON_MEDIA_TYPES: Final = frozenset({"application/json", "application/ld+json"})
EPCIS_VERSION: Final = "2.0.0"
CBV_VERSION: Final = "2.0.0"
#: ``GS1-Capture-Error-Behaviour`` values a client may send (``all`` is the server's).
BEHAVIOURS: Final = ("rollback", "proceed")
DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024
DEFAULT_MAX_EVENTS: Final = 10_000
DEFAULT_MAX_JOBS: Final = 1000
DEFAULT_PER_PAGE: Final = 30

VALIDATION: Final = "epcisException:ValidationException"
IMPLEMENTATION: Final = "epcisException:ImplementationException"
NO_SUCH_RESOURCE: Final = "epcisException:NoSuchResourceException"
UNSUPPORTED_MEDIA: Final = "epcisException:UnsupportedMediaTypeException"
CAPTURE_LIMIT: Final = "epcisException:CaptureLimitExceededException"

#: Takes the lot events of one capture job (e.g. publish and flush to the raw topic).
EventSink = Callable[[list[LotEventBase]], None]
#: Parks a document that cannot be (wholly) used, with the reason, on the dead-letter topic.
DeadLetter = Callable[[bytes, str], None]


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def problem(type_: str, title: str, status: int | None = None, **extra: Any) -> dict[str, Any]:
    """An RFC 7807 / 9457 problem details object (``type`` and ``title`` are required)."""
    body: dict[str, Any] = {"type": type_, "title": title}
    if status is not None:
        body["status"] = status
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def _problem_response(
    status: int, type_: str, title: str, detail: str, instance: str, **extra: Any
) -> JSONResponse:
    body = problem(type_, title, status, detail=detail, instance=instance, **extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def _note_json(note: UnmappedNote) -> dict[str, Any]:
    body: dict[str, Any] = {
        "eventID": note.event_key,
        "pointer": note.pointer,
        "what": note.what,
        "reason": note.reason,
    }
    if note.lot is not None:
        body["lot"] = note.lot
    if note.quantity is not None:
        body["quantity"] = format(note.quantity.value.normalize(), "f")
        body["uom"] = note.quantity.unit
    return body


@dataclass
class CaptureJob:
    """One ``POST /capture``: how far it got and what went wrong (the binding's CaptureJob).

    Example::

        job = CaptureJob("id5f0c…", datetime.now(UTC), "rollback", sequence=1)
        job.to_json()["running"]   # True until the job finishes
    """

    capture_id: str
    created_at: datetime
    behaviour: str
    sequence: int
    epcis_events: int = 0
    running: bool = True
    success: bool = True
    finished_at: datetime | None = None
    lot_events: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    unmapped: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The job as the binding's ``CaptureJob`` object (plus the hub's counts and notes)."""
        body: dict[str, Any] = {
            "captureID": self.capture_id,
            "createdAt": _utc(self.created_at),
            "running": self.running,
            "success": self.success,
            "captureErrorBehaviour": self.behaviour,
            "errors": list(self.errors),
            "epcisEventCount": self.epcis_events,
            "lotEventCount": self.lot_events,
            "unmapped": list(self.unmapped),
        }
        if self.finished_at is not None:
            body["finishedAt"] = _utc(self.finished_at)
        return body


class CaptureJobs:
    """The last ``limit`` capture jobs, in memory, safe to update from worker threads."""

    def __init__(self, limit: int = DEFAULT_MAX_JOBS) -> None:
        if limit < 1:
            raise ValueError("a capture job store must keep at least one job")
        self.limit = limit
        self._jobs: OrderedDict[str, CaptureJob] = OrderedDict()
        self._lock = threading.Lock()
        self._sequence = itertools.count(1)

    def create(self, behaviour: str, epcis_events: int) -> CaptureJob:
        """A new running job; the oldest finished job (else the oldest) makes room."""
        with self._lock:
            job = CaptureJob(
                capture_id=f"id{uuid.uuid4().hex}",
                created_at=datetime.now(UTC),
                behaviour=behaviour,
                sequence=next(self._sequence),
                epcis_events=epcis_events,
            )
            while len(self._jobs) >= self.limit:
                finished = next((k for k, j in self._jobs.items() if not j.running), None)
                self._jobs.pop(finished if finished is not None else next(iter(self._jobs)))
            self._jobs[job.capture_id] = job
            return job

    def finish(
        self,
        job: CaptureJob,
        *,
        errors: list[dict[str, Any]],
        lot_events: int,
        unmapped: list[dict[str, Any]],
    ) -> None:
        """Record the outcome of a job (it may have been dropped meanwhile; that is fine)."""
        with self._lock:
            job.errors = errors
            job.success = not errors
            job.lot_events = lot_events
            job.unmapped = unmapped
            job.finished_at = datetime.now(UTC)
            job.running = False

    def get(self, capture_id: str) -> dict[str, Any] | None:
        """A snapshot of one job, or None if it is unknown (or was dropped)."""
        with self._lock:
            job = self._jobs.get(capture_id)
            return job.to_json() if job is not None else None

    def page(self, start: int, size: int) -> tuple[list[dict[str, Any]], int | None]:
        """Jobs created at ``start`` (sequence) or later, and where the next page starts."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.sequence >= start]
            following = jobs[size].sequence if len(jobs) > size else None
            return [j.to_json() for j in jobs[:size]], following


def run_capture_job(
    job: CaptureJob,
    doc: dict[str, Any],
    sink: EventSink,
    mapping: EpcisMapping,
    jobs: CaptureJobs,
    *,
    raw: bytes = b"",
    dead_letter: DeadLetter | None = None,
) -> None:
    """Map a validated document's events and hand them to ``sink`` as ``job`` says.

    A document with events that cannot be mapped is also handed to ``dead_letter`` (its
    original bytes ``raw``, the reason naming every failing event), so operators see it
    beside the other connectors' dead letters. Never raises: every outcome, including a
    failing sink, ends up in the job.
    """
    instance = f"/capture/{job.capture_id}"
    errors: list[dict[str, Any]] = []
    captured: list[LotEventBase] = []
    notes: list[dict[str, Any]] = []
    try:
        result = map_document_detailed(doc, mapping, validated=True)
        for outcome in result.failed:
            exc = outcome.error
            errors.append(
                problem(
                    VALIDATION,
                    "EPCIS event cannot be mapped to lot events",
                    detail=str(exc),
                    instance=f"{instance}#{outcome.pointer}",
                    eventID=outcome.key or None,
                    reasonCode=exc.reason_code if exc is not None else None,
                )
            )
        if not errors or job.behaviour == "proceed":
            captured = result.events
            notes = [_note_json(n) for n in result.unmapped]
        if result.failed and dead_letter is not None:
            reasons = "; ".join(f"{o.pointer}: {o.error}" for o in result.failed)
            dead_letter(
                raw,
                f"{EpcisMappingError.reason_code}: capture job {job.capture_id} ({job.behaviour}): "
                f"{len(result.failed)} event(s) cannot be mapped: {reasons}",
            )
        if captured:
            sink(captured)
    except RetriableError as exc:
        captured, notes = [], []
        errors.append(
            problem(
                IMPLEMENTATION,
                "Lot events could not be handed on; send the document again",
                detail=f"{exc} (re-sent events get the same ids and are stored once)",
                instance=instance,
            )
        )
    except DataError as exc:  # the sink refused an event (e.g. it does not encode)
        captured, notes = [], []
        errors.append(
            problem(VALIDATION, "Lot events were refused", detail=str(exc), instance=instance)
        )
    except Exception as exc:  # a bug must not leave the job running forever
        log.exception("capture job %s failed", job.capture_id)
        captured, notes = [], []
        errors.append(
            problem(
                IMPLEMENTATION, "A server-side error occurred", detail=str(exc), instance=instance
            )
        )
    finally:
        jobs.finish(job, errors=errors, lot_events=len(captured), unmapped=notes)
    log.info(
        "capture job %s: %d EPCIS events, %d lot events captured, %d errors",
        job.capture_id,
        job.epcis_events,
        len(captured),
        len(errors),
    )


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def create_capture_app(
    sink: EventSink,
    mapping: EpcisMapping,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_events: int = DEFAULT_MAX_EVENTS,
    max_jobs: int = DEFAULT_MAX_JOBS,
    dead_letter: DeadLetter | None = None,
) -> FastAPI:
    """The EPCIS 2.0 capture interface for one EPCIS source (see the module docstring).

    ``sink`` takes the lot events of each job (raising
    :class:`~schemas.errors.RetriableError` if it is unavailable); ``mapping`` says how the
    source's events are mapped; ``dead_letter`` (if given) parks every document refused as
    invalid, and every document with events that cannot be mapped, with the reason. The
    jobs live in ``app.state.capture_jobs``.
    """
    app = FastAPI(title="lothub EPCIS 2.0 capture", version=EPCIS_VERSION)
    jobs = CaptureJobs(max_jobs)
    app.state.capture_jobs = jobs

    @app.middleware("http")
    async def versions(request: Request, call_next: Callable[[Request], Any]) -> Any:
        response = await call_next(request)
        response.headers["GS1-EPCIS-Version"] = EPCIS_VERSION
        response.headers["GS1-CBV-Version"] = CBV_VERSION
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = str(exc.detail)
        return _problem_response(exc.status_code, "about:blank", title, title, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return _problem_response(400, VALIDATION, "Invalid request", detail, request.url.path)

    # The body is read raw (parsed with exact decimals, validated against the GS1 schema);
    # the OpenAPI page still says what to send.
    body_doc = {
        "required": True,
        "content": {media: {"schema": {"type": "object"}} for media in sorted(JSON_MEDIA_TYPES)},
    }

    @app.options("/capture", status_code=204)
    async def discover() -> Response:
        return Response(
            status_code=204,
            headers={
                "Allow": "OPTIONS, POST, GET",
                "GS1-EPCIS-Min": EPCIS_VERSION,
                "GS1-EPCIS-Max": EPCIS_VERSION,
                "GS1-CBV-Min": CBV_VERSION,
                "GS1-CBV-Max": CBV_VERSION,
                "GS1-EPCIS-Capture-Limit": str(max_events),
                "GS1-EPCIS-Capture-File-Size-Limit": str(max_bytes),
                "GS1-Capture-Error-Behaviour": "all",
            },
        )

    @app.post("/capture", status_code=202, openapi_extra={"requestBody": body_doc})
    async def capture(request: Request, background: BackgroundTasks) -> JSONResponse:
        instance = request.url.path
        behaviour = request.headers.get("GS1-Capture-Error-Behaviour", "rollback").strip().lower()
        if behaviour not in BEHAVIOURS:
            detail = f"GS1-Capture-Error-Behaviour must be rollback or proceed, not {behaviour!r}"
            return _problem_response(400, VALIDATION, "Invalid header", detail, instance)
        if _media_type(request.headers.get("content-type", "")) not in JSON_MEDIA_TYPES:
            detail = "send the EPCIS document as application/json or application/ld+json"
            return _problem_response(
                415, UNSUPPORTED_MEDIA, "Unsupported Media Type", detail, instance
            )
        too_large = _problem_response(
            413, CAPTURE_LIMIT, "Capture Payload too large", f"at most {max_bytes} bytes", instance
        )
        too_large.headers["GS1-EPCIS-Capture-File-Size-Limit"] = str(max_bytes)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            return too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                return too_large
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            # Parsing and schema validation of a large document take a while: off the loop.
            doc = await run_in_threadpool(parse_document, raw)
        except EpcisValidationError as exc:
            log.warning("POST /capture rejected: %s", exc)
            if dead_letter is not None:
                try:
                    await run_in_threadpool(dead_letter, raw, f"{exc.reason_code}: {exc}")
                except RetriableError as dlq_exc:
                    # Nothing was kept: the sender must try again later.
                    response = _problem_response(
                        503, IMPLEMENTATION, "Temporarily unavailable", str(dlq_exc), instance
                    )
                    response.headers["Retry-After"] = "30"
                    return response
            issues = [{"pointer": i.path, "message": i.message} for i in exc.issues]
            return _problem_response(
                400, VALIDATION, "Invalid EPCIS document", str(exc), instance, errors=issues
            )
        count = len(document_events(doc)[0])
        if count > max_events:
            response = _problem_response(
                413,
                CAPTURE_LIMIT,
                "Capture Payload too large",
                f"{count} events; at most {max_events} per capture",
                instance,
            )
            response.headers["GS1-EPCIS-Capture-Limit"] = str(max_events)
            return response
        job = jobs.create(behaviour, count)
        background.add_task(
            run_capture_job, job, doc, sink, mapping, jobs, raw=raw, dead_letter=dead_letter
        )
        return JSONResponse(
            job.to_json(),
            status_code=202,
            # Mounted under a prefix (``lothub up`` serves /intake/<name>), links keep it.
            headers={"Location": f"{_root(request)}/capture/{job.capture_id}"},
        )

    @app.get("/capture")
    async def list_jobs(
        request: Request,
        per_page: int = Query(DEFAULT_PER_PAGE, alias="perPage", ge=1, le=max_jobs),
        next_page_token: str | None = Query(None, alias="nextPageToken"),
    ) -> JSONResponse:
        start = 1
        if next_page_token is not None:
            if not next_page_token.isdigit():
                detail = "nextPageToken is not one this server issued"
                return _problem_response(400, VALIDATION, "Invalid token", detail, request.url.path)
            start = int(next_page_token)
        page, following = jobs.page(start, per_page)
        response = JSONResponse(page)
        if following is not None:
            link = f"{_root(request)}/capture?perPage={per_page}&nextPageToken={following}"
            response.headers["Link"] = f'<{link}>; rel="next"'
        return response

    @app.get("/capture/{capture_id}")
    async def get_job(capture_id: str, request: Request) -> JSONResponse:
        job = jobs.get(capture_id)
        if job is None:
            detail = f"no capture job {capture_id!r} (jobs are kept in memory, the last {max_jobs})"
            return _problem_response(
                404, NO_SUCH_RESOURCE, "Resource not found", detail, request.url.path
            )
        return JSONResponse(job)

    return app
