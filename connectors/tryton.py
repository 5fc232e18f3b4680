"""ERP connector for Tryton: stock moves and quality inspections over Tryton's JSON-RPC.

Tryton (https://www.tryton.org) keeps a lot's whole life in ``stock.move`` records
(module ``stock_lot`` adds the lot): a receipt, a production input or output, a
shipment, a transfer and a return are each a *done* move between two locations,
and the location types say which is which. This module reads those moves, and
the results of ``quality.inspection`` records, incrementally over HTTP, and maps
them to raw lot events: the lot numbers, unit symbols and status words exactly as
Tryton has them (normalization happens later, in ``streams.normalize``).

Three parts:

:class:`TrytonClient`
    One long-lived ``httpx.Client``: logs in with ``common.db.login``, then calls
    ``model.<name>.<method>`` with the ``Session`` authorization header and the
    user's preferences as context. Tryton >= 8.0 serves JSON-RPC at ``/<db>/rpc/``,
    older series at ``/<db>/``: the first call finds out which. Tested against the
    7.0 and 8.0 LTS series and 8.2 (fields that differ between them are looked up
    with ``fields_get``, and a location's warehouse is computed from the tree).
    Transport errors, timeouts, HTTP 5xx/429 and transient server faults raise
    :class:`~schemas.errors.SourceUnavailableError` (retry later); a refused login, a
    missing database or missing read rights raise
    :class:`~schemas.errors.ConfigurationError` (a person must fix it). An expired
    session is renewed once, transparently.

:class:`TrytonSource` (``stock.move``) and :class:`TrytonInspectionSource` (``quality.inspection``)
    ``read(after, limit)`` returns the records strictly after a composite
    :class:`Cursor` ``(updated_at, pk)`` in ``(last modification, id)`` order, so
    rows sharing a timestamp (Tryton stamps every row of one transaction with the
    same time) are neither lost nor read twice; each record carries a
    self-contained, JSON-serializable ``raw`` dict (the move plus the shipment,
    party, order and production it belongs to), and ``to_events(raw, site)`` maps
    it without further I/O, so a dead-lettered record can be replayed as it is.

How a done move maps (location types ``from -> to``; "storage" includes a warehouse's
input and output zones; ``warehouse_sites`` says which hub site a warehouse is):

========================================  =========================================================
``supplier -> storage``                   :class:`LotReceived` (supplier, PO or receipt number)
``storage -> supplier``                   :class:`LotShipped` to the supplier (``SUPPLIER_RETURN``)
``storage -> production``                 :class:`MaterialConsumed` (batch = instance/MO number)
``production -> storage``                 :class:`MaterialProduced`
``storage -> customer``                   :class:`LotShipped` (customer, delivery address)
``customer -> storage``                   :class:`CustomerReturn`
``storage -> storage`` in one warehouse   :class:`LotMoved` (PUTAWAY out of the input zone, PICK
                                          into the output zone, MOVE otherwise)
``storage -> transit or other warehouse``  :class:`TransferShipped` when the warehouses are two hub
                                          sites, else :class:`LotMoved`
``transit or other warehouse -> storage``  :class:`TransferReceived` (same lot number, at the other
                                          site), else :class:`LotMoved`
``storage <-> lost_found``                :class:`InventoryAdjusted` (ADJUSTMENT, signed)
anything else (drop, rental, ...)         dead letter (:class:`~schemas.errors.EventValidationError`)
a done move later cancelled               :class:`EventCorrected` voiding what it gave when done
========================================  =========================================================

A ``passed``/``failed`` inspection of a shipment or production gives, for every lot
of that document, one :class:`QcResultRecorded` per control point and one
:class:`LotStatusChanged` whose status is the inspection state (``passed``,
``failed``: the site configuration maps them to enterprise statuses).

Identity and time. Event ids are ``stable_event_id(instance, f"{record_kind}:{event
type}", record_key)`` with ``record_key`` the Tryton id (plus the decision for
inspections), so re-reading a record gives the same ids; ``sequence`` is the record
id and every field comes from the record, so a re-read event is identical to the
first and the hub sees a duplicate, not a conflict. Tryton keeps dates in the
company's zone and timestamps as naive UTC. A move's ``occurred_at`` is its
effective date at ``day_time`` in the site's zone, and so is its ``recorded_at``
(Tryton has no fixed "done at" time); an inspection's result is at its
``processed_at``, its status change at its last write, both UTC made aware.

Example::

    client = TrytonClient("https://erp.example.com", "alpenwerk", "lothub", password=secret)
    source = TrytonSource(client, name="erp-alp", site_code="ALP",
                          warehouse_sites={"WH": "ALP", "DC": "ZRH"})
    for record in source.read(after=None, limit=500):
        events = source.to_events(record.raw, sites.sites["ALP"])
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, NamedTuple

import httpx

from connectors.base import Source, SourceRecord
from schemas.errors import ConfigurationError, EventValidationError, SourceUnavailableError
from schemas.model import (
    AdjustmentKind,
    CorrectionAction,
    CustomerReturn,
    DocumentRef,
    Envelope,
    EventCorrected,
    InventoryAdjusted,
    Item,
    Location,
    LotEventBase,
    LotMoved,
    LotReceived,
    LotShipped,
    LotStatusChanged,
    MaterialConsumed,
    MaterialProduced,
    MoveKind,
    Party,
    QcResultRecorded,
    Quantity,
    SystemKind,
    TransferReceived,
    TransferShipped,
    TransformationKind,
    stable_event_id,
)
from schemas.model import Source as EventSource
from schemas.sites import SiteConfig

log = logging.getLogger("lothub.connectors.tryton")

# --- JSON-RPC wire format --------------------------------------------------------------
# Tryton sends dates, times and decimals as {"__class__": ..., ...} objects and expects
# the same back (trytond/protocols/jsonrpc.py); datetimes are naive UTC.


def _to_wire(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is not None:  # Tryton compares naive UTC
            value = value.astimezone(UTC).replace(tzinfo=None)
        return {"__class__": "datetime", "year": value.year, "month": value.month,
                "day": value.day, "hour": value.hour, "minute": value.minute,
                "second": value.second, "microsecond": value.microsecond}  # fmt: skip
    if isinstance(value, date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    raise TypeError(f"cannot send {type(value).__name__} to Tryton")


def _from_wire(obj: dict[str, Any]) -> Any:
    kind = obj.get("__class__")
    if kind == "datetime":
        return datetime(obj["year"], obj["month"], obj["day"], obj["hour"], obj["minute"],
                        obj["second"], obj["microsecond"])  # fmt: skip
    if kind == "date":
        return date(obj["year"], obj["month"], obj["day"])
    if kind == "time":
        return time(obj["hour"], obj["minute"], obj["second"], obj["microsecond"])
    if kind == "timedelta":
        return timedelta(seconds=obj["seconds"])
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "bytes":
        return base64.decodebytes(obj["base64"].encode())
    return obj


#: A JSON-RPC error that is only a quoted name: trytond's KeyError for a model or field.
_UNKNOWN_NAME = re.compile(r"'[\w.]+'")
#: JSON-RPC error kinds (first element of ``error``) that mean "fix the configuration".
_REFUSALS = frozenset({"UserError", "UserWarning", "LoginException"})


class TrytonClient:
    """A logged-in JSON-RPC session with one Tryton database.

    Give a ``password`` (the client logs in, and again when the session expires) or
    an existing ``session`` ``(user_id, token)`` (e.g. from a secrets store; it cannot
    be renewed). ``transport`` replaces httpx's network transport (tests, proxies).
    """

    def __init__(
        self,
        base_url: str,
        database: str,
        user: str,
        password: str | None = None,
        *,
        session: tuple[int, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = 30.0,
        language: str = "en",
    ) -> None:
        if password is None and session is None:
            raise ConfigurationError(
                f"Tryton connector for {base_url} database {database!r}: "
                f"give a password or a session for user {user!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.database = database
        self.user = user
        self.language = language
        self.timeout_s = timeout_s
        self._password = password
        self._session = session
        self._http = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        # Tryton >= 8.0 answers at /<db>/rpc/, earlier series at /<db>/: the first call
        # finds out which (see _rpc)
        self._paths = [f"/{database}/rpc/", f"/{database}/"]
        self._context: dict[str, Any] | None = None
        self._fields: dict[str, set[str]] = {}
        self._request_id = 0

    # -- session ------------------------------------------------------------------------

    def login(self) -> None:
        """Open a session (with the password) and load the user's preferences as context."""
        if self._password is None:
            raise ConfigurationError(
                f"the Tryton session of user {self.user!r} on {self._where()} expired or was "
                "refused and no password is configured to open a new one"
            )
        params = [self.user, {"password": self._password}, self.language]
        response = self._rpc("common.db.login", params, auth=False)
        if response.status_code in (401, 403):
            raise ConfigurationError(
                f"Tryton refused the login of user {self.user!r} on {self._where()}: "
                "wrong user or password, or the user is inactive; fix the connector's "
                "credentials"
            )
        result = self._result(response, "common.db.login")
        if not (isinstance(result, list) and len(result) >= 2):
            raise SourceUnavailableError(
                f"Tryton at {self.base_url} answered the login with {result!r}; "
                "is base_url a Tryton server?"
            )
        self._session = (int(result[0]), str(result[1]))
        self._context = None
        self._context = self.call("model.res.user.get_preferences", True, {})

    @property
    def context(self) -> dict[str, Any]:
        """The user's preferences (company, language, ...), sent with every model call."""
        if self._context is None:
            if self._session is None:
                self.login()
            else:
                self._context = self.call("model.res.user.get_preferences", True, {})
        assert self._context is not None  # set by login or just above
        return dict(self._context)

    def close(self) -> None:
        """Close the HTTP connection pool (the Tryton session simply expires)."""
        self._http.close()

    # -- calls ------------------------------------------------------------------------

    def call(self, method: str, *params: Any) -> Any:
        """Call a JSON-RPC ``method``; logs in first, and once more if the session expired."""
        if self._session is None:
            self.login()
        for attempt in range(2):
            response = self._rpc(method, list(params), auth=True)
            if response.status_code == 401 and attempt == 0 and self._password is not None:
                log.info("Tryton session of %s expired; logging in again", self.user)
                self.login()
                continue
            if response.status_code == 401:
                raise ConfigurationError(
                    f"Tryton rejected the session of user {self.user!r} on {self._where()}; "
                    "configure a password so the connector can log in again"
                )
            if response.status_code == 403:
                raise ConfigurationError(
                    f"Tryton forbids {method} to user {self.user!r} on {self._where()}; "
                    "grant the user read access to that model"
                )
            return self._result(response, method)
        raise AssertionError("unreachable")  # pragma: no cover

    def model(
        self, model: str, method: str, *args: Any, context: Mapping[str, Any] | None = None
    ) -> Any:
        """``model.<model>.<method>(*args, context)`` with the user's context (plus ``context``)."""
        return self.call(f"model.{model}.{method}", *args, {**self.context, **(context or {})})

    def search_read(
        self,
        model: str,
        domain: Sequence[Any],
        fields: Sequence[str],
        *,
        offset: int = 0,
        limit: int | None = None,
        order: Sequence[tuple[str, str]] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Records of ``model`` matching ``domain``, with ``fields`` (``a.b`` reads through)."""
        rows = self.model(
            model, "search_read", list(domain), offset, limit,
            [list(o) for o in order] if order else None, list(fields), context=context,
        )  # fmt: skip
        return list(rows)

    def read(self, model: str, ids: Iterable[int], fields: Sequence[str]) -> list[dict[str, Any]]:
        """Records ``ids`` of ``model`` (missing ids are left out, as Tryton does)."""
        wanted = sorted(set(ids))
        if not wanted:
            return []
        return list(self.model(model, "read", wanted, list(fields)))

    def fields(self, model: str) -> set[str]:
        """The field names of ``model``; ConfigurationError if the model does not exist."""
        if model not in self._fields:
            try:
                described = self.model(model, "fields_get", [])
            except ConfigurationError as exc:
                if f"'{model}'" not in str(exc):  # trytond's KeyError for an unknown model
                    raise
                raise ConfigurationError(
                    f"Tryton database {self.database!r} has no model {model!r}; activate the "
                    "module that provides it (stock_lot, production, quality) or do not "
                    "configure this stream"
                ) from exc
            self._fields[model] = set(described)
        return self._fields[model]

    # -- HTTP -------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.base_url} database {self.database!r}"

    def _rpc(self, method: str, params: list[Any], *, auth: bool) -> httpx.Response:
        """POST to the RPC path; until one answered, try the next on 404/405.

        405 means "not the RPC path of this series"; 404 means "no such database" (or,
        on an older series, no such path). The first path that answers otherwise is kept.
        """
        refused: list[int] = []
        while True:
            response = self._post(self._paths[0], method, params, auth=auth)
            if response.status_code not in (404, 405):
                self._paths = self._paths[:1]  # found: the only path from now on
                return response
            refused.append(response.status_code)
            if len(self._paths) == 1:
                break
            self._paths = self._paths[1:]
        self._paths = [f"/{self.database}/rpc/", f"/{self.database}/"]  # try both next time
        if 404 in refused:
            raise ConfigurationError(
                f"Tryton at {self.base_url} has no database {self.database!r}; "
                "check the database name in the connector settings"
            )
        raise ConfigurationError(
            f"{self.base_url} does not answer Tryton JSON-RPC at /{self.database}/rpc/ or "
            f"/{self.database}/; check that base_url points at trytond"
        )

    def _post(self, path: str, method: str, params: list[Any], *, auth: bool) -> httpx.Response:
        self._request_id += 1
        body = json.dumps(
            {"id": self._request_id, "method": method, "params": params}, default=_to_wire
        )
        headers: dict[str, str] = {}
        if auth and self._session is not None:
            user_id, token = self._session
            token_b64 = base64.b64encode(f"{self.user}:{user_id}:{token}".encode()).decode()
            headers["Authorization"] = f"Session {token_b64}"
        try:
            response = self._http.post(path, content=body.encode(), headers=headers)
        except httpx.TimeoutException as exc:
            raise SourceUnavailableError(
                f"Tryton at {self.base_url} did not answer {method} within {self.timeout_s:.0f}s "
                f"({type(exc).__name__}); the server may be overloaded or a firewall drops "
                "the connection; retrying"
            ) from exc
        except httpx.TransportError as exc:
            raise SourceUnavailableError(
                f"cannot reach Tryton at {self.base_url} ({type(exc).__name__}: {exc}); check "
                "that trytond is running and that this host can reach it (address, port, "
                "firewall, proxy); retrying"
            ) from exc
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise SourceUnavailableError(
                f"Tryton at {self.base_url} answered HTTP {response.status_code} to {method} "
                f"({_excerpt(response)}); the server or its database is failing, overloaded "
                "or rate-limiting this host; retrying"
            )
        return response

    def _result(self, response: httpx.Response, method: str) -> Any:
        if response.status_code != 200:
            raise SourceUnavailableError(
                f"Tryton at {self.base_url} answered HTTP {response.status_code} to {method} "
                f"({_excerpt(response)}); retrying"
            )
        try:
            payload = json.loads(response.content, object_hook=_from_wire)
        except ValueError as exc:
            raise SourceUnavailableError(
                f"{self.base_url} answered {method} with something that is not JSON-RPC "
                f"({_excerpt(response)}); check that base_url points at trytond"
            ) from exc
        if not isinstance(payload, dict):
            raise SourceUnavailableError(f"Tryton answered {method} with {payload!r}")
        if payload.get("error"):
            raise _fault(payload["error"], method, self)
        return payload.get("result")


def _excerpt(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:160] or "empty body"


def _fault(error: Any, method: str, client: TrytonClient) -> Exception:
    """The lothub error for a JSON-RPC ``error`` member."""
    kind = error[0] if isinstance(error, list | tuple) and error else str(error)
    detail = error[1] if isinstance(error, list | tuple) and len(error) > 1 else ""
    if kind in _REFUSALS:
        message = " - ".join(str(x) for x in detail[:2] if x) if isinstance(detail, list) else ""
        return ConfigurationError(
            f"Tryton refused {method} for user {client.user!r} on {client._where()}: "
            f"{message or kind}; give the user the access rights it needs"
        )
    if kind == "ConcurrencyException":
        return SourceUnavailableError(f"Tryton reported a concurrent change during {method}")
    if isinstance(kind, str) and _UNKNOWN_NAME.fullmatch(kind):
        # trytond answers a KeyError (unknown model or field) with just the quoted name
        return ConfigurationError(
            f"Tryton on {client._where()} does not know {kind} (asked by {method}); a module "
            "is not activated or the Tryton series is not one this connector reads"
        )
    # Anything else is an exception raised inside trytond (a database error, a bug). Most
    # are transient; the message is kept for the connector's status.
    return SourceUnavailableError(
        f"Tryton failed on {method}: {kind}; see the trytond log on {client.base_url}"
    )


# --- incremental reading ---------------------------------------------------------------


@dataclass(frozen=True, order=True, slots=True)
class Cursor:
    """Composite ``(updated_at, pk)`` position: records strictly after it are new.

    ``updated_at`` is the record's last modification in UTC (aware); ``pk`` its id.
    Ordered like the records, so ``max()`` of cursors is the latest one.
    """

    updated_at: datetime
    pk: int

    def __post_init__(self) -> None:
        if self.updated_at.tzinfo is None:
            raise ValueError("Cursor.updated_at must be timezone-aware (UTC)")

    def to_json(self) -> str:
        """``{"updated_at": ISO-8601 UTC, "pk": id}`` for the checkpoint table."""
        return json.dumps({"updated_at": self.updated_at.isoformat(), "pk": self.pk})

    @classmethod
    def from_json(cls, text: str) -> Cursor:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        return cls(updated_at=datetime.fromisoformat(data["updated_at"]), pk=int(data["pk"]))


class TrytonRecord(NamedTuple):
    """One record read from Tryton: position, identity and the self-contained raw dict."""

    cursor: Cursor
    record_kind: str
    record_key: str
    raw: dict[str, Any]


def _utc(naive: datetime) -> datetime:
    """Tryton's naive timestamps are UTC (trytond forces TZ=UTC in its process)."""
    return naive.replace(tzinfo=UTC) if naive.tzinfo is None else naive.astimezone(UTC)


class _TrytonStream:
    """Reads one Tryton model incrementally by ``(last modification, id)``.

    ``settle_s`` leaves out records modified in the last seconds: Tryton stamps a row
    with its transaction's *start* time on PostgreSQL, so a long transaction can commit
    rows older than ones already read; waiting a little longer than the longest
    transaction means none is skipped. It is measured on this host's clock, so keep
    both clocks synchronised (NTP). Tests that read right after writing use 0.

    ``warehouse_sites`` maps Tryton warehouse codes to hub site codes; a warehouse not
    listed (or without a code, then called ``WH<id>``) belongs to ``site_code``.
    """

    system_kind: ClassVar[SystemKind] = SystemKind.ERP
    model: ClassVar[str]
    #: the record kind in :class:`TrytonRecord` and in event ids
    record_kind: ClassVar[str]
    #: fields of ``model`` every record needs; missing ones mean a module is not active
    required_fields: ClassVar[tuple[str, ...]]

    def __init__(
        self,
        client: TrytonClient,
        *,
        name: str,
        site_code: str,
        warehouse_sites: Mapping[str, str] | None = None,
        settle_s: float = 60.0,
    ) -> None:
        self.client = client
        self.name = name
        self.site = site_code
        self.warehouse_sites = dict(warehouse_sites or {})
        self.settle_s = settle_s
        self._stamp: str | None = None  # the field the cursor's time comes from
        self._locations: dict[int, dict[str, Any]] = {}

    def _stamp_field(self) -> str:
        """``last_modified_at`` (write date, else create date) where the series has it, else
        ``write_date`` (every done move and decided inspection has been written)."""
        if self._stamp is None:
            fields = self.client.fields(self.model)
            missing = [f for f in self.required_fields if f not in fields]
            if missing:
                raise ConfigurationError(
                    f"Tryton model {self.model} lacks fields {missing} on {self.client._where()}; "
                    "activate the modules stock_lot (lots), production and quality"
                )
            self._stamp = "last_modified_at" if "last_modified_at" in fields else "write_date"
        return self._stamp

    def _page(
        self, domain: list[Any], fields: Sequence[str], after: Cursor | None, limit: int
    ) -> list[dict[str, Any]]:
        stamp = self._stamp_field()
        domain = [*domain, [stamp, "!=", None]]
        if after is not None:
            at = after.updated_at.astimezone(UTC).replace(tzinfo=None)
            domain.append(["OR", [stamp, ">", at], [[stamp, "=", at], ["id", ">", after.pk]]])
        if self.settle_s > 0:
            settled = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=self.settle_s)
            domain.append([stamp, "<=", settled])
        return self.client.search_read(
            self.model, domain, [stamp, *fields], limit=limit,
            order=[(stamp, "ASC"), ("id", "ASC")],
        )  # fmt: skip

    def site_of(self, warehouse: Mapping[str, Any] | None) -> str:
        """The hub site of a Tryton warehouse (the connector's site if not mapped)."""
        if warehouse is None:
            return self.site
        return self.warehouse_sites.get(str(warehouse["code"]), self.site)

    def _cursor(self, row: Mapping[str, Any]) -> Cursor:
        return Cursor(updated_at=_utc(row[self._stamp_field()]), pk=int(row["id"]))

    # -- locations and warehouses (few, read once, re-read when an unknown one shows up)

    def _location(self, location_id: int | None) -> dict[str, Any] | None:
        if location_id is None:
            return None
        if location_id not in self._locations:
            self._load_locations()
        return self._locations.get(location_id)

    def _load_locations(self) -> None:
        wanted = ("name", "code", "type", "parent", "input_location", "output_location",
                  "storage_location")  # fmt: skip
        available = self.client.fields("stock.location")
        fields = [f for f in wanted if f in available]
        if "address" in available:
            fields.append("address.full_address")
        rows = self.client.search_read(
            "stock.location", [], fields,
            context={"active_test": False},  # moves may name locations since deactivated
        )  # fmt: skip
        by_id = {int(r["id"]): r for r in rows}
        zones: dict[int, str] = {}
        for r in by_id.values():
            if r["type"] == "warehouse":
                for zone in ("input", "output", "storage"):
                    if r.get(f"{zone}_location"):
                        zones[int(r[f"{zone}_location"])] = zone

        def warehouse_of(row: Mapping[str, Any]) -> Mapping[str, Any] | None:
            # the nearest warehouse up the tree, as Tryton's own Location.warehouse (a field
            # up to 8.0, a property since: computed here so every series reads the same)
            seen: set[int] = set()
            node: Mapping[str, Any] | None = row
            while node is not None and int(node["id"]) not in seen:
                if node["type"] == "warehouse":
                    return node
                seen.add(int(node["id"]))
                node = by_id.get(int(node["parent"])) if node.get("parent") else None
            return None

        self._locations = {}
        for lid, r in by_id.items():
            wh = warehouse_of(r)
            self._locations[lid] = {
                "id": lid, "name": r["name"], "code": r.get("code"), "type": r["type"],
                "zone": zones.get(lid),
                "warehouse": None if wh is None else {
                    "id": int(wh["id"]), "code": wh.get("code") or f"WH{wh['id']}",
                    "name": wh["name"],
                    "address": (wh.get("address.") or {}).get("full_address") or None,
                },
            }  # fmt: skip


