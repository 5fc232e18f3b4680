"""LIMS connectors: QC results and dispositions from CSV exports and from a JSON REST endpoint.

Both read the same logical fields, named as the LIMS names them (``fields`` maps
logical name -> CSV header or JSON key):

=================  ==============================================================
``sample_id``      sample identifier (required)
``lot``            the lot the sample was drawn from, site lot code (required)
``test``           test / analyte code (required)
``result``         result as reported (required)
``unit``           result unit (optional)
``spec_min``       lower specification limit (optional)
``spec_max``       upper specification limit (optional)
``passed``         pass/fail flag; values in ``pass_values`` mean pass (required)
``tested_at``      when the result was recorded, plant local or with offset (required)
``disposition``    lot disposition decided with this result, site status code (optional)
``approver``       who decided the disposition (optional)
``sampled_at``     when the sample was drawn (optional; enables QcSampleTaken events)
=================  ==============================================================

Each row gives a :class:`QcResultRecorded`; with ``sampled_at``, a
:class:`QcSampleTaken` (one per sample: every row of the sample yields the same
event, which the hub stores once); with a disposition, a :class:`LotStatusChanged`.
Results and dispositions are numbered densely in read order (``envelope.sequence``
1, 2, 3..., kept with the checkpoint); a sample event keeps number 0, "not
numbered", because every row of its sample must yield it byte for byte.

CSV files are read in name order, line by line; the position is ``(file, line)``,
so a file that grows is picked up where it was left. Encoding, delimiter, decimal
separator and date format are configurable. The REST source pages through
``GET <url>?updated_after=<ts>&after_id=<id>&limit=<n>`` with an
``(updated_at, id)`` cursor.

Example::

    mapping = LimsMapping(system_instance="lims-alp", site_code="ALP", site=alp,
                          fields={"lot": "Charge", "sample_id": "Probe"}, date_format="%d.%m.%Y %H:%M")
    source = LimsCsvSource(name="lims-alp", folder=Path("/exports/lims"), mapping=mapping)
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx

from connectors.base import Cursor, Source, SourceRecord
from schemas.errors import ConfigurationError, EventValidationError, SourceUnavailableError
from schemas.model import (
    Envelope,
    Location,
    LotEventBase,
    LotStatusChanged,
    QcResultRecorded,
    QcSampleTaken,
    SystemKind,
    stable_event_id,
)
from schemas.model import Source as EventSource
from schemas.sites import SiteConfig

REQUIRED_FIELDS = ("sample_id", "lot", "test", "result", "passed", "tested_at")
OPTIONAL_FIELDS = ("unit", "spec_min", "spec_max", "disposition", "approver", "sampled_at")


@dataclass(frozen=True, kw_only=True)
class LimsMapping:
    """How one LIMS names its fields and writes its values."""

    system_instance: str
    site_code: str
    site: SiteConfig
    fields: Mapping[str, str] = field(default_factory=dict)
    #: strptime format of plant-local times; "iso" accepts ISO-8601 with or without offset
    date_format: str = "iso"
    decimal_separator: str = "."
    pass_values: frozenset[str] = frozenset({"PASS", "P", "OK", "TRUE", "1", "YES", "Y"})
    location_id: str = "LAB"

    def key(self, logical: str) -> str:
        """The LIMS's name for a logical field."""
        return self.fields.get(logical, logical)


