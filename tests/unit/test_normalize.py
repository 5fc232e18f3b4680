"""Site codes become enterprise ids, statuses and Rec 20 units; nothing unmapped is guessed."""

from __future__ import annotations

from decimal import Decimal

import pytest

from connectors.simulator import build_scenario
from schemas.errors import UnmappedValueError
from schemas.model import LotReceived, LotStatusChanged, TransferReceived, check_enterprise
from schemas.sites import SitesConfig
from streams.normalize import enterprise_lot_id, normalize


def _raw(sites: SitesConfig, cls: type, **match: str) -> object:
    for event in build_scenario(sites).events:
        if isinstance(event, cls) and all(getattr(event, k) == v for k, v in match.items()):
            return event
    raise AssertionError(f"no {cls.__name__} with {match} in the scenario")


def test_every_scenario_event_normalizes_to_enterprise_form(demo_sites: SitesConfig) -> None:
    for event in build_scenario(demo_sites).events:
        check_enterprise(normalize(event, demo_sites))


def test_lot_codes_are_trimmed_upper_cased_and_site_qualified(demo_sites: SitesConfig) -> None:
    assert enterprise_lot_id(demo_sites, "ALP", " alp-20261102-001 ") == "ALP:ALP-20261102-001"
    assert enterprise_lot_id(demo_sites, "BRK", "26313-01") == "BRK:26313-01"


def test_pounds_become_kilograms(demo_sites: SitesConfig) -> None:
    raw = _raw(demo_sites, TransferReceived, lot="26313-01")
    out = normalize(raw, demo_sites)  # type: ignore[arg-type]
    assert isinstance(out, TransferReceived)
    assert out.quantity.unit == "KGM"
    assert out.quantity.value == (Decimal("2204.62") * Decimal("0.45359237")).quantize(
        Decimal("0.000001")
    )
    assert (out.lot, out.shipped_lot) == ("BRK:26313-01", "ALP:ALP-20261103-011")


def test_site_status_codes_map_to_enterprise_statuses(demo_sites: SitesConfig) -> None:
    raw = _raw(demo_sites, LotStatusChanged, status="AVAIL")
    out = normalize(raw, demo_sites)  # type: ignore[arg-type]
    assert isinstance(out, LotStatusChanged)
    assert out.status == "RELEASED"


def test_envelope_is_untouched(demo_sites: SitesConfig) -> None:
    raw = _raw(demo_sites, LotReceived, lot="ALP-20261102-001")
    assert normalize(raw, demo_sites).envelope == raw.envelope  # type: ignore[arg-type, attr-defined]


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"lot": "26313-01"}, "lot code"),  # a BRK code at site ALP
        ({"quantity": {"value": "1", "unit": "sacks"}}, "unit"),
    ],
)
def test_unmapped_values_are_refused_with_the_site_and_value(
    demo_sites: SitesConfig, change: dict[str, object], kind: str
) -> None:
    raw = _raw(demo_sites, LotReceived, lot="ALP-20261102-001")
    bad = LotReceived.model_validate({**raw.model_dump(), **change})  # type: ignore[attr-defined]
    with pytest.raises(UnmappedValueError) as err:
        normalize(bad, demo_sites)
    assert (err.value.site, err.value.kind) == ("ALP", kind)


def test_unmapped_status_is_refused(demo_sites: SitesConfig) -> None:
    raw = _raw(demo_sites, LotStatusChanged, status="AVAIL")
    bad = raw.model_copy(update={"status": "BLOCKED-ISH"})  # type: ignore[attr-defined]
    with pytest.raises(UnmappedValueError, match="BLOCKED-ISH"):
        normalize(bad, demo_sites)


def test_unknown_site_is_refused(demo_sites: SitesConfig) -> None:
    raw = _raw(demo_sites, LotReceived, lot="ALP-20261102-001")
    source = raw.envelope.source.model_copy(update={"site": "XYZ"})  # type: ignore[attr-defined]
    bad = raw.model_copy(update={"envelope": raw.envelope.model_copy(update={"source": source})})  # type: ignore[attr-defined]
    with pytest.raises(UnmappedValueError, match="site"):
        normalize(bad, demo_sites)
