"""Who may see what: API keys mapped to roles, and site scoping with redaction.

Roles:

======================  =================================================================
``ENTERPRISE_QUALITY``  every site: genealogy, recalls, exports, metrics, alerts (and triage)
``SITE_QUALITY``        own site; other sites' lots appear redacted in traces and recalls;
                        the alerts naming its site (and triage of them)
``INTEGRATION_ADMIN``   metrics and operations; integrity alerts (and triage); no lot details
``AUDITOR``             every site read-only, exports, the audit trail, alerts (no triage)
======================  =================================================================

*Triage* is acknowledging and resolving integrity alerts: the people who act on them
(quality, and integration admins for interface faults) may; auditors only read.

Keys are configured in a TOML file (``LOTHUB_API_KEYS_FILE``) by their SHA-256, never
in clear::

    [users.qa-brunner]
    role = "SITE_QUALITY"
    site = "ALP"
    key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

and sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The same file may
configure an OIDC provider (``[oidc]``, see :mod:`trace_api.oidc`), whose bearer tokens
then map to roles too. With neither keys nor a provider the hub runs in *local mode*:
full access, loopback only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from schemas.errors import ConfigurationError
from trace_api.oidc import OidcConfig, OidcVerifier


class Role(StrEnum):
    """What a user is allowed to do."""

    ENTERPRISE_QUALITY = "ENTERPRISE_QUALITY"
    SITE_QUALITY = "SITE_QUALITY"
    INTEGRATION_ADMIN = "INTEGRATION_ADMIN"
    AUDITOR = "AUDITOR"
    LOCAL = "LOCAL"


class Permission(StrEnum):
    """Groups of endpoints."""

    READ = "read"  # lots, traces, events
    RECALL = "recall"  # run and read recalls
    EXPORT = "export"  # FSMA 204, recall exports
    AUDIT = "audit"  # the audit trail
    OPERATE = "operate"  # metrics, integration health
    ALERTS = "alerts"  # read integrity alerts
    TRIAGE = "triage"  # acknowledge and resolve integrity alerts
    INGEST = "ingest"  # push plant data: B2MML, EPCIS capture (/intake/...)


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ENTERPRISE_QUALITY: frozenset({Permission.READ, Permission.RECALL, Permission.EXPORT,
                                        Permission.OPERATE, Permission.ALERTS, Permission.TRIAGE}),
    Role.SITE_QUALITY: frozenset({Permission.READ, Permission.RECALL, Permission.EXPORT,
                                  Permission.ALERTS, Permission.TRIAGE}),
    Role.INTEGRATION_ADMIN: frozenset({Permission.OPERATE, Permission.INGEST, Permission.ALERTS,
                                       Permission.TRIAGE}),
    Role.AUDITOR: frozenset({Permission.READ, Permission.RECALL, Permission.EXPORT,
                             Permission.AUDIT, Permission.ALERTS}),
    Role.LOCAL: frozenset(Permission),
}  # fmt: skip


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    user: str
    role: Role
    site: str | None = None

    def can(self, permission: Permission) -> bool:
        """True if the role grants ``permission``."""
        return permission in ROLE_PERMISSIONS[self.role]

    def sees(self, site: str | None) -> bool:
        """True if details of ``site`` are visible (site users see their own site only)."""
        return self.role is not Role.SITE_QUALITY or site == self.site


LOCAL = Principal(user="local", role=Role.LOCAL)


class AccessControl:
    """API keys by SHA-256, and the per-process salt of redaction tokens."""

    def __init__(
        self, users: dict[str, tuple[str, Principal]], oidc: OidcVerifier | None = None
    ) -> None:
        # key digest -> principal; the dict is keyed by user for error messages only
        self._by_digest = {digest: principal for digest, principal in users.values()}
        self._salt = secrets.token_bytes(16)
        self.oidc = oidc

    @property
    def local_mode(self) -> bool:
        """True when neither a key nor an OIDC provider is configured: full access on loopback."""
        return not self._by_digest and self.oidc is None

    @classmethod
    def none(cls) -> AccessControl:
        """Local mode."""
        return cls({})

    @classmethod
    def load(cls, path: Path) -> AccessControl:
        """Read the keys file; raise :class:`ConfigurationError` naming the bad entry."""
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"API keys file {path} is unreadable: {exc}") from exc
        users: dict[str, tuple[str, Principal]] = {}
        for user, entry in raw.get("users", {}).items():
            try:
                role = Role(entry["role"])
                digest = str(entry["key_sha256"]).lower()
            except (KeyError, ValueError) as exc:
                raise ConfigurationError(
                    f"API keys file {path}: users.{user} needs role (one of "
                    f"{', '.join(r.value for r in Role if r is not Role.LOCAL)}) and key_sha256"
                ) from exc
            if role is Role.LOCAL or len(digest) != 64:
                raise ConfigurationError(
                    f"API keys file {path}: users.{user} has an invalid role or key_sha256"
                )
            site = entry.get("site")
            if role is Role.SITE_QUALITY and not site:
                raise ConfigurationError(
                    f"API keys file {path}: users.{user} is SITE_QUALITY and needs a site"
                )
            users[user] = (digest, Principal(user=user, role=role, site=site))
        oidc = None
        if "oidc" in raw:
            config = OidcConfig.from_toml(raw["oidc"], f"API keys file {path}")
            bad = sorted(
                v for v in config.roles.values() if v not in Role.__members__ or v == "LOCAL"
            )
            if bad:
                raise ConfigurationError(
                    f"API keys file {path}: [oidc.roles] maps to unknown roles {bad}"
                )
            oidc = OidcVerifier(config)
        return cls(users, oidc)

    def authenticate(self, headers: Any) -> Principal | None:
        """The principal of a request's key, or None if it has no valid key."""
        if self.local_mode:
            return LOCAL
        key = headers.get("x-api-key")
        auth = headers.get("authorization", "")
        if key is None and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        if not key:
            return None
        digest = hashlib.sha256(key.encode()).hexdigest()
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        if self.oidc is not None and key.count(".") == 2:
            return self._from_token(self.oidc, key)
        return None

    @staticmethod
    def _from_token(oidc: OidcVerifier, token: str) -> Principal | None:
        claims = oidc.claims(token)
        if claims is None:
            return None
        config = oidc.config
        granted = claims.get(config.role_claim, [])
        granted = [granted] if isinstance(granted, str) else list(granted or [])
        role = next((Role(config.roles[g]) for g in granted if g in config.roles), None)
        user = str(claims.get(config.user_claim) or claims.get("sub") or "")
        site = claims.get(config.site_claim)
        if role is None or not user or (role is Role.SITE_QUALITY and not site):
            return None
        return Principal(user=user, role=role, site=str(site) if site else None)

    def close(self) -> None:
        """Release the OIDC client, if any."""
        if self.oidc is not None:
            self.oidc.close()

    def token(self, lot_id: str) -> str:
        """An opaque stand-in for a lot a caller may not see (stable within this process)."""
        return "redacted-" + hmac.new(self._salt, lot_id.encode(), hashlib.sha256).hexdigest()[:12]


