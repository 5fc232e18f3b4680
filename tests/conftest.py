"""Shared fixtures. Tiers follow the folders: unit/, functional/, integration/."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from connectors.checkpoints import CheckpointStore
from genealogy.store import GenealogyStore
from lothub.runtime import EmbeddedBroker, ensure_topics
from lothub.settings import Settings, demo_sites_path
from schemas.sites import SitesConfig, load_sites

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "LOTHUB_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with the tier of the folder it lives in."""
    for item in items:
        tier = Path(str(item.fspath)).relative_to(ROOT / "tests").parts[0]
        if tier in {"unit", "functional", "integration"}:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def demo_sites() -> SitesConfig:
    return load_sites(demo_sites_path())


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'lothub.db'}"


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[str]:
    """The real PostgreSQL, started if it is down."""
    subprocess.run(["bash", str(ROOT / "scripts" / "ensure-postgres.sh")], check=True)
    return PG_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"lothub_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_admin, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = postgres_admin.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs on SQLite and on real PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def store_factory() -> Iterator[Callable[[str], GenealogyStore]]:
    opened: list[GenealogyStore] = []

    def make(url: str) -> GenealogyStore:
        store = GenealogyStore.connect(url)
        store.migrate()
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One embedded Tansu broker for the session; tests isolate by topic prefix."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log) as running:
        yield running.bootstrap


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    """Settings with a random topic prefix and consumer group per test."""
    tag = uuid.uuid4().hex[:10]

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "topic_prefix": f"t{tag}.",
            "worker_group": f"lothub-test-{tag}",
            "data_dir": tmp_path / "var",
            "session_timeout_s": 6.0,
            "site_config": demo_sites_path(),
            "log_level": "INFO",
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment a `lothub worker` child needs for ``settings``."""
    env = dict(os.environ)
    env.update(
        {
            "LOTHUB_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
            "LOTHUB_DATABASE_URL": settings.store_url,
            "LOTHUB_TOPIC_PREFIX": settings.topic_prefix,
            "LOTHUB_WORKER_GROUP": settings.worker_group,
            "LOTHUB_SESSION_TIMEOUT_S": str(settings.session_timeout_s),
            "LOTHUB_SITE_CONFIG": str(settings.site_config),
            "LOTHUB_DATA_DIR": str(settings.data_dir),
            "LOTHUB_LOG_LEVEL": "INFO",
            # a killed worker's last lines would die in its buffer, and they say the most
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `lothub worker [--role R]` children; each is stopped (and its log shown) after."""
    children: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(settings: Settings, *, role: str | None = None) -> subprocess.Popen[bytes]:
        log = tmp_path / f"worker-{len(children)}.log"
        with log.open("wb") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "lothub", "worker", *(["--role", role] if role else [])],
                env=worker_env(settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        children.append((child, log))
        return child

    yield start
    for child, log in children:
        # read before stopping it: the lines of a hung worker say where it hangs
        lines = log.read_text(errors="replace").splitlines()
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        print(f"--- {log.name}: {worker_log_digest(lines)}")


#: faust's routine chatter (a full producer buffer, a late timer), which says nothing of a fault
_NOISE = ("producer buffer full", "producer flush took", "woke up too late")


def worker_log_digest(lines: list[str], *, last: int = 15, warnings: int = 12) -> str:
    """A worker log shortened for a failure report: its first warnings, then its last lines."""
    flagged = [line for line in lines if ("[WARNING]" in line or "[ERROR]" in line)
               and not any(noise in line for noise in _NOISE)]  # fmt: skip
    head = "\n".join(flagged[:warnings])
    more = f"\n(+{len(flagged) - warnings} more warnings)" if len(flagged) > warnings else ""
    tail = "\n".join(lines[-last:])
    return f"{len(flagged)} warnings/errors\n{head}{more}\n... last lines:\n{tail}"


def wait_for(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    poll_s: float = 0.3,
    fail_if: Callable[[], bool] | None = None,
    explain: Callable[[], str] | None = None,
) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout_s`` or once ``fail_if``.

    ``explain`` adds what the failure report should say about the state of things (the
    report's own captured output may be cut short where it matters).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if fail_if is not None and fail_if():
            pytest.fail(f"gave up waiting for {what}: a process it depends on died{_why(explain)}")
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}{_why(explain)}")


def _why(explain: Callable[[], str] | None) -> str:
    return "" if explain is None else f"\n{explain()}"


@pytest.fixture
def connector_wiring(broker: str, settings_factory: Callable[..., Settings], sqlite_url: str,
           store_factory: Callable[[str], GenealogyStore]) -> Iterator[tuple[Settings, CheckpointStore]]:  # fmt: skip
    """Settings on the session broker, topics created, a hub database with checkpoints."""
    settings = settings_factory(kafka_bootstrap=broker, database_url=sqlite_url)
    ensure_topics(settings)
    store_factory(sqlite_url)  # migrations create the checkpoint table
    checkpoints = CheckpointStore.connect(sqlite_url)
    yield settings, checkpoints
    checkpoints.close()
