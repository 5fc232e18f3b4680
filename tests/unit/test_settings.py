"""Settings and site configuration are validated at start, with messages naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from lothub.settings import Settings
from schemas.errors import ConfigurationError
from schemas.sites import load_sites


def test_secrets_are_masked_in_repr() -> None:
    s = Settings(
        database_url="postgresql+psycopg://hub:s3cret@db/lothub", kafka_sasl_password="pw-123"
    )  # type: ignore[arg-type]
    assert "s3cret" not in repr(s)
    assert "pw-123" not in repr(s)
    assert s.store_url.endswith("@db/lothub")


def test_producer_is_idempotent_and_waits_for_all_replicas() -> None:
    conf = Settings(kafka_bootstrap="k1:9092").producer_config()
    assert conf["enable.idempotence"] is True
    assert conf["acks"] == "all"


def test_sasl_settings_reach_both_clients() -> None:
    s = Settings(
        kafka_bootstrap="k1:9092",
        kafka_security_protocol="SASL_SSL",  # type: ignore[arg-type]
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="hub",
        kafka_sasl_password="pw",
    )
    assert s.producer_config()["sasl.password"] == "pw"
    assert s.faust_config()["broker_credentials"].username == "hub"


def test_missing_bootstrap_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="LOTHUB_KAFKA_BOOTSTRAP"):
        Settings().producer_config()


def test_bad_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOTHUB_API_PORT", "eighty")
    with pytest.raises(ConfigurationError, match="LOTHUB_API_PORT"):
        Settings.from_env()


def test_topic_prefix_applies_to_every_topic() -> None:
    names = [name for name, _ in Settings(topic_prefix="plantA.").topics.all()]
    assert names
    assert all(n.startswith("plantA.lothub.") for n in names)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[sites.X]\nname="x"\ntimezone="Mars/Olympus"\nlot_code_pattern=".*"\n',
            "sites.X.timezone",
        ),
        ('[sites.X]\nname="x"\ntimezone="UTC"\nlot_code_pattern="(["\n', "lot_code_pattern"),
        (
            '[sites.X]\nname="x"\ntimezone="UTC"\nlot_code_pattern=".*"\n[sites.X.unit_codes]\nkg="KILO"\n',
            "kg -> KILO",
        ),
        (
            '[sites.X]\nname="x"\ntimezone="UTC"\nlot_code_pattern=".*"\n[sites.X.status_codes]\nF="FREE"\n',
            "sites.X.status_codes.F",
        ),
        ("[sites.X\n", "not valid TOML"),
    ],
)
def test_invalid_site_configuration(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(toml)
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[")):
        load_sites(path)


def test_missing_site_configuration(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_sites(tmp_path / "nope.toml")


def test_store_workers_have_their_own_consumer_group() -> None:
    def group(role: str) -> str:
        s = Settings(kafka_bootstrap="k1:9092", worker_group="hub", worker_role=role)  # type: ignore[arg-type]
        return str(s.faust_config()["id"])

    assert [group("all"), group("process"), group("store")] == ["hub", "hub", "hub-store"]


def test_an_unknown_worker_role_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOTHUB_WORKER_ROLE", "sink")
    with pytest.raises(ConfigurationError, match="LOTHUB_WORKER_ROLE"):
        Settings.from_env()
