"""Site ALP's ERP for ``lothub demo``: a live Tryton server built from the scenario.

The simulator's ALP ERP story (supplier receipts, the split work order, the transfers to
BRK and CRV, the shipment to a customer) is turned into an :class:`ErpPlan`, entered into
a SQLite Tryton database through proteus and served by ``trytond`` on a free loopback
port, where the ``tryton`` connector reads it like any plant's ERP.

Building the database (``trytond-admin`` activating the modules, then proteus entering
the plan) takes about 50 s on two cores, so the built database is kept as a template under
``<data dir>/tryton-cache/<plan hash>/``; a later demo with the same plan and Tryton
version copies it and starts in a second or two. A new build removes the older templates.

Both build steps run in child processes: importing trytond sets the process time zone
to UTC and keeps global configuration, which must not leak into the hub's process.

Example::

    plan = erp_plan(scenario.events, "erp-alp")
    db = ensure_database(plan, data_dir / "tryton-cache")
    with TrytonServer(db, data_dir / "demo-plants" / "tryton-alp") as server:
        print(server.url)
"""

# proteus models are classes and keep their CamelCase names, as in Tryton's own scenarios
# ruff: noqa: N806

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from lothub.runtime import free_port
from schemas.errors import ConfigurationError, FatalError
from schemas.model import LotEventBase, LotReceived, LotShipped, TransferShipped, Transformation

#: The Tryton modules the demo's ERP needs (their dependencies are activated with them).
MODULES = ("stock_lot", "production", "sale", "purchase")
DATABASE = "alpenwerk"
ADMIN_LOGIN = "admin"
#: The user the connector logs in as (Tryton has no read-only groups; it only reads).
READER_LOGIN = "lothub"
#: Tryton code of the plant's own warehouse; the other sites' warehouses take their site codes.
HOME_WAREHOUSE = "ALP"


@dataclass(frozen=True)
class Partner:
    """A supplier or customer: its code and name in the ERP."""

    code: str
    name: str


@dataclass(frozen=True)
class Receipt:
    """A purchase order received as one lot."""

    lot: str
    product: str
    kg: str
    supplier: Partner
    supplier_lot: str
    po: str
    day: str


@dataclass(frozen=True)
class WorkOrder:
    """A production (here: a split) with its input and output lots, ``(lot, product, kg)``."""

    number: str
    day: str
    inputs: list[tuple[str, str, str]]
    outputs: list[tuple[str, str, str]]


@dataclass(frozen=True)
class Transfer:
    """An internal shipment of one lot to another site's warehouse, shipped, not yet received."""

    number: str
    lot: str
    product: str
    kg: str
    to_site: str
    to_name: str
    day: str


@dataclass(frozen=True)
class Sale:
    """A customer shipment of one lot."""

    lot: str
    product: str
    kg: str
    customer: Partner
    day: str


@dataclass
class ErpPlan:
    """What ALP's ERP holds, in the order it happened; JSON in and out (the child reads it)."""

    products: dict[str, str] = field(default_factory=dict)  # code -> name
    receipts: list[Receipt] = field(default_factory=list)
    work_orders: list[WorkOrder] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    sales: list[Sale] = field(default_factory=list)
    #: the simulated events the plan stands for (the demo does not publish them)
    event_ids: set[str] = field(default_factory=set)

    def to_json(self) -> str:
        """The plan as canonical JSON (its hash keys the cached database)."""
        data = asdict(self)
        data["event_ids"] = sorted(self.event_ids)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ErpPlan:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        return cls(
            products=data["products"],
            receipts=[
                Receipt(**{**r, "supplier": Partner(**r["supplier"])}) for r in data["receipts"]
            ],
            work_orders=[
                WorkOrder(
                    w["number"],
                    w["day"],
                    [tuple(x) for x in w["inputs"]],
                    [tuple(x) for x in w["outputs"]],
                )
                for w in data["work_orders"]
            ],
            transfers=[Transfer(**t) for t in data["transfers"]],
            sales=[Sale(**{**s, "customer": Partner(**s["customer"])}) for s in data["sales"]],
            event_ids=set(data["event_ids"]),
        )


def _kg(value: Decimal, unit: str, what: str) -> str:
    if unit.lower() != "kg":
        raise ValueError(f"the demo's Tryton keeps kilograms; {what} is in {unit!r}")
    return f"{value.normalize():f}"