def _text(value: Any) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value).strip()


def _ref(value: Any) -> tuple[str, int] | None:
    """``"stock.shipment.in,12"`` -> ``("stock.shipment.in", 12)``."""
    if not isinstance(value, str) or "," not in value:
        return None
    model, _, rid = value.partition(",")
    try:
        number = int(rid)
    except ValueError:
        return None
    return (model, number) if number >= 0 else None


def _party(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not row:
        return None
    return {"id": int(row["id"]), "code": row.get("code"), "name": row.get("name")}


#: What an inspection record keeps of each control point.
_POINT_FIELDS = ("name", "string", "type_", "tolerance_lower", "tolerance_upper")
#: What to read of each shipment model: (party field, address field).
_SHIPMENTS: dict[str, tuple[str | None, str | None]] = {
    "stock.shipment.in": ("supplier", "contact_address"),
    "stock.shipment.in.return": ("supplier", "delivery_address"),
    "stock.shipment.out": ("customer", "delivery_address"),
    "stock.shipment.out.return": ("customer", "contact_address"),
    "stock.shipment.internal": (None, None),
}
#: The hub document type of each Tryton shipment model.
_SHIPMENT_DOC_TYPES = {
    "stock.shipment.in": "SUPPLIER_SHIPMENT",
    "stock.shipment.in.return": "SUPPLIER_RETURN",
    "stock.shipment.out": "CUSTOMER_SHIPMENT",
    "stock.shipment.out.return": "CUSTOMER_RETURN",
    "stock.shipment.internal": "INTERNAL_SHIPMENT",
}
#: Order documents behind a move's origin: origin model -> (field, order model, doc type).
_ORDERS: dict[str, tuple[str, str, str]] = {
    "purchase.line": ("purchase", "purchase.purchase", "PO"),
    "sale.line": ("sale", "sale.sale", "SO"),
    "stock.inventory.line": ("inventory", "stock.inventory", "INVENTORY"),
}


class TrytonSource(_TrytonStream):
    """Done ``stock.move`` records that carry a lot, read incrementally.

    ``warehouse_sites`` maps Tryton warehouse codes to hub site codes; a warehouse not
    listed belongs to ``site_code``. Moves between warehouses of different sites are
    transfers; within one site they are moves. ``day_time`` is the plant-local time
    given to a move's effective date (Tryton keeps only the date).

    ``supplier_lot`` says where a receipt's supplier lot number is: ``"lot"`` (the
    default: the plant enters the supplier's lot number as the Tryton lot number) or
    ``"shipment-reference"`` (the plant numbers lots itself and writes the supplier's lot
    in the supplier shipment's reference, one lot per receipt; an empty reference falls
    back to the lot number).
    """

    #: the places a receipt's supplier lot number can be read from
    SUPPLIER_LOT_FROM: ClassVar[tuple[str, ...]] = ("lot", "shipment-reference")

    model = "stock.move"
    record_kind = "stock.move"
    required_fields = ("state", "lot", "product", "quantity", "unit", "from_location",
                       "to_location", "effective_date", "shipment", "origin", "write_date")  # fmt: skip

    def __init__(
        self,
        client: TrytonClient,
        *,
        name: str,
        site_code: str,
        warehouse_sites: Mapping[str, str] | None = None,
        settle_s: float = 60.0,
        day_time: time = time(0, 0),
        supplier_lot: str = "lot",
    ) -> None:
        super().__init__(
            client, name=name, site_code=site_code, warehouse_sites=warehouse_sites,
            settle_s=settle_s,
        )  # fmt: skip
        if supplier_lot not in self.SUPPLIER_LOT_FROM:
            raise ConfigurationError(
                f"Tryton connector {name}: supplier_lot must be one of "
                f"{', '.join(self.SUPPLIER_LOT_FROM)}, not {supplier_lot!r}"
            )
        self.day_time = day_time
        self.supplier_lot = supplier_lot
        self._source_by_site: dict[str, EventSource] = {}

    # -- reading ----------------------------------------------------------------------

    def read(self, after: Cursor | None, limit: int) -> list[TrytonRecord]:
        """Up to ``limit`` lot moves strictly after ``after``, oldest first.

        Done moves, and cancelled moves that have an effective date: Tryton lets the
        stock-cancellation group cancel a *done* move (a receipt entered by mistake),
        and the hub must then void what it was told. A move cancelled before it was
        done has no effective date (``Move.do`` sets it) and is left out.
        """
        fields = ["effective_date", "quantity", "unit.symbol", "product.code", "product.name",
                  "lot.number", "from_location", "to_location", "shipment", "origin"]  # fmt: skip
        has_production = "production_input" in self.client.fields(self.model)
        if has_production:
            fields += ["production_input", "production_output"]
        states = ["OR", ["state", "=", "done"],
                  [["state", "=", "cancelled"], ["effective_date", "!=", None]]]  # fmt: skip
        rows = self._page([["lot", "!=", None], states], [*fields, "state"], after, limit)
        shipments = self._shipments(r.get("shipment") for r in rows)
        orders = self._orders(r.get("origin") for r in rows)
        productions = self._productions(
            [int(r[f]) for r in rows for f in ("production_input", "production_output")
             if r.get(f)]
        )  # fmt: skip
        out = []
        for row in rows:
            cursor = self._cursor(row)
            production = None
            for role in ("input", "output"):
                pid = row.get(f"production_{role}")
                if pid:
                    production = {**productions.get(int(pid), {"id": int(pid)}), "role": role}
            shipment_ref = _ref(row.get("shipment"))
            origin_ref = _ref(row.get("origin"))
            raw = {
                "model": self.model,
                "id": int(row["id"]),
                "state": row["state"],
                "updated_at": cursor.updated_at.replace(tzinfo=None).isoformat(),
                "effective_date": row["effective_date"].isoformat(),
                "quantity": repr(float(row["quantity"])),
                "unit": (row.get("unit.") or {}).get("symbol"),
                "product": {
                    "id": int(row["product."]["id"]),
                    "code": row["product."].get("code"),
                    "name": row["product."].get("name"),
                },
                "lot": {"id": int(row["lot."]["id"]), "number": row["lot."]["number"]},
                "from_location": self._location(row.get("from_location")),
                "to_location": self._location(row.get("to_location")),
                "shipment": shipments.get(shipment_ref) if shipment_ref else None,
                "origin": orders.get(origin_ref) if origin_ref else None,
                "production": production,
            }
            out.append(TrytonRecord(cursor, self.record_kind, str(row["id"]), raw))
        return out

    def _shipments(self, refs: Iterable[Any]) -> dict[tuple[str, int], dict[str, Any]]:
        by_model: dict[str, set[int]] = {}
        for value in refs:
            ref = _ref(value)
            if ref is not None and ref[0] in _SHIPMENTS:
                by_model.setdefault(ref[0], set()).add(ref[1])
        out: dict[tuple[str, int], dict[str, Any]] = {}
        for model, ids in by_model.items():
            party_field, address_field = _SHIPMENTS[model]
            available = self.client.fields(model)
            wanted = ("number", "reference", "from_location", "to_location", "warehouse")
            fields: list[str] = [f for f in wanted if f in available]
            if party_field and party_field in available:
                fields += [f"{party_field}.code", f"{party_field}.name"]
            if address_field and address_field in available:
                fields.append(f"{address_field}.full_address")
            for r in self.client.read(model, ids, fields):
                address = (r.get(f"{address_field}.") or {}) if address_field else {}
                from_loc = self._location(r.get("from_location"))
                to_loc = self._location(r.get("to_location"))
                out[(model, int(r["id"]))] = {
                    "model": model,
                    "id": int(r["id"]),
                    "number": r.get("number") or f"{model},{r['id']}",
                    "reference": _text(r.get("reference")),
                    "party": _party(r.get(f"{party_field}.")) if party_field else None,
                    "address": _text(address.get("full_address")),
                    "from_warehouse": (from_loc or {}).get("warehouse"),
                    "to_warehouse": (to_loc or {}).get("warehouse"),
                }
        return out

    def _orders(self, refs: Iterable[Any]) -> dict[tuple[str, int], dict[str, Any]]:
        by_model: dict[str, set[int]] = {}
        for value in refs:
            ref = _ref(value)
            if ref is not None and ref[0] in _ORDERS:
                by_model.setdefault(ref[0], set()).add(ref[1])
        out: dict[tuple[str, int], dict[str, Any]] = {}
        for model, ids in by_model.items():
            field, order_model, doc_type = _ORDERS[model]
            wanted = [f"{field}.{f}" for f in ("number", "reference")
                      if f in self.client.fields(order_model)]  # fmt: skip
            for r in self.client.read(model, ids, wanted):
                order = r.get(f"{field}.") or {}
                out[(model, int(r["id"]))] = {
                    "model": model,
                    "id": int(r["id"]),
                    "doc_type": doc_type,
                    "number": _text(order.get("number")),
                    "reference": _text(order.get("reference")),
                }
        return out

    def _productions(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        rows = self.client.read("production", ids, ["number", "reference"])
        return {
            int(r["id"]): {
                "id": int(r["id"]),
                "number": _text(r.get("number")) or f"production-{r['id']}",
                "reference": _text(r.get("reference")),
            }
            for r in rows
        }

    # -- mapping ----------------------------------------------------------------------

    def to_events(self, raw: Mapping[str, Any], site: SiteConfig) -> list[LotEventBase]:
        """The raw lot events of one move; an unmappable move raises a DataError.

        A cancelled move gives one :class:`EventCorrected` voiding the events the move
        gave while it was done (same ids: they are computed from the same record).
        """
        try:
            if raw.get("state", "done") == "cancelled":
                return self._voided(raw, site)
            return _MoveMapper(self, raw, site).events()
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            # a raw record from elsewhere (an old dead letter), or a value the model refuses
            raise EventValidationError(
                f"Tryton stock.move {raw.get('id')!r} cannot be mapped: {type(exc).__name__} {exc}"
            ) from exc

    def _voided(self, raw: Mapping[str, Any], site: SiteConfig) -> list[LotEventBase]:
        try:
            done = _MoveMapper(self, {**raw, "state": "done"}, site).events()
        except EventValidationError:
            return []  # it never mapped, so nothing reached the hub: nothing to void
        cancelled_at = _utc(datetime.fromisoformat(raw["updated_at"]))
        envelope = Envelope(
            event_id=stable_event_id(self.name, f"{self.record_kind}:EventCorrected",
                                     str(raw["id"])),
            event_type="EventCorrected", source=done[0].envelope.source,
            occurred_at=cancelled_at.astimezone(site.zone), recorded_at=cancelled_at,
            sequence=int(raw["id"]), correlation_id=done[0].envelope.correlation_id,
        )  # fmt: skip
        return [EventCorrected(
            envelope=envelope, action=CorrectionAction.VOID,
            corrected_event_ids=[e.envelope.event_id for e in done],
            reason=f"stock move {raw['id']} ({raw['lot']['number']}) cancelled in Tryton",
            actor=self.name,
        )]  # fmt: skip

    def event_source(self, site_code: str) -> EventSource:
        """The envelope source for events of ``site_code`` (built once per site)."""
        source = self._source_by_site.get(site_code)
        if source is None:
            source = EventSource(system_kind=self.system_kind, system_instance=self.name,
                                 site=site_code)  # fmt: skip
            self._source_by_site[site_code] = source
        return source


class _MoveMapper:
    """Maps one raw move; one instance per record keeps the shared pieces at hand."""

    def __init__(self, source: TrytonSource, raw: Mapping[str, Any], site: SiteConfig) -> None:
        self.source = source
        self.raw = raw
        self.key = str(raw["id"])
        self.frm: dict[str, Any] = raw["from_location"] or {}
        self.to: dict[str, Any] = raw["to_location"] or {}
        day = date.fromisoformat(raw["effective_date"])
        self.occurred = site.localize(datetime.combine(day, source.day_time))
        # Tryton keeps no fixed "done at" time (write_date moves with every later write,
        # e.g. a cost-price recomputation), so a re-read stays identical only if the
        # record time is the event time, as for the WMS connector
        self.recorded = self.occurred
        product = raw["product"]
        self.item = Item(
            item_code=_text(product.get("code")) or f"tryton-product-{product['id']}",
            description=_text(product.get("name")) or _text(product.get("code")) or "unnamed",
        )
        unit = _text(raw.get("unit"))
        if unit is None:
            raise EventValidationError(f"Tryton stock.move {self.key} has no unit")
        self.quantity = Quantity(value=Decimal(str(raw["quantity"])), unit=unit)
        self.lot = str(raw["lot"]["number"])
        self.shipment: dict[str, Any] | None = raw.get("shipment")
        self.origin: dict[str, Any] | None = raw.get("origin")
        self.correlation = (self.origin or {}).get("number") or (self.shipment or {}).get("number")

    # -- building blocks

    def envelope(self, event_type: str, site_code: str) -> Envelope:
        return Envelope(
            event_id=stable_event_id(
                self.source.name, f"{self.source.record_kind}:{event_type}", self.key
            ),
            event_type=event_type,
            source=self.source.event_source(site_code),
            occurred_at=self.occurred,
            recorded_at=self.recorded,
            sequence=int(self.raw["id"]),
            correlation_id=self.correlation,
        )

    def place(self, loc: Mapping[str, Any]) -> Location:
        """A Tryton location as a hub location (warehouse code / location code)."""
        wh = loc.get("warehouse")
        code = _text(loc.get("code")) or f"loc{loc['id']}"
        if wh is None:
            return Location(location_id=code, name=str(loc["name"]), site=self.source.site)
        return Location(
            location_id=f"{wh['code']}/{code}", name=f"{wh['name']} - {loc['name']}",
            site=self.source.site_of(wh), address=wh.get("address"),
        )  # fmt: skip

    def warehouse_place(self, wh: Mapping[str, Any]) -> Location:
        return Location(location_id=str(wh["code"]), name=str(wh["name"]),
                        site=self.source.site_of(wh), address=wh.get("address"))  # fmt: skip

    def partner(self, role: str) -> tuple[Party, Location]:
        """The shipment's supplier or customer, and where it ships from / to."""
        party = (self.shipment or {}).get("party")
        if not party:
            raise EventValidationError(
                f"Tryton stock.move {self.key} ({self.frm.get('type')} -> {self.to.get('type')}) "
                f"belongs to no shipment naming the {role}; it cannot be traced to a partner"
            )
        party_id = _text(party.get("code")) or f"tryton-party-{party['id']}"
        name = _text(party.get("name")) or party_id
        place = Location(location_id=f"party:{party_id}", name=name,
                         address=(self.shipment or {}).get("address"))  # fmt: skip
        return Party(party_id=party_id, name=name), place

    def document(self) -> DocumentRef:
        """The shipment the move belongs to, typed by its model; else the move itself."""
        if self.shipment is not None:
            doc_type = _SHIPMENT_DOC_TYPES.get(self.shipment["model"], "SHIPMENT")
            return DocumentRef(doc_type=doc_type, number=str(self.shipment["number"]))
        return DocumentRef(doc_type="STOCK_MOVE", number=self.key)

    def site_here(self, *locs: Mapping[str, Any]) -> str:
        """The site of the first location that belongs to a warehouse."""
        for loc in locs:
            if loc.get("warehouse") is not None:
                return self.source.site_of(loc["warehouse"])
        return self.source.site

    # -- the mapping table

    def events(self) -> list[LotEventBase]:
        kinds = (self.frm.get("type"), self.to.get("type"))
        if kinds == ("supplier", "storage"):
            return [self.received()]
        if kinds == ("storage", "supplier"):
            return [self.shipped("supplier")]
        if kinds == ("storage", "customer"):
            return [self.shipped("customer")]
        if kinds == ("customer", "storage"):
            return [self.returned()]
        if kinds in {("storage", "production"), ("production", "storage")}:
            return [self.production(consumed=kinds[1] == "production")]
        if kinds == ("storage", "storage"):
            return self.internal()
        if kinds in {("storage", "lost_found"), ("lost_found", "storage")}:
            return [self.adjusted(sign=-1 if kinds[1] == "lost_found" else 1)]
        raise EventValidationError(
            f"Tryton stock.move {self.key} goes from a {kinds[0]} to a {kinds[1]} location; "
            "this connector maps supplier, customer, storage, production and lost_found moves"
        )

    def supplier_lot(self) -> str:
        """The supplier's lot number: Tryton has no field for it, so where the plant keeps it."""
        if self.source.supplier_lot == "shipment-reference":
            reference = _text((self.shipment or {}).get("reference"))
            if reference is not None:
                return reference
        return self.lot

    def received(self) -> LotEventBase:
        supplier, ship_from = self.partner("supplier")
        order = self.origin if (self.origin or {}).get("doc_type") == "PO" else None
        if order is not None and order.get("number"):
            reference = DocumentRef(doc_type="PO", number=str(order["number"]))
        else:
            reference = self.document()
        return LotReceived(
            envelope=self.envelope("LotReceived", self.site_here(self.to)),
            lot=self.lot, item=self.item, quantity=self.quantity, supplier=supplier,
            supplier_lot=self.supplier_lot(),
            receiving_location=self.place(self.to), ship_from=ship_from,
            reference_document=reference,
        )  # fmt: skip

    def shipped(self, role: str) -> LotEventBase:
        party, ship_to = self.partner(role)
        return LotShipped(
            envelope=self.envelope("LotShipped", self.site_here(self.frm)),
            lot=self.lot, item=self.item, quantity=self.quantity, customer=party,
            ship_to=ship_to, ship_from=self.place(self.frm),
            reference_document=self.document(),
        )  # fmt: skip

    def returned(self) -> LotEventBase:
        customer, _ = self.partner("customer")
        return CustomerReturn(
            envelope=self.envelope("CustomerReturn", self.site_here(self.to)),
            lot=self.lot, item=self.item, quantity=self.quantity, customer=customer,
            receiving_location=self.place(self.to),
            # Tryton records no return reason code (the sale's reference is free text)
            reason_code="RETURN",
            reference_document=self.document(),
        )  # fmt: skip

    def production(self, *, consumed: bool) -> LotEventBase:
        production = self.raw.get("production")
        if not production:
            raise EventValidationError(
                f"Tryton stock.move {self.key} moves to or from a production location but "
                "belongs to no production order; it cannot be joined to a batch"
            )
        number = str(production["number"])
        plant = self.frm if consumed else self.to
        common: dict[str, Any] = {
            # batch ids join consumption to output across every source: keep them unique
            "batch_id": f"{self.source.name}/{number}",
            "kind": TransformationKind.PRODUCTION,
            "location": self.place(self.to if consumed else self.frm),
            "lot": self.lot, "item": self.item, "quantity": self.quantity,
            "reference_document": DocumentRef(doc_type="PRODUCTION", number=number),
        }  # fmt: skip
        if consumed:
            return MaterialConsumed(
                envelope=self.envelope("MaterialConsumed", self.site_here(plant)), **common
            )
        return MaterialProduced(
            envelope=self.envelope("MaterialProduced", self.site_here(plant)), **common
        )

    def internal(self) -> list[LotEventBase]:
        frm_wh, to_wh = self.frm.get("warehouse"), self.to.get("warehouse")
        shipment = self.shipment or {}
        # a transit location belongs to no warehouse: the shipment says where it goes
        origin_wh = frm_wh or shipment.get("from_warehouse")
        dest_wh = to_wh or shipment.get("to_warehouse")
        if origin_wh is None or dest_wh is None:
            raise EventValidationError(
                f"Tryton stock.move {self.key} moves between storage locations outside any "
                "warehouse and no internal shipment names the warehouses"
            )
        origin_site, dest_site = self.source.site_of(origin_wh), self.source.site_of(dest_wh)
        if origin_wh["id"] == dest_wh["id"] or origin_site == dest_site:
            kind = MoveKind.MOVE
            if frm_wh is not None and frm_wh["id"] == (to_wh or {}).get("id"):
                if self.frm.get("zone") == "input":
                    kind = MoveKind.PUTAWAY
                elif self.to.get("zone") == "output":
                    kind = MoveKind.PICK
            moved = self.document() if self.shipment is not None else None
            return [LotMoved(
                envelope=self.envelope("LotMoved", origin_site if frm_wh else dest_site),
                kind=kind, lot=self.lot, item=self.item, quantity=self.quantity,
                from_location=self.place(self.frm), to_location=self.place(self.to),
                reference_document=moved,
            )]  # fmt: skip
        transfer_id = str(shipment.get("number") or f"stock.move,{self.key}")
        reference = self.document()
        events: list[LotEventBase] = []
        if frm_wh is not None:  # the lot leaves the origin site
            events.append(TransferShipped(
                envelope=self.envelope("TransferShipped", origin_site),
                transfer_id=transfer_id, lot=self.lot, item=self.item, quantity=self.quantity,
                from_location=self.place(self.frm), to_location=self.warehouse_place(dest_wh),
                reference_document=reference,
            ))  # fmt: skip
        if to_wh is not None:  # the lot arrives: same Tryton lot, named at the other site
            events.append(TransferReceived(
                envelope=self.envelope("TransferReceived", dest_site),
                transfer_id=transfer_id, shipped_lot=self.lot, shipped_lot_site=origin_site,
                lot=self.lot, item=self.item, quantity=self.quantity,
                from_location=self.warehouse_place(origin_wh),
                receiving_location=self.place(self.to), reference_document=reference,
            ))  # fmt: skip
        return events

    def adjusted(self, *, sign: int) -> LotEventBase:
        storage = self.frm if sign < 0 else self.to
        origin = self.origin or {}
        if origin.get("doc_type") == "INVENTORY" and origin.get("number"):
            reason = f"INVENTORY:{origin['number']}"  # a stock count found the difference
        else:
            reason = "LOST_FOUND"  # moved to or from lost and found by hand
        return InventoryAdjusted(
            envelope=self.envelope("InventoryAdjusted", self.site_here(storage)),
            kind=AdjustmentKind.ADJUSTMENT, lot=self.lot, item=self.item,
            quantity_change=Quantity(value=sign * self.quantity.value, unit=self.quantity.unit),
            location=self.place(storage), reason_code=reason, actor=self.source.name,
        )  # fmt: skip


# --- quality inspections -----------------------------------------------------------------


class TrytonInspectionSource(_TrytonStream):
    """Decided (``passed``/``failed``) ``quality.inspection`` records, read incrementally.

    The lots an inspection is about are the lots of its origin: every move of the
    inspected shipment, or the outputs of the inspected production. An inspection
    with no such lot (no origin, or products without lots) gives no event.
    """

    model = "quality.inspection"
    record_kind = "quality.inspection"
    required_fields = ("number", "state", "points", "control", "origin", "processed_at")

    def read(self, after: Cursor | None, limit: int) -> list[TrytonRecord]:
        """Up to ``limit`` decided inspections strictly after ``after``, oldest first."""
        available = self.client.fields(self.model)
        # not every series has them (7.0 has no reference)
        optional = [f"{f}.rec_name" for f in ("passed_by", "failed_by", "processed_by")
                    if f in available] + (["reference"] if "reference" in available else [])  # fmt: skip
        rows = self._page(
            [["state", "in", ["passed", "failed"]]],
            ["number", "state", "points", "origin", "processed_at", "control.name",
             "control.points.name", "control.points.string", "control.points.type_",
             "control.points.tolerance_lower", "control.points.tolerance_upper", *optional],
            after, limit,
        )  # fmt: skip
        lots = self._lots([_ref(r.get("origin")) for r in rows])
        out = []
        for row in rows:
            cursor = self._cursor(row)
            origin = _ref(row.get("origin"))
            state = str(row["state"])
            decider = next(
                (
                    _text((row.get(f"{f}.") or {}).get("rec_name"))
                    for f in (f"{state}_by", "processed_by")
                    if (row.get(f"{f}.") or {}).get("rec_name")
                ),
                None,
            )
            control = row.get("control.") or {}
            processed = row.get("processed_at")
            raw = {
                "model": self.model,
                "id": int(row["id"]),
                "number": row["number"],
                "reference": _text(row.get("reference")),
                "state": state,
                "updated_at": cursor.updated_at.replace(tzinfo=None).isoformat(),
                "processed_at": processed.isoformat() if isinstance(processed, datetime) else None,
                "decided_by": decider,
                "control": {
                    "name": control.get("name"),
                    "points": [
                        {k: p.get(k) for k in _POINT_FIELDS} for p in control.get("points.") or []
                    ],
                },
                "points": {k: _jsonable(v) for k, v in (row.get("points") or {}).items()},
                "origin": None if origin is None else {"model": origin[0], "id": origin[1]},
                "lots": lots.get(origin, []) if origin else [],
            }
            key = f"{row['id']}"
            out.append(TrytonRecord(cursor, self.record_kind, key, raw))
        return out

    def _lots(self, origins: list[tuple[str, int] | None]) -> dict[tuple[str, int], list[Any]]:
        shipments = sorted({f"{m},{i}" for m, i in filter(None, origins) if m != "production"})
        productions = sorted({i for m, i in filter(None, origins) if m == "production"})
        clauses: list[Any] = []
        if shipments:
            clauses.append(["shipment", "in", shipments])
        if productions:
            clauses.append(["production_output", "in", productions])
        if not clauses:
            return {}
        fields = ["shipment", "lot.number", "product.code", "product.name", "from_location",
                  "to_location"]  # fmt: skip
        if productions:
            fields.append("production_output")
        moves = self.client.search_read(
            "stock.move", [["lot", "!=", None], ["state", "!=", "cancelled"], ["OR", *clauses]],
            fields,
            order=[("id", "ASC")],
        )  # fmt: skip
        out: dict[tuple[str, int], dict[str, Any]] = {}
        for move in moves:
            keys = [_ref(move.get("shipment"))]
            if move.get("production_output"):
                keys.append(("production", int(move["production_output"])))
            wh = None
            for side in ("to_location", "from_location"):
                loc = self._location(move.get(side))
                if loc and loc.get("warehouse"):
                    wh = loc["warehouse"]
                    break
            lot = {
                "number": move["lot."]["number"],
                "product": {"id": int(move["product."]["id"]),
                            "code": move["product."].get("code"),
                            "name": move["product."].get("name")},
                "warehouse": wh,
            }  # fmt: skip
            for key in filter(None, keys):
                out.setdefault(key, {}).setdefault(lot["number"], lot)
        return {k: list(v.values()) for k, v in out.items()}

    def to_events(self, raw: Mapping[str, Any], site: SiteConfig) -> list[LotEventBase]:
        """One QcResultRecorded per lot and point, and one LotStatusChanged per lot."""
        try:
            return self._events(raw, site)
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise EventValidationError(
                f"Tryton quality.inspection {raw.get('id')!r} cannot be mapped: "
                f"{type(exc).__name__} {exc}"
            ) from exc

    def _events(self, raw: Mapping[str, Any], site: SiteConfig) -> list[LotEventBase]:
        number = str(raw["number"])
        state = str(raw["state"])
        updated = _utc(datetime.fromisoformat(raw["updated_at"]))
        processed = (
            _utc(datetime.fromisoformat(raw["processed_at"]))
            if raw.get("processed_at")
            else updated
        )
        actor = raw.get("decided_by") or self.name
        points = {p["name"]: p for p in raw["control"]["points"]}
        values: dict[str, Any] = raw["points"]
        events: list[LotEventBase] = []
        for lot in raw["lots"]:
            site_code = self.site_of(lot.get("warehouse"))
            source = EventSource(system_kind=self.system_kind, system_instance=self.name,
                                 site=site_code)  # fmt: skip

            def envelope(
                event_type: str, key: str, at: datetime, source: EventSource = source
            ) -> Envelope:
                return Envelope(
                    event_id=stable_event_id(self.name, f"{self.record_kind}:{event_type}", key),
                    event_type=event_type, source=source,
                    occurred_at=at.astimezone(site.zone), recorded_at=at,
                    sequence=int(raw["id"]), correlation_id=number,
                )  # fmt: skip

            # a re-decision (pending -> processed again, or failed -> passed) is a new result
            decision = f"{raw['id']}@{raw.get('processed_at')}"
            for name in sorted(values):
                value, spec = values[name], points.get(name, {})
                events.append(QcResultRecorded(
                    envelope=envelope("QcResultRecorded", f"{decision}/{lot['number']}/{name}",
                                      processed),
                    sample_id=number, lot=str(lot["number"]), test_code=name,
                    result=_result_text(value), numeric_result=_number(value),
                    spec_min=_number(spec.get("tolerance_lower")),
                    spec_max=_number(spec.get("tolerance_upper")),
                    passed=_point_passes(spec, value),
                ))  # fmt: skip
            events.append(LotStatusChanged(
                envelope=envelope(
                    "LotStatusChanged", f"{decision}/{state}@{raw['updated_at']}/{lot['number']}",
                    updated,
                ),
                lot=str(lot["number"]), status=state, reason_code=f"QC:{number}", actor=actor,
            ))  # fmt: skip
        return events


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def _number(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value)).quantize(Decimal("0.000001"))
    except InvalidOperation:
        return None


def _result_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "no value" if value is None else str(value)


def _point_passes(spec: Mapping[str, Any], value: Any) -> bool:
    """Tryton's own rule (quality.control.point.check): booleans pass when true; numbers
    pass within the tolerances; a missing number fails."""
    if spec.get("type_") == "boolean" or isinstance(value, bool):
        return bool(value)
    if value is None:
        return False
    number = Decimal(str(value))
    low, high = spec.get("tolerance_lower"), spec.get("tolerance_upper")
    if low is not None and Decimal(str(low)) > number:
        return False
    return not (high is not None and Decimal(str(high)) < number)


# --- the connector framework's view --------------------------------------------------


class TrytonConnectorSource(Source[Cursor]):
    """A Tryton stream (moves or inspections) as a :class:`connectors.base.Source`.

    The base connector stores :class:`Cursor` checkpoints and dead-letters the raw
    record as JSON; mapping needs the site configuration, given here once.

    Example::

        source = TrytonConnectorSource(TrytonSource(client, name="erp-alp", site_code="ALP"),
                                       sites.sites["ALP"])
    """

    system_kind = SystemKind.ERP

    def __init__(self, stream: TrytonSource | TrytonInspectionSource, site: SiteConfig) -> None:
        super().__init__(name=stream.name, site=stream.site)
        self.stream = stream
        self.site_config = site

    def read(self, after: Cursor | None, limit: int) -> list[SourceRecord[Cursor]]:
        """The stream's next records, wrapped for the connector."""
        return [
            SourceRecord(position=r.cursor, record_kind=r.record_kind, record_key=r.record_key,
                         payload=r.raw, changed_at=r.cursor.updated_at)
            for r in self.stream.read(after, limit)
        ]  # fmt: skip

    def to_events(self, record: SourceRecord[Cursor]) -> list[LotEventBase]:
        """Map one record (its raw dict carries everything the mapping needs)."""
        return self.stream.to_events(json.loads(record.raw), self.site_config)

    def position_from_json(self, text: str) -> Cursor:
        """The checkpoint cursor."""
        return Cursor.from_json(text)

    def position_at(self, since: datetime) -> Cursor:
        """A backfill from ``since`` (taken as UTC when naive)."""
        start = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
        return Cursor(updated_at=start - timedelta(microseconds=1), pk=0)

    def close(self) -> None:
        """Close the JSON-RPC client."""
        self.stream.client.close()
