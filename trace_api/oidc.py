"""OIDC bearer tokens: an identity provider's signed JWTs mapped to the hub's roles.

Configured in the API keys file (``LOTHUB_API_KEYS_FILE``) beside or instead of keys::

    [oidc]
    issuer = "https://login.example.com/realms/plants"
    audience = "lothub"
    # jwks_url = "..."          # default: the issuer's discovery document says where
    role_claim = "roles"        # a string or a list of strings in the token
    site_claim = "site"         # a site quality user's site
    user_claim = "preferred_username"

    [oidc.roles]                # the provider's role or group -> the hub's role
    "qa-enterprise" = "ENTERPRISE_QUALITY"
    "qa-site" = "SITE_QUALITY"
    "integration" = "INTEGRATION_ADMIN"
    "audit" = "AUDITOR"

A token is accepted when its signature verifies against the provider's published keys
(RS256/ES256, fetched over HTTPS with httpx and cached; an unknown ``kid`` refetches them,
at most once a minute), its ``iss`` and ``aud`` match, and it has not expired (60 s of
clock skew allowed). Its first role the mapping knows decides; a token with none, or a
site-quality token without a site, is refused. Errors never say more than "not accepted".

Example::

    verifier = OidcVerifier(OidcConfig(issuer=..., audience="lothub", roles={...}))
    principal = verifier.principal(token)      # None if the token is not accepted
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from schemas.errors import ConfigurationError

log = logging.getLogger("lothub.trace_api.oidc")

#: signature algorithms accepted (never "none", never HMAC with a public key)
ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
#: seconds between two fetches of the provider's keys when a token names an unknown one
REFETCH_S = 60.0
LEEWAY_S = 60


@dataclass(frozen=True, kw_only=True)
class OidcConfig:
    """Where tokens come from and how their claims map to roles (see the module docstring)."""

    issuer: str
    audience: str
    roles: dict[str, str]
    jwks_url: str | None = None
    role_claim: str = "roles"
    site_claim: str = "site"
    user_claim: str = "preferred_username"

    @classmethod
    def from_toml(cls, raw: dict[str, Any], where: str) -> OidcConfig:
        """The ``[oidc]`` table of a keys file; raises :class:`ConfigurationError`."""
        missing = [k for k in ("issuer", "audience", "roles") if not raw.get(k)]
        if missing:
            raise ConfigurationError(f"{where}: [oidc] needs {', '.join(missing)}")
        known = {
            "issuer",
            "audience",
            "roles",
            "jwks_url",
            "role_claim",
            "site_claim",
            "user_claim",
        }
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigurationError(f"{where}: [oidc] has unknown settings {unknown}")
        return cls(
            issuer=str(raw["issuer"]).rstrip("/"), audience=str(raw["audience"]),
            roles={str(k): str(v) for k, v in dict(raw["roles"]).items()},
            jwks_url=raw.get("jwks_url"), role_claim=str(raw.get("role_claim", "roles")),
            site_claim=str(raw.get("site_claim", "site")),
            user_claim=str(raw.get("user_claim", "preferred_username")),
        )  # fmt: skip


@dataclass
class _Keys:
    keys: dict[str, Any] = field(default_factory=dict)
    fetched_at: float = float("-inf")


class OidcVerifier:
    """Checks bearer JWTs against one provider; its HTTP client takes a transport."""

    def __init__(
        self,
        config: OidcConfig,
        *,
        client: httpx.Client | None = None,
        min_refetch_s: float = REFETCH_S,
    ) -> None:
        self.config = config
        self.min_refetch_s = min_refetch_s
        self._client = client or httpx.Client(timeout=10.0)
        self._keys = _Keys()
        self._lock = threading.Lock()

    def _jwks_url(self) -> str:
        if self.config.jwks_url:
            return self.config.jwks_url
        discovery = f"{self.config.issuer}/.well-known/openid-configuration"
        document = self._client.get(discovery)
        document.raise_for_status()
        return str(document.json()["jwks_uri"])

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._keys.fetched_at < self.min_refetch_s:
                return
            try:
                response = self._client.get(self._jwks_url())
                response.raise_for_status()
                jwks = jwt.PyJWKSet.from_dict(response.json())
            except (httpx.HTTPError, KeyError, ValueError, jwt.PyJWKSetError) as exc:
                # keep the keys we had: a provider hiccup must not lock everyone out
                log.warning("OIDC keys of %s not fetched: %s", self.config.issuer, exc)
                self._keys.fetched_at = time.monotonic()
                return
            self._keys = _Keys({k.key_id: k for k in jwks.keys if k.key_id}, time.monotonic())

    def _key(self, kid: str) -> Any:
        if kid not in self._keys.keys:
            self._refresh()
        return self._keys.keys.get(kid)

    def claims(self, token: str) -> dict[str, Any] | None:
        """The token's verified claims, or None if it is not accepted."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        key = self._key(str(header.get("kid", "")))
        if key is None or header.get("alg") not in ALGORITHMS:
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key=key, algorithms=list(ALGORITHMS), audience=self.config.audience,
                issuer=self.config.issuer, leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud"]},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            log.info("OIDC token refused: %s", exc)
            return None
        return claims

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()
