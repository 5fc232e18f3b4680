"""Tryton connector against a real trytond server (SQLite database built with proteus).

The database is built once per session (``tests/tryton_scenario.py``: company, two
warehouses, purchases and receipts, a quality-inspected receipt, a production with
partial consumption, a transfer between warehouses that are two hub sites, two sales, a
customer and a supplier return, an inventory count, a failed inspection, a receipt
cancelled after it was done) and served by ``trytond`` on a free loopback port. The
connector reads it as a plant's integration user would, and its events, normalized and
stored, must trace exactly what Tryton's own lot traces reach.

Tryton comes from the project's venv (8.0, the LTS series). To run the same tests against
another series, point ``LOTHUB_TEST_TRYTON_PYTHON`` at the Python of a venv holding it,
e.g. ``pip install "trytond~=7.0.0" "trytond-stock-lot~=7.0.0" ... "proteus~=7.0.0"``.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.base import Connector
from connectors.checkpoints import CheckpointStore
from connectors.publisher import KafkaPublisher
from connectors.tryton import (
    Cursor,
    TrytonClient,
    TrytonConnectorSource,
    TrytonInspectionSource,
    TrytonRecord,
    TrytonSource,
)
from genealogy.store import GenealogyStore
from genealogy.trace import Direction, LotNotFoundError, resolve_lot, trace
from lothub.runtime import ensure_topics, free_port
from lothub.settings import Settings
from schemas.errors import ConfigurationError, EventValidationError, SourceUnavailableError
from schemas.model import (
    CorrectionAction,
    EventCorrected,
    LotEventBase,
    LotReceived,
    LotShipped,
    LotStatus,
    LotStatusChanged,
    MaterialConsumed,
    MaterialProduced,
    TransferReceived,
    stable_event_id,
)
from schemas.serde import make_serde
from schemas.sites import SiteConfig, SitesConfig
from streams.normalize import normalize
from tests.helpers import read_topic
from tests.tryton_scenario import (
    DATABASE,
    READER_LOGIN,
    READER_PASSWORD,
    TrytonDatabase,
    build_database,
    child_env,
    trytond_bin,
    write_config,
)

INSTANCE = "erp-alp"
WAREHOUSE_SITES = {"WH": "ALP", "DC": "ZRH"}


def site(name: str) -> SiteConfig:
    return SiteConfig(
        name=name,
        timezone="Europe/Zurich",
        lot_code_pattern=r"^[RP]-\d{5}$",  # Tryton lot numbers as the scenario enters them
        status_codes={"passed": LotStatus.RELEASED, "failed": LotStatus.ON_HOLD},  # QC states
        unit_codes={"kg": "KGM", "u": "H87"},  # Tryton UoM symbols
    )


SITES = SitesConfig(sites={"ALP": site("Alpenwerk plant Chur"), "ZRH": site("Alpenwerk DC Zurich")})


# --- the server ----------------------------------------------------------------------------


@dataclass
class TrytonServer:
    """A running ``trytond`` child process serving the scenario database."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_trytond(db: TrytonDatabase, port: int, tag: str) -> TrytonServer:
    """Start trytond on ``port`` and wait until it answers JSON-RPC."""
    config = write_config(db.workdir, listen=f"127.0.0.1:{port}", name=f"trytond-{tag}.conf")
    log = db.workdir / f"trytond-{tag}.log"
    with log.open("ab") as out:
        # -d loads the database's modules at start, as production setups do
        # (TRYTOND_DATABASE_NAMES); the first login then needs no lazy initialisation
        process = subprocess.Popen(
            [trytond_bin("trytond"), "-c", str(config), "-d", DATABASE],
            env=child_env(db.workdir), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    server = TrytonServer(f"http://127.0.0.1:{port}", port, process, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"trytond exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            # any HTTP answer means it serves (the RPC path differs between series)
            httpx.post(f"{server.url}/rpc/", json={"id": 0, "method": "common.server.version",
                                                    "params": []}, timeout=2)  # fmt: skip
            return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    pytest.fail(f"trytond did not answer within 60 s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def tryton_db(tmp_path_factory: pytest.TempPathFactory) -> TrytonDatabase:
    """The scenario database, built once (trytond-admin, then proteus); ~30 s on two cores."""
    db = build_database(tmp_path_factory.mktemp("tryton"))
    print(f"tryton database: init {db.init_seconds:.1f}s, scenario {db.scenario_seconds:.1f}s")
    return db


@pytest.fixture(scope="session")
def tryton_server(tryton_db: TrytonDatabase) -> Iterator[str]:
    """trytond serving the scenario for the whole session; yields its base URL."""
    server = start_trytond(tryton_db, free_port(), "session")
    yield server.url
    server.stop()


@pytest.fixture
def client(tryton_server: str) -> Iterator[TrytonClient]:
    """A client for the connector's user (not an administrator); it logs in on first use."""
    made = TrytonClient(tryton_server, DATABASE, READER_LOGIN, READER_PASSWORD)
    yield made
    made.close()


def move_source(client: TrytonClient) -> TrytonSource:
    # settle_s=0: the scenario's transactions are long committed; read up to now
    return TrytonSource(client, name=INSTANCE, site_code="ALP", warehouse_sites=WAREHOUSE_SITES,
                        settle_s=0)  # fmt: skip


def inspection_source(client: TrytonClient) -> TrytonInspectionSource:
    return TrytonInspectionSource(client, name=INSTANCE, site_code="ALP",
                                  warehouse_sites=WAREHOUSE_SITES, settle_s=0)  # fmt: skip


def read_all(source: TrytonSource | TrytonInspectionSource, page: int) -> list[TrytonRecord]:
    """Every record, ``page`` at a time, each page strictly after the last cursor."""
    out: list[TrytonRecord] = []
    after: Cursor | None = None
    while batch := source.read(after, page):
        out.extend(batch)
        after = batch[-1].cursor
    return out


def all_events(client: TrytonClient) -> list[LotEventBase]:
    moves, inspections = move_source(client), inspection_source(client)
    events: list[LotEventBase] = []
    for record in read_all(moves, 500):
        events.extend(moves.to_events(record.raw, SITES.sites["ALP"]))
    for record in read_all(inspections, 500):
        events.extend(inspections.to_events(record.raw, SITES.sites["ALP"]))
    return events


def local_midnight(day: str) -> datetime:
    return SITES.sites["ALP"].localize(datetime.combine(date.fromisoformat(day), day_time(0)))


# --- what the connector publishes ----------------------------------------------------------


def test_the_scenario_becomes_the_expected_raw_events(
    client: TrytonClient, tryton_db: TrytonDatabase
) -> None:
    events = all_events(client)
    expected = {
        "LotReceived": 3,  # R-26001; R-26002 and R-26003 on one receipt
        "LotMoved": 6,  # three put-aways, a put-away after the return, two picks
        "MaterialConsumed": 2,
        "MaterialProduced": 1,
        "TransferShipped": 1,  # WH (ALP) -> transit
        "TransferReceived": 1,  # transit -> DC (ZRH)
        "LotShipped": 3,  # two customers and the return to the supplier
        "CustomerReturn": 1,
        "InventoryAdjusted": 1,
        "QcResultRecorded": 5,  # two points x two lots on receipt, one on the retained sample
        "LotStatusChanged": 3,
    }
    if tryton_db.summary["receipt_cancelled"]:
        expected["EventCorrected"] = 2  # the cancelled receipt's two moves (receipt, put-away)
    else:  # Tryton 7.0 cannot cancel a done shipment: R-26004 stays received
        expected["LotReceived"] += 1
        expected["LotMoved"] += 1
    assert Counter(type(e).__name__ for e in events) == expected
    days = tryton_db.summary["days"]

    received = {e.lot: e for e in events if isinstance(e, LotReceived)}
    milk = received["R-26001"]
    assert (milk.item.item_code, milk.item.description) == ("MP-100", "Skimmed milk powder")
    assert (milk.quantity.value, milk.quantity.unit) == (Decimal(1000), "kg")  # site's symbol
    assert (milk.supplier.party_id, milk.supplier.name) == ("V-1001", "Alpine Dairy Co")
    assert (milk.reference_document.doc_type, milk.reference_document.number) == ("PO", "PO/1")
    assert milk.ship_from.address == "Bahnhofstrasse 4\n7302 Landquart"
    assert milk.receiving_location.location_id == "WH/IN"
    assert milk.receiving_location.address == "Industriestrasse 12\n7000 Chur"
    assert milk.envelope.source.site == "ALP"
    assert milk.envelope.occurred_at == local_midnight(days["0"])
    assert milk.envelope.occurred_at.utcoffset() == timedelta(hours=1), "Zurich in winter"
    assert milk.envelope.recorded_at == milk.envelope.occurred_at, "stable under re-writes"
    assert received["R-26003"].reference_document.number == "PO/2"
    assert milk.supplier_lot == "R-26001", "by default the Tryton lot number is the supplier's"

    consumed = {e.lot: e for e in events if isinstance(e, MaterialConsumed)}
    assert {lot: e.quantity.value for lot, e in consumed.items()} == {
        "R-26001": Decimal(800),  # partial use of 1000 kg
        "R-26002": Decimal(150),
    }
    produced = next(e for e in events if isinstance(e, MaterialProduced))
    assert {e.batch_id for e in consumed.values()} == {f"{INSTANCE}/MO/1"}
    assert (produced.lot, produced.quantity.unit, produced.batch_id) == (
        "P-26001", "u", f"{INSTANCE}/MO/1",
    )  # fmt: skip

    arrived = next(e for e in events if isinstance(e, TransferReceived))
    assert (arrived.envelope.source.site, arrived.lot) == ("ZRH", "P-26001")
    assert (arrived.shipped_lot, arrived.shipped_lot_site) == ("P-26001", "ALP")
    assert arrived.reference_document.number == "INT/1"

    shipped = {(e.customer.party_id, e.envelope.source.site, e.lot, e.quantity.value,
                e.reference_document.doc_type) for e in events if isinstance(e, LotShipped)}  # fmt: skip
    assert shipped == {
        ("C-5001", "ALP", "P-26001", Decimal(400), "CUSTOMER_SHIPMENT"),
        ("C-5002", "ZRH", "P-26001", Decimal(200), "CUSTOMER_SHIPMENT"),
        ("V-2040", "ALP", "R-26003", Decimal(30), "SUPPLIER_RETURN"),
    }

    statuses = {(e.lot, e.status, e.actor) for e in events if isinstance(e, LotStatusChanged)}
    assert statuses == {
        ("R-26002", "passed", "Petra Caduff"),
        ("R-26003", "passed", "Petra Caduff"),
        ("P-26001", "failed", "Petra Caduff"),
    }
    for event in events:
        assert event.envelope.source.system_instance == INSTANCE
        assert event.envelope.occurred_at.tzinfo is not None
        assert event.envelope.recorded_at.tzinfo is not None
    assert len({e.envelope.event_id for e in events}) == len(events)


def test_the_supplier_lot_can_come_from_the_receipts_reference(client: TrytonClient) -> None:
    source = TrytonSource(client, name=INSTANCE, site_code="ALP", warehouse_sites=WAREHOUSE_SITES,
                          settle_s=0, supplier_lot="shipment-reference")  # fmt: skip
    supplier_lots = {
        e.lot: e.supplier_lot
        for record in read_all(source, 500)
        for e in source.to_events(record.raw, SITES.sites["ALP"])
        if isinstance(e, LotReceived)
    }
    assert supplier_lots["R-26001"] == "AD-5531"  # written in the receipt's reference
    assert supplier_lots["R-26002"] == "R-26002"  # a receipt without one: the lot number


def test_events_go_through_the_broker_unchanged(
    client: TrytonClient, broker: str, settings_factory: Callable[..., Settings]
) -> None:
    """Every raw event encodes with the Avro schemas and reads back equal."""
    settings = settings_factory(kafka_bootstrap=broker)
    ensure_topics(settings)
    events = all_events(client)
    serde = make_serde()
    KafkaPublisher(settings.producer_config(), serde, settings.topics.raw).publish(events)
    back = [serde.decode(m.value(), topic="raw", partition=0, offset=0)
            for m in read_topic(settings, settings.topics.raw)]  # fmt: skip
    assert sorted(back, key=lambda e: e.envelope.event_id) == sorted(
        events, key=lambda e: e.envelope.event_id
    )


def test_the_connector_framework_runs_the_tryton_streams(
    client: TrytonClient, tryton_server: str, connector_wiring: tuple[Settings, CheckpointStore]
) -> None:
    """Through the base connector: checkpointed, published once, nothing left to read."""
    settings, checkpoints = connector_wiring
    serde = make_serde()
    published: list[str] = []

    def own_client() -> TrytonClient:  # a connector closes its client when it stops
        return TrytonClient(tryton_server, DATABASE, READER_LOGIN, READER_PASSWORD)

    for stream in (move_source(own_client()), inspection_source(own_client())):
        connector = Connector(
            TrytonConnectorSource(stream, SITES.sites["ALP"]),
            KafkaPublisher(settings.producer_config(), serde, settings.topics.raw),
            KafkaPublisher(settings.producer_config(), serde, settings.topics.connector_dlq),
            checkpoints, batch_size=5, checkpoint_key=f"{INSTANCE}/{stream.model}",
        )  # fmt: skip
        connector.run(threading.Event(), until_idle=True)
        published.append(str(checkpoints.load(f"{INSTANCE}/{stream.model}")))
        assert connector.status.consecutive_errors == 0
    raw = [serde.decode(m.value(), topic="raw", partition=0, offset=0)
           for m in read_topic(settings, settings.topics.raw)]  # fmt: skip
    expected = all_events(client)
    dead = read_topic(settings, settings.topics.connector_dlq)
    assert sorted(e.envelope.event_id for e in raw) == sorted(
        e.envelope.event_id for e in expected
    ), "every event once, through checkpointed batches"
    assert all(json.loads(text)["pk"] > 0 for text in published)
    assert dead == [], "every record of the scenario maps"


# --- genealogy: the hub's traces are Tryton's own ----------------------------------------


def tryton_trace(client: TrytonClient, number: str, direction: Direction) -> set[str]:
    """Lot numbers Tryton's ``stock.lot.trace`` reaches from every move of lot ``number``.

    Tryton's "Upward/Downward Traces" start from the lot's moves and follow
    ``upward_traces`` (later moves of the lot, and a production's outputs) or
    ``downward_traces`` (earlier moves, and a production's inputs) to the end.
    """
    field = "upward_traces" if direction is Direction.FORWARD else "downward_traces"
    lots = client.search_read("stock.lot", [["number", "=", number]], ["number"])
    rows = client.search_read("stock.lot.trace", [["lot", "in", [r["id"] for r in lots]]],
                              ["lot.number", field])  # fmt: skip
    seen: dict[int, str] = {}
    while rows:
        todo: set[int] = set()
        for row in rows:
            seen[row["id"]] = row["lot."]["number"]
            todo.update(t for t in row[field] if t not in seen)
        rows = client.read("stock.lot.trace", todo, ["lot.number", field])
    return set(seen.values())


@pytest.fixture
def hub(client: TrytonClient, sqlite_url: str,
        store_factory: Callable[[str], GenealogyStore]) -> GenealogyStore:  # fmt: skip
    """A genealogy store holding the normalized events of the whole scenario."""
    store = store_factory(sqlite_url)
    store.apply([normalize(e, SITES) for e in all_events(client)])
    return store


@pytest.mark.parametrize("direction", [Direction.BACKWARD, Direction.FORWARD])
def test_traces_reach_the_lots_trytons_own_traces_reach(
    client: TrytonClient, hub: GenealogyStore, direction: Direction
) -> None:
    numbers = [r["number"] for r in client.search_read("stock.lot", [], ["number"])]
    assert sorted(numbers) == ["P-26001", "R-26001", "R-26002", "R-26003", "R-26004"]
    reached: dict[str, set[str]] = {}
    for number in numbers:
        expected = tryton_trace(client, number, direction)
        # the same Tryton lot is a hub lot at each site it was at (ALP, and ZRH after the
        # transfer); every one of them must reach the same lot numbers
        hub_ids = [f"{s}:{number}" for s in SITES.sites if is_lot(hub, f"{s}:{number}")]
        if not expected:  # R-26004: its only receipt was cancelled, Tryton traces nothing
            assert hub_ids == [], "the hub only heard of voided events for it"
            continue
        assert hub_ids, f"the hub does not know {number}"
        for lot_id in hub_ids:
            found = {x.lot_id.split(":", 1)[1] for x in trace(hub, lot_id, direction).lots}
            assert found == expected, f"{direction} trace of {lot_id}"
        reached[number] = expected
    if direction is Direction.BACKWARD:  # guard: the scenario really has a genealogy
        assert reached["P-26001"] == {"P-26001", "R-26001", "R-26002"}
    else:
        assert reached["R-26001"] == {"R-26001", "P-26001"}
        assert reached["R-26003"] == {"R-26003"}


def is_lot(store: GenealogyStore, lot_id: str) -> bool:
    """True if the hub has a lot with this id (a Tryton lot is one per site it was at)."""
    try:
        return resolve_lot(store, lot_id) == lot_id
    except LotNotFoundError:
        return False


def test_statuses_and_documents_in_the_hub(hub: GenealogyStore) -> None:
    backward = trace(hub, "ZRH:P-26001", Direction.BACKWARD)
    statuses = {lot.lot_id: lot.status for lot in backward.lots}
    assert statuses["ALP:P-26001"] == "ON_HOLD", "failed retained-sample inspection"
    assert statuses["ALP:R-26002"] == "RELEASED", "passed receiving inspection"
    used = {(e.parent_lot, e.child_lot): (e.quantity_used, e.unit_used) for e in backward.edges}
    assert used[("ALP:R-26001", "ALP:P-26001")] == (Decimal(800), "KGM")
    assert used[("ALP:P-26001", "ZRH:P-26001")] == (Decimal(300), "H87")
    receipts = {d.partner_lot: d.doc_number for d in backward.documents if d.cte == "RECEIVING"}
    assert receipts == {"R-26001": "PO/1", "R-26002": "PO/2"}
    forward = trace(hub, "ALP:R-26001", Direction.FORWARD)
    customers = {d.party_id for d in forward.documents if d.cte == "SHIPPING"}
    assert customers == {"C-5001", "C-5002"}


# --- incremental reads -------------------------------------------------------------------


def test_pages_of_any_size_read_every_record_once_even_across_equal_timestamps(
    client: TrytonClient,
) -> None:
    source = move_source(client)
    everything = source.read(None, 1000)
    keys = [r.record_key for r in everything]
    assert len(keys) == len(set(keys)) == 21  # 19 done lot moves, 2 cancelled after done
    stamps = Counter(r.cursor.updated_at for r in everything)
    assert max(stamps.values()) >= 2, "Tryton stamps one transaction's rows alike"
    assert [r.cursor for r in everything] == sorted(r.cursor for r in everything)
    for page in (1, 2, 3, 7):
        assert [r.record_key for r in read_all(source, page)] == keys, f"pages of {page}"
    inspections = inspection_source(client)
    assert (
        [r.record_key for r in read_all(inspections, 1)]
        == [r.record_key for r in inspections.read(None, 100)]
        == ["1", "2"]
    )


def test_a_cursor_inside_a_group_of_equal_timestamps_returns_the_rest_of_it(
    client: TrytonClient,
) -> None:
    source = move_source(client)
    everything = source.read(None, 1000)
    stamp, _ = Counter(r.cursor.updated_at for r in everything).most_common(1)[0]
    group = [r for r in everything if r.cursor.updated_at == stamp]
    after = source.read(group[0].cursor, 1)
    assert [r.record_key for r in after] == [group[1].record_key]
    rest = source.read(everything[4].cursor, 1000)
    assert [r.record_key for r in everything[:5] + rest] == [r.record_key for r in everything]
    assert source.read(everything[-1].cursor, 10) == []


def test_rereading_gives_identical_events_and_json_round_trips(tryton_server: str) -> None:
    def snapshot() -> list[dict[str, Any]]:
        fresh = TrytonClient(tryton_server, DATABASE, READER_LOGIN, READER_PASSWORD)
        try:
            return [e.model_dump(mode="json") for e in all_events(fresh)]
        finally:
            fresh.close()

    first, second = snapshot(), snapshot()
    assert first == second, "same ids, same content: the hub sees duplicates, not conflicts"
    ids = {e["envelope"]["event_id"] for e in first}
    reader = TrytonClient(tryton_server, DATABASE, READER_LOGIN, READER_PASSWORD)
    moves = move_source(reader)
    record = moves.read(None, 1)[0]
    reader.close()
    assert stable_event_id(INSTANCE, "stock.move:LotReceived", record.record_key) in ids
    # the raw record is plain JSON: a dead letter replays to the same events
    replayed = json.loads(json.dumps(record.raw))
    assert moves.to_events(replayed, SITES.sites["ALP"]) == moves.to_events(
        record.raw, SITES.sites["ALP"]
    )
    cursor = record.cursor
    assert Cursor.from_json(cursor.to_json()) == cursor


def test_recent_records_wait_until_they_settle(client: TrytonClient) -> None:
    source = TrytonSource(client, name=INSTANCE, site_code="ALP", settle_s=10 * 365 * 86400)
    assert source.read(None, 100) == [], "nothing is older than ten years"
    assert move_source(client).read(None, 1), "with settle_s=0 the same records are read"


def test_a_move_cancelled_after_it_was_done_voids_exactly_its_events(
    client: TrytonClient, tryton_db: TrytonDatabase
) -> None:
    if not tryton_db.summary["receipt_cancelled"]:
        pytest.skip("this Tryton series cannot cancel a done shipment")
    source = move_source(client)
    cancelled = [r for r in source.read(None, 1000) if r.raw["state"] == "cancelled"]
    assert [r.raw["lot"]["number"] for r in cancelled] == ["R-26004", "R-26004"]
    here = SITES.sites["ALP"]
    for record in cancelled:
        (void,) = source.to_events(record.raw, here)
        assert isinstance(void, EventCorrected)
        assert void.action == CorrectionAction.VOID
        done = source.to_events({**record.raw, "state": "done"}, here)
        assert void.corrected_event_ids == [e.envelope.event_id for e in done]


def test_a_move_that_cannot_be_mapped_raises_a_data_error(client: TrytonClient) -> None:
    source = move_source(client)
    receipt = source.read(None, 1)[0].raw
    here = SITES.sites["ALP"]
    with pytest.raises(EventValidationError, match="from a drop to a storage location"):
        source.to_events({**receipt, "from_location": {**receipt["from_location"],
                                                       "type": "drop"}}, here)  # fmt: skip
    with pytest.raises(EventValidationError, match="no shipment naming the supplier"):
        source.to_events({**receipt, "shipment": None}, here)
    with pytest.raises(EventValidationError, match="cannot be mapped"):
        source.to_events({k: v for k, v in receipt.items() if k != "lot"}, here)


# --- faults --------------------------------------------------------------------------------


def test_wrong_credentials_or_database_are_configuration_errors(tryton_server: str) -> None:
    with pytest.raises(ConfigurationError, match="refused the login of user 'lothub'"):
        TrytonClient(tryton_server, DATABASE, READER_LOGIN, "wrong").login()
    with pytest.raises(ConfigurationError, match="has no database 'nowhere'"):
        TrytonClient(tryton_server, "nowhere", READER_LOGIN, READER_PASSWORD).login()
    with pytest.raises(ConfigurationError, match="configure a password"):
        TrytonClient(tryton_server, DATABASE, READER_LOGIN, session=(2, "stale")).call(
            "model.res.user.get_preferences", True, {}
        )
    with pytest.raises(ConfigurationError, match=re.escape("does not know 'no.such.model'")):
        TrytonClient(tryton_server, DATABASE, READER_LOGIN, READER_PASSWORD).search_read(
            "no.such.model", [], ["id"]
        )


def test_an_expired_session_is_renewed_with_the_password(tryton_server: str) -> None:
    client = TrytonClient(tryton_server, DATABASE, READER_LOGIN, READER_PASSWORD,
                          session=(2, "expired-token"))  # fmt: skip
    assert client.search_read("stock.lot", [["number", "=", "P-26001"]], ["number"])


def test_a_user_without_read_access_is_told_what_to_fix(tryton_server: str) -> None:
    client = TrytonClient(tryton_server, DATABASE, READER_LOGIN, READER_PASSWORD)
    with pytest.raises(ConfigurationError, match="give the user the access rights"):
        client.search_read("account.move", [], ["id"])  # accounting is not its business


def _outage(kind: str) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if kind == "refused":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if kind == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if kind == "proxy":
            return httpx.Response(502, text="<html>Bad Gateway</html>")
        if kind == "locked":  # trytond's answer when its database fails under it
            return httpx.Response(200, json={"id": 1, "error": ["database is locked", "Trace"]})
        return httpx.Response(503, text="Service Unavailable")

    return handler


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("refused", "cannot reach Tryton at http://erp.alpenwerk.example"),
        ("timeout", "did not answer common.db.login within 5s"),
        ("proxy", "answered HTTP 502"),
        ("unavailable", "answered HTTP 503"),
        ("locked", "Tryton failed on common.db.login: database is locked"),
    ],
)
def test_server_outages_are_retriable(kind: str, message: str) -> None:
    """``httpx.MockTransport`` stands for a server outage (refused connection, timeout,
    proxy or server error, database failure) that a live test cannot produce
    deterministically; the real outage is covered by stopping the server below."""
    client = TrytonClient("http://erp.alpenwerk.example", DATABASE, READER_LOGIN, "x",
                          transport=httpx.MockTransport(_outage(kind)), timeout_s=5)  # fmt: skip
    source = TrytonSource(client, name=INSTANCE, site_code="ALP", settle_s=0)
    with pytest.raises(SourceUnavailableError, match=message):
        source.read(None, 10)


def test_an_older_tryton_is_reached_at_its_rpc_path() -> None:
    """Tryton before 8.0 serves JSON-RPC at /<db>/, not /<db>/rpc/ (a mock of one)."""
    paths: list[str] = []

    def tryton7(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path != f"/{DATABASE}/":
            return httpx.Response(405)
        if json.loads(request.content)["method"] == "common.db.login":
            return httpx.Response(200, json={"id": 1, "result": [7, "token"]})
        return httpx.Response(200, json={"id": 2, "result": {"company": 1}})

    client = TrytonClient("http://erp7.example", DATABASE, READER_LOGIN, "x",
                          transport=httpx.MockTransport(tryton7))  # fmt: skip
    assert client.context == {"company": 1}
    assert paths == [f"/{DATABASE}/rpc/", f"/{DATABASE}/", f"/{DATABASE}/"]


@pytest.fixture
def own_server(tryton_db: TrytonDatabase) -> Iterator[TrytonServer]:
    """A server of its own, for a test that stops it."""
    server = start_trytond(tryton_db, free_port(), f"own-{time.monotonic_ns()}")
    yield server
    server.stop()


def test_a_stopped_server_is_a_retriable_outage_and_reading_resumes(
    own_server: TrytonServer, tryton_db: TrytonDatabase
) -> None:
    client = TrytonClient(own_server.url, DATABASE, READER_LOGIN, READER_PASSWORD, timeout_s=5)
    source = move_source(client)
    first = source.read(None, 3)
    own_server.stop()
    with pytest.raises(SourceUnavailableError, match=f"cannot reach Tryton at {own_server.url}"):
        source.read(first[-1].cursor, 3)
    restarted = start_trytond(tryton_db, own_server.port, f"restart-{time.monotonic_ns()}")
    try:
        rest = source.read(first[-1].cursor, 1000)
    finally:
        restarted.stop()
    assert len(first) + len(rest) == 21
    assert rest[0].cursor > first[-1].cursor


def test_cursor_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Cursor(updated_at=datetime(2026, 11, 2, 8, 0), pk=1)
    now = datetime.now(UTC)
    assert Cursor(now, 2) > Cursor(now, 1) > Cursor(now - timedelta(seconds=1), 99)
