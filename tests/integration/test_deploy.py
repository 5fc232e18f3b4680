"""deploy/: the docker-compose stack, Prometheus config and alert rules, Grafana dashboard.

Nothing here can run the stack (no Docker daemon on CI machines), so each artefact is checked
by the tool that would read it: ``docker-compose config`` (Debian's compose v1, offline),
``promtool check``/``promtool test rules``, and the hub's own code for names (settings, API
roles, metric definitions). ``scripts/ensure-deploy-tools.sh`` installs the tools if missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lothub.settings import Settings
from tests.conftest import ROOT
from trace_api.auth import AccessControl, Permission

DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def tools() -> None:
    """docker-compose and promtool, installed by the script ``make test`` runs."""
    subprocess.run(["bash", str(ROOT / "scripts" / "ensure-deploy-tools.sh")], check=True)


@pytest.fixture
def deployed(tmp_path: Path, tools: None) -> Path:
    """A copy of deploy/ after ``init-secrets.sh``, as an operator would have it."""
    target = tmp_path / "deploy"
    shutil.copytree(DEPLOY, target)
    (tmp_path / "lothub").mkdir()
    shutil.copy(ROOT / "lothub" / "sites.demo.toml", tmp_path / "lothub")
    subprocess.run([str(target / "init-secrets.sh")], check=True, capture_output=True)
    return target


def compose(deploy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f docker-compose.yml <args>`` in ``deploy`` (reads its .env)."""
    return subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", *args],
        cwd=deploy,
        capture_output=True,
        text=True,
        timeout=60,
    )


def resolved(deploy: Path) -> dict[str, Any]:
    """The compose file as docker-compose resolves it (anchors merged, variables filled in)."""
    result = compose(deploy, "config")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def mount_target(volume: str | dict[str, str]) -> str:
    """Where a volume of a resolved compose file is mounted in the container."""
    return volume["target"] if isinstance(volume, dict) else volume.split(":")[1]


def mount_source(volume: str | dict[str, str]) -> str:
    """What a volume of a resolved compose file mounts (host path or volume name)."""
    return volume["source"] if isinstance(volume, dict) else volume.split(":")[0]


# --------------------------------------------------------------------------- docker-compose


def test_compose_file_is_valid_once_secrets_exist(deployed: Path) -> None:
    result = compose(deployed, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_passwords(deployed: Path) -> None:
    (deployed / ".env").write_text("")
    result = compose(deployed, "config", "-q")
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr or "KAFKA_CLUSTER_ID" in result.stderr


def test_env_example_names_every_required_variable(deployed: Path) -> None:
    shutil.copy(deployed / ".env.example", deployed / ".env")
    result = compose(deployed, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_env_example_holds_placeholders_only() -> None:
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "CHANGE_ME" in line.split("=", 1)[1], line


def test_runs_kafka_postgres_hub_workers_prometheus_grafana(deployed: Path) -> None:
    services = resolved(deployed)["services"]
    assert set(services) == {"kafka", "postgres", "hub", "worker", "prometheus", "grafana"}
    assert services["hub"]["command"] == ["up"]
    assert services["worker"]["command"] == ["worker"]
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].split("//", 1)[1]
    postgres = services["postgres"]["environment"]
    for name in ("hub", "worker"):
        env = services[name]["environment"]
        settings = Settings(**{k[len("LOTHUB_") :].lower(): v for k, v in env.items()
                               if k.startswith("LOTHUB_")})  # fmt: skip
        # the external broker, so `lothub up` starts no embedded one
        assert settings.kafka_bootstrap == advertised
        assert settings.store_url.startswith("postgresql+psycopg://")
        assert f"{postgres['POSTGRES_USER']}@postgres:5432/{postgres['POSTGRES_DB']}" in (
            settings.store_url
        )
        assert env["PGPASSWORD"] == postgres["POSTGRES_PASSWORD"]
        assert settings.worker_metrics_port is not None
        # every file the hub reads is mounted where the settings say
        files = [settings.site_config] + ([settings.api_keys_file] if name == "hub" else [])
        mounted = {mount_target(v): mount_source(v) for v in services[name]["volumes"]}
        for path in files:
            assert path is not None
            assert Path(mounted[str(path)]).is_file(), path
    assert services["hub"]["environment"]["LOTHUB_API_KEYS_FILE"]  # never local mode


def test_every_lothub_variable_is_a_setting(deployed: Path) -> None:
    """A misspelt LOTHUB_* variable is silently ignored by the hub: catch it here."""
    fields = {f"LOTHUB_{name.upper()}" for name in Settings.model_fields}
    for name in ("hub", "worker"):
        env = resolved(deployed)["services"][name]["environment"]
        unknown = {k for k in env if k.startswith("LOTHUB_")} - fields
        assert not unknown, f"{name}: {unknown} are not hub settings"


def test_prometheus_key_from_init_secrets_may_read_metrics(deployed: Path) -> None:
    key = (deployed / "secrets" / "prometheus-api-key").read_text().strip()
    access = AccessControl.load(deployed / "secrets" / "api-keys.toml")
    who = access.authenticate({"authorization": f"Bearer {key}"})
    assert who is not None
    assert who.can(Permission.OPERATE)  # what /metrics asks for
    assert access.authenticate({"authorization": "Bearer not-the-key"}) is None


def test_init_secrets_never_overwrites(deployed: Path) -> None:
    before = {p: p.read_bytes() for p in deployed.rglob("*") if p.is_file()}
    subprocess.run([str(deployed / "init-secrets.sh")], check=True, capture_output=True)
    after = {p: p.read_bytes() for p in deployed.rglob("*") if p.is_file()}
    assert after == before


def test_generated_secrets_are_ignored_by_git(deployed: Path) -> None:
    made = sorted(
        str(p.relative_to(deployed.parent))
        for p in deployed.rglob("*")
        if p.is_file() and not (DEPLOY / p.relative_to(deployed)).exists()
    )
    assert made  # .env, hub.env, secrets/..., config/sites.toml
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *made],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert sorted(ignored) == made


def test_image_context_holds_every_package_and_no_secret() -> None:
    """The Dockerfile copies the context .dockerignore allows: every installed package."""
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "**"  # everything excluded unless allowed
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert packages <= allowed
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= allowed
    assert not {a for a in allowed if a.startswith("deploy")}