def erp_plan(events: Iterable[LotEventBase], instance: str) -> ErpPlan:
    """The stock story of ERP ``instance`` among the scenario's ``events``, as a Tryton plan.

    Receipts, transformations, transfers shipped and customer shipments become Tryton
    documents; anything else of that ERP (status changes) is left to the caller. An event
    sent twice (a re-send fault) is entered once.
    """
    plan = ErpPlan()
    for event in events:
        env = event.envelope
        if env.source.system_instance != instance or env.event_id in plan.event_ids:
            continue
        day = env.occurred_at.date().isoformat()
        if isinstance(event, LotReceived):
            plan.products[event.item.item_code] = event.item.description or event.item.item_code
            plan.receipts.append(Receipt(
                lot=event.lot, product=event.item.item_code,
                kg=_kg(event.quantity.value, event.quantity.unit, f"receipt {event.lot}"),
                supplier=Partner(event.supplier.party_id, event.supplier.name),
                supplier_lot=event.supplier_lot or event.lot,
                po=event.reference_document.number if event.reference_document else event.lot,
                day=day,
            ))  # fmt: skip
        elif isinstance(event, Transformation):
            for side in (*event.inputs, *event.outputs):
                plan.products[side.item.item_code] = side.item.description or side.item.item_code

            def lots(sides: Iterable[Any], number: str = event.transformation_id) -> list[Any]:
                return [(s.lot, s.item.item_code, _kg(s.quantity.value, s.quantity.unit, number))
                        for s in sides]  # fmt: skip

            plan.work_orders.append(WorkOrder(event.transformation_id, day,
                                              lots(event.inputs), lots(event.outputs)))  # fmt: skip
        elif isinstance(event, TransferShipped):
            if not event.to_location.site:
                raise ValueError(f"transfer {event.transfer_id} names no destination site")
            plan.transfers.append(Transfer(
                number=event.transfer_id, lot=event.lot, product=event.item.item_code,
                kg=_kg(event.quantity.value, event.quantity.unit, event.transfer_id),
                to_site=event.to_location.site, to_name=event.to_location.name or "",
                day=day,
            ))  # fmt: skip
        elif isinstance(event, LotShipped):
            plan.sales.append(Sale(
                lot=event.lot, product=event.item.item_code,
                kg=_kg(event.quantity.value, event.quantity.unit, f"shipment of {event.lot}"),
                customer=Partner(event.customer.party_id, event.customer.name), day=day,
            ))  # fmt: skip
        else:
            continue
        plan.event_ids.add(env.event_id)
    return plan


# --- the built database ------------------------------------------------------------------


@dataclass(frozen=True)
class ErpDatabase:
    """A built Tryton database template and the logins it was built with."""

    folder: Path
    reader_password: str
    admin_password: str
    #: seconds the build took (0 when the cached template was used)
    build_seconds: float

    @property
    def sqlite_file(self) -> Path:
        """The database file (trytond names it ``<database>.sqlite``)."""
        return self.folder / f"{DATABASE}.sqlite"


def _script(name: str) -> str:
    """A Tryton console script of this Python's installation (the venv's)."""
    return str(Path(sys.executable).with_name(name))


def tryton_version() -> str:
    """The installed trytond version; ConfigurationError with the fix if it is missing."""
    try:
        return importlib.metadata.version("trytond")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ConfigurationError(
            "the demo runs site ALP's ERP on a live Tryton server, and trytond is not "
            "installed; run `make setup` (or `pip install 'lothub[demo]'`) and start the demo again"
        ) from exc


def plan_hash(plan: ErpPlan) -> str:
    """Key of the cached template: the plan, the Tryton version and this builder's code."""
    digest = hashlib.sha256()
    digest.update(plan.to_json().encode())
    digest.update(tryton_version().encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def _config(folder: Path, listen: str) -> Path:
    config = folder / "trytond.conf"
    config.write_text(
        f"[database]\nuri = sqlite://\npath = {folder}\n[web]\nlisten = {listen}\n",
        encoding="utf-8",
    )
    return config


def _env() -> dict[str, str]:
    # trytond keeps naive UTC timestamps and expects its process to run in UTC
    return {**os.environ, "TZ": "UTC"}


def _run(cmd: list[str], env: dict[str, str], log: Path) -> str:
    result = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
    )
    log.write_text(result.stdout + "\n--- stderr ---\n" + result.stderr, encoding="utf-8")
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise FatalError(
            f"building the demo's Tryton database failed: {cmd[0]} exited with "
            f"{result.returncode}; the full log is {log}, the last lines:\n{tail}"
        )
    return result.stdout


