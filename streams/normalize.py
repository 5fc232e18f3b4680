"""Site codes -> enterprise model: lot ids, statuses and units, driven by site configuration.

Nothing is guessed. A lot code that does not match its site's pattern, a status or a
unit the site configuration does not map, or an unknown site raises
:class:`~schemas.errors.UnmappedValueError`; the worker parks the event on the
dead-letter topic with that message.

Example::

    >>> normalize(raw_event, sites)        # doctest: +SKIP
    LotReceived(..., lot='ALP:ALP-20261102-001', quantity=Quantity(value=..., unit='KGM'))
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache
from typing import Any

from schemas.errors import UnmappedValueError
from schemas.model import (
    LotEventBase,
    LotStatusChanged,
    TransferReceived,
    event_from_dict,
)
from schemas.sites import SiteConfig, SitesConfig
from schemas.units import is_rec20, to_canonical

LOT_ID_SEPARATOR = ":"


@lru_cache(maxsize=64)
def _pattern(expression: str) -> re.Pattern[str]:
    return re.compile(expression)


def _site(sites: SitesConfig, code: str) -> SiteConfig:
    site = sites.site(code)
    if site is None:
        raise UnmappedValueError(
            site=code,
            kind="site",
            value=code,
            hint="add a [sites.<code>] section to the site configuration",
        )
    return site


def enterprise_lot_id(sites: SitesConfig, site_code: str, lot_code: str) -> str:
    """The enterprise id of a site lot code: ``SITE:CANONICAL-CODE``."""
    site = _site(sites, site_code)
    canonical = lot_code.strip().upper()
    if not _pattern(site.lot_code_pattern).fullmatch(canonical):
        raise UnmappedValueError(
            site=site_code,
            kind="lot code",
            value=lot_code,
            hint=f"it does not match the site's lot_code_pattern {site.lot_code_pattern!r}",
        )
    return f"{site_code}{LOT_ID_SEPARATOR}{canonical}"


def enterprise_status(site: SiteConfig, site_code: str, status: str) -> str:
    """The enterprise status for a site status code."""
    try:
        return site.status_codes[status.strip()].value
    except KeyError:
        raise UnmappedValueError(
            site=site_code,
            kind="status code",
            value=status,
            hint="add it under [sites.<code>.status_codes] and replay the dead letters",
        ) from None


def enterprise_quantity(
    site: SiteConfig, site_code: str, value: Decimal, unit: str
) -> tuple[Decimal, str]:
    """A quantity in the enterprise unit of its dimension.

    The site's own unit code is looked up in ``unit_codes``; a plain Rec 20 code is
    accepted as it is (it is a standard, not a guess).
    """
    rec20 = site.unit_codes.get(unit.strip())
    if rec20 is None and is_rec20(unit.strip()):
        rec20 = unit.strip()
    if rec20 is None:
        raise UnmappedValueError(
            site=site_code,
            kind="unit",
            value=unit,
            hint="add it under [sites.<code>.unit_codes] as a UN/CEFACT Rec 20 code",
        )
    return to_canonical(value, rec20)


def normalize(event: LotEventBase, sites: SitesConfig) -> LotEventBase:
    """Rewrite a raw event's site codes into the enterprise model."""
    site_code = event.envelope.source.site
    site = _site(sites, site_code)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"value", "unit"}:
                value, unit = enterprise_quantity(site, site_code, node["value"], node["unit"])
                return {"value": value, "unit": unit}
            return {
                key: enterprise_lot_id(sites, site_code, value)
                if key == "lot" and isinstance(value, str)
                else walk(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    data = event.model_dump(mode="python", exclude={"envelope"})
    data = walk(data)
    data["envelope"] = event.envelope
    if isinstance(event, LotStatusChanged):
        data["status"] = enterprise_status(site, site_code, event.status)
    if isinstance(event, TransferReceived):
        data["shipped_lot"] = enterprise_lot_id(sites, event.shipped_lot_site, event.shipped_lot)
    return event_from_dict(type(event).__name__, data)
