"""A real Tryton database for the Tryton connector tests, entered through proteus.

The story (company "Alpenwerk Foods AG", time zone Europe/Zurich, two warehouses:
the plant ``WH`` and the distribution centre ``DC``; every product requires a lot)::

    PO from Alpine Dairy   -> receipt of milk powder lot R-26001 (1000 kg), the supplier's
                              lot AD-5531 in the receipt's reference
    PO from Cocoa Partners -> one receipt of cocoa lots R-26002 (400 kg) and R-26003 (300 kg),
                              quality-inspected on receipt (moisture, visual: passed)
    production MO          -> consumes 800 kg of R-26001 and 150 kg of R-26002 (partial use),
                              produces 900 tins of P-26001
    internal shipment      -> 300 tins of P-26001 from WH to DC, through the transit location
    sale to Café Bergblick -> 400 tins of P-26001 shipped from WH
    sale to Lago Retail    -> 200 tins of P-26001 shipped from DC
    customer return        -> Café Bergblick sends 20 tins of P-26001 back to WH
    supplier return        -> 30 kg of R-26003 go back to Cocoa Partners
    inventory count        -> R-26003 counted 265 kg instead of 270 kg (5 kg lost)
    quality inspection     -> a retained sample of P-26001 fails its microbiology test
    mistaken receipt       -> R-26004 (100 kg milk powder) received, then the receipt cancelled

R-26003 never enters production, so its forward trace stays a single lot.

The database is built in two steps, both in child processes:

1. ``trytond-admin --all -u ...`` creates the SQLite database and activates the modules;
2. this file, run as a script, enters the story with proteus (``proteus.config.set_trytond``).

The scenario runs on Tryton 7.0, 8.0 and 8.2 (the few differences are handled where
they occur; ``LOTHUB_TEST_TRYTON_PYTHON`` picks the Tryton installation). Both steps run
outside the pytest process on purpose: importing trytond sets the process time
zone to UTC (``os.environ['TZ']``) and keeps global configuration, which must not leak
into the tests. Nothing is cached outside the directory the caller passes.

Example::

    db = build_database(tmp_path)          # ~30 s on two cores
    # then start `trytond -c db.config` and read it over JSON-RPC
"""

# proteus models are classes and keep their CamelCase names, as in Tryton's own scenarios
# ruff: noqa: N806

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

#: The Tryton modules the scenario needs (dependencies are activated with them).
MODULES = ("stock_lot", "production", "sale", "purchase", "quality")
DATABASE = "lothub"
ADMIN_LOGIN = "admin"
ADMIN_PASSWORD = "admin-Lothub-7"  # a local test database on loopback only
#: The user the connector logs in as, in the groups whose documents it reads (Tryton has
#: no read-only groups; the connector only ever reads).
READER_LOGIN = "lothub"
READER_PASSWORD = "reader-Lothub-7"


@dataclass(frozen=True)
class TrytonDatabase:
    """A built database: where its configuration is and what it took."""

    workdir: Path
    config: Path
    database: str
    summary: dict[str, Any]
    init_seconds: float
    scenario_seconds: float


#: The Python whose trytond, trytond-admin and proteus the tests use: the project's venv,
#: or another one to test another Tryton series (e.g. a venv with trytond 7.0, the LTS).
TRYTON_PYTHON = os.environ.get("LOTHUB_TEST_TRYTON_PYTHON") or sys.executable


def trytond_bin(name: str) -> str:
    """A Tryton console script next to :data:`TRYTON_PYTHON`."""
    return str(Path(TRYTON_PYTHON).with_name(name))


def write_config(workdir: Path, *, listen: str = "127.0.0.1:0", name: str = "trytond.conf") -> Path:
    """A trytond configuration: SQLite files in ``workdir``, HTTP on ``listen``."""
    config = workdir / name
    config.write_text(
        "[database]\n"
        "uri = sqlite://\n"
        f"path = {workdir}\n"
        "[web]\n"
        f"listen = {listen}\n"
        "[session]\n"
        # the tests log in a few times from one address; keep the limiter out of the way
        "max_attempt = 50\n",
        encoding="utf-8",
    )
    return config


