"""Every setting of the hub, read once from ``LOTHUB_*`` environment variables.

This module also builds the client configurations derived from the settings: the
librdkafka producer config (connectors), the faust app config (stream worker) and
the admin config (topic creation), so no other module reads the environment.

Example::

    >>> s = Settings(kafka_bootstrap="127.0.0.1:9092")
    >>> s.producer_config()["enable.idempotence"]
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import ConfigurationError
from schemas.sites import SitesConfig, load_sites
from schemas.topics import Topics


def demo_sites_path() -> Path:
    """The site configuration shipped for the demo scenario."""
    return Path(__file__).parent / "sites.demo.toml"


class Settings(BaseSettings):
    """Hub settings. Secrets (database URL, SASL password) are masked in ``repr``."""

    model_config = SettingsConfigDict(env_prefix="LOTHUB_", frozen=True, extra="ignore")

    #: Kafka bootstrap servers; unset = start the embedded broker (Tansu)
    kafka_bootstrap: str | None = None
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    #: Confluent Schema Registry URL; unset = Avro single-object encoding
    schema_registry_url: str | None = None
    #: prefix for every topic name, so several hubs can share one cluster
    topic_prefix: str = ""
    #: SQLAlchemy URL of the genealogy store; unset = SQLite file in ``data_dir``
    database_url: SecretStr | None = None
    data_dir: Path = Path("var")
    site_config: Path = Field(default_factory=demo_sites_path)
    api_host: str = "127.0.0.1"
    #: API keys by SHA-256 and role (TOML); unset = local mode, loopback only, full access
    api_keys_file: Path | None = None
    api_port: int = Field(default=8000, ge=0, le=65535)
    #: consumer group of the stream worker (``store`` workers use ``<group>-store``)
    worker_group: str = "lothub-streams"
    #: which agents ``lothub worker`` runs: ``all``, or split over two kinds of process,
    #: ``process`` (normalize and check) and ``store`` (write the store); see the README
    worker_role: Literal["all", "process", "store"] = "all"
    #: Kafka consumer session timeout; a faust worker's first join waits this long
    session_timeout_s: float = Field(default=10.0, gt=0)
    #: a stream worker with work waiting and no progress for this long exits non-zero
    worker_stall_timeout_s: float = Field(default=120.0, gt=0)
    log_level: str = "WARNING"
    #: a stream worker serves its Prometheus metrics (integrity alerts) on this port; unset: none
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    #: integrity: a batch's outputs may weigh this much more than its inputs (0.01 = 1 %)
    integrity_mass_gain_tolerance: float = Field(default=0.01, ge=0)
    #: integrity: and this much less (1.0 = any loss is accepted: drying, trim, waste)
    integrity_mass_loss_tolerance: float = Field(default=1.0, ge=0, le=1)
    #: integrity: an event this far behind the newest event time of its source is late
    integrity_late_horizon_s: float = Field(default=86_400.0, gt=0)
    #: integrity: a source silent this long is stalled (0: never; a connector's
    #: ``stall_after_s`` in the site configuration overrides it)
    integrity_stall_s: float = Field(default=3_600.0, ge=0)
    #: integrity: a transfer not received this long after shipping is overdue
    integrity_transfer_sla_h: float = Field(default=72.0, gt=0)
    #: integrity: how often the clock-driven rules are checked
    integrity_tick_s: float = Field(default=60.0, gt=0)
    #: integrity: system instances, besides the connectors that number their events densely,
    #: whose events are numbered 1, 2, 3... (comma-separated): a skipped number is a gap
    integrity_dense_sources: str = ""
    #: integrity: a skipped sequence number still missing this long is a sequence-gap alert
    integrity_sequence_gap_s: float = Field(default=300.0, gt=0)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Read the environment; raise :class:`ConfigurationError` naming bad variables."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            problems = "; ".join(
                f"LOTHUB_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                for e in exc.errors()
            )
            raise ConfigurationError(f"invalid settings: {problems}") from exc

    @property
    def topics(self) -> Topics:
        """Topic names of this deployment."""
        return Topics(self.topic_prefix)

    @property
    def store_url(self) -> str:
        """The genealogy store URL (default: SQLite file under ``data_dir``)."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'lothub.db').resolve()}"

    @property
    def dense_sources(self) -> frozenset[str]:
        """The names in ``integrity_dense_sources``."""
        return frozenset(n.strip() for n in self.integrity_dense_sources.split(",") if n.strip())

    def sites(self) -> SitesConfig:
        """The validated site configuration."""
        return load_sites(self.site_config)

    def _bootstrap(self) -> str:
        if not self.kafka_bootstrap:
            raise ConfigurationError(
                "LOTHUB_KAFKA_BOOTSTRAP is not set and no embedded broker was started"
            )
        return self.kafka_bootstrap

    def _librdkafka_security(self) -> dict[str, Any]:
        conf: dict[str, Any] = {"security.protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
            conf["sasl.username"] = self.kafka_sasl_username or ""
            conf["sasl.password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else ""
            )
        return conf

    def admin_config(self) -> dict[str, Any]:
        """librdkafka config for the admin client (topic creation, metadata)."""
        return {"bootstrap.servers": self._bootstrap(), **self._librdkafka_security()}

    def producer_config(self) -> dict[str, Any]:
        """librdkafka config for connectors: idempotent, every replica acknowledges."""
        return {
            "bootstrap.servers": self._bootstrap(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 30_000,
            **self._librdkafka_security(),
        }

    def consumer_config(self, group: str) -> dict[str, Any]:
        """librdkafka config for tools that read topics (dead letters, checks)."""
        return {
            "bootstrap.servers": self._bootstrap(),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **self._librdkafka_security(),
        }

    @property
    def worker_consumer_group(self) -> str:
        """The consumer group (faust app id) of this worker role.

        ``all`` and ``process`` workers share ``worker_group``, so a deployment that
        splits its workers keeps where normalizing and checking had got to; ``store``
        workers, which read other topics, have their own.
        """
        return f"{self.worker_group}-store" if self.worker_role == "store" else self.worker_group

    def faust_config(self) -> dict[str, Any]:
        """Keyword arguments for ``faust.App`` (aiokafka underneath)."""
        conf: dict[str, Any] = {
            "id": self.worker_consumer_group,
            "broker": f"kafka://{self._bootstrap()}",
            "store": "memory://",
            "web_enabled": False,
            "topic_replication_factor": 1,
            "topic_allow_declare": False,  # topics are created up front from the flow map
            "topic_disable_leader": True,
            "broker_session_timeout": self.session_timeout_s,
            "broker_heartbeat_interval": min(3.0, self.session_timeout_s / 3),
            "broker_commit_every": 100,
            "broker_commit_interval": 1.0,
            "consumer_auto_offset_reset": "earliest",
            "datadir": str(self.data_dir / "faust"),
        }
        if self.kafka_security_protocol != "PLAINTEXT":
            import faust

            conf["broker_credentials"] = faust.SASLCredentials(
                username=self.kafka_sasl_username or "",
                password=self.kafka_sasl_password.get_secret_value()
                if self.kafka_sasl_password
                else "",
                mechanism=self.kafka_sasl_mechanism or "PLAIN",
            )
        return conf