def ensure_database(plan: ErpPlan, cache: Path) -> ErpDatabase:
    """The database for ``plan``: the cached template if there is one, else built and cached."""
    folder = cache / plan_hash(plan)
    credentials = folder / "credentials.json"
    if credentials.exists():
        logins = json.loads(credentials.read_text(encoding="utf-8"))
        return ErpDatabase(folder, logins["reader"], logins["admin"], 0.0)
    started = time.monotonic()
    building = cache / f".{folder.name}.{os.getpid()}.building"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    admin_password, reader_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    password_file = building / "admin-password"
    password_file.write_text(admin_password + "\n", encoding="utf-8")
    env = {**_env(), "TRYTONPASSFILE": str(password_file)}
    config = _config(building, "127.0.0.1:0")
    (building / f"{DATABASE}.sqlite").touch()  # trytond's SQLite backend opens, never creates
    _run(
        [_script("trytond-admin"), "-c", str(config), "-d", DATABASE, "--all",
         "--activate-dependencies", "-u", *MODULES, "--email", "admin@alpenwerk.example"],
        env, building / "trytond-admin.log",
    )  # fmt: skip
    (building / "plan.json").write_text(plan.to_json(), encoding="utf-8")
    env["LOTHUB_DEMO_READER_PASSWORD"] = reader_password
    _run(
        [sys.executable, "-m", "lothub.demo_erp", "--config", str(config),
         "--plan", str(building / "plan.json")],
        env, building / "proteus.log",
    )  # fmt: skip
    (building / "credentials.json").write_text(
        json.dumps({"reader": reader_password, "admin": admin_password}), encoding="utf-8"
    )
    # the configuration names the build folder (a server writes its own), and the
    # admin password is in credentials.json
    (building / "trytond.conf").unlink()
    password_file.unlink()
    if folder.exists():  # another demo built the same template meanwhile: use that one
        shutil.rmtree(building)
        return ensure_database(plan, cache)
    building.rename(folder)  # the template appears whole or not at all
    for old in cache.iterdir():  # templates of earlier scenarios or Tryton versions
        if old.is_dir() and not old.name.startswith(".") and old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return ErpDatabase(folder, reader_password, admin_password, time.monotonic() - started)


class TrytonServer:
    """``trytond`` serving a copy of a template database on a free loopback port."""

    def __init__(self, db: ErpDatabase, folder: Path) -> None:
        self.db = db
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "trytond.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> TrytonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def start(self) -> None:
        """Copy the template and start trytond; :meth:`wait_ready` waits until it answers."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        # a fresh copy each run: the demo starts from the same ERP state every time
        shutil.copyfile(self.db.sqlite_file, self.folder / self.db.sqlite_file.name)
        config = _config(self.folder, f"127.0.0.1:{self.port}")
        with self.log.open("ab") as out:
            # -d loads the database's modules before trytond listens: a lazy load on the
            # first requests races with them ("does not know 'res.user'")
            self._process = subprocess.Popen(
                [_script("trytond"), "-c", str(config), "-d", DATABASE],
                env=_env(), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until trytond answers HTTP, or raise a FatalError naming its log."""
        if self._process is None:
            raise FatalError("the demo's Tryton server was never started")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise FatalError(
                    f"the demo's Tryton server exited with {self._process.returncode}; its log "
                    f"is {self.log}; if the cached database is damaged, delete {self.db.folder} "
                    "and start the demo again (it is rebuilt)"
                )
            try:
                # any HTTP answer means it serves
                request = {"id": 0, "method": "common.server.version", "params": []}
                httpx.post(f"{self.url}/{DATABASE}/rpc/", json=request, timeout=2.0)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise FatalError(
            f"the demo's Tryton server did not answer on {self.url} within {timeout_s:.0f}s "
            f"(the machine may be overloaded); its log is {self.log}"
        )

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop trytond (politely, then for good)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def connector_toml(self, name: str, site: str, warehouse_sites: dict[str, str]) -> str:
        """The ``[connectors.<name>]`` table that reads this server's stock moves."""
        mapping = ", ".join(f'"{k}" = "{v}"' for k, v in sorted(warehouse_sites.items()))
        return (
            f'\n[connectors.{name}]\nkind = "tryton"\nsite = "{site}"\npoll_interval_s = 1\n'
            f'[connectors.{name}.settings]\nurl = "{self.url}"\ndatabase = "{DATABASE}"\n'
            f'user = "{READER_LOGIN}"\npassword = "{self.db.reader_password}"\n'
            # the database is complete before the connector starts: nothing to wait for
            'settle_s = 0\nsupplier_lot = "shipment-reference"\n'
            f"warehouse_sites = {{ {mapping} }}\n"
        )


