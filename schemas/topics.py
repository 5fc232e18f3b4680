"""The flow map: every Kafka topic, what it carries, who writes it, who reads it.

::

    connectors ──> lothub.raw.lot-events ──> streams.normalize ──> lothub.enterprise.lot-events
                         │ (bad bytes, unmapped codes)                     │
                         └──> lothub.raw.lot-events.dlq                    └──> streams.sink ──> store
                                                                               │ (undecodable)
                                                                               └──> lothub.enterprise.lot-events.dlq

Records a connector cannot map go to ``lothub.connectors.dlq``.

Integration-control integrity checks (:mod:`streams.integrity`)::

    streams.normalize ──> lothub.integrity.facts ──> streams.integrity ──> lothub.integrity.alerts
      (facts of each        (keyed by subject:          │ (state per subject in a           │
       enterprise event,     lot, batch, alias,         │  faust table, changelog           v
       and dead letters)     source)                    │  lothub.integrity.state)     streams.alert_sink ──> store
                                                        v
    streams.sink (same event id, other content) ─────────────────────────> lothub.integrity.alerts

Every topic, including the table's changelog, is created up front (``lothub.runtime.ensure_topics``):
the workers never declare topics.

A deployment may put every name under a prefix (``LOTHUB_TOPIC_PREFIX``) so several
hubs, or several tests, share one broker.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Header names on dead-letter records (values are UTF-8).
DLQ_REASON = "lothub-dlq-reason"
DLQ_REASON_CODE = "lothub-dlq-reason-code"
DLQ_SOURCE_TOPIC = "lothub-dlq-source-topic"
DLQ_SOURCE_PARTITION = "lothub-dlq-source-partition"
DLQ_SOURCE_OFFSET = "lothub-dlq-source-offset"


@dataclass(frozen=True, kw_only=True, slots=True)
class TopicSpec:
    """One topic of the flow map."""

    name: str
    schema: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    dead_letter: str | None
    partitions: int = 6
    doc: str = ""
    #: topic configuration at creation (e.g. compaction for a changelog)
    config: tuple[tuple[str, str], ...] = ()


RAW_LOT_EVENTS = TopicSpec(
    name="lothub.raw.lot-events",
    schema="any io.lothub.events.* event, in site codes (lots, statuses, units as the plant wrote them)",
    producers=("connectors.*",),
    consumers=("streams.normalize",),
    dead_letter="lothub.raw.lot-events.dlq",
    doc="Keyed by site lot code. Everything a plant system said, not yet normalized.",
)
ENTERPRISE_LOT_EVENTS = TopicSpec(
    name="lothub.enterprise.lot-events",
    schema="any io.lothub.events.* event, normalized (enterprise lot ids, statuses, Rec 20 units)",
    producers=("streams.normalize",),
    consumers=("streams.sink",),
    dead_letter="lothub.enterprise.lot-events.dlq",
    doc="Keyed by enterprise lot id, so one lot's events stay in order on one partition.",
)
RAW_LOT_EVENTS_DLQ = TopicSpec(
    name="lothub.raw.lot-events.dlq",
    schema="original bytes of the failed record; reason and source position in headers",
    producers=("streams.normalize",),
    consumers=("operators (lothub replay-dlq)",),
    dead_letter=None,
    partitions=1,
)
ENTERPRISE_LOT_EVENTS_DLQ = TopicSpec(
    name="lothub.enterprise.lot-events.dlq",
    schema="original bytes of the failed record; reason and source position in headers",
    producers=("streams.sink",),
    consumers=("operators",),
    dead_letter=None,
    partitions=1,
)

CONNECTOR_DLQ = TopicSpec(
    name="lothub.connectors.dlq",
    schema="the source record as read (JSON or the file's bytes); reason, connector, position in headers",
    producers=("connectors.*",),
    consumers=("operators",),
    dead_letter=None,
    partitions=1,
    doc="Records a connector could not map to a lot event.",
)

INTEGRITY_FACTS = TopicSpec(
    name="lothub.integrity.facts",
    schema="JSON list of integrity facts (streams.integrity.Fact) about one subject, in event read order",
    producers=("streams.normalize",),
    consumers=("streams.integrity",),
    dead_letter=None,
    doc="Keyed by subject (lot:<id>, batch:<site>:<id>, alias:<site>:<kind>:<alias>, "
    "source:<system>), so every fact about one subject meets its state on one partition.",
)
INTEGRITY_STATE = TopicSpec(
    name="lothub.integrity.state",
    schema="JSON: faust changelog of the integrity state per subject (facts, open alerts)",
    producers=("streams.integrity",),
    consumers=("streams.integrity (recovery after a restart or rebalance)",),
    dead_letter=None,
    partitions=INTEGRITY_FACTS.partitions,  # a changelog is co-partitioned with its source
    doc="Changelog of the integrity table; compacted, latest state per subject.",
    config=(("cleanup.policy", "compact"),),
)
INTEGRITY_ALERTS = TopicSpec(
    name="lothub.integrity.alerts",
    schema="io.lothub.events.IntegrityAlert",
    producers=("streams.integrity", "streams.normalize (dead letters)", "streams.sink (conflicts)"),
    consumers=("streams.alert_sink",),
    dead_letter=None,
    doc="Keyed by alert_id; the same id is re-published when an alert is withdrawn.",
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    CONNECTOR_DLQ,
    RAW_LOT_EVENTS,
    ENTERPRISE_LOT_EVENTS,
    RAW_LOT_EVENTS_DLQ,
    ENTERPRISE_LOT_EVENTS_DLQ,
    INTEGRITY_FACTS,
    INTEGRITY_STATE,
    INTEGRITY_ALERTS,
)


@dataclass(frozen=True, slots=True)
class Topics:
    """The concrete topic names of one deployment (the map's names under a prefix).

    Example::

        >>> Topics("t123.").raw
        't123.lothub.raw.lot-events'
    """

    prefix: str = ""

    def name(self, spec: TopicSpec) -> str:
        """The deployed name of ``spec``."""
        return f"{self.prefix}{spec.name}"

    @property
    def raw(self) -> str:
        """Raw lot events, from connectors."""
        return self.name(RAW_LOT_EVENTS)

    @property
    def raw_dlq(self) -> str:
        """Dead letters of the normalizer."""
        return self.name(RAW_LOT_EVENTS_DLQ)

    @property
    def connector_dlq(self) -> str:
        """Dead letters of the connectors (records they could not map)."""
        return self.name(CONNECTOR_DLQ)

    @property
    def enterprise(self) -> str:
        """Normalized enterprise lot events."""
        return self.name(ENTERPRISE_LOT_EVENTS)

    @property
    def enterprise_dlq(self) -> str:
        """Dead letters of the store sink."""
        return self.name(ENTERPRISE_LOT_EVENTS_DLQ)

    @property
    def integrity_facts(self) -> str:
        """Facts for the integrity checks, keyed by subject."""
        return self.name(INTEGRITY_FACTS)

    @property
    def integrity_state(self) -> str:
        """Changelog of the integrity checks' state table."""
        return self.name(INTEGRITY_STATE)

    @property
    def integrity_alerts(self) -> str:
        """Integrity alerts, keyed by alert id."""
        return self.name(INTEGRITY_ALERTS)

    def all(self) -> list[tuple[str, TopicSpec]]:
        """Every deployed topic with its spec."""
        return [(self.name(spec), spec) for spec in ALL_TOPICS]
