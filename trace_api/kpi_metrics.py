"""The KPIs as Prometheus metrics (``lothub_kpi_*``), computed at most once a minute.

Scrapes come every few seconds; the KPIs read whole tables, so the collector keeps the
last figures for ``min_interval_s`` and serves those.

Example::

    registry = CollectorRegistry()
    registry.register(KpiCollector(store))
    generate_latest(registry)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from genealogy.kpis import Kpis, compute_kpis, summary
from genealogy.store import GenealogyStore

#: quantiles published for the distributions
QUANTILES = ("p50", "p90", "p99", "max")


class KpiCollector(Collector):
    """Publishes :func:`genealogy.kpis.compute_kpis` as gauges (labels never name a lot)."""

    def __init__(self, store: GenealogyStore, *, min_interval_s: float = 60.0) -> None:
        self.store = store
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._cached: tuple[float, Kpis] | None = None

    def kpis(self) -> Kpis:
        """The KPIs, recomputed if the cached ones are older than ``min_interval_s``."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.min_interval_s:
                self._cached = (now, compute_kpis(self.store, now=datetime.now(UTC)))
            return self._cached[1]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One gauge family per KPI."""
        k = self.kpis()
        c = k.completeness
        shipped = GaugeMetricFamily("lothub_kpi_shipped_lots", "Lots shipped to customers")
        shipped.add_metric([], c.shipped)
        yield shipped
        share = GaugeMetricFamily(
            "lothub_kpi_genealogy_completeness_ratio",
            "Share of shipped lots whose every backward branch reaches a supplier receipt",
        )
        share.add_metric([], float(c.share) if c.share is not None else float("nan"))
        yield share
        release = GaugeMetricFamily(
            "lothub_kpi_release_cycle_time_hours",
            "Hours from supplier receipt to release",
            labels=["site", "quantile"],
        )
        for site, hours in sorted(k.release_hours.items()):
            stats = summary(hours)
            for q in QUANTILES:
                if stats[q] is not None:
                    release.add_metric([site, q], float(stats[q] or 0))
        yield release
        blocked = GaugeMetricFamily(
            "lothub_kpi_blocked_stock_quantity",
            "On-hand quantity of quarantined, held or rejected lots, by age in that status",
            labels=["site", "unit", "age_band"],
        )
        for site, units in sorted(k.blocked.items()):
            for unit, bands in sorted(units.items()):
                for band, quantity in bands.items():
                    blocked.add_metric([site, unit, band], float(quantity))
        yield blocked
        latency = GaugeMetricFamily(
            "lothub_kpi_reporting_latency_seconds",
            "Seconds from the event (basis=event) or its recording (basis=record) to the hub",
            labels=["system_kind", "basis", "quantile"],
        )
        for kind, (from_event, from_record) in sorted(k.latency.items()):
            for basis, values in (("event", from_event), ("record", from_record)):
                stats = summary(values)
                for q in QUANTILES:
                    if stats[q] is not None:
                        latency.add_metric([kind, basis, q], float(stats[q] or 0))
        yield latency
        recall = GaugeMetricFamily(
            "lothub_kpi_mock_recall_milliseconds",
            "How long the stored mock recalls took",
            labels=["quantile"],
        )
        stats = summary(k.recall_ms)
        for q in QUANTILES:
            if stats[q] is not None:
                recall.add_metric([q], float(stats[q] or 0))
        yield recall