# --- entering the plan, in the child process -----------------------------------------------


def enter_plan(config_file: str, plan: ErpPlan, reader_password: str) -> dict[str, Any]:
    """Enter ``plan`` with proteus (child process only: it imports trytond)."""
    from proteus import Model, config  # type: ignore[import-untyped]
    from trytond.modules.company.tests.tools import (  # type: ignore[import-untyped]
        create_company,
    )
    from trytond.modules.currency.tests.tools import (  # type: ignore[import-untyped]
        get_currency,
    )

    cfg = config.set_trytond(database=DATABASE, user=ADMIN_LOGIN, config_file=config_file)
    Party = Model.get("party.party")
    Company = Model.get("company.company")
    User = Model.get("res.user")
    Group = Model.get("res.group")
    UoM = Model.get("product.uom")
    Template = Model.get("product.template")
    Location = Model.get("stock.location")
    Lot = Model.get("stock.lot")
    Move = Model.get("stock.move")
    Purchase = Model.get("purchase.purchase")
    SaleOrder = Model.get("sale.sale")
    ShipmentIn = Model.get("stock.shipment.in")
    ShipmentInternal = Model.get("stock.shipment.internal")
    Production = Model.get("production")
    Sequence = Model.get("ir.sequence")

    company_party = Party(name="Alpenwerk AG")
    address = company_party.addresses[0]
    address.street, address.postal_code, address.city = "Industriestrasse 12", "7000", "Chur"
    company_party.save()
    create_company(party=company_party, currency=get_currency("CHF"))
    company, = Company.find()  # fmt: skip
    company.timezone = "Europe/Zurich"
    company.save()
    cfg._context = User.get_preferences(True, {})

    reader = User(name="lothub connector", login=READER_LOGIN, password=reader_password)
    reader.companies.append(Company(company.id))
    reader.company = Company(company.id)
    reader.groups.extend(Group.find([("name", "in", ["Stock", "Production", "Sales", "Purchase"])]))
    reader.save()

    def numbering(name: str, prefix: str, first: int | None = None) -> None:
        """Document numbers as the plant's old ERP wrote them, so both sides keep one name."""
        sequence, = Sequence.find([("name", "=", name)])  # fmt: skip
        sequence.prefix = prefix
        if first is not None:
            sequence.number_next = first
        sequence.save()

    def first_number(numbers: list[str], prefix: str) -> int | None:
        tails = [n.removeprefix(prefix) for n in numbers if n.startswith(prefix)]
        return min(int(t) for t in tails) if tails and all(t.isdigit() for t in tails) else None

    numbering("Purchase", "PO-", first_number([r.po for r in plan.receipts], "PO-"))
    numbering("Production", "WO-", first_number([w.number for w in plan.work_orders], "WO-"))
    numbering("Internal Shipment", "TO-",
              first_number([t.number for t in plan.transfers], "TO-"))  # fmt: skip
    numbering("Supplier Shipment", "WE-")
    numbering("Customer Shipment", "LS-")
    numbering("Sale", "AB-")

    # the plant keeps the default warehouse; the other sites' are copies of it
    wh, = Location.find([("type", "=", "warehouse")])  # fmt: skip
    wh.name, wh.code, wh.address = "Alpenwerk Chur", HOME_WAREHOUSE, company_party.addresses[0]
    wh.save()
    warehouses = {HOME_WAREHOUSE: wh}
    for transfer in plan.transfers:
        if transfer.to_site in warehouses:
            continue
        other, = wh.duplicate(default={"name": transfer.to_name or transfer.to_site,
                                       "code": transfer.to_site, "address": None})  # fmt: skip
        for zone, suffix in [(other.input_location, "IN"), (other.output_location, "OUT"),
                             (other.storage_location, "STO")]:  # fmt: skip
            zone.code = f"{transfer.to_site}-{suffix}"
            zone.save()
        warehouses[transfer.to_site] = other

    kg, = UoM.find([("symbol", "=", "kg")])  # fmt: skip
    produced = {code for w in plan.work_orders for _, code, _ in w.outputs}
    products: dict[str, Any] = {}
    for code, name in sorted(plan.products.items()):
        template = Template(name=name, code=code, type="goods", default_uom=kg)
        template.purchasable = code not in produced
        template.salable = template.producible = code in produced
        template.list_price = Decimal(10)
        template.lot_required = ["supplier", "customer", "storage", "production"]
        template.save()
        products[code] = template.products[0]

    lots: dict[str, Any] = {}

    def lot(number: str, product: str) -> Any:
        if number not in lots:
            lots[number] = Lot(number=number, product=products[product])
            lots[number].save()
        return lots[number]

    parties: dict[str, Any] = {}

    def party(partner: Partner) -> Any:
        if partner.code not in parties:
            parties[partner.code] = Party(name=partner.name, code=partner.code)
            parties[partner.code].save()
        return parties[partner.code]

    def finish(record: Any) -> None:
        record.click("do")

    for r in plan.receipts:
        order = Purchase(party=party(r.supplier), invoice_method="manual", warehouse=wh)
        line = order.lines.new(product=products[r.product], quantity=float(r.kg),
                               unit_price=Decimal(3))  # fmt: skip
        line.unit = kg
        order.click("quote")
        order.click("confirm")
        # the supplier's lot number is on its delivery note: the receipt's reference
        shipment = ShipmentIn(supplier=party(r.supplier), warehouse=wh, reference=r.supplier_lot,
                              effective_date=date.fromisoformat(r.day))  # fmt: skip
        for move in order.moves:
            shipment.incoming_moves.append(Move(move.id))
            shipment.incoming_moves[-1].lot = lot(r.lot, r.product)
        shipment.save()
        shipment.click("receive")
        finish(shipment)

    for w in plan.work_orders:
        day = date.fromisoformat(w.day)
        production = Production(warehouse=wh, effective_date=day, effective_start_date=day)
        production.location = wh.production_location
        for number, code, quantity in w.inputs:
            move = production.inputs.new(product=products[code], quantity=float(quantity))
            move.unit, move.lot = kg, lot(number, code)
            move.from_location, move.to_location = wh.storage_location, production.location
        for number, code, quantity in w.outputs:
            move = production.outputs.new(product=products[code], quantity=float(quantity))
            move.unit, move.lot = kg, lot(number, code)
            move.from_location, move.to_location = production.location, wh.storage_location
            move.unit_price, move.currency = Decimal(2), company.currency
        production.click("wait")
        production.click("assign_force")
        production.click("run")
        finish(production)

    for t in plan.transfers:
        day = date.fromisoformat(t.day)
        internal = ShipmentInternal(
            from_location=wh.storage_location,
            to_location=warehouses[t.to_site].storage_location,
            planned_start_date=day, planned_date=day,
        )  # fmt: skip
        move = internal.moves.new(product=products[t.product], quantity=float(t.kg),
                                  lot=lot(t.lot, t.product))  # fmt: skip
        move.from_location, move.to_location = internal.from_location, internal.to_location
        move.unit = kg
        internal.click("wait")
        internal.click("assign_force")
        internal.effective_start_date = day
        internal.click("pack")
        # shipped, not done: the receiving site books the arrival in its own system
        internal.click("ship")

    for s in plan.sales:
        day = date.fromisoformat(s.day)
        order = SaleOrder(party=party(s.customer), invoice_method="manual", warehouse=wh)
        line = order.lines.new(product=products[s.product], quantity=float(s.kg),
                               unit_price=Decimal(6))  # fmt: skip
        line.unit = kg
        order.click("quote")
        order.click("confirm")
        shipment, = order.shipments  # fmt: skip
        for move in shipment.inventory_moves:
            move.lot = lot(s.lot, s.product)
        shipment.effective_date = day
        shipment.save()
        shipment.click("assign_force")
        shipment.click("pick")
        shipment.click("pack")
        shipment.click("ship")
        finish(shipment)

    return {"lots": sorted(lots), "warehouses": sorted(warehouses)}


def main(argv: list[str] | None = None) -> None:
    """Child process entry point: enter the plan into the database, print a JSON summary."""
    parser = argparse.ArgumentParser(description="enter the demo's ERP plan into Tryton")
    parser.add_argument("--config", required=True)
    parser.add_argument("--plan", required=True)
    args = parser.parse_args(argv)
    plan = ErpPlan.from_json(Path(args.plan).read_text(encoding="utf-8"))
    password = os.environ["LOTHUB_DEMO_READER_PASSWORD"]
    print(json.dumps(enter_plan(args.config, plan, password)))


if __name__ == "__main__":
    main()
