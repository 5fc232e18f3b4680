"""Which connector kinds exist, and how a configured connector becomes a running one.

Pull kinds (polled from a checkpoint, :func:`build_source`): ``wms-sql``, ``lims-csv``,
``lims-rest``, ``tryton``. Push kinds (the system sends, :func:`build_intake`): ``b2mml``
(a drop folder and/or ``POST /intake/<name>/b2mml``), ``epcis-capture``
(``POST /intake/<name>/capture``, the EPCIS 2.0 REST binding).

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
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from connectors.base import Source
from connectors.intake import Intake, PushSink
from connectors.lims import LimsCsvSource, LimsMapping, LimsRestSource
from connectors.wms_sql import WmsSqlConfig, WmsSqlSource
from schemas.errors import ConfigurationError
from schemas.model import Location, SystemKind, TransformationKind
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
           {"warehouse_sites", "stream", "settle_s", "supplier_lot"})  # fmt: skip
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
        TrytonSource(client, **common, supplier_lot=str(settings.get("supplier_lot", "lot")))
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
#: kinds whose sources number their events 1, 2, 3... durably (``Source.numbers_densely``):
#: the stream checks them for sequence gaps. Tryton numbers by record id, B2MML and EPCIS
#: by position in a message, so their gaps mean nothing.
DENSE_KINDS = frozenset({"wms-sql", "lims-csv", "lims-rest"})


def _transformation_kind(name: str, value: Any) -> TransformationKind:
    try:
        return TransformationKind(str(value).upper())
    except ValueError as exc:
        known = ", ".join(k.value for k in TransformationKind)
        raise ConfigurationError(
            f"connector {name}: transformation kind {value!r} is not one of {known}"
        ) from exc


def _b2mml(name: str, spec: ConnectorSpec, sites: SitesConfig, settings: dict[str, Any],
           sink: PushSink) -> Intake:  # fmt: skip
    from connectors.b2mml import (
        B2mmlMapping,
        b2mml_handler,
        create_b2mml_app,
        scan_drop_folder,
        watch_drop_folder,
    )

    _check(name, "b2mml", settings, set(), {
        "folder", "http", "min_age_s", "max_bytes", "kind", "kind_by_definition",
        "item_descriptions", "location_names", "default_location", "document_type",
        "sublot_alias_kind", "map_lot_status",
    })  # fmt: skip
    folder = settings.get("folder")
    http = bool(settings.get("http", True))
    if folder is None and not http:
        raise ConfigurationError(
            f"connector {name}: b2mml needs a drop 'folder', or 'http = true', or both"
        )
    site = sites.sites[spec.site]
    default_location = settings.get("default_location")
    mapping = B2mmlMapping(
        system_instance=name, site_code=spec.site,
        kind=_transformation_kind(name, settings.get("kind", "PRODUCTION")),
        kind_by_definition={k: _transformation_kind(name, v)
                            for k, v in settings.get("kind_by_definition", {}).items()},
        item_descriptions=dict(settings.get("item_descriptions", {})),
        location_names=dict(settings.get("location_names", {})),
        default_location=None if default_location is None else Location(
            location_id=str(default_location), name=str(default_location), site=spec.site),
        document_type=str(settings.get("document_type", "BATCH_RECORD")),
        sublot_alias_kind=str(settings.get("sublot_alias_kind", "MES_SUBLOT")),
        map_lot_status=bool(settings.get("map_lot_status", True)),
    )  # fmt: skip
    app = None
    if http:
        app = create_b2mml_app(
            sink.publish, mapping, site,
            dead_letter=lambda data, reason: sink.dead_letter(data, reason, position="http"),
            max_bytes=int(settings.get("max_bytes", 16 * 1024 * 1024)),
        )  # fmt: skip
    watch = None
    if folder is not None:
        path = Path(folder)
        handler = b2mml_handler(sink.publish, mapping, site)

        def dead_letter(data: bytes, reason: str) -> None:
            sink.dead_letter(data, reason, position=f"drop-folder:{path.name}")

        min_age_s = float(settings.get("min_age_s", 0.0))

        def watch(stop: threading.Event, *, until_idle: bool = False) -> None:
            if until_idle:
                scan_drop_folder(path, handler, dead_letter=dead_letter, min_age_s=min_age_s)
                return
            watch_drop_folder(path, handler, stop, dead_letter=dead_letter,
                              poll_interval_s=spec.poll_interval_s, min_age_s=min_age_s,
                              on_error=sink.report_error)  # fmt: skip

    return Intake(name=name, kind="b2mml", site=spec.site, system=SystemKind.MES, app=app,
                  watch=watch, sink=sink, paths=("/b2mml",) if http else ())  # fmt: skip


def _epcis(name: str, spec: ConnectorSpec, sites: SitesConfig, settings: dict[str, Any],
           sink: PushSink) -> Intake:  # fmt: skip
    from connectors.epcis import EpcisMapping
    from connectors.epcis_capture import create_capture_app

    _check(name, "epcis-capture", settings, set(), {
        "location_sites", "location_names", "party_names", "item_descriptions", "strict",
        "max_bytes", "max_events",
    })  # fmt: skip
    unknown_sites = sorted(set(settings.get("location_sites", {}).values()) - set(sites.sites))
    if unknown_sites:
        raise ConfigurationError(
            f"connector {name}: location_sites names sites {unknown_sites} that are not configured"
        )
    mapping = EpcisMapping(
        system_instance=name, default_site=spec.site,
        location_sites=dict(settings.get("location_sites", {})),
        location_names=dict(settings.get("location_names", {})),
        party_names=dict(settings.get("party_names", {})),
        item_descriptions=dict(settings.get("item_descriptions", {})),
        strict=bool(settings.get("strict", False)),
    )  # fmt: skip
    limits = {k: int(settings[k]) for k in ("max_bytes", "max_events") if k in settings}
    app = create_capture_app(
        sink.publish, mapping, **limits,
        dead_letter=lambda data, reason: sink.dead_letter(data, reason, position="http"),
    )  # fmt: skip
    return Intake(name=name, kind="epcis-capture", site=spec.site, system=SystemKind.EPCIS,
                  app=app, watch=None, sink=sink, paths=("/capture",))  # fmt: skip


IntakeFactory = Callable[[str, ConnectorSpec, SitesConfig, dict[str, Any], PushSink], Intake]
#: Kinds whose system sends to the hub; ``lothub up`` serves and watches them.
PUSH_KINDS: dict[str, IntakeFactory] = {"b2mml": _b2mml, "epcis-capture": _epcis}
#: The system each push kind speaks for (the sink is built before the intake).
PUSH_SYSTEMS: dict[str, SystemKind] = {"b2mml": SystemKind.MES, "epcis-capture": SystemKind.EPCIS}


def _spec(name: str, sites: SitesConfig) -> ConnectorSpec:
    spec = sites.connectors.get(name)
    if spec is None:
        known = ", ".join(sorted(sites.connectors)) or "none configured"
        raise ConfigurationError(f"no connector named {name!r} (configured: {known})")
    if spec.kind not in KINDS and spec.kind not in PUSH_KINDS:
        available = ", ".join(sorted([*KINDS, *PUSH_KINDS]))
        raise ConfigurationError(
            f"connector {name}: unknown kind {spec.kind!r}; available: {available}"
        )
    return spec


def is_push(name: str, sites: SitesConfig) -> bool:
    """True if connector ``name`` is a push kind (:func:`build_intake`, not a source)."""
    return _spec(name, sites).kind in PUSH_KINDS


def build_source(
    name: str, sites: SitesConfig, environ: Mapping[str, str] = os.environ
) -> Source[Any]:
    """The source of configured connector ``name``; raises ConfigurationError with the fix."""
    spec = _spec(name, sites)
    factory = KINDS.get(spec.kind)
    if factory is None:
        raise ConfigurationError(
            f"connector {name} is a push connector (kind {spec.kind}): the plant system sends "
            "to the hub, so it has no source to poll; `lothub up` serves and watches it"
        )
    return factory(name, spec, sites, resolve_settings(name, spec.settings, environ))


def build_intake(
    name: str, sites: SitesConfig, sink: PushSink, environ: Mapping[str, str] = os.environ
) -> Intake:
    """The intake of configured push connector ``name``, handing what it gets to ``sink``."""
    spec = _spec(name, sites)
    factory = PUSH_KINDS.get(spec.kind)
    if factory is None:
        raise ConfigurationError(
            f"connector {name} (kind {spec.kind}) is polled, not pushed: use build_source"
        )
    return factory(name, spec, sites, resolve_settings(name, spec.settings, environ), sink)
