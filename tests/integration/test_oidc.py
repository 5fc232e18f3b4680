"""OIDC bearer tokens against a provider served over real HTTP (discovery and JWKS).

The identity provider is a small HTTP server on loopback publishing a discovery document
and its signing keys, as Keycloak or Entra ID do; tokens are signed with its private key.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jwt.algorithms import RSAAlgorithm

from connectors.simulator import build_scenario
from genealogy.store import GenealogyStore
from schemas.sites import SitesConfig
from tests.helpers import normalized
from trace_api.app import create_app
from trace_api.auth import AccessControl
from trace_api.oidc import OidcConfig, OidcVerifier

pytestmark = pytest.mark.integration

ROLES = {
    "qa-all": "ENTERPRISE_QUALITY",
    "qa-site": "SITE_QUALITY",
    "integration": "INTEGRATION_ADMIN",
}


class Provider:
    """An identity provider: discovery document, JWKS, and tokens signed with its keys."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.add_key("k1")
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": provider.issuer, "jwks_uri": f"{provider.issuer}/keys"}
                elif self.path == "/keys":
                    body = {"keys": [
                        {**json.loads(RSAAlgorithm.to_jwk(k.public_key())), "kid": kid, "alg": "RS256", "use": "sig"}
                        for kid, k in provider.keys.items()
                    ]}  # fmt: skip
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add_key(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def token(self, *, kid: str = "k1", key: Any = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "aud": "lothub", "exp": now + 300, "iat": now,
                "sub": "u-1", "preferred_username": "qa.brunner", **claims}  # fmt: skip
        return jwt.encode(body, key or self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def provider() -> Iterator[Provider]:
    idp = Provider()
    yield idp
    idp.server.shutdown()
    idp.server.server_close()


@pytest.fixture
def client_with(
    provider: Provider, tmp_path: Path, sqlite_url: str,
    store_factory: Callable[[str], GenealogyStore], demo_sites: SitesConfig,
) -> Iterator[Callable[[AccessControl | None], TestClient]]:  # fmt: skip
    store = store_factory(sqlite_url)
    store.apply(normalized(build_scenario(demo_sites).events, demo_sites))
    keys = tmp_path / "keys.toml"
    roles = "\n".join(f'"{k}" = "{v}"' for k, v in ROLES.items())
    keys.write_text(
        f'[oidc]\nissuer = "{provider.issuer}"\naudience = "lothub"\n[oidc.roles]\n{roles}\n'
    )
    made: list[AccessControl] = []

    def make(access: AccessControl | None = None) -> TestClient:
        made.append(access or AccessControl.load(keys))
        return TestClient(create_app(store, access=made[-1]))

    yield make
    for access in made:
        access.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_map_to_roles_and_sites(provider: Provider, client_with: Any) -> None:
    client = client_with()
    assert not client.app.state.access.local_mode, "a provider turns authentication on"
    assert client.get("/api/v1/lots?q=A").status_code == 401
    everyone = bearer(provider.token(roles=["qa-all"]))
    assert client.get("/api/v1/whoami", headers=everyone).json()["role"] == "ENTERPRISE_QUALITY"
    assert client.get("/api/v1/lots/BRK:26313-01", headers=everyone).status_code == 200

    alp = bearer(provider.token(roles=["staff", "qa-site"], site="ALP"))
    who = client.get("/api/v1/whoami", headers=alp).json()
    assert (who["user"], who["role"], who["site"]) == ("qa.brunner", "SITE_QUALITY", "ALP")
    assert client.get("/api/v1/lots/ALP:ALP-20261102-001", headers=alp).status_code == 200
    assert client.get("/api/v1/lots/BRK:26313-01", headers=alp).status_code == 404, (
        "another site's lot is answered as if it did not exist"
    )
    admin = bearer(provider.token(roles="integration"))
    assert client.get("/api/v1/lots?q=A", headers=admin).status_code == 403


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(
            lambda p: p.token(roles=["qa-all"], exp=int(time.time()) - 3600), id="expired"
        ),
        pytest.param(lambda p: p.token(roles=["qa-all"], aud="another-app"), id="audience"),
        pytest.param(lambda p: p.token(roles=["qa-all"], iss="https://evil.example"), id="issuer"),
        pytest.param(
            lambda p: p.token(
                roles=["qa-all"], key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
            ),
            id="forged-signature",
        ),
        pytest.param(lambda p: p.token(roles=["visitor"]), id="no-mapped-role"),
        pytest.param(lambda p: p.token(roles=["qa-site"]), id="site-role-without-site"),
        pytest.param(
            lambda p: jwt.encode(
                {
                    "iss": p.issuer,
                    "aud": "lothub",
                    "roles": ["qa-all"],
                    "exp": int(time.time()) + 60,
                },
                key=None,
                algorithm="none",
                headers={"kid": "k1"},
            ),
            id="unsigned",
        ),
    ],
)
def test_tokens_that_must_not_pass(
    provider: Provider, client_with: Any, spoil: Callable[[Provider], str]
) -> None:
    response = client_with().get("/api/v1/lots?q=A", headers=bearer(spoil(provider)))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_rotated_keys_are_fetched_again(provider: Provider, client_with: Any) -> None:
    config = OidcConfig(issuer=provider.issuer, audience="lothub", roles=ROLES)
    client = client_with(AccessControl({}, OidcVerifier(config, min_refetch_s=0)))
    assert (
        client.get("/api/v1/lots?q=A", headers=bearer(provider.token(roles=["qa-all"]))).status_code
        == 200
    )
    provider.add_key("k2")  # the provider rotates its signing key
    rotated = bearer(provider.token(kid="k2", roles=["qa-all"]))
    assert client.get("/api/v1/lots?q=A", headers=rotated).status_code == 200


def test_a_bad_oidc_section_is_a_configuration_error(tmp_path: Path) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text(
        '[oidc]\nissuer = "https://idp"\naudience = "lothub"\n[oidc.roles]\n"x" = "BOSS"\n'
    )
    with pytest.raises(Exception, match="unknown roles"):
        AccessControl.load(keys)
