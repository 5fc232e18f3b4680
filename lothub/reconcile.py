"""Reconciliation wired to the deployment: the store, the connectors' read side, a schedule.

``lothub reconcile`` runs it on demand; ``lothub up`` runs it every
``[reconcile] interval_s`` seconds of the site configuration (0: never).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from connectors.registry import PUSH_KINDS, build_source
from genealogy.store import GenealogyStore
from lothub.settings import Settings
from reconciler.jobs import SourceReader
from reconciler.runner import ReconcileOptions, RunResult, run_reconciliation
from schemas.errors import ConfigurationError, DataError
from schemas.sites import SitesConfig

log = logging.getLogger("lothub.reconcile")

#: records read again per round trip, and at most per connector and run
PAGE, MAX_RECORDS = 1_000, 5_000_000


def source_reader(sites: SitesConfig) -> SourceReader:
    """Reads a pull connector's source again, with its own configured credentials.

    Returns the event ids of what happened in the period and how many records of it
    cannot be mapped (those are on the dead-letter topic, never in the hub).
    """

    def read(name: str, since: datetime, until: datetime) -> tuple[set[str], int]:
        source = build_source(name, sites)
        try:
            try:
                position = source.position_at(since)
            except ConfigurationError:  # no date position (files): read all, keep the period
                position = None
            ids: set[str] = set()
            parked = read_count = 0
            while read_count < MAX_RECORDS:
                records = source.read(position, PAGE)
                if not records:
                    break
                for record in records:
                    read_count += 1
                    position = record.position
                    try:
                        events = source.to_events(record)
                    except DataError:
                        parked += 1
                        continue
                    ids |= {
                        e.envelope.event_id
                        for e in events
                        if since <= e.envelope.occurred_at <= until
                    }
            return ids, parked
        finally:
            source.close()

    return read


def options_of(sites: SitesConfig) -> ReconcileOptions:
    """The strictness the site configuration asks for."""
    config = sites.reconcile
    return ReconcileOptions(
        tolerance=Decimal(str(config.tolerance)),
        relative_tolerance=Decimal(str(config.relative_tolerance)),
        transfer_sla=timedelta(hours=config.transfer_sla_h),
        status_grace=timedelta(minutes=config.status_grace_min),
    )


def pull_connectors(sites: SitesConfig) -> dict[str, list[str]]:
    """Each site's enabled pull connectors (push ones have no source to read again)."""
    out: dict[str, list[str]] = {}
    for name, spec in sorted(sites.connectors.items()):
        if spec.enabled and spec.kind not in PUSH_KINDS:
            out.setdefault(spec.site, []).append(name)
    return out


def reconcile(
    settings: Settings,
    store: GenealogyStore,
    *,
    jobs: list[str] | None = None,
    site: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[RunResult]:
    """One reconciliation of ``site`` (default: every site) over ``since``..``until``."""
    sites = settings.sites()
    if site is not None and site not in sites.sites:
        raise ConfigurationError(
            f"no site {site!r} in the site configuration (sites: {', '.join(sorted(sites.sites))})"
        )
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=sites.reconcile.window_days)
    return run_reconciliation(
        store, [site] if site else sorted(sites.sites), since=since, until=until,
        jobs=jobs or sites.reconcile.jobs, options=options_of(sites),
        connectors=pull_connectors(sites), read_source=source_reader(sites),
    )  # fmt: skip


class ReconcileSchedule:
    """Runs the reconciliation every ``[reconcile] interval_s`` in a thread of its own."""

    def __init__(self, settings: Settings, store: GenealogyStore) -> None:
        self.settings = settings
        self.store = store
        self.interval_s = settings.sites().reconcile.interval_s
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> bool:
        """Start the schedule if one is configured; True if it runs."""
        if self.interval_s <= 0:
            return False
        self.thread = threading.Thread(target=self._loop, name="reconcile", daemon=True)
        self.thread.start()
        return True

    def _loop(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            try:
                results = reconcile(self.settings, self.store)
            except Exception:  # the schedule keeps going; the failure is in the log
                log.exception("scheduled reconciliation failed")
                continue
            found = sum(len(r.mismatches) for r in results)
            log.info("reconciliation: %d runs, %d mismatches", len(results), found)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the current run."""
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=timeout_s)
