"""Trace and recall latency on a synthetic multi-site genealogy, SQLite and PostgreSQL.

The genealogy is layered: ``depth`` layers of lots across three sites, each lot made
from ``fan_in`` lots of the layer before (a blend), so a backward trace from the
last layer and a forward trace from the first walk ``depth`` levels. Rows go
straight into the store's tables (bulk insert; events are not replayed, which is
not what is measured). The baseline, in the same run, is a breadth-first walk over
in-memory adjacency dicts of the same graph, loading excluded.

Presets: ``small`` (10k lots), ``medium`` (100k lots), ``large`` (1M lots, over 5M edges:
fan-in 6, as 5 leaves 4.75M once repeated parent picks are merged).
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import tempfile
import time
import uuid
from collections import defaultdict, deque
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, text

from genealogy import tables
from genealogy.recall import RecallRequest, run_recall
from genealogy.store import GenealogyStore
from genealogy.trace import MAX_LOTS, Direction, trace

PRESETS = {
    "small": {"lots": 10_000, "depth": 20, "fan_in": 3},
    "medium": {"lots": 100_000, "depth": 20, "fan_in": 3},
    "large": {"lots": 1_000_000, "depth": 20, "fan_in": 6},
}
SITES = ("ALP", "BRK", "NSH")
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def build_graph(
    lots: int, depth: int, fan_in: int, seed: int = 7
) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """Layers of lot ids and (parent, child) edges."""
    rng = random.Random(seed)
    per_layer = lots // depth
    layers = [
        [f"{SITES[(layer + i) % 3]}:L{layer:02d}-{i:07d}" for i in range(per_layer)]
        for layer in range(depth)
    ]
    edges = [(rng.choice(layers[layer - 1]), child) for layer in range(1, depth) for child in layers[layer]
             for _ in range(fan_in)]  # fmt: skip
    return layers, sorted(set(edges))


def load(store: GenealogyStore, layers: list[list[str]], edges: list[tuple[str, str]]) -> float:
    """Bulk-insert lots, links, receipts and ledger rows; return seconds taken."""
    began = time.perf_counter()
    at = datetime(2026, 11, 1, tzinfo=UTC)
    chunk = 20_000
    with store.engine.begin() as conn:
        lot_rows = [{"lot_id": lot, "site": lot[:3], "item_code": "ITEM", "item_description": "synthetic",
                     "status": "RELEASED", "status_at": at} for layer in layers for lot in layer]  # fmt: skip
        for i in range(0, len(lot_rows), chunk):
            conn.execute(insert(tables.lots), lot_rows[i : i + chunk])
        link_rows = [{"link_key": f"s:{p}:{c}", "parent_lot": p, "child_lot": c, "kind": "BLEND", "via": c,
                      "quantity_used": Decimal(10), "unit_used": "KGM", "quantity_produced": Decimal(30),
                      "unit_produced": "KGM", "parent_event_id": "e", "child_event_id": "e",
                      "occurred_at": at} for p, c in edges]  # fmt: skip
        for i in range(0, len(link_rows), chunk):
            conn.execute(insert(tables.lot_links), link_rows[i : i + chunk])
        ledger = [{"event_id": f"r:{lot}", "lot_id": lot, "category": "RECEIVED" if n == 0 else "PRODUCED",
                   "quantity": Decimal(100), "unit": "KGM", "ref": None, "location_id": None,
                   "occurred_at": at} for n, layer in enumerate(layers) for lot in layer]  # fmt: skip
        for i in range(0, len(ledger), chunk):
            conn.execute(insert(tables.lot_ledger), ledger[i : i + chunk])
    return time.perf_counter() - began


def bfs(adjacency: dict[str, list[str]], root: str, max_depth: int, max_lots: int = 0) -> int:
    """The baseline: how many lots an in-memory walk reaches, stopping, as the trace does,
    at ``max_lots`` (0: no limit); here it stops outright, the trace still lists the links
    of the lots it kept."""
    seen = {root}
    frontier: deque[tuple[str, int]] = deque([(root, 0)])
    while frontier:
        lot, d = frontier.popleft()
        if d == max_depth:
            continue
        for nxt in adjacency.get(lot, ()):
            if nxt not in seen:
                if len(seen) == max_lots:
                    return len(seen)
                seen.add(nxt)
                frontier.append((nxt, d + 1))
    return len(seen)


def recall_seed(layers: list[list[str]], edges: list[tuple[str, str]]) -> tuple[str, float]:
    """The first-layer lot (of the first 50) that reaches the most lots forward, and how
    long the in-memory walk of its reach takes: the recall measured is a large one."""
    down: dict[str, list[str]] = defaultdict(list)
    for p, c in edges:
        down[p].append(c)
    seed = max(layers[0][:50], key=lambda lot: bfs(down, lot, 1_000))
    began = time.perf_counter()
    bfs(down, seed, 1_000)
    return seed, time.perf_counter() - began


def _rss_mib() -> float:
    """This process's resident memory (Linux; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _pct(samples: list[float], p: float) -> float:
    return statistics.quantiles(samples, n=100)[int(p) - 1] if len(samples) > 1 else samples[0]


