"""``lothub demo``: the whole hub plus the two-site plant simulator.

With ``--check`` the scenario runs to completion, every expected trace is checked
through the HTTP API against the simulator's ground truth, one summary line is
printed and the exit status says pass (0) or fail (1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from confluent_kafka import Consumer, TopicPartition

from connectors.publisher import KafkaPublisher
from connectors.simulator import GroundTruth, Scenario, build_scenario, write_plant_systems
from lothub.runtime import Hub
from lothub.settings import Settings, demo_sites_path
from schemas.errors import DataError
from schemas.serde import Serde, make_serde

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


def dead_letter_ids(settings: Settings, serde: Serde, timeout_s: float = 10.0) -> set[str]:
    """Event ids of everything on the raw dead-letter topic."""
    topic = settings.topics.raw_dlq
    consumer = Consumer(
        {
            **settings.consumer_config(f"lothub-demo-check-{time.time_ns()}"),
            "enable.partition.eof": True,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
        ids: set[str] = set()
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(at_end) < len(metadata.partitions) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            partition, offset = msg.partition() or 0, msg.offset() or 0
            if msg.error():
                at_end.add(partition)
                continue
            try:
                event = serde.decode(
                    msg.value() or b"", topic=topic, partition=partition, offset=offset
                )
                ids.add(event.envelope.event_id)
            except DataError:
                ids.add(f"<undecodable at offset {offset}>")
        return ids
    finally:
        consumer.close()


def run_scenario(
    hub: Hub, scenario: Scenario, *, timeout_s: float = 90.0
) -> tuple[Verdict, set[str]]:
    """Publish the scenario, then wait until the API answers it right (or time runs out)."""
    settings = hub.settings
    serde = make_serde(settings.schema_registry_url)
    publisher = KafkaPublisher(settings.producer_config(), serde, settings.topics.raw)
    publisher.publish(scenario.events)
    print(
        f"  published {len(scenario.events)} raw events from 2 sites "
        f"({scenario.resends} re-send, {len(scenario.expected_dead_letters)} with an unmapped unit)",
        flush=True,
    )
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=hub.api_url, timeout=10.0) as client:
        while True:
            hub.check_alive()
            verdict = verify_traces(client, scenario.truth)
            dead = dead_letter_ids(settings, serde, 5.0)
            if (
                verdict.ok and dead == scenario.expected_dead_letters
            ) or time.monotonic() > deadline:
                return verdict, dead
            time.sleep(1.0)


def run_demo(settings: Settings, *, check: bool) -> int:
    """Start the hub, play the scenario; with ``check`` verify and exit, else keep serving."""
    started = time.monotonic()
    print(
        "lothub demo: starting the embedded stack (broker, stream worker, store, API)...",
        flush=True,
    )
    scenario = build_scenario(settings.sites(), faults=True)
    if settings.site_config == demo_sites_path():
        # The demo's plants also have a WMS database and LIMS exports, read by real connectors.
        plants = settings.data_dir.resolve() / "demo-plants"
        site_config = plants / "sites-with-connectors.toml"
        connectors_toml = write_plant_systems(plants, scenario.truth)
        site_config.write_text(demo_sites_path().read_text() + connectors_toml)
        settings = settings.model_copy(update={"site_config": site_config})
        print(f"  plant systems: BRK WMS database and ALP LIMS exports in {plants}", flush=True)
    with Hub(settings) as hub:
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
        verdict, dead = run_scenario(hub, scenario)
        dead_ok = dead == scenario.expected_dead_letters
        elapsed = time.monotonic() - started
        if check:
            for failure in verdict.failures:
                print(f"  FAIL {failure}")
            if not dead_ok:
                print(
                    f"  FAIL dead letters {sorted(dead)} != {sorted(scenario.expected_dead_letters)}"
                )
            status = "PASS" if verdict.ok and dead_ok else "FAIL"
            print(
                f"demo check: {status} - {verdict.checked - len(verdict.failures)}/{verdict.checked} "
                f"traces right, {len(dead)}/{len(scenario.expected_dead_letters)} dead letter(s) as "
                f"expected, {elapsed:.1f}s"
            )
            return 0 if status == "PASS" else 1
        lot = scenario.truth.shipped_lots()[0]
        print(
            f"\n  {'all traces verified' if verdict.ok else 'WARNING: some traces are not right yet'}."
        )
        print(f"  Try:  curl '{hub.api_url}/api/v1/lots/{lot}/trace?direction=backward'")
        print(f"        curl '{hub.api_url}/api/v1/lots/AD-5531/trace?direction=forward'")
        print(f"  API docs: {hub.api_url}/docs    Stop with Ctrl-C.", flush=True)
        hub.supervise()
        return 0
