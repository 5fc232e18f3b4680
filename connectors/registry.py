"""Which connector kinds exist, and how a configured connector becomes a running one.

Example (site configuration file)::

    [connectors.wms-brk]
    kind = "wms-sql"
    site = "BRK"
    poll_interval_s = 10
    [connectors.wms-brk.settings]
    url_env = "LOTHUB_WMS_BRK_URL"       # the secret stays in the environment
    table = "wms_transactions"
    columns = { lot = "lot_no" }
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from connectors.base import Source
from connectors.lims import LimsCsvSource, LimsMapping, LimsRestSource
from connectors.wms_sql import WmsSqlConfig, WmsSqlSource
from schemas.errors import ConfigurationError
from schemas.sites import ConnectorSpec, SitesConfig


def resolve_settings(
    name: str, settings: Mapping[str, Any], environ: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """Replace every ``<key>_env`` setting by ``<key>`` read from the environment."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key.endswith("_env"):
            if value not in environ:
                raise ConfigurationError(
                    f"connector {name}: setting {key} names environment variable {value!r}, which is not set"
                )
            out[key[: -len("_env")]] = environ[value]
        else:
            out[key] = value
    return out


def _wms_sql(
    name: str, spec: ConnectorSpec, sites: SitesConfig, settings: dict[str, Any]
) -> Source[Any]:
    if "url" not in settings:
        raise ConfigurationError(
            f"connector {name}: wms-sql needs 'url' or 'url_env' in its settings"
        )
    allowed = {"url", "table", "schema", "columns"}
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise ConfigurationError(
            f"connector {name}: unknown wms-sql settings {unknown}; known: {sorted(allowed)}"
        )
    return WmsSqlSource(WmsSqlConfig(
        name=name, site_code=spec.site, site=sites.sites[spec.site], url=settings["url"],
        table=settings.get("table", "wms_transactions"), schema=settings.get("schema"),
        columns=dict(settings.get("columns", {})),
    ))  # fmt: skip


_MAPPING_KEYS = {"fields", "date_format", "decimal_separator", "pass_values", "location_id"}


def _lims_mapping(
    name: str, spec: ConnectorSpec, sites: SitesConfig, settings: dict[str, Any]
) -> LimsMapping:
    extra: dict[str, Any] = {k: settings[k] for k in _MAPPING_KEYS & set(settings)}
    if "pass_values" in extra:
        extra["pass_values"] = frozenset(str(v).upper() for v in extra["pass_values"])
    return LimsMapping(
        system_instance=name, site_code=spec.site, site=sites.sites[spec.site], **extra
    )


def _check(
    name: str, kind: str, settings: dict[str, Any], required: set[str], optional: set[str]
) -> None:
    missing = sorted(required - set(settings))
    if missing:
        raise ConfigurationError(f"connector {name}: {kind} needs settings {missing}")
    unknown = sorted(set(settings) - required - optional)
    if unknown:
        raise ConfigurationError(
            f"connector {name}: unknown {kind} settings {unknown}; known: {sorted(required | optional)}"
        )


def _lims_csv(
    name: str, spec: ConnectorSpec, sites: SitesConfig, settings: dict[str, Any]
) -> Source[Any]:
    _check(
        name, "lims-csv", settings, {"folder"}, {"pattern", "encoding", "delimiter"} | _MAPPING_KEYS
    )
    return LimsCsvSource(
        name=name, folder=Path(settings["folder"]), mapping=_lims_mapping(name, spec, sites, settings),
        pattern=settings.get("pattern", "*.csv"), encoding=settings.get("encoding", "utf-8"),
        delimiter=settings.get("delimiter", ","),
    )  # fmt: skip


def _lims_rest(
    name: str, spec: ConnectorSpec, sites: SitesConfig, settings: dict[str, Any]
) -> Source[Any]:
    _check(
        name, "lims-rest", settings, {"url"}, {"token", "id_field", "updated_field"} | _MAPPING_KEYS
    )
    return LimsRestSource(
        name=name, url=settings["url"], mapping=_lims_mapping(name, spec, sites, settings),
        token=settings.get("token"), id_field=settings.get("id_field", "id"),
        updated_field=settings.get("updated_field", "updated_at"),
    )  # fmt: skip


def _tryton(
    name: str, spec: ConnectorSpec, sites: SitesConfig, settings: dict[str, Any]
) -> Source[Any]:
    from connectors.tryton import (
        TrytonClient,
        TrytonConnectorSource,
        TrytonInspectionSource,
        TrytonSource,
    )

    _check(name, "tryton", settings, {"url", "database", "user", "password"},
           {"warehouse_sites", "stream", "settle_s"})  # fmt: skip
    client = TrytonClient(
        settings["url"], settings["database"], settings["user"], password=settings["password"]
    )
    common = {"name": name, "site_code": spec.site, "warehouse_sites": settings.get("warehouse_sites", {}),
              "settle_s": float(settings.get("settle_s", 60.0))}  # fmt: skip
    stream = settings.get("stream", "moves")
    if stream not in ("moves", "inspections"):
        raise ConfigurationError(
            f"connector {name}: stream must be 'moves' or 'inspections', not {stream!r}"
        )
    reader = (
        TrytonSource(client, **common)
        if stream == "moves"
        else TrytonInspectionSource(client, **common)
    )
    return TrytonConnectorSource(reader, sites.sites[spec.site])


Factory = Callable[[str, ConnectorSpec, SitesConfig, dict[str, Any]], Source[Any]]
KINDS: dict[str, Factory] = {
    "wms-sql": _wms_sql,
    "lims-csv": _lims_csv,
    "lims-rest": _lims_rest,
    "tryton": _tryton,
}


def build_source(
    name: str, sites: SitesConfig, environ: Mapping[str, str] = os.environ
) -> Source[Any]:
    """The source of configured connector ``name``; raises ConfigurationError with the fix."""
    spec = sites.connectors.get(name)
    if spec is None:
        known = ", ".join(sorted(sites.connectors)) or "none configured"
        raise ConfigurationError(f"no connector named {name!r} (configured: {known})")
    factory = KINDS.get(spec.kind)
    if factory is None:
        raise ConfigurationError(
            f"connector {name}: unknown kind {spec.kind!r}; available: {', '.join(sorted(KINDS))}"
        )
    return factory(name, spec, sites, resolve_settings(name, spec.settings, environ))
