"""Site configuration: how each plant names its lots, statuses and units, and its time zone.

Read from a TOML file (``LOTHUB_SITE_CONFIG``), validated at start; an invalid file
stops the hub with a message naming the key. Example::

    [sites.ALP]
    name = "Alpenwerk Chur"
    timezone = "Europe/Zurich"
    lot_code_pattern = '^ALP-\\d{8}-\\d{3}$'

    [sites.ALP.status_codes]
    F = "RELEASED"
    Q = "QUARANTINE"

    [sites.ALP.unit_codes]
    kg = "KGM"
"""

from __future__ import annotations

import re
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.errors import ConfigurationError
from schemas.model import LotStatus
from schemas.units import is_rec20


class SiteConfig(BaseModel):
    """One plant's naming rules and its explicit time zone."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    timezone: str
    #: regular expression a canonical (trimmed, upper-case) site lot code must match
    lot_code_pattern: str
    #: site status code -> enterprise status
    status_codes: dict[str, LotStatus] = Field(default_factory=dict)
    #: site unit code (as the plant writes it) -> UN/CEFACT Rec 20 code
    unit_codes: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("lot_code_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"lot_code_pattern is not a valid regular expression: {exc}") from exc
        return value

    @field_validator("unit_codes")
    @classmethod
    def _rec20_targets(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(f"{k} -> {v}" for k, v in value.items() if not is_rec20(v))
        if bad:
            raise ValueError(f"not UN/CEFACT Rec 20 codes this hub converts: {', '.join(bad)}")
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The site's time zone."""
        return ZoneInfo(self.timezone)

    def localize(self, local: datetime) -> datetime:
        """Attach the site's zone to a plant-local wall-clock time (naive from the source)."""
        if local.tzinfo is not None:
            return local
        return local.replace(tzinfo=self.zone)


class ConnectorSpec(BaseModel):
    """One configured connector: which kind, for which site, how often, with what settings.

    Secrets never sit in the file: a setting whose name ends in ``_env`` names the
    environment variable holding the value (``url_env = "LOTHUB_WMS_BRK_URL"``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    site: str
    poll_interval_s: float = Field(default=5.0, gt=0)
    batch_size: int = Field(default=500, ge=1, le=100_000)
    #: events sent but not yet acknowledged before the connector waits for the broker
    max_in_flight_events: int = Field(default=20_000, ge=1, le=100_000)
    #: how often, at most, the acknowledged position is committed to the hub database
    checkpoint_every_s: float = Field(default=1.0, ge=0)
    enabled: bool = True
    #: the stream raises a source-stall alert when this connector's system sends nothing for
    #: this long (default: LOTHUB_INTEGRITY_STALL_S)
    stall_after_s: float | None = Field(default=None, gt=0)
    settings: dict[str, Any] = Field(default_factory=dict)


class ReconcileConfig(BaseModel):
    """When ``lothub up`` reconciles, and how strictly (``[reconcile]`` in the file).

    Example::

        [reconcile]
        interval_s = 900            # every 15 minutes; 0: only on demand (lothub reconcile)
        jobs = ["on-hand", "disposition", "transfers", "capture"]
        window_days = 7             # how far back `capture` re-reads the sources
        transfer_sla_h = 72
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    interval_s: float = Field(default=0, ge=0)
    #: the jobs a scheduled run takes (default: all)
    jobs: list[str] | None = None
    window_days: float = Field(default=7, gt=0, le=366)
    tolerance: float = Field(default=0.001, ge=0)
    relative_tolerance: float = Field(default=0.001, ge=0, lt=1)
    transfer_sla_h: float = Field(default=72, gt=0)
    status_grace_min: float = Field(default=60, ge=0)


class SitesConfig(BaseModel):
    """Every site of the enterprise, by site code, and the connectors that feed the hub."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sites: dict[str, SiteConfig]
    connectors: dict[str, ConnectorSpec] = Field(default_factory=dict)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)

    @model_validator(mode="after")
    def _connector_sites_exist(self) -> SitesConfig:
        for name, spec in self.connectors.items():
            if spec.site not in self.sites:
                raise ValueError(
                    f"connector {name!r} names site {spec.site!r}, which is not configured"
                )
        return self

    def site(self, code: str) -> SiteConfig | None:
        """The configuration of site ``code``, or None if it is not configured."""
        return self.sites.get(code)


def load_sites(path: Path) -> SitesConfig:
    """Read and validate a site configuration file; raises :class:`ConfigurationError`."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigurationError(f"site configuration {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"site configuration {path} is not valid TOML: {exc}") from exc
    try:
        return SitesConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(f"site configuration {path} is invalid: {problems}") from exc
