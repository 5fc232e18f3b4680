"""The web UI end to end: a real headless Chromium against the API served by uvicorn.

The demo scenario is loaded into a store and served with API keys of three roles; every
expectation comes from the scenario's ground truth. Screenshots of each page are saved
under ``var/ui-screenshots/`` (printed at the end of the module).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import select

from bench.trace_bench import build_graph
from bench.trace_bench import load as load_synthetic
from connectors.base import ConnectorStatus
from connectors.checkpoints import CheckpointStore
from connectors.simulator import GroundTruth, build_scenario
from genealogy import tables
from genealogy.alerts import upsert_alerts
from genealogy.store import GenealogyStore
from lothub.runtime import free_port
from schemas.alerts import IntegrityAlert
from schemas.model import LotEventBase
from schemas.sites import SitesConfig
from streams.integrity import SubjectState, Thresholds, facts_of, step
from tests.helpers import normalized
from trace_api.app import create_app
from trace_api.auth import AccessControl

CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/ensure-chromium.sh installs it)
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "var" / "ui-screenshots"
USERS = {"eq": ("ENTERPRISE_QUALITY", None), "sq-brk": ("SITE_QUALITY", "BRK"),
         "admin": ("INTEGRATION_ADMIN", None)}  # fmt: skip
TOLERANCE_KG = Decimal("0.001")  # unit conversions round, as in `lothub demo --check`


def key(user: str) -> str:
    return f"ui-key-of-{user}-0123456789"


def rule_alerts(events: list[LotEventBase]) -> list[IntegrityAlert]:
    """What the stream's integrity rules raise over these enterprise events, in this order."""
    states: dict[str, SubjectState] = {}
    alerts: list[IntegrityAlert] = []
    for event in events:
        for fact in facts_of(event):
            state = states.setdefault(fact.subject, SubjectState())
            alerts += step(state, [fact], Thresholds(), datetime.now(UTC))[1]
    return alerts


@dataclass
class Served:
    url: str
    store: GenealogyStore
    truth: GroundTruth
    alerts: list[IntegrityAlert]


