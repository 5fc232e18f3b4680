"""The flow map: every Kafka topic, what it carries, who writes it, who reads it.

::

    connectors ──> lothub.raw.lot-events ──> streams.normalize ──> lothub.enterprise.lot-events
                         │ (bad bytes, unmapped codes)                     │
                         └──> lothub.raw.lot-events.dlq                    └──> streams.sink ──> store
                                                                               │ (undecodable)
                                                                               └──> lothub.enterprise.lot-events.dlq

Records a connector cannot map go to ``lothub.connectors.dlq``.

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

ALL_TOPICS: tuple[TopicSpec, ...] = (
    CONNECTOR_DLQ,
    RAW_LOT_EVENTS,
    ENTERPRISE_LOT_EVENTS,
    RAW_LOT_EVENTS_DLQ,
    ENTERPRISE_LOT_EVENTS_DLQ,
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

    def all(self) -> list[tuple[str, TopicSpec]]:
        """Every deployed topic with its spec."""
        return [(self.name(spec), spec) for spec in ALL_TOPICS]
