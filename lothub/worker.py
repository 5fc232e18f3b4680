"""``lothub worker``: one stream worker process, wired from settings."""

from __future__ import annotations

import faust

from genealogy.store import GenealogyStore
from lothub.runtime import ensure_topics
from lothub.settings import Settings
from schemas.serde import make_serde
from streams.worker import WorkerDeps, create_app


def run_worker(settings: Settings) -> int:
    """Build the faust app from settings and run it until SIGTERM or Ctrl-C.

    The flow map's topics are created first if missing: a broker that restarted
    without its data would otherwise auto-create them with its own defaults.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_topics(settings)
    store = GenealogyStore.connect(settings.store_url)
    store.migrate()
    deps = WorkerDeps(
        topics=settings.topics,
        sites=settings.sites(),
        serde=make_serde(settings.schema_registry_url),
        store=store,
        stall_s=settings.worker_stall_timeout_s,
    )
    app = create_app(settings.faust_config(), deps)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
    return 0
