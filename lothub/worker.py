"""``lothub worker``: one stream worker process, wired from settings."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from connectors.registry import DENSE_KINDS
from genealogy.store import GenealogyStore
from lothub.runtime import ensure_topics
from lothub.settings import Settings
from schemas.serde import make_serde
from streams.integrity import Thresholds
from streams.worker import WorkerDeps, WorkerRole, create_app, quiet_worker, tune_gc


def worker_deps(settings: Settings, store: GenealogyStore) -> WorkerDeps:
    """What a stream worker needs, from settings (the integrity limits included)."""
    sites = settings.sites()
    return WorkerDeps(
        topics=settings.topics,
        sites=sites,
        serde=make_serde(settings.schema_registry_url),
        store=store,
        stall_s=settings.worker_stall_timeout_s,
        thresholds=Thresholds(
            mass_gain_tolerance=Decimal(str(settings.integrity_mass_gain_tolerance)),
            mass_loss_tolerance=Decimal(str(settings.integrity_mass_loss_tolerance)),
            late_horizon=timedelta(seconds=settings.integrity_late_horizon_s),
            stall_after=timedelta(seconds=settings.integrity_stall_s)
            if settings.integrity_stall_s
            else None,
            stall_after_by_source={
                name: timedelta(seconds=spec.stall_after_s)
                for name, spec in sites.connectors.items()
                if spec.stall_after_s is not None
            },
            transfer_sla=timedelta(hours=settings.integrity_transfer_sla_h),
            dense_sources=settings.dense_sources
            | {name for name, spec in sites.connectors.items() if spec.kind in DENSE_KINDS},
            sequence_gap_after=timedelta(seconds=settings.integrity_sequence_gap_s),
        ),
        tick_s=settings.integrity_tick_s,
    )


def run_worker(settings: Settings) -> int:
    """Build the faust app of the worker's role from settings and run it until SIGTERM or Ctrl-C.

    The flow map's topics are created first if missing: a broker that restarted
    without its data would otherwise auto-create them with its own defaults.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_topics(settings)
    store = GenealogyStore.connect(settings.store_url)
    store.migrate()
    deps = worker_deps(settings, store)
    if settings.worker_metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port, addr=settings.api_host)
    app = create_app(settings.faust_config(), deps, role=WorkerRole(settings.worker_role))
    tune_gc()
    quiet_worker(app, loglevel=settings.log_level).execute_from_commandline()
    return 0
