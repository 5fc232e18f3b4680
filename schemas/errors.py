"""Every error lothub raises, grouped by what the caller should do about it.

::

    LotHubError                      root: catch this to catch anything of ours
    ├── FatalError                   stop; a person must fix configuration or code
    │   └── ConfigurationError       settings or site configuration invalid
    ├── RetriableError               transient; back off and try the same thing again
    │   ├── BrokerUnavailableError   Kafka did not answer or did not acknowledge
    │   └── SourceUnavailableError   a plant system did not answer
    ├── SkippableError               nothing to do; move on (idempotent re-delivery)
    │   └── DuplicateEventError      the event_id was already stored with the same content
    └── DataError                    this record is bad; dead-letter it and carry on
        ├── DecodeError              bytes on a topic that cannot be decoded
        │   └── UnknownSchemaError   the writer schema is not one we know
        ├── EventValidationError     decoded, but breaks the enterprise lot model
        ├── UnmappedValueError       a site code (lot, status, unit) has no mapping
        └── InvalidDocumentError     a plant message breaks its standard's schema (B2MML, EPCIS)

Library errors are wrapped with ``raise ... from exc`` so the original cause stays
in the traceback while the message says what a plant IT person can do.
"""

from __future__ import annotations

from collections.abc import Sequence


class LotHubError(Exception):
    """Root of every lothub error."""


class FatalError(LotHubError):
    """The process cannot continue until a person fixes something."""


class ConfigurationError(FatalError):
    """Settings or the site configuration file are invalid; the message names the key."""


class RetriableError(LotHubError):
    """A transient fault: retry the same operation with back-off."""


class BrokerUnavailableError(RetriableError):
    """Kafka did not answer, or did not acknowledge delivery in time."""


class SourceUnavailableError(RetriableError):
    """A plant system (ERP, MES, LIMS, WMS) did not answer."""


class SkippableError(LotHubError):
    """Nothing is wrong and nothing is to be done; the caller moves on."""


class DuplicateEventError(SkippableError):
    """An event whose ``event_id`` is already stored with identical content."""


class DataError(LotHubError):
    """One record is bad. Dead-letter it with this message and process the next one."""

    #: short machine-readable reason, used as the dead-letter ``reason`` header
    reason_code = "invalid-data"


class InvalidDocumentError(DataError):
    """A plant message that breaks its standard's schema, with every error found.

    ``issues`` lists them all (anything with a readable ``str``: a line and path, a JSON
    pointer); the message quotes the first :attr:`max_quoted`, so a dead-letter reason
    stays readable however broken the message is.
    """

    reason_code = "invalid-document"
    max_quoted = 10

    def __init__(self, summary: str, issues: Sequence[object] = ()) -> None:
        self.issues = tuple(issues)
        quoted = "; ".join(str(i) for i in self.issues[: self.max_quoted])
        more = len(self.issues) - self.max_quoted
        if more > 0:
            quoted += f"; and {more} more"
        super().__init__(f"{summary}: {quoted}" if quoted else summary)


class DecodeError(DataError):
    """Bytes read from a topic that do not decode into a lot event.

    The message names topic, partition and offset so the record can be found with
    any Kafka tool.
    """

    reason_code = "undecodable"

    def __init__(self, reason: str, *, topic: str, partition: int, offset: int) -> None:
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        super().__init__(f"cannot decode record at {topic}[{partition}]@{offset}: {reason}")


class UnknownSchemaError(DecodeError):
    """The record names a writer schema (fingerprint or registry id) we do not hold."""

    reason_code = "unknown-schema"


class EventValidationError(DataError):
    """A decoded event that breaks the enterprise lot model (e.g. a naive timestamp)."""

    reason_code = "invalid-event"


class UnmappedValueError(DataError):
    """A site-specific code with no mapping in the site configuration.

    Never guessed: the event is parked on the dead-letter topic until the mapping is
    added to the site configuration and the dead letters are replayed.
    """

    reason_code = "unmapped-value"

    def __init__(self, *, site: str, kind: str, value: str, hint: str) -> None:
        self.site = site
        self.kind = kind
        self.value = value
        super().__init__(f"site {site}: {kind} {value!r} has no mapping; {hint}")
