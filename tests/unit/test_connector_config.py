"""Connector configuration: secrets from the environment, clear errors, cursors that round-trip."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest

from connectors.base import ConnectorStatus, Cursor
from connectors.registry import build_intake, build_source, is_push, resolve_settings
from connectors.wms_sql import WmsSqlSource
from lothub.settings import demo_sites_path
from schemas.errors import ConfigurationError
from schemas.model import LotEventBase
from schemas.sites import SitesConfig, load_sites

CONNECTOR = """
[connectors.wms-brk]
kind = "{kind}"
site = "{site}"
[connectors.wms-brk.settings]
url_env = "TEST_WMS_URL"
{extra}
"""


def sites_with(
    tmp_path: Path, kind: str = "wms-sql", site: str = "BRK", extra: str = ""
) -> SitesConfig:
    path = tmp_path / "sites.toml"
    path.write_text(
        demo_sites_path().read_text() + CONNECTOR.format(kind=kind, site=site, extra=extra)
    )
    return load_sites(path)


def test_secret_settings_come_from_the_environment() -> None:
    assert resolve_settings("c", {"url_env": "X", "table": "t"}, {"X": "sqlite://"}) == {
        "url": "sqlite://", "table": "t"}  # fmt: skip


def test_a_missing_secret_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="TEST_NOPE"):
        resolve_settings("c", {"url_env": "TEST_NOPE"}, {})


def test_build_a_configured_wms_connector(tmp_path: Path) -> None:
    source = build_source("wms-brk", sites_with(tmp_path), {"TEST_WMS_URL": "sqlite://"})
    assert isinstance(source, WmsSqlSource)
    assert (source.name, source.site) == ("wms-brk", "BRK")


def test_unknown_kind_lists_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="wms-sql"):
        build_source("wms-brk", sites_with(tmp_path, kind="sap-idoc"), {"TEST_WMS_URL": "x"})


def test_unknown_setting_is_refused(tmp_path: Path) -> None:
    sites = sites_with(tmp_path, extra='tabel = "typo"')
    with pytest.raises(ConfigurationError, match="tabel"):
        build_source("wms-brk", sites, {"TEST_WMS_URL": "sqlite://"})


def test_connector_for_an_unknown_site_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="XYZ"):
        sites_with(tmp_path, site="XYZ")


def test_unknown_connector_names_the_configured_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="wms-brk"):
        build_source("wms-alp", sites_with(tmp_path), {})


@pytest.mark.parametrize("at", [datetime(2026, 11, 9, 7, 30), datetime(2026, 11, 9, 7, 30, 0, 123)])
def test_cursor_round_trips_and_keeps_plant_local_time_naive(at: datetime) -> None:
    cursor = Cursor(updated_at=at, pk="42")
    assert Cursor.from_json(cursor.to_json()) == cursor


def test_build_a_configured_tryton_connector(tmp_path: Path) -> None:
    from connectors.tryton import TrytonConnectorSource, TrytonSource

    path = tmp_path / "sites.toml"
    path.write_text(demo_sites_path().read_text() + (
        '\n[connectors.erp-alp]\nkind = "tryton"\nsite = "ALP"\n[connectors.erp-alp.settings]\n'
        'url = "http://erp.invalid:8000"\ndatabase = "alpenwerk"\nuser = "lothub"\n'
        'password_env = "TEST_TRYTON_PASSWORD"\nwarehouse_sites = { WH = "ALP", DC = "BRK" }\n'
        'supplier_lot = "shipment-reference"\n'))  # fmt: skip
    source = build_source("erp-alp", load_sites(path), {"TEST_TRYTON_PASSWORD": "s3cret"})
    assert isinstance(source, TrytonConnectorSource)
    assert source.stream.warehouse_sites == {"WH": "ALP", "DC": "BRK"}
    assert isinstance(source.stream, TrytonSource)
    assert source.stream.supplier_lot == "shipment-reference"
    source.close()


def test_a_tryton_supplier_lot_from_nowhere_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(demo_sites_path().read_text() + (
        '\n[connectors.erp-alp]\nkind = "tryton"\nsite = "ALP"\n[connectors.erp-alp.settings]\n'
        'url = "http://erp.invalid:8000"\ndatabase = "alpenwerk"\nuser = "lothub"\n'
        'password = "s3cret"\nsupplier_lot = "lot-attribute"\n'))  # fmt: skip
    with pytest.raises(
        ConfigurationError, match="supplier_lot must be one of lot, shipment-reference"
    ):
        build_source("erp-alp", load_sites(path), {})


class Recorder:
    """A push sink that keeps what it is given (no broker in unit tests)."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self.parked: list[tuple[bytes, str, str]] = []
        self.status = ConnectorStatus(name="push", site="ALP", system="MES")

    def publish(self, events: Sequence[LotEventBase]) -> None:
        self.events.extend(events)

    def dead_letter(self, data: bytes, reason: str, *, position: str = "") -> None:
        self.parked.append((data, reason, position))

    def report_error(self, exc: Exception) -> None:
        self.status.last_error = str(exc)

    def close(self) -> None:
        pass


def push_sites(tmp_path: Path, kind: str, settings: str) -> SitesConfig:
    path = tmp_path / "sites.toml"
    path.write_text(
        demo_sites_path().read_text()
        + f'\n[connectors.push]\nkind = "{kind}"\nsite = "ALP"\n[connectors.push.settings]\n{settings}\n'
    )
    return load_sites(path)


def test_a_b2mml_connector_serves_http_and_watches_its_folder(tmp_path: Path) -> None:
    sites = push_sites(tmp_path, "b2mml", f'folder = "{tmp_path.as_posix()}"\nkind = "blend"')
    assert is_push("push", sites)
    intake = build_intake("push", sites, Recorder())
    assert (intake.kind, intake.site, intake.paths) == ("b2mml", "ALP", ("/b2mml",))
    assert intake.app is not None
    assert intake.watch is not None


def test_a_b2mml_connector_needs_a_folder_or_http(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="drop 'folder'"):
        build_intake("push", push_sites(tmp_path, "b2mml", "http = false"), Recorder())


def test_a_b2mml_connector_refuses_an_unknown_transformation_kind(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="'COOKING' is not one of"):
        build_intake("push", push_sites(tmp_path, "b2mml", 'kind = "COOKING"'), Recorder())


def test_an_epcis_connector_refuses_location_sites_that_are_not_configured(
    tmp_path: Path,
) -> None:
    sites = push_sites(tmp_path, "epcis-capture", 'location_sites = { "urn:x" = "NOPE" }')
    with pytest.raises(ConfigurationError, match=r"\['NOPE'\]"):
        build_intake("push", sites, Recorder())


def test_a_push_connector_has_no_source_to_poll(tmp_path: Path) -> None:
    sites = push_sites(tmp_path, "epcis-capture", "")
    assert build_intake("push", sites, Recorder()).paths == ("/capture",)
    with pytest.raises(ConfigurationError, match="push connector"):
        build_source("push", sites)