def child_env(workdir: Path) -> dict[str, str]:
    """Environment of the trytond children: the admin password file, and UTC as trytond wants."""
    password_file = workdir / "admin-password"
    password_file.write_text(ADMIN_PASSWORD + "\n", encoding="utf-8")
    env = dict(os.environ)
    env.update({"TRYTONPASSFILE": str(password_file), "TZ": "UTC"})
    return env


def build_database(workdir: Path) -> TrytonDatabase:
    """Create the database in ``workdir`` and enter the scenario; raises if a step fails."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir)
    env = child_env(workdir)
    (workdir / f"{DATABASE}.sqlite").touch()  # trytond's SQLite backend opens, never creates
    started = time.monotonic()
    _run(
        [trytond_bin("trytond-admin"), "-c", str(config), "-d", DATABASE, "--all",
         "--activate-dependencies", "-u", *MODULES, "--email", "admin@alpenwerk.example"],
        env, workdir / "trytond-admin.log",
    )  # fmt: skip
    init_seconds = time.monotonic() - started
    started = time.monotonic()
    out = _run(
        [TRYTON_PYTHON, __file__, "--config", str(config), "--database", DATABASE],
        env, workdir / "scenario.log",
    )  # fmt: skip
    summary = json.loads(out.strip().splitlines()[-1])
    return TrytonDatabase(workdir, config, DATABASE, summary, init_seconds,
                          time.monotonic() - started)  # fmt: skip


def _run(cmd: list[str], env: dict[str, str], log: Path) -> str:
    result = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
    )
    log.write_text(result.stdout + "\n--- stderr ---\n" + result.stderr, encoding="utf-8")
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise RuntimeError(f"{cmd[0]} failed with {result.returncode} (log {log}):\n{tail}")
    return result.stdout


# --- the scenario, run in the child process -------------------------------------------


def enter_scenario(config_file: str, database: str) -> dict[str, Any]:
    """Enter the story with proteus; returns what the tests may want to know."""
    # imported here: only the child process may load trytond (see the module docstring)
    from proteus import Model, Wizard, config  # type: ignore[import-untyped]
    from trytond.modules.company.tests.tools import (  # type: ignore[import-untyped]
        create_company,
    )
    from trytond.modules.currency.tests.tools import (  # type: ignore[import-untyped]
        get_currency,
    )

    cfg = config.set_trytond(database=database, user=ADMIN_LOGIN, config_file=config_file)
    today = date.today()
    day = {n: today - timedelta(days=7 - n) for n in range(8)}  # day[0] a week ago .. day[7]

    Party = Model.get("party.party")
    Company = Model.get("company.company")
    User = Model.get("res.user")
    Employee = Model.get("company.employee")
    Group = Model.get("res.group")
    UoM = Model.get("product.uom")
    Template = Model.get("product.template")
    Location = Model.get("stock.location")
    Lot = Model.get("stock.lot")
    Move = Model.get("stock.move")
    Purchase = Model.get("purchase.purchase")
    Sale = Model.get("sale.sale")
    ShipmentIn = Model.get("stock.shipment.in")
    ShipmentInternal = Model.get("stock.shipment.internal")
    Production = Model.get("production")
    Inventory = Model.get("stock.inventory")
    Sequence = Model.get("ir.sequence")
    Control = Model.get("quality.control")
    Inspection = Model.get("quality.inspection")

    # company, its time zone, and an employee so inspections name who decided
    company_party = Party(name="Alpenwerk Foods AG")
    company_party.addresses[0].street = "Industriestrasse 12"
    company_party.addresses[0].postal_code = "7000"
    company_party.addresses[0].city = "Chur"
    company_party.save()
    create_company(party=company_party, currency=get_currency("CHF"))
    company, = Company.find()  # fmt: skip
    company.timezone = "Europe/Zurich"
    company.save()
    qa_party = Party(name="Petra Caduff")
    qa_party.save()
    qa = Employee(party=qa_party, company=company)
    qa.save()
    admin = User(cfg.user)
    admin.employees.append(qa)
    admin.employee = qa
    admin.save()
    cfg._context = User.get_preferences(True, {})

    # the connector's user: the groups whose documents it reads (it only ever reads)
    reader = User(name="lothub connector", login=READER_LOGIN, password=READER_PASSWORD)
    reader.companies.append(Company(company.id))
    reader.company = Company(company.id)
    reader.groups.extend(
        Group.find([("name", "in", ["Stock", "Production", "Quality", "Sales", "Purchase"])])
    )
    reader.save()

    # document numbers as a plant would see them (Tryton's sequences have no prefix)
    prefixes = {"Supplier Shipment": "IN/", "Customer Shipment": "OUT/",
                "Internal Shipment": "INT/", "Customer Return Shipment": "RET/",
                "Supplier Return Shipment": "SRET/", "Inventory": "INV/", "Production": "MO/",
                "Purchase": "PO/", "Sale": "SO/", "Quality Inspection": "QI/"}  # fmt: skip
    for sequence in Sequence.find([("name", "in", list(prefixes))]):
        sequence.prefix = prefixes[sequence.name]
        sequence.save()

    # warehouses: the plant keeps the default one, renamed; the DC is a copy of it
    wh, = Location.find([("type", "=", "warehouse")])  # fmt: skip
    wh.name = "Alpenwerk plant Chur"
    wh.address = company_party.addresses[0]
    wh.save()
    dc_values = {"name": "Alpenwerk DC Zurich", "code": "DC", "address": None}
    dc, = wh.duplicate(default=dc_values)  # fmt: skip
    for zone, code in [(dc.input_location, "DC-IN"), (dc.output_location, "DC-OUT"),
                       (dc.storage_location, "DC-STO")]:  # fmt: skip
        zone.code = code
        zone.save()

    kg, = UoM.find([("symbol", "=", "kg")])  # fmt: skip
    unit, = UoM.find([("name", "=", "Unit")])  # fmt: skip

    def step(record: Any, button: str) -> None:
        """A workflow step newer series have (packing internal shipments, shipping customer
        shipments, both since 7.2); Tryton 7.0 goes straight on."""
        # proteus raises TypeError "<button> is not callable" where the step does not exist
        with contextlib.suppress(TypeError):
            record.click(button)

    def finish(record: Any) -> None:
        """The "done" button: ``do`` since Tryton 7.2, ``done`` in 7.0 (kept for the LTS)."""
        try:
            record.click("do")
        except TypeError:  # proteus: "do is not callable" on a series without that button
            record.click("done")

    def product(code: str, name: str, uom: Any, *, producible: bool = False) -> Any:
        template = Template(name=name, code=code, type="goods", default_uom=uom)
        template.purchasable = not producible
        template.salable = producible
        template.producible = producible
        template.list_price = Decimal(10)
        template.lot_required = ["supplier", "customer", "storage", "production", "lost_found"]
        template.save()
        return template.products[0]

    milk = product("MP-100", "Skimmed milk powder", kg)
    cocoa = product("CO-200", "Cocoa powder 10/12", kg)
    tins = product("CD-910", "Cocoa drink 1 kg tin", unit, producible=True)

    def lot(number: str, item: Any) -> Any:
        record = Lot(number=number, product=item)
        record.save()
        return record

    dairy = Party(name="Alpine Dairy Co", code="V-1001")
    dairy.addresses[0].street = "Bahnhofstrasse 4"
    dairy.addresses[0].postal_code = "7302"
    dairy.addresses[0].city = "Landquart"
    dairy.save()
    cocoa_co = Party(name="Cocoa Partners BV", code="V-2040")
    cocoa_co.save()
    bergblick = Party(name="Café Bergblick", code="C-5001")
    bergblick.addresses[0].street = "Obere Gasse 9"
    bergblick.addresses[0].city = "Chur"
    bergblick.save()
    lago = Party(name="Lago Retail AG", code="C-5002")
    lago.save()

    # quality control on every supplier receipt of cocoa
    receipt_control = Control(name="Cocoa receiving check", product=cocoa)
    receipt_control.operations = ["stock.shipment.in:receive"]
    point = receipt_control.points.new()
    point.string, point.name, point.type_ = "Moisture %", "moisture", "float"
    point.tolerance_upper = 5.0
    point = receipt_control.points.new()
    point.string, point.name, point.type_ = "Visual OK", "visual_ok", "boolean"
    receipt_control.save()

    def purchase(supplier: Any, lines: list[tuple[Any, float]]) -> Any:
        order = Purchase(party=supplier, invoice_method="manual", warehouse=wh)
        for item, quantity in lines:
            line = order.lines.new(product=item, quantity=quantity, unit_price=Decimal(3))
            line.unit = item.default_uom
        order.click("quote")
        order.click("confirm")
        return order

    def receive(supplier: Any, order: Any, lots: list[Any], when: date,
                inspect: dict[str, Any] | None = None, reference: str | None = None) -> Any:  # fmt: skip
        shipment = ShipmentIn(supplier=supplier, warehouse=wh, effective_date=when,
                              reference=reference)  # fmt: skip
        for move, lot_ in zip(order.moves, lots, strict=True):
            shipment.incoming_moves.append(Move(move.id))
            shipment.incoming_moves[-1].lot = lot_
        shipment.save()
        result = shipment.click("receive")
        if inspect is not None:  # the control asks for an inspection first (a wizard)
            result.form.points = inspect
            result.execute("save")
            shipment.click("receive")
        finish(shipment)
        return shipment

    r1, r2, r3 = lot("R-26001", milk), lot("R-26002", cocoa), lot("R-26003", cocoa)
    po1 = purchase(dairy, [(milk, 1000)])
    receive(dairy, po1, [r1], day[0], reference="AD-5531")  # the supplier's lot, as delivered
    po2 = purchase(cocoa_co, [(cocoa, 400), (cocoa, 300)])
    receive(cocoa_co, po2, [r2, r3], day[0], inspect={"moisture": 3.8, "visual_ok": True})

    # production: partial use of two lots, one output lot
    p1 = lot("P-26001", tins)
    production = Production(warehouse=wh, effective_date=day[1], effective_start_date=day[1])
    production.product = tins
    production.unit = unit
    production.quantity = 900
    # locations spelled out: Tryton 7.0 does not derive them from the warehouse
    production.location = wh.production_location
    for item, lot_, quantity in [(milk, r1, 800), (cocoa, r2, 150)]:
        move = production.inputs.new(product=item, quantity=quantity)
        move.unit = item.default_uom
        move.lot = lot_
        move.from_location, move.to_location = wh.storage_location, production.location
    output = production.outputs.new(product=tins, quantity=900)
    output.unit = unit
    output.from_location, output.to_location = production.location, wh.storage_location
    output.lot = p1
    output.unit_price = Decimal(2)
    output.currency = company.currency
    production.click("wait")
    production.click("assign_force")
    production.click("run")
    finish(production)

    # internal shipment WH -> DC through the transit location
    internal = ShipmentInternal(
        from_location=wh.storage_location, to_location=dc.storage_location,
        planned_start_date=day[2], planned_date=day[3],
    )  # fmt: skip
    move = internal.moves.new(product=tins, quantity=300, lot=p1)
    move.from_location = internal.from_location
    move.to_location = internal.to_location
    move.unit = unit
    internal.click("wait")
    internal.click("assign_force")
    internal.effective_start_date = day[2]
    step(internal, "pack")
    internal.click("ship")
    internal.effective_date = day[3]
    finish(internal)

    def sell(customer: Any, warehouse: Any, quantity: float, when: date) -> Any:
        order = Sale(party=customer, invoice_method="manual", warehouse=warehouse)
        line = order.lines.new(product=tins, quantity=quantity, unit_price=Decimal(6))
        line.unit = unit
        order.click("quote")
        order.click("confirm")
        shipment, = order.shipments  # fmt: skip
        for move in shipment.inventory_moves:
            move.lot = p1
        shipment.effective_date = when
        shipment.save()
        shipment.click("assign_force")
        shipment.click("pick")
        shipment.click("pack")
        step(shipment, "ship")
        finish(shipment)
        return order

    first_sale = sell(bergblick, wh, 400, day[3])
    sell(lago, dc, 200, day[4])

    # Café Bergblick sends 20 tins back to the plant: Tryton's own return-sale wizard
    # (a sale of -20 tins whose return shipment has the sale line as origin)
    Wizard("sale.return_sale", [first_sale]).execute("return_")
    returned, = Sale.find([("state", "=", "draft")])  # fmt: skip
    returned.lines[0].quantity = -20
    returned.reference = "RMA-0007 dented tins"
    returned.click("quote")
    returned.click("confirm")
    back, = returned.shipment_returns  # fmt: skip
    back.effective_date = day[5]
    for move in back.incoming_moves:
        move.lot = p1
    back.save()
    back.click("receive")
    for move in back.inventory_moves:
        move.lot = p1
    back.save()
    finish(back)

    # 30 kg of R-26003 go back to Cocoa Partners: the return-purchase wizard
    Wizard("purchase.return_purchase", [po2]).execute("return_")
    po_return, = Purchase.find([("state", "=", "draft")])  # fmt: skip
    po_return.lines.remove(po_return.lines[0])  # R-26002's line: kept
    po_return.lines[0].quantity = -30
    po_return.click("quote")
    po_return.click("confirm")
    ret, = po_return.shipment_returns  # fmt: skip
    ret.effective_date = day[5]
    for move in ret.moves:
        move.lot = r3
    ret.save()
    if ret.state == "draft":  # the purchase already put it in "waiting"
        ret.click("wait")
    ret.click("assign_force")
    finish(ret)

    # inventory count: 5 kg of R-26003 missing
    inventory = Inventory(location=wh.storage_location, date=day[6])
    line = inventory.lines.new(product=cocoa, lot=r3)
    line.quantity = 265
    inventory.click("confirm")

    # a retained sample of the produced lot fails afterwards (no operation: a manual check)
    micro = Control(name="Microbiology retained sample")
    point = micro.points.new()
    point.string, point.name, point.type_ = "Enterobacteriaceae cfu/g", "entero", "float"
    point.tolerance_upper = 10.0
    micro.save()
    inspection = Inspection(control=micro, origin=production)
    if "reference" in Inspection._fields:  # since Tryton 7.2
        inspection.reference = "retained sample"
    inspection.points = {"entero": 140.0}
    inspection.click("process")

    # a receipt entered by mistake: done, then cancelled by the stock-cancellation group
    r4 = lot("R-26004", milk)
    po3 = purchase(dairy, [(milk, 100)])
    mistake = receive(dairy, po3, [r4], day[6])
    mistake.click("cancel")  # Tryton 7.0 cannot cancel a done shipment: it stays done

    return {
        "days": {str(n): d.isoformat() for n, d in day.items()},
        "company_id": company.id,
        "warehouses": {"WH": wh.id, "DC": dc.id},
        "lots": {n: x.id for n, x in
                 {"R-26001": r1, "R-26002": r2, "R-26003": r3, "P-26001": p1,
                  "R-26004": r4}.items()},
        "production": production.number,
        "failed_inspection": inspection.number,
        "inspection_state": inspection.state,
        "receipt_cancelled": ShipmentIn(mistake.id).state == "cancelled",
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Entry point of the child process: enter the scenario, print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--database", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(enter_scenario(args.config, args.database)))


if __name__ == "__main__":
    main()
