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
from typing import Any

from connectors.base import Source
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


Factory = Callable[[str, ConnectorSpec, SitesConfig, dict[str, Any]], Source[Any]]
KINDS: dict[str, Factory] = {"wms-sql": _wms_sql}


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
