"""Integrity alerts: what the integration-control checks found, with its evidence.

An :class:`IntegrityAlert` travels on ``lothub.integrity.alerts`` as Avro
(``schemas/avro/io.lothub.events.IntegrityAlert.avsc``, single-object encoding: the
topic is the hub's own, so it never goes through a schema registry) and is stored
by ``alert_id``. The id is a UUIDv5 of the rule, the subject and the sorted
evidence event ids, so detecting the same thing again, after a restart or from
events delivered in another order, gives the same id and never a second alert.

``state`` is ``OPEN`` while the condition holds and ``WITHDRAWN`` once a later
fact made it false (the receipt of an "orphan" lot arrived late); the same id is
published again with the new state.

Example::

    >>> alert = IntegrityAlert.open_now(Finding(
    ...     rule=Rule.ORPHAN_LOT, subject="lot:ALP:ALP-20261102-001",
    ...     lots=["ALP:ALP-20261102-001"], sites=["ALP"], source_systems=["MES/mes-alp"],
    ...     evidence_event_ids=["e-1"], summary="...", details={}))
    >>> decode_alert(encode_alert(alert)) == alert
    True
"""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any

import fastavro
import fastavro.schema
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from schemas.errors import DecodeError, EventValidationError
from schemas.model import NAMESPACE
from schemas.serde import SINGLE_OBJECT_MAGIC, avro_dir

#: Namespace of alert ids (UUIDv5).
ALERT_ID_NAMESPACE = uuid.UUID("2b8f4f0e-6a43-5d0c-9c1e-6c6f74687562")
_HEADER_LEN = len(SINGLE_OBJECT_MAGIC) + 8


class Rule(StrEnum):
    """The integrity rules; each alert names the one that fired."""

    HOLD_VIOLATION = "hold-violation"
    ORPHAN_LOT = "orphan-lot"
    MASS_BALANCE = "mass-balance"
    NEGATIVE_ON_HAND = "negative-on-hand"
    DUPLICATE_CONFLICT = "duplicate-conflict"
    LATE_EVENT = "late-event"
    ALIAS_CONFLICT = "alias-conflict"
    UNMAPPED_VALUE = "unmapped-value"
    SOURCE_STALL = "source-stall"
    TRANSFER_OVERDUE = "transfer-overdue"
    SEQUENCE_GAP = "sequence-gap"
    # found by comparing two systems (reconciler/), not by the stream
    RECONCILE_ON_HAND = "reconcile-on-hand"
    RECONCILE_CONSUMPTION = "reconcile-consumption"
    RECONCILE_DISPOSITION = "reconcile-disposition"
    RECONCILE_TRANSFER = "reconcile-transfers"
    RECONCILE_CAPTURE = "reconcile-capture"


class Severity(StrEnum):
    """How urgently a person should look."""

    CRITICAL = "CRITICAL"  # product may have left against a hold: act now
    WARNING = "WARNING"  # the genealogy has a hole or a contradiction
    INFO = "INFO"  # delivery quality (late data), nothing wrong with the lots yet


class AlertState(StrEnum):
    """Whether the alert's condition holds on the facts known now."""

    OPEN = "OPEN"
    WITHDRAWN = "WITHDRAWN"


Text = Annotated[str, Field(min_length=1, max_length=4000)]
Id = Annotated[str, Field(min_length=1, max_length=500)]


def alert_id(rule: str, subject: str, evidence_event_ids: list[str]) -> str:
    """The deterministic id of an alert: same rule, subject and evidence, same id."""
    key = "\x1f".join([rule, subject, *sorted(set(evidence_event_ids))])
    return str(uuid.uuid5(ALERT_ID_NAMESPACE, key))


@dataclass(frozen=True, kw_only=True)
class Finding:
    """What a rule found, before it is stamped with a state and a detection time."""

    rule: Rule
    subject: str
    lots: list[str]
    sites: list[str]
    source_systems: list[str]
    evidence_event_ids: list[str]
    summary: str
    details: dict[str, str] = field(default_factory=dict)

    @property
    def severity(self) -> Severity:
        """Each rule has one severity."""
        return RULE_SEVERITY[self.rule]

    @property
    def alert_id(self) -> str:
        """See :func:`alert_id`."""
        return alert_id(self.rule.value, self.subject, self.evidence_event_ids)


RULE_SEVERITY: dict[Rule, Severity] = {
    Rule.HOLD_VIOLATION: Severity.CRITICAL,
    Rule.ORPHAN_LOT: Severity.WARNING,
    Rule.MASS_BALANCE: Severity.WARNING,
    Rule.NEGATIVE_ON_HAND: Severity.WARNING,
    Rule.DUPLICATE_CONFLICT: Severity.WARNING,
    Rule.LATE_EVENT: Severity.INFO,
    Rule.ALIAS_CONFLICT: Severity.WARNING,
    Rule.UNMAPPED_VALUE: Severity.WARNING,
    Rule.SOURCE_STALL: Severity.WARNING,
    Rule.TRANSFER_OVERDUE: Severity.WARNING,
    Rule.SEQUENCE_GAP: Severity.WARNING,
    Rule.RECONCILE_ON_HAND: Severity.WARNING,
    Rule.RECONCILE_CONSUMPTION: Severity.WARNING,
    Rule.RECONCILE_DISPOSITION: Severity.WARNING,
    Rule.RECONCILE_TRANSFER: Severity.WARNING,
    Rule.RECONCILE_CAPTURE: Severity.WARNING,
}