class Server:
    """The trace API (and so the UI) on a free loopback port, in a thread, as `lothub up` runs it."""

    def __init__(self, app: object) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",  # type: ignore[arg-type]
                                lifespan="off")  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="ui-test-api", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "the API did not start within 15s"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def shots() -> Iterator[Path]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield SHOTS
    print(f"\nUI screenshots: {SHOTS}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, demo_sites: SitesConfig) -> Iterator[Served]:
    """The demo scenario in a SQLite store, served with keys of three roles; two connectors reported."""
    folder = tmp_path_factory.mktemp("ui")
    url = f"sqlite:///{folder / 'lothub.db'}"
    store = GenealogyStore.connect(url)
    store.migrate()
    scenario = build_scenario(demo_sites, faults=True)  # faults: a late receipt raises an alert
    events = normalized([e for e in scenario.events
                         if e.envelope.event_id not in scenario.expected_dead_letters], demo_sites)  # fmt: skip
    store.apply(events)
    upsert_alerts(store, rule_alerts(events))
    checkpoints = CheckpointStore.connect(url)
    healthy = ConnectorStatus(name="wms-brk", site="BRK", system="WMS", records_read=12,
                              events_published=12, last_success=datetime.now(UTC), lag_s=4.2)  # fmt: skip
    failing = ConnectorStatus(name="lims-alp", site="ALP", system="LIMS", records_read=3,
                              events_published=2, dead_lettered=1, consecutive_errors=4,
                              last_error="LIMS export folder /srv/lims is not mounted")  # fmt: skip
    for status in (healthy, failing):
        checkpoints.save_status(status.name, json.dumps(status.as_dict()))
    checkpoints.close()
    lines = []
    for user, (role, site) in USERS.items():
        lines += [f"[users.{user}]", f'role = "{role}"',
                  f'key_sha256 = "{hashlib.sha256(key(user).encode()).hexdigest()}"']  # fmt: skip
        if site:
            lines.append(f'site = "{site}"')
    keys = folder / "keys.toml"
    keys.write_text("\n".join(lines) + "\n")
    with Server(create_app(store, access=AccessControl.load(keys))) as base:
        yield Served(base, store, scenario.truth, rule_alerts(events))
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        running = playwright.chromium.launch(executable_path=CHROMIUM)
        yield running
        running.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (fresh session storage: nobody signed in); fails on any script error."""
    context = browser.new_context(viewport={"width": 1500, "height": 950}, accept_downloads=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    # an answered 401/404 is logged as "Failed to load resource": the UI handles those
    tab.on("console", lambda m: errors.append(m.text)
           if m.type == "error" and not m.text.startswith("Failed to load resource") else None)  # fmt: skip
    tab.set_default_timeout(10_000)
    yield tab
    context.close()
    assert errors == []


def sign_in(page: Page, base: str, user: str) -> None:
    page.goto(f"{base}/")  # redirects to /ui/
    page.get_by_role("button", name="Sign in with your API key").click()
    page.fill("#signin-key", key(user))
    page.click("#signin-submit")
    expect(page.get_by_test_id("who")).to_contain_text(user)


def showcase_lot(truth: GroundTruth) -> str:
    """The supplier lot that reaches the most lots (the richest forward genealogy)."""
    return max(sorted(truth.supplier_lots), key=lambda lot: len(truth.descendants(lot)))


def edge_quantities(page: Page) -> dict[tuple[str, str], tuple[Decimal, str]]:
    found = {}
    for edge in page.locator("#genealogy-graph .edge").all():
        value, unit = edge.locator("text.qty").text_content().split(" ")  # type: ignore[union-attr]
        found[(edge.get_attribute("data-parent"), edge.get_attribute("data-child"))] = (
            Decimal(value),
            unit,
        )
    return found  # type: ignore[return-value]


def hub_lot(truth: GroundTruth) -> str:
    """The lot with the most lots on both sides (a blend: suppliers behind, customers ahead)."""
    lots = {lot for link in truth.links for lot in link[:2]}
    return max(sorted(lots), key=lambda x: len(truth.ancestors(x)) + len(truth.descendants(x)))


def assert_genealogy_shown(page: Page, truth: GroundTruth, lot: str) -> set[str]:
    """The picture shows exactly the lots and link quantities of the truth; returns the lots."""
    expect(page.locator("#lot-title")).to_have_text(lot)
    expected = {lot} | truth.descendants(lot) | truth.ancestors(lot)
    nodes = page.locator("#genealogy-graph .node")
    expect(nodes).to_have_count(len(expected))
    assert {n.get_attribute("data-lot") for n in nodes.all()} == expected
    for lot_id in expected:  # each lot is named in the picture
        expect(page.locator(f'#genealogy-graph .node[data-lot="{lot_id}"] .code')).to_have_text(
            lot_id
        )
    quantities = edge_quantities(page)
    links = {(p, c): q for p, c, q in truth.links_within(expected)}
    assert set(quantities) == set(links)
    for pair, (value, unit) in quantities.items():
        assert unit == "KGM"
        assert abs(value - links[pair]) <= TOLERANCE_KG, (pair, value, links[pair])
    return expected


def test_search_by_alias_and_read_the_genealogy(page: Page, served: Served, shots: Path) -> None:
    truth = served.truth
    blend = hub_lot(truth)
    sign_in(page, served.url, "eq")
    page.fill("#lot-search", blend.split(":", 1)[1])  # the site's own lot code
    page.press("#lot-search", "Enter")
    assert_genealogy_shown(page, truth, blend)
    page.screenshot(path=shots / "genealogy.png")

    lot = showcase_lot(truth)
    supplier_lot = truth.supplier_lots[lot]
    page.fill("#lot-search", supplier_lot[:-1])  # suggestions while typing
    suggestion = page.locator(f'#lot-suggestions li[data-lot="{lot}"]')
    expect(suggestion).to_contain_text(supplier_lot)
    page.screenshot(path=shots / "search.png")
    suggestion.click()
    expected = assert_genealogy_shown(page, truth, lot)

    # a click on a lot: its aliases, documents and status history
    page.locator(f'#genealogy-graph .node[data-lot="{lot}"]').click()
    panel = page.locator("#lot-panel")
    expect(panel.locator("#panel-title")).to_have_text(lot)
    expect(panel).to_contain_text(supplier_lot)
    expect(panel.locator("#panel-documents")).to_contain_text("RECEIVING")
    expect(panel.locator("#panel-status")).to_contain_text(
        truth.statuses.get(lot, "").lower().replace("_", " ")
    )
    expect(panel.locator("#panel-events tbody tr").first).to_contain_text("LotReceived")
    page.screenshot(path=shots / "genealogy-lot-details.png")

    # the picture exports as a standalone SVG holding every lot and quantity
    with page.expect_download() as download:
        page.click("#export-svg")
    svg = Path(download.value.path()).read_text()
    assert svg.startswith("<?xml")
    assert "<svg" in svg
    assert all(lot_id in svg for lot_id in expected)
    with page.expect_download() as download:
        page.click("#export-png")
    assert Path(download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the same data as tables: every lot, and the customers the lot reached
    page.get_by_role("tab", name="Table").click()
    rows = page.locator("#lots-table tbody tr")
    expect(rows).to_have_count(len(expected))
    assert {r.get_attribute("data-lot") for r in rows.all()} == expected
    documents = page.locator("#documents-table").text_content() or ""
    assert all(customer in documents for customer in truth.forward_customers(lot))
    page.screenshot(path=shots / "genealogy-table.png", full_page=True)


def test_mock_recall_packet_and_downloads(page: Page, served: Served, shots: Path) -> None:
    truth = served.truth
    lot = showcase_lot(truth)
    sign_in(page, served.url, "eq")
    page.goto(f"{served.url}/ui/#/lot/{lot}")
    page.click("#recall-this")
    expect(page.locator("#recall-lots")).to_have_value(lot)
    page.click("#start-recall")

    expect(page.locator("#recall-summary")).to_be_visible()
    affected = {lot} | truth.descendants(lot)
    expect(page.locator('[data-tile="affected lots"] .value')).to_have_text(str(len(affected)))
    customers = truth.forward_customers(lot)
    expect(page.locator('[data-tile="customers"] .value')).to_have_text(str(len(customers)))
    assert set(page.locator("#recall-customers li").all_text_contents()) == customers
    shown = {r.get_attribute("data-lot") for r in page.locator("#recall-lots tbody tr").all()}
    assert shown == affected
    page.screenshot(path=shots / "recall.png", full_page=True)

    recall_id = page.url.rsplit("/", 1)[1]
    with page.expect_download() as download:
        page.click('#recall-exports button[data-format="csv"]')
    csv_text = Path(download.value.path()).read_text()
    assert recall_id in csv_text
    assert all(customer in csv_text for customer in customers)
    for fmt, magic in (("xlsx", b"PK"), ("pdf", b"%PDF")):  # PDF only where the API offers it
        button = page.locator(f'#recall-exports button[data-format="{fmt}"]')
        with page.expect_download() as download:
            button.click()
        assert Path(download.value.path()).read_bytes()[: len(magic)] == magic
    with page.expect_download() as download:
        page.click("#fsma204-xlsx")
    with zipfile.ZipFile(download.value.path()) as book:
        assert any(name.startswith("xl/worksheets/") for name in book.namelist())

    page.goto(f"{served.url}/ui/#/recalls")  # the recall is listed
    expect(page.locator("#recall-list")).to_contain_text(lot)


def test_site_user_sees_other_sites_redacted(page: Page, served: Served, shots: Path) -> None:
    truth = served.truth
    own = next(lot for lot in truth.shipped_lots() if lot.startswith("BRK:"))
    with served.store.engine.connect() as conn:
        others = {r.lot_id for r in conn.execute(select(tables.lots)) if r.site != "BRK"}
        hidden = others | {
            r.alias for r in conn.execute(select(tables.lot_aliases)) if r.lot_id in others
        }
    sign_in(page, served.url, "sq-brk")
    page.fill("#lot-search", own.split(":", 1)[1][:3])
    expect(page.locator(f'#lot-suggestions li[data-lot="{own}"]')).to_be_visible()
    assert all(li.get_attribute("data-lot").startswith("BRK:")  # type: ignore[union-attr]
               for li in page.locator("#lot-suggestions li").all())  # fmt: skip
    page.locator(f'#lot-suggestions li[data-lot="{own}"]').click()

    expect(page.locator("#lot-title")).to_have_text(own)
    ancestors = truth.ancestors(own)
    expect(page.locator("#genealogy-graph .node")).to_have_count(len(ancestors) + 1)
    expect(page.locator("#genealogy-graph .node.redacted")).to_have_count(
        sum(1 for lot in ancestors if not lot.startswith("BRK:"))
    )
    page.locator("#genealogy-graph .node.redacted").first.click()
    expect(page.locator("#lot-panel")).to_contain_text("Another site's lot")
    page.screenshot(path=shots / "genealogy-site-user.png")
    page.get_by_role("tab", name="Table").click()
    text = page.content()
    assert {secret for secret in hidden if secret in text} == set()

    other = sorted(others)[0]  # another site's lot answers as if it did not exist
    page.goto(f"{served.url}/ui/#/lot/{other}")
    expect(page.locator(".notice.error")).to_contain_text("No lot you may see")


def test_operations_show_connector_health(page: Page, served: Served, shots: Path) -> None:
    sign_in(page, served.url, "admin")
    expect(page.locator("#nav a[data-nav=ops]")).to_be_visible()
    expect(page.locator("#nav a[data-nav=search]")).to_be_hidden()  # no lot details for admins
    failing = page.locator('#connectors-table tr[data-connector="lims-alp"]')
    expect(failing).to_contain_text("error")
    expect(failing).to_contain_text("not mounted")
    expect(page.locator('#connectors-table tr[data-connector="wms-brk"]')).to_contain_text("ok")
    expect(page.locator('[data-tile="connectors failing"] .value')).to_have_text("1")
    page.screenshot(path=shots / "operations.png", full_page=True)


def test_alerts_show_on_their_lots_and_are_acknowledged(
    page: Page, served: Served, shots: Path
) -> None:
    assert served.alerts, "the scenario's faults raise at least one integrity alert"
    alert = served.alerts[0]
    lot = alert.lots[0]
    sign_in(page, served.url, "eq")
    page.goto(f"{served.url}/ui/#/lot/{lot}")
    expect(page.locator(f'#genealogy-graph .node[data-lot="{lot}"] .alert-badge')).to_have_text(
        re.compile(rf"^!{sum(lot in a.lots for a in served.alerts)}")
    )
    page.locator(f'#genealogy-graph .node[data-lot="{lot}"]').click()
    expect(page.locator("#lot-panel")).to_contain_text(alert.rule.value)

    page.goto(f"{served.url}/ui/#/ops")
    expect(page.locator('[data-tile="open alerts"] .value')).to_have_text(str(len(served.alerts)))
    row = page.locator(f'#alerts-table tr[data-alert="{alert.alert_id}"]')
    expect(row).to_contain_text(alert.summary[:40])
    row.locator("button.ack").click()
    page.fill("#comment-text", "checking the ERP interface queue")
    page.click("#comment-submit")
    row = page.locator(f'#alerts-table tr[data-alert="{alert.alert_id}"]')  # the list reloads
    expect(row.locator(".alert-status")).to_have_text("acknowledged")
    expect(row).to_contain_text("acknowledged by eq")
    expect(row).to_contain_text("checking the ERP interface queue")
    expect(page.locator('[data-tile="open alerts"] .value')).to_have_text(
        str(len(served.alerts) - 1)
    )
    page.screenshot(path=shots / "operations-alerts.png", full_page=True)
    row.locator("button.resolve").click()
    page.click("#comment-submit")  # resolving needs a comment
    expect(page.locator("#comment-error")).to_contain_text("Say what resolved")
    page.fill("#comment-text", "interface queue drained; receipt is in")
    page.click("#comment-submit")
    expect(page.locator(f'#alerts-table tr[data-alert="{alert.alert_id}"]')).to_have_count(0)
    page.select_option("#alert-status", "resolved")  # filters reload the list
    expect(page.locator(f'#alerts-table tr[data-alert="{alert.alert_id}"]')).to_contain_text(
        "interface queue drained"
    )


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, int]]:
    """A synthetic layered genealogy; the last layer's first lot has 1,080 lots behind it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('ui-large') / 'large.db'}"
    store = GenealogyStore.connect(url)
    store.migrate()
    layers, edges = build_graph(lots=2000, depth=20, fan_in=2)
    load_synthetic(store, layers, edges)
    with Server(create_app(store)) as base:  # local mode: no key needed
        yield base, layers[-1][0], 1080
    store.close()


def test_a_thousand_lot_genealogy_opens_collapsed_and_expands(
    page: Page, large: tuple[str, str, int], shots: Path
) -> None:
    base, root, reached = large
    page.goto(f"{base}/ui/#/lot/{root}?direction=backward")
    expect(page.locator("#trace-summary")).to_contain_text(f"{reached} lots")
    shown = int(page.locator("#genealogy-graph").get_attribute("data-shown") or 0)
    assert 0 < shown <= 300  # opens collapsed to a depth
    toggle = page.locator("#genealogy-graph .toggle").first
    hidden = int((toggle.locator("text").text_content() or "").lstrip("+"))
    toggle.click()
    expect(page.locator("#genealogy-graph")).to_have_attribute("data-shown", str(shown + hidden))
    page.select_option("#depth", "all")
    expect(page.locator("#genealogy-graph .node")).to_have_count(reached)
    page.mouse.move(700, 500)
    page.mouse.wheel(0, 600)  # zoomed out: labels give way
    expect(page.locator("#genealogy-graph")).to_have_class(re.compile(r"\bfar\b"))
    page.screenshot(path=shots / "genealogy-1000-lots.png")