class LimsRowMapper:
    """Turns one LIMS row (a dict keyed by the LIMS's field names) into raw lot events."""

    def __init__(self, mapping: LimsMapping, numbers: Callable[[], int] | None = None) -> None:
        unknown = sorted(set(mapping.fields) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
        if unknown:
            raise EventValidationError(f"unknown LIMS field names {unknown}")
        self.mapping = mapping
        #: gives the next sequence number: the source's, restored with its checkpoint
        self._number = numbers or itertools.count(1).__next__
        self._keys = {f: mapping.key(f) for f in (*REQUIRED_FIELDS, *OPTIONAL_FIELDS)}
        # the same for every row: validated once
        self._source = EventSource(
            system_kind=SystemKind.LIMS,
            system_instance=mapping.system_instance,
            site=mapping.site_code,
        )
        self._lab = Location(location_id=f"{mapping.site_code}-{mapping.location_id}",
                             name=mapping.location_id, site=mapping.site_code)  # fmt: skip

    def _get(self, row: Mapping[str, Any], logical: str) -> str | None:
        value = row.get(self._keys[logical])
        if value is None:
            return None
        text = (value if type(value) is str else str(value)).strip()
        return text or None

    def _req(self, row: Mapping[str, Any], logical: str) -> str:
        value = self._get(row, logical)
        if value is None:
            raise EventValidationError(
                f"LIMS field {self.mapping.key(logical)!r} is missing or empty"
            )
        return value

    def _decimal(self, text: str | None, logical: str) -> Decimal | None:
        if text is None:
            return None
        try:
            return Decimal(text.replace(self.mapping.decimal_separator, "."))
        except InvalidOperation:
            if logical == "result":  # a text result ("negative", "<0.1") is still a result
                return None
            raise EventValidationError(
                f"LIMS field {self.mapping.key(logical)!r} is not a number: {text!r}"
            ) from None

    def _time(self, text: str, logical: str) -> datetime:
        try:
            if self.mapping.date_format == "iso":
                parsed = datetime.fromisoformat(text)
            else:
                parsed = datetime.strptime(text, self.mapping.date_format)
        except ValueError as exc:
            raise EventValidationError(
                f"LIMS field {self.mapping.key(logical)!r}: {text!r} does not match the date format "
                f"{self.mapping.date_format!r}"
            ) from exc
        return self.mapping.site.localize(parsed)

    def events(self, row: Mapping[str, Any]) -> list[LotEventBase]:
        """The events of one row; raises :class:`EventValidationError` naming the bad field."""
        m = self.mapping
        sample, lot, test = (
            self._req(row, "sample_id"),
            self._req(row, "lot"),
            self._req(row, "test"),
        )
        tested_at = self._time(self._req(row, "tested_at"), "tested_at")
        source = self._source

        def envelope(event_type: str, key: str, at: datetime, sequence: int) -> Envelope:
            return Envelope(
                event_id=stable_event_id(m.system_instance, event_type, key), event_type=event_type,
                source=source, occurred_at=at, recorded_at=at, sequence=sequence,
                correlation_id=sample,
            )  # fmt: skip

        result = self._req(row, "result")
        out: list[LotEventBase] = []
        sampled = self._get(row, "sampled_at")
        if sampled is not None:
            at = self._time(sampled, "sampled_at")
            out.append(QcSampleTaken(
                # sequence 0: every row of a sample must yield the very same event
                envelope=envelope("QcSampleTaken", sample, at, 0),
                sample_id=sample, lot=lot, location=self._lab,
            ))  # fmt: skip
        out.append(QcResultRecorded(
            envelope=envelope("QcResultRecorded", f"{sample}\x1f{test}", tested_at, self._number()),
            sample_id=sample, lot=lot, test_code=test, result=result,
            numeric_result=self._decimal(result, "result"), result_unit=self._get(row, "unit"),
            spec_min=self._decimal(self._get(row, "spec_min"), "spec_min"),
            spec_max=self._decimal(self._get(row, "spec_max"), "spec_max"),
            passed=self._req(row, "passed").upper() in m.pass_values,
        ))  # fmt: skip
        disposition = self._get(row, "disposition")
        if disposition is not None:
            out.append(LotStatusChanged(
                envelope=envelope(
                    "LotStatusChanged", f"{sample}\x1f{disposition}", tested_at, self._number()
                ),
                lot=lot, status=disposition, reason_code=f"LIMS:{sample}",
                actor=self._get(row, "approver") or m.system_instance,
            ))  # fmt: skip
        return out


@dataclass(frozen=True, order=True, slots=True)
class FilePosition:
    """A line of a file: files in name order, lines in file order (1 = header)."""

    file: str
    line: int

    def to_json(self) -> str:
        """``{"file": name, "line": n}``."""
        return json.dumps({"file": self.file, "line": self.line})

    @classmethod
    def from_json(cls, text: str) -> FilePosition:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        return cls(file=str(data["file"]), line=int(data["line"]))


class LimsCsvSource(Source[FilePosition]):
    """QC results from CSV exports dropped into a folder."""

    system_kind = SystemKind.LIMS
    numbers_densely = True

    def __init__(self, *, name: str, folder: Path, mapping: LimsMapping, pattern: str = "*.csv",
                 encoding: str = "utf-8", delimiter: str = ",") -> None:  # fmt: skip
        super().__init__(name=name, site=mapping.site_code)
        self.folder = folder
        self.pattern = pattern
        self.encoding = encoding
        self.delimiter = delimiter
        self.mapper = LimsRowMapper(mapping, self.take_sequence)
        self._split_file: tuple[bytes, list[bytes]] | None = None

    def read(self, after: FilePosition | None, limit: int) -> Sequence[SourceRecord[FilePosition]]:
        """Data lines after ``after``, across files in name order."""
        if not self.folder.is_dir():
            raise SourceUnavailableError(
                f"connector {self.name}: export folder {self.folder} is not there"
            )
        out: list[SourceRecord[FilePosition]] = []
        for path in sorted(self.folder.glob(self.pattern)):
            if after is not None and path.name < after.file:
                continue
            skip_to = after.line if after is not None and path.name == after.file else 1
            out.extend(self._lines(path, skip_to, limit - len(out)))
            if len(out) >= limit:
                break
        return out

    def _lines(self, path: Path, after_line: int, limit: int) -> list[SourceRecord[FilePosition]]:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SourceUnavailableError(
                f"connector {self.name}: cannot read {path}: {exc}"
            ) from exc
        if self._split_file is not None and self._split_file[0] == data:
            lines = self._split_file[1]  # the same content as the last batch: split once
        else:
            lines = data.splitlines()
            self._split_file = (data, lines)
        # A last line without its newline may still be being written: leave it for later.
        if lines and not data.endswith((b"\n", b"\r")):
            lines = lines[:-1]
        if not lines:
            return []
        header = self._split(lines[0].decode(self.encoding, errors="replace"))
        out = []
        for number in range(max(after_line + 1, 2), len(lines) + 1):
            raw = lines[number - 1]
            if not raw.strip():
                continue
            fields: dict[str, str] | None
            problem: str | None
            try:
                text = raw.decode(self.encoding)
            except UnicodeDecodeError as exc:
                text = raw.decode(self.encoding, errors="replace")
                fields, problem = None, f"not {self.encoding}: {exc}"
            else:
                values = self._split(text)
                fields = dict(zip(header, values, strict=False))
                problem = (
                    None
                    if len(values) == len(header)
                    else (f"{len(values)} values for {len(header)} columns")
                )
            payload = {"file": path.name, "line": number, "text": text, "fields": fields,
                       "problem": problem}  # fmt: skip
            out.append(SourceRecord(
                position=FilePosition(path.name, number), record_kind="csv-row",
                record_key=f"{path.name}:{number}", payload=payload,
            ))  # fmt: skip
            if len(out) >= limit:
                break
        return out

    def _split(self, line: str) -> list[str]:
        return next(csv.reader((line,), delimiter=self.delimiter), [])

    def to_events(self, record: SourceRecord[FilePosition]) -> list[LotEventBase]:
        """Map one CSV row."""
        payload = record.payload
        if payload["problem"]:
            raise EventValidationError(
                f"{payload['file']} line {payload['line']}: {payload['problem']}"
            )
        return self.mapper.events(payload["fields"])

    def position_from_json(self, text: str) -> FilePosition:
        """The checkpoint position."""
        return FilePosition.from_json(text)


class LimsRestSource(Source[Cursor]):
    """QC results from a LIMS JSON endpoint, paged with an ``(updated_at, id)`` cursor.

    The endpoint answers ``GET <url>?updated_after=&after_id=&limit=`` with a JSON
    list of result objects carrying ``updated_at`` and ``id`` (names configurable).
    """

    system_kind = SystemKind.LIMS
    numbers_densely = True

    def __init__(self, *, name: str, url: str, mapping: LimsMapping, token: str | None = None,
                 transport: httpx.BaseTransport | None = None, id_field: str = "id",
                 updated_field: str = "updated_at", timeout_s: float = 30.0) -> None:  # fmt: skip
        super().__init__(name=name, site=mapping.site_code)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(transport=transport, headers=headers, timeout=timeout_s)
        self.url = url
        self.id_field = id_field
        self.updated_field = updated_field
        self.mapper = LimsRowMapper(mapping, self.take_sequence)

    def read(self, after: Cursor | None, limit: int) -> Sequence[SourceRecord[Cursor]]:
        """The next page of results strictly after ``after``."""
        params: dict[str, str | int] = {"limit": limit}
        if after is not None:
            params.update(updated_after=after.updated_at.isoformat(), after_id=after.pk)
        try:
            response = self.client.get(self.url, params=params)
        except httpx.HTTPError as exc:
            raise SourceUnavailableError(
                f"connector {self.name}: LIMS at {self.url} unreachable: {exc}"
            ) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise SourceUnavailableError(
                f"connector {self.name}: LIMS answered {response.status_code}"
            )
        if response.status_code >= 400:
            raise ConfigurationError(
                f"connector {self.name}: LIMS answered {response.status_code} for {self.url}; "
                "check the url and token settings"
            )
        try:
            items = response.json()
        except ValueError as exc:
            raise SourceUnavailableError(
                f"connector {self.name}: LIMS answered no JSON: {exc}"
            ) from exc
        if not isinstance(items, list):
            raise SourceUnavailableError(f"connector {self.name}: LIMS did not answer a JSON list")
        out = []
        for item in items[:limit]:
            updated = str(item.get(self.updated_field, ""))
            try:
                at = datetime.fromisoformat(updated)
            except ValueError:
                at = (
                    after.updated_at if after else datetime.min
                )  # position only; to_events refuses it
            out.append(SourceRecord(
                position=Cursor(updated_at=at, pk=str(item.get(self.id_field, ""))),
                record_kind="lims-result", record_key=str(item.get(self.id_field, "")),
                payload=item,
            ))  # fmt: skip
        return out

    def to_events(self, record: SourceRecord[Cursor]) -> list[LotEventBase]:
        """Map one result object."""
        item = record.payload
        if not isinstance(item, dict):
            raise EventValidationError("LIMS result is not a JSON object")
        return self.mapper.events(item)

    def position_from_json(self, text: str) -> Cursor:
        """The checkpoint cursor."""
        return Cursor.from_json(text)

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()