class IntegrityAlert(BaseModel):
    """One alert as published and stored (mirrors the Avro record ``IntegrityAlert``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_id: Id
    rule: Rule
    severity: Severity
    state: AlertState
    #: what the rule looked at: ``lot:<id>``, ``batch:<site>:<id>``, ``source:<system>``...
    subject: Id
    sites: list[Id]
    #: enterprise lot ids
    lots: list[Id]
    #: ``KIND/instance`` of the systems whose events are the evidence
    source_systems: list[Id]
    evidence_event_ids: list[Id]
    detected_at: AwareDatetime
    #: one paragraph a plant IT or quality person can act on
    summary: Text
    #: the figures behind the summary, as exact strings
    details: dict[str, str]

    @classmethod
    def from_finding(
        cls, finding: Finding, state: AlertState, detected_at: datetime
    ) -> IntegrityAlert:
        """Stamp a finding with its state and detection time."""
        return cls(
            alert_id=finding.alert_id,
            rule=finding.rule,
            severity=finding.severity,
            state=state,
            subject=finding.subject,
            sites=sorted(set(finding.sites)),
            lots=sorted(set(finding.lots)),
            source_systems=sorted(set(finding.source_systems)),
            evidence_event_ids=sorted(set(finding.evidence_event_ids)),
            detected_at=detected_at,
            summary=finding.summary,
            details=dict(sorted(finding.details.items())),
        )

    @classmethod
    def open_now(cls, finding: Finding) -> IntegrityAlert:
        """An open alert for ``finding``, detected now."""
        return cls.from_finding(finding, AlertState.OPEN, datetime.now(UTC))

    def withdrawn(self, at: datetime) -> IntegrityAlert:
        """The same alert, withdrawn: its condition no longer holds."""
        return self.model_copy(update={"state": AlertState.WITHDRAWN, "detected_at": at})

    def same_finding(self, other: IntegrityAlert) -> bool:
        """True if both say the same thing (ignoring when it was detected)."""
        skip = {"detected_at"}
        return self.model_dump(exclude=skip) == other.model_dump(exclude=skip)


@dataclass(frozen=True, slots=True)
class _AlertSchema:
    compiled: Any
    fingerprint: bytes


@lru_cache(maxsize=1)
def _schema() -> _AlertSchema:
    parsed = fastavro.schema.load_schema(
        str(avro_dir() / f"{NAMESPACE}.IntegrityAlert.avsc"), _write_hint=False
    )
    canonical = fastavro.schema.to_parsing_canonical_form(parsed)
    fp = int(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"), 16).to_bytes(8, "little")
    return _AlertSchema(fastavro.parse_schema(parsed), fp)


def encode_alert(alert: IntegrityAlert) -> bytes:
    """Avro single-object encoding of an alert (strict: a missing field is an error)."""
    schema = _schema()
    out = io.BytesIO()
    record = alert.model_dump(mode="python")
    record["detected_at"] = alert.detected_at.astimezone(UTC)
    try:
        fastavro.schemaless_writer(out, schema.compiled, record, strict=True)
    except (ValueError, TypeError) as exc:
        raise EventValidationError(
            f"alert {alert.alert_id} does not fit its Avro schema: {exc}"
        ) from exc
    return SINGLE_OBJECT_MAGIC + schema.fingerprint + out.getvalue()


def decode_alert(
    data: bytes, *, topic: str = "", partition: int = 0, offset: int = 0
) -> IntegrityAlert:
    """Decode an alert; raises :class:`DecodeError` naming the record if it is not one."""
    where: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset}
    schema = _schema()
    if not data.startswith(SINGLE_OBJECT_MAGIC) or data[2:_HEADER_LEN] != schema.fingerprint:
        raise DecodeError("not an IntegrityAlert in Avro single-object encoding", **where)
    try:
        record = fastavro.schemaless_reader(io.BytesIO(data[_HEADER_LEN:]), schema.compiled)
        return IntegrityAlert.model_validate(record)
    except PydanticValidationError as exc:
        raise DecodeError(f"IntegrityAlert is invalid: {exc}", **where) from exc
    except Exception as exc:  # fastavro raises bare EOFError, ValueError, IndexError...
        raise DecodeError(f"IntegrityAlert body is corrupt: {exc!r}", **where) from exc


def alert_json(alert: IntegrityAlert) -> str:
    """Compact JSON of an alert (for state kept between evaluations)."""
    return json.dumps(alert.model_dump(mode="json"), sort_keys=True)