def measure(store: GenealogyStore, layers: list[list[str]], edges: list[tuple[str, str]],
            samples: int, rng: random.Random) -> list[dict[str, Any]]:  # fmt: skip
    """p50/p95 of backward and forward traces at depth 10 and 20, and their baselines."""
    up: dict[str, list[str]] = defaultdict(list)
    down: dict[str, list[str]] = defaultdict(list)
    for p, c in edges:
        up[c].append(p)
        down[p].append(c)
    # The bench's own graph copies (millions of tuples and lists) stay alive all along: a
    # full collection scanning them landed inside whichever walk, ours or the baseline's,
    # triggered it (tens of ms on `medium`). The API's process holds no such copies.
    gc.collect()
    gc.freeze()
    results = []
    for direction, adjacency, pool in (
        (Direction.BACKWARD, up, layers[-1]),
        (Direction.FORWARD, down, layers[0]),
    ):
        for depth in (10, 20):
            roots = [rng.choice(pool) for _ in range(samples)]
            ours, base, reached = [], [], []
            for root in roots:
                began = time.perf_counter()
                result = trace(store, root, direction, max_depth=depth, max_lots=MAX_LOTS)
                ours.append(time.perf_counter() - began)
                began = time.perf_counter()
                bfs(adjacency, root, depth, MAX_LOTS)
                base.append(time.perf_counter() - began)
                reached.append(len(result.lots))
            results.append({"trace": f"{direction.value} d{depth}", "lots": int(statistics.median(reached)),
                            "p50_ms": _pct(ours, 50) * 1000, "p95_ms": _pct(ours, 95) * 1000,
                            "base_p95_ms": _pct(base, 95) * 1000,
                            "ratio": _pct(ours, 95) / _pct(base, 95),
                            # on a busy machine the p95 is one scheduling hiccup; p50s are steadier
                            "p50_ratio": _pct(ours, 50) / _pct(base, 50)})  # fmt: skip
    return results


def main(preset: str = "small", samples: int = 20) -> None:
    """Print the trace table for SQLite and PostgreSQL, and a recall timing."""
    params = PRESETS[preset]
    layers, edges = build_graph(params["lots"], params["depth"], params["fan_in"])
    print(f"synthetic genealogy '{preset}': {sum(map(len, layers)):,} lots, {len(edges):,} edges, "
          f"{params['depth']} layers, fan-in {params['fan_in']}")  # fmt: skip
    seed, seed_walk = recall_seed(layers, edges)
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("sqlite", "postgresql"):
            name = f"lothub_bench_{uuid.uuid4().hex[:8]}"
            if backend == "sqlite":
                url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            else:
                admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
            store = GenealogyStore.connect(url)
            try:
                store.migrate()
                seconds = load(store, layers, edges)
                if backend == "postgresql":
                    with store.engine.begin() as conn:
                        conn.execute(text("ANALYZE"))
                print(f"\n{backend}: loaded in {seconds:.1f}s")
                began, rss = time.perf_counter(), _rss_mib()
                trace(store, layers[-1][0], Direction.BACKWARD, max_depth=1)
                print(f"first trace (loads the in-memory graph): {time.perf_counter() - began:.2f}s, "
                      f"resident memory +{_rss_mib() - rss:,.0f} MiB")  # fmt: skip
                print(
                    f"{'trace':<14} {'lots':>7} {'p50 ms':>8} {'p95 ms':>8} {'in-memory p95 ms':>17} "
                    f"{'ratio':>7} {'p50 ratio':>10}"
                )
                for row in measure(store, layers, edges, samples, random.Random(11)):
                    print(f"{row['trace']:<14} {row['lots']:>7} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} "
                          f"{row['base_p95_ms']:>17.2f} {row['ratio']:>6.1f}x {row['p50_ratio']:>9.1f}x")  # fmt: skip
                began = time.perf_counter()
                packet = run_recall(store, RecallRequest(lots=[seed]), save=False)
                print(f"recall packet from {seed}: {len(packet.lots):,} affected lots in "
                      f"{time.perf_counter() - began:.2f}s (in-memory walk of the same lots: "
                      f"{seed_walk * 1000:.1f} ms)")  # fmt: skip
            finally:
                store.close()
                if backend == "postgresql":
                    with admin.connect() as conn:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    admin.dispose()