_LOT_ID = re.compile(r"^([A-Z0-9][A-Z0-9_-]*):.+")


def redact_refs(value: Any, who: Principal, access: AccessControl) -> Any:
    """Replace every enterprise lot id of a site ``who`` may not see, wherever it stands."""
    if who.role is not Role.SITE_QUALITY:
        return value
    if isinstance(value, str):
        match = _LOT_ID.match(value)
        return access.token(value) if match and not who.sees(match.group(1)) else value
    if isinstance(value, dict):
        return {k: redact_refs(v, who, access) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_refs(v, who, access) for v in value]
    return value


def redact_trace(body: dict[str, Any], who: Principal, access: AccessControl) -> dict[str, Any]:
    """A trace as ``who`` may see it: other sites' lots keep their place, not their details."""
    if who.role is not Role.SITE_QUALITY:
        return body
    visible = {lot["lot_id"] for lot in body["lots"] if who.sees(lot["site"])}

    def name(lot_id: str) -> str:
        return lot_id if lot_id in visible else access.token(lot_id)

    lots = [lot if lot["lot_id"] in visible else
            {"lot_id": access.token(lot["lot_id"]), "site": "redacted", "item_code": None,
             "item_description": None, "status": None, "depth": lot["depth"], "redacted": True}
            for lot in body["lots"]]  # fmt: skip
    edges = []
    for e in body["edges"]:
        shown = e["parent_lot"] in visible and e["child_lot"] in visible
        edges.append(e if shown else {
            "parent_lot": name(e["parent_lot"]), "child_lot": name(e["child_lot"]), "kind": e["kind"],
            "via": None, "quantity_used": None, "quantity_produced": None, "occurred_at": None,
            "redacted": True})  # fmt: skip
    documents = [d for d in body["documents"] if d["lot_id"] in visible]
    out: dict[str, Any] = redact_refs(
        {**body, "lots": lots, "edges": edges, "documents": documents}, who, access
    )
    return out


def redact_recall(packet: dict[str, Any], who: Principal, access: AccessControl) -> dict[str, Any]:
    """A recall packet as ``who`` may see it."""
    if who.role is not Role.SITE_QUALITY:
        return packet
    hidden = {lot["lot_id"] for lot in packet["lots"] if not who.sees(lot["site"])}
    lots = [lot if lot["lot_id"] not in hidden else
            {"lot_id": access.token(lot["lot_id"]), "site": "redacted", "item_code": None,
             "item_description": None, "status": None, "seed": lot["seed"], "depth": lot["depth"],
             "balances": [], "last_location": None, "redacted": True}
            for lot in packet["lots"]]  # fmt: skip
    return {
        **packet,
        "lots": lots,
        "shipments": [s for s in packet["shipments"] if s["lot_id"] not in hidden],
        "in_transit": [t for t in packet["in_transit"] if t["lot_id"] not in hidden],
        "gaps": [g for g in packet["gaps"] if g["lot_id"] not in hidden],
    }


def redact_alert(alert: dict[str, Any], who: Principal, access: AccessControl) -> dict[str, Any]:
    """An alert as ``who`` may see it: other sites' lot ids become tokens, in text too."""
    if who.role is not Role.SITE_QUALITY:
        return alert
    hidden = sorted((lot for lot in alert["lots"] if not who.sees(lot.split(":", 1)[0])),
                    key=len, reverse=True)  # fmt: skip
    if not hidden:
        return alert

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            for lot in hidden:  # longest first: no id is a prefix of a longer one's token
                value = value.replace(lot, access.token(lot))
            return value
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    out: dict[str, Any] = clean(alert)
    return out
