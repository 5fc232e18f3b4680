"""``lothub demo``: the whole hub plus the three-site plant simulator.

With the demo's site configuration the plants have real systems for the connectors to
read: site ALP's ERP is a live Tryton server (``tryton``; :mod:`lothub.demo_erp` builds
its database from the scenario, caches it under ``<data dir>/tryton-cache/`` and serves
it on a free loopback port), BRK's WMS database (``wms-sql``), ALP's LIMS export
(``lims-csv``) and the MES drop folders of ALP and CRV (``b2mml``), into which the MES
messages are dropped, one of them late, one twice and one broken. The ERPs of BRK and
CRV, and ALP's lot status letters (a field Tryton does not have), are published by the
simulator as a connector would.

With ``--check`` the scenario runs to completion, every expected trace is checked
through the HTTP API against the simulator's ground truth, one summary line is
printed and the exit status says pass (0) or fail (1).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, TopicPartition

from connectors.publisher import KafkaPublisher
from connectors.simulator import (
    GroundTruth,
    Scenario,
    build_scenario,
    drop_mes_message,
    hand_over,
    mes_drop_folder,
    write_plant_systems,
)
from lothub.demo_erp import DATABASE, TrytonServer, ensure_database, erp_plan
from lothub.reconcile import reconcile
from lothub.runtime import Hub
from lothub.settings import Settings, demo_sites_path
from reconciler.jobs import Mismatch
from schemas.errors import DataError
from schemas.serde import Serde, make_serde

#: the scenario happens in November 2026
SCENARIO_START = datetime(2026, 11, 1, tzinfo=UTC)
#: The demo's connector reading ALP's Tryton, and which site each Tryton warehouse is.
ERP_CONNECTOR = "tryton-alp"
WAREHOUSE_SITES = {"ALP": "ALP", "BRK": "BRK", "CRV": "CRV"}
#: kilograms a traced quantity may differ from the truth (unit conversions round)
TOLERANCE_KG = Decimal("0.001")


@dataclass
class Verdict:
    """Result of checking the hub's answers against the ground truth."""

    checked: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return self.checked > 0 and not self.failures


def verify_traces(client: httpx.Client, truth: GroundTruth) -> Verdict:
    """Check every shipped lot backward and every received lot forward over HTTP."""
    verdict = Verdict()

    def get(lot: str, direction: str) -> dict[str, Any] | None:
        response = client.get(f"/api/v1/lots/{lot}/trace", params={"direction": direction})
        verdict.checked += 1
        if response.status_code != 200:
            verdict.failures.append(
                f"{direction} trace of {lot}: HTTP {response.status_code} {response.text[:200]}"
            )
            return None
        body: dict[str, Any] = response.json()
        return body

    for lot in truth.shipped_lots():
        body = get(lot, "backward")
        if body is None:
            continue
        suppliers = {d["partner_lot"] for d in body["documents"] if d["cte"] == "RECEIVING"}
        if suppliers != truth.backward_supplier_lots(lot):
            verdict.failures.append(
                f"backward {lot}: supplier lots {sorted(suppliers)} != {sorted(truth.backward_supplier_lots(lot))}"
            )
        lots = {x["lot_id"] for x in body["lots"]}
        if lots != truth.ancestors(lot) | {lot}:
            verdict.failures.append(
                f"backward {lot}: lots {sorted(lots)} != {sorted(truth.ancestors(lot) | {lot})}"
            )
        expected = {(p, c): q for p, c, q in truth.links_within(lots)}
        got = {(e["parent_lot"], e["child_lot"]): e["quantity_used"] for e in body["edges"]}
        if set(got) != set(expected):
            verdict.failures.append(f"backward {lot}: edges {sorted(got)} != {sorted(expected)}")
        for key, quantity in got.items():
            if key in expected and (
                quantity["unit"] != "KGM"
                or abs(Decimal(quantity["value"]) - expected[key]) > TOLERANCE_KG
            ):
                verdict.failures.append(
                    f"backward {lot}: edge {key} carries {quantity}, expected {expected[key]} KGM"
                )
    for lot in sorted(truth.supplier_lots):
        body = get(lot, "forward")
        if body is None:
            continue
        customers = {d["party_name"] for d in body["documents"] if d["cte"] == "SHIPPING"}
        if customers != truth.forward_customers(lot):
            verdict.failures.append(
                f"forward {lot}: customers {sorted(customers)} != {sorted(truth.forward_customers(lot))}"
            )
    for alias, lot in sorted(truth.aliases.items()):  # licence plates from the WMS
        body = get(alias, "backward")
        if body is not None and body["root"] != lot:
            verdict.failures.append(f"alias {alias} resolved to {body['root']}, expected {lot}")
    for lot, status in sorted(truth.statuses.items()):
        body = get(lot, "backward")
        found = (
            next((x["status"] for x in body["lots"] if x["lot_id"] == lot), None) if body else None
        )
        if body is not None and found != status:
            verdict.failures.append(f"status of {lot} is {found}, expected {status}")
    for lot in truth.shipped_lots():  # any site's own code finds the lot too
        site_code = lot.split(":", 1)[1]
        body = get(site_code, "backward")
        if body is not None and body["root"] != lot:
            verdict.failures.append(f"alias {site_code} resolved to {body['root']}, expected {lot}")
    return verdict


