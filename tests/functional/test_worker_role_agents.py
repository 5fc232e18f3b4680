"""Each worker role builds the agents, timers and tables of its part of the flow, no more."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from genealogy.store import GenealogyStore
from lothub.cli import _parser
from lothub.settings import Settings
from lothub.worker import worker_deps
from streams.worker import HEARTBEAT_COMPONENT, WorkerRole, create_app


@pytest.mark.parametrize(
    ("role", "agents", "tables"),
    [
        (WorkerRole.ALL, {"normalize_agent", "integrity_check", "sink_agent", "alert_sink"}, 1),
        (WorkerRole.PROCESS, {"normalize_agent", "integrity_check"}, 1),
        (WorkerRole.STORE, {"sink_agent", "alert_sink"}, 0),
    ],
)
def test_each_role_builds_its_own_agents(
    role: WorkerRole,
    agents: set[str],
    tables: int,
    settings_factory: Callable[..., Settings],
    store_factory: Callable[[str], GenealogyStore],
    tmp_path: Path,
) -> None:
    settings = settings_factory(kafka_bootstrap="127.0.0.1:9", worker_role=role.value)
    store = store_factory(f"sqlite:///{tmp_path / 'hub.db'}")
    app = create_app(settings.faust_config(), worker_deps(settings, store), role=role)
    assert {name.rsplit(".", 1)[-1] for name in app.agents} == agents
    assert len(app.tables) == tables, "only a worker that checks keeps the integrity state"
    assert role.heartbeat_component.startswith(HEARTBEAT_COMPONENT)


def test_the_role_is_a_worker_option() -> None:
    assert _parser().parse_args(["worker", "--role", "store"]).role == "store"
    assert _parser().parse_args(["worker"]).role is None
    with pytest.raises(SystemExit):
        _parser().parse_args(["worker", "--role", "sink"])