def mes_failures(plants: Path, scenario: Scenario, parked: list[bytes]) -> list[str]:
    """What is not yet as it should be with the MES messages: each processed once or parked."""
    failures = []
    for message in scenario.mes_messages:
        folder = mes_drop_folder(plants, message.connector)
        where = "failed" if message.rejected else "processed"
        if not (folder / where / message.file_name).exists():
            failures.append(f"MES message {message.file_name} is not in {folder.name}/{where}/")
    rejected = [m.xml for m in scenario.mes_messages if m.rejected]
    if sorted(parked) != sorted(rejected):
        failures.append(
            f"{len(parked)} connector dead letter(s), expected the {len(rejected)} broken MES message(s)"
        )
    return failures


def _read_all(settings: Settings, topic: str, timeout_s: float) -> list[Any]:
    consumer = Consumer(
        {
            **settings.consumer_config(f"lothub-demo-check-{time.time_ns()}"),
            "enable.partition.eof": True,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
        records: list[Any] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(at_end) < len(metadata.partitions) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                at_end.add(msg.partition() or 0)
                continue
            records.append(msg)
        return records
    finally:
        consumer.close()


def dead_letter_ids(settings: Settings, serde: Serde, timeout_s: float = 10.0) -> set[str]:
    """Event ids of everything on the raw dead-letter topic."""
    topic = settings.topics.raw_dlq
    ids: set[str] = set()
    for msg in _read_all(settings, topic, timeout_s):
        partition, offset = msg.partition() or 0, msg.offset() or 0
        try:
            event = serde.decode(
                msg.value() or b"", topic=topic, partition=partition, offset=offset
            )
            ids.add(event.envelope.event_id)
        except DataError:
            ids.add(f"<undecodable at offset {offset}>")
    return ids


def run_scenario(
    hub: Hub, scenario: Scenario, *, plants: Path | None = None, timeout_s: float = 90.0
) -> tuple[Verdict, set[str], list[str]]:
    """Publish the scenario, then wait until the API answers it right (or time runs out).

    Returns the trace verdict, the dead letters found and what is wrong with the MES
    messages (dropped into ``plants``' folders: the late ones after the ERP events).
    """
    settings = hub.settings
    serde = make_serde(settings.schema_registry_url)
    publisher = KafkaPublisher(settings.producer_config(), serde, settings.topics.raw)
    publisher.publish(scenario.events)
    print(
        f"  published {len(scenario.events)} simulated ERP/LIMS events "
        f"({scenario.resends} re-send, {len(scenario.expected_dead_letters)} with an unmapped unit)",
        flush=True,
    )
    if plants is not None:
        late = [m for m in scenario.mes_messages if m.late]
        for message in late:
            drop_mes_message(plants, message)
        print(
            f"  MES: {len(scenario.mes_messages)} B2MML messages dropped "
            f"({len(late)} late, {sum(m.rejected for m in scenario.mes_messages)} broken, "
            "1 re-sent)",
            flush=True,
        )
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=hub.api_url, timeout=10.0) as client:
        while True:
            hub.check_alive()
            verdict = verify_traces(client, scenario.truth)
            dead = dead_letter_ids(settings, serde, 5.0)
            mes: list[str] = []
            if plants is not None:
                parked = [
                    m.value() for m in _read_all(settings, settings.topics.connector_dlq, 5.0)
                ]
                mes = mes_failures(plants, scenario, parked)
            done = verdict.ok and dead == scenario.expected_dead_letters and not mes
            if done or time.monotonic() > deadline:
                return verdict, dead, mes
            time.sleep(1.0)


def reconcile_once(hub: Hub) -> list[Mismatch]:
    """Run every reconciliation job over the scenario's month; the mismatches found."""
    assert hub.store is not None
    results = reconcile(hub.settings, hub.store, since=SCENARIO_START)
    errors = [f"{r.job}@{r.site}: {r.error}" for r in results if r.error]
    if errors:
        raise RuntimeError(f"reconciliation failed: {'; '.join(errors)}")
    return [m for r in results for m in r.mismatches]


def run_demo(settings: Settings, *, check: bool) -> int:
    """Start the hub, play the scenario; with ``check`` verify and exit, else keep serving."""
    started = time.monotonic()
    print(
        "lothub demo: starting the embedded stack (broker, stream worker, store, API)...",
        flush=True,
    )
    plants: Path | None = None
    if settings.site_config == demo_sites_path():
        plants = settings.data_dir.resolve() / "demo-plants"
    scenario = build_scenario(settings.sites(), faults=True, mes_as_b2mml=plants is not None)
    erp: TrytonServer | None = None
    with contextlib.ExitStack() as stack:
        if plants is not None:
            # The demo's plants have real systems, read by real connectors.
            plants.mkdir(parents=True, exist_ok=True)
            plan = erp_plan(scenario.events, "erp-alp")
            db = ensure_database(plan, settings.data_dir.resolve() / "tryton-cache")
            erp = TrytonServer(db, plants / "tryton-alp")
            stack.callback(erp.stop)
            erp.start()  # it loads its modules while the broker and the worker start
            scenario = hand_over(scenario, plan.event_ids)
            site_config = plants / "sites-with-connectors.toml"
            connectors_toml = write_plant_systems(plants, scenario.truth)
            connectors_toml += erp.connector_toml(ERP_CONNECTOR, "ALP", WAREHOUSE_SITES)
            site_config.write_text(demo_sites_path().read_text() + connectors_toml)
            settings = settings.model_copy(update={"site_config": site_config})
            for message in scenario.mes_messages:
                if not message.late:
                    drop_mes_message(plants, message)
            print(
                f"  plant systems in {plants}: ALP ERP (Tryton), BRK WMS database, "
                "ALP LIMS exports, ALP and CRV MES drop folders",
                flush=True,
            )
        hub = stack.enter_context(
            Hub(settings, before_connectors=None if erp is None else erp.wait_ready)
        )
        if erp is not None:
            how = f"built in {erp.db.build_seconds:.1f}s" if erp.db.build_seconds else "cached"
            print(
                f"  ALP's ERP is a live Tryton at {erp.url}/ (database {DATABASE!r}, {how}; "
                f"logins in {erp.db.folder / 'credentials.json'})",
                flush=True,
            )
        hub.wait_ready()
        if hub.access is not None and hub.access.local_mode:
            print(
                "  LOCAL MODE: no API keys configured, full access, API on loopback only",
                flush=True,
            )
        print(
            f"  hub ready in {time.monotonic() - started:.1f}s; trace API on {hub.api_url}",
            flush=True,
        )
        print(f"  web UI on {hub.api_url}/ui/", flush=True)
        verdict, dead, mes = run_scenario(hub, scenario, plants=plants)
        dead_ok = dead == scenario.expected_dead_letters
        findings = reconcile_once(hub)
        found = {(m.job, m.lots[0] if m.lots else m.key) for m in findings}
        for m in findings:
            print(f"  reconciliation: {m.job} {m.site}: {m.summary}", flush=True)
        if found != scenario.truth.mismatches:
            mes.append(
                f"reconciliation found {sorted(found)}, expected {sorted(scenario.truth.mismatches)}"
            )
        elapsed = time.monotonic() - started
        if check:
            for failure in [*verdict.failures, *mes]:
                print(f"  FAIL {failure}")
            if not dead_ok:
                print(
                    f"  FAIL dead letters {sorted(dead)} != {sorted(scenario.expected_dead_letters)}"
                )
            status = "PASS" if verdict.ok and dead_ok and not mes else "FAIL"
            mes_note = "" if plants is None else f", {len(scenario.mes_messages)} MES messages"
            mes_note += f", {len(found)} reconciliation mismatch(es)"
            print(
                f"demo check: {status} - {verdict.checked - len(verdict.failures)}/{verdict.checked} "
                f"traces right, {len(dead)}/{len(scenario.expected_dead_letters)} dead letter(s) as "
                f"expected{mes_note}{' handled' if not mes else ''}, {elapsed:.1f}s"
            )
            return 0 if status == "PASS" else 1
        lot = scenario.truth.shipped_lots()[0]
        print(
            f"\n  {'all traces verified' if verdict.ok else 'WARNING: some traces are not right yet'}."
        )
        print(f"  Try:  curl '{hub.api_url}/api/v1/lots/{lot}/trace?direction=backward'")
        print(f"        curl '{hub.api_url}/api/v1/lots/AD-5531/trace?direction=forward'")
        print(f"        curl '{hub.api_url}/api/v1/lots/L26312B/trace?direction=backward'")
        if plants is not None:
            print(f"  MES drop folders: {mes_drop_folder(plants, 'mes-alp')} (and mes-crv-drop)")
        if erp is not None:
            print(f"  ALP's ERP (Tryton JSON-RPC): {erp.url}/{DATABASE}/rpc/")
        print(f"  Genealogy in the web UI: {hub.api_url}/ui/#/lot/{lot}")
        print(f"  API docs: {hub.api_url}/docs    Stop with Ctrl-C.", flush=True)
        hub.supervise()
        return 0
