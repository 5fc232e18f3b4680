"""Stream worker throughput against a bare aiokafka loop, and end-to-end freshness.

Throughput (``python -m bench streams --events N``): N raw events of many lots
(:func:`connectors.simulator.plant_load`) are published to the raw topic of an embedded
broker once; then, on that same topic and data,

1. a faust worker running the real app of :mod:`streams.worker` with the sink agent
   removed (``normalize`` and the integrity checks); events/s normalized, from its
   first to its last;
2. the real worker (every agent, the sink writing into SQLite) on its own copy of the
   data; events/s from the first event stored to the last;
3. the baseline: a bare aiokafka consume -> decode -> normalize -> encode -> produce loop
   in one asyncio task, doing the same per-record work without faust.

With ``--profile`` (needs ``py-spy``), the normalize-only worker is sampled and the
functions it spends its time in are printed.

Freshness (``python -m bench freshness --rate R --seconds S [--split]``): the whole path
with worker processes (one ``all`` worker, or with ``--split`` a ``process`` and a
``store`` worker) and the HTTP API; source events are published at a steady R events/s
and every 100th is polled for over HTTP (``GET /api/v1/lots/{lot}/events``), each at most
every ``POLL_EVERY_S``, until it appears; p50/p99 of publish -> visible, and the workers'
CPU per event.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import SecretStr

from connectors.publisher import KafkaPublisher
from connectors.simulator import plant_load
from genealogy.store import GenealogyStore
from lothub.runtime import EmbeddedBroker, ensure_topics, free_port
from lothub.settings import Settings, demo_sites_path
from schemas.model import check_enterprise
from schemas.serde import make_serde
from schemas.sites import load_sites
from streams.normalize import normalize
from streams.worker import HEARTBEAT_COMPONENT, tune_gc
from trace_api.app import create_app

#: one event in this many is polled for over HTTP (each poll is one request per sample)
SAMPLE_EVERY = 100
#: a sample not yet visible is asked for again after this long: the resolution of the
#: figures (they can be late by this much, never early), at a request load that leaves the
#: machine's cores to the hub (polling every sample nonstop took ~150 requests/s, and the
#: API answering them ran in the bench process and on the same two cores as the worker)
POLL_EVERY_S = 0.1
#: seconds the worker is sampled for with --profile (start-up included)
PROFILE_S = 30
#: faust waits this long for its first join on the embedded broker
SESSION_TIMEOUT_S = 2.0


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "LOTHUB_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "LOTHUB_DATABASE_URL": settings.store_url,
        "LOTHUB_TOPIC_PREFIX": settings.topic_prefix,
        "LOTHUB_WORKER_GROUP": settings.worker_group,
        "LOTHUB_SESSION_TIMEOUT_S": str(settings.session_timeout_s),
        "LOTHUB_DATA_DIR": str(settings.data_dir),
        "LOTHUB_LOG_LEVEL": "WARNING",
    })  # fmt: skip
    return env


def _start(
    settings: Settings, log: Path, *, normalize_only: bool, role: str = "all"
) -> subprocess.Popen[bytes]:
    command = ["-m", "bench.streams_bench", *([] if normalize_only else ["--with-sink"])]
    env = {**_env(settings), "LOTHUB_WORKER_ROLE": role}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, *command], env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_worker(*, with_sink: bool) -> None:
    """Entry point of a bench worker process: the real app of the role in its environment
    (``LOTHUB_WORKER_ROLE``), an ``all`` worker without its sink unless asked.

    Its heartbeat comes every 0.2 s, so the bench sees when the last record was handled.
    """
    from lothub.worker import worker_deps
    from streams.worker import WorkerRole, quiet_worker
    from streams.worker import create_app as create_worker_app

    settings = Settings.from_env()
    store = GenealogyStore.connect(settings.store_url)
    store.migrate()
    deps = dataclasses.replace(worker_deps(settings, store), heartbeat_s=0.2)
    role = WorkerRole(settings.worker_role)
    app = create_worker_app(settings.faust_config(), deps, role=role)
    if role is WorkerRole.ALL and not with_sink:
        sinks = [name for name in app.agents if name.endswith(".sink_agent")]
        if len(sinks) != 1:
            raise SystemExit(f"expected one sink agent in the worker app, found {sinks}")
        del app.agents[sinks[0]]
    tune_gc()
    quiet_worker(app, loglevel="WARNING").execute_from_commandline()


def _stats(store: GenealogyStore) -> dict[str, Any]:
    """The worker's counts from its heartbeat (Tansu's offset listing is not usable for this)."""
    beat = store.last_heartbeat(HEARTBEAT_COMPONENT)
    return {} if beat is None else dict(json.loads(beat[2]))


def _handled(store: GenealogyStore, *, events: int, stored: bool) -> int:
    """Events normalized (or stored) so far, held below ``events`` until every check is done.

    An event counts as handled once normalized (or stored in the genealogy, with ``stored``);
    the last one only once every integrity fact published was checked and every alert
    published was stored, so a rate ends when the integrity agents caught up too.
    """
    stats = _stats(store)
    done = store.event_count() if stored else int(stats.get("normalized", 0))
    checks_done = (stats.get("checked", 0) >= stats.get("facts", 0)
                   and stats.get("alerts_stored", 0) >= stats.get("alerts", 0))  # fmt: skip
    return done if checks_done else min(done, events - 1)


@dataclasses.dataclass(frozen=True)
class Rate:
    """Events handled over a measured stretch: by the wall clock and by the CPU it took.

    The CPU figure is the process's own user + system time, so other work on a shared
    machine moves it far less than the wall-clock rate.
    """

    events: int
    wall_s: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        """Events per wall-clock second."""
        return self.events / max(self.wall_s, 1e-9)

    @property
    def per_cpu_s(self) -> float:
        """Events per CPU second of the process that handled them."""
        return self.events / max(self.cpu_s, 1e-9)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rate_while(
    count: Any, target: int, process: subprocess.Popen[bytes], what: str, log: Path
) -> Rate:
    """Events/s of ``count()`` from its first increase until it reaches ``target``."""
    first_at = first = None
    cpu_at = 0.0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        n, now = count(), time.perf_counter()
        if first_at is None and n > 0:
            first_at, first, cpu_at = now, n, _cpu_s(process.pid)
        if n >= target and first_at is not None and first is not None:
            # the first count may already be a whole batch: rate from first to last seen
            return Rate(n - first, now - first_at, _cpu_s(process.pid) - cpu_at)
        if process.poll() is not None:
            lines = log.read_text(errors="replace").splitlines()
            first = next((i for i, line in enumerate(lines) if "[ERROR]" in line), len(lines) - 30)
            excerpt = "\n".join(lines[max(first, 0) : first + 30])  # the first error tells why
            raise SystemExit(f"{what}: the worker exited with {process.returncode}:\n{excerpt}")
        time.sleep(0.05)
    raise SystemExit(f"{what}: {target} events not reached within 600 s")


async def _bare_loop(settings: Settings, events: int, out_topic: str) -> Rate:
    sites, serde = settings.sites(), make_serde()
    consumer = AIOKafkaConsumer(settings.topics.raw, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=f"bare-{uuid.uuid4().hex[:8]}", enable_auto_commit=False,
                                auto_offset_reset="earliest")  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    try:
        done, began, cpu_at, pending = 0, 0.0, 0.0, []
        while done < events:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            for records in batches.values():
                if not began:
                    began, cpu_at = time.perf_counter(), time.process_time()
                for msg in records:
                    event = serde.decode(msg.value or b"", topic=msg.topic,
                                         partition=msg.partition, offset=msg.offset)  # fmt: skip
                    out = normalize(event, sites)
                    check_enterprise(out)
                    key = out.lots()[0].encode()
                    value = serde.encode(out, topic=out_topic)
                    pending.append(await producer.send(out_topic, value=value, key=key))
                done += len(records)
        await asyncio.gather(*pending)
        rate = Rate(done, time.perf_counter() - began, time.process_time() - cpu_at)
        await consumer.commit()
        return rate
    finally:
        await consumer.stop()
        await producer.stop()


def _profile(pid: int, seconds: float, folder: Path) -> str:
    """Self and inclusive time by function of a running worker, sampled with py-spy."""
    raw = folder / "profile.txt"
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                    "--format", "raw", "--output", str(raw), "--rate", "200", "--nonblocking"],
                   check=True, capture_output=True)  # fmt: skip
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue  # a sample torn by --nonblocking (read while the stack changed)
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[_short(frames[-1])] += count
        for name in {_short(f) for f in frames}:
            inclusive[name] += count
    lines = [f"py-spy: {total} samples of the normalize-only worker (all threads)"]
    lines.append("  self time:")
    lines += [f"    {100 * c / total:5.1f}%  {name}" for name, c in own.most_common(12)]
    lines.append("  inclusive time of the per-record work:")
    for name in ("decode", "normalize", "check_enterprise", "encode", "produce", "facts_of",
                 "integrity_check", "step", "from_json", "to_json", "alert_sink",
                 "_send_produce_req", "_drain_messages", "getmany", "_execute_actor", "heartbeat"):  # fmt: skip
        hits = sum(c for n, c in inclusive.items() if n.split(" ")[0].split(".")[-1] == name)
        lines.append(f"    {100 * hits / total:5.1f}%  {name}")
    return "\n".join(lines)


def _short(frame: str) -> str:
    # py-spy frames look like "function (path/to/module.py:123)"
    name, _, where = frame.partition(" (")
    module = where.rsplit("/", 1)[-1].split(":")[0]
    return f"{name} ({module})"


def throughput(events: int, profile: bool) -> None:
    """Print events/s of faust normalize, faust normalize+sink and the bare loop."""
    sites = load_sites(demo_sites_path())
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Path(tmp) / "broker.log") as broker:
        folder = Path(tmp)
        settings = Settings(kafka_bootstrap=broker.bootstrap, data_dir=folder,
                            topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
                            session_timeout_s=SESSION_TIMEOUT_S)  # fmt: skip
        ensure_topics(settings)
        publisher = KafkaPublisher(settings.producer_config(), make_serde(), settings.topics.raw)
        publisher.publish(plant_load(sites, events), timeout_s=300)
        store = GenealogyStore.connect(settings.store_url)
        store.migrate()
        worker = _start(settings, folder / "normalize.log", normalize_only=True)
        profiler: threading.Thread | None = None
        report: list[str] = []
        if profile:
            profiler = threading.Thread(target=lambda: report.append(
                _profile(worker.pid, PROFILE_S, folder)))  # fmt: skip
            profiler.start()
        try:
            faust_normalize = _rate_while(lambda: _handled(store, events=events, stored=False),
                                          events, worker, "normalize",
                                          folder / "normalize.log")  # fmt: skip
        finally:
            if profiler is not None:
                profiler.join()
            _stop(worker)
            store.close()

        # the same events on topics of their own, so the sink reads each exactly once
        full = settings.model_copy(update={"topic_prefix": f"full{uuid.uuid4().hex[:6]}.",
                                           "database_url": SecretStr(f"sqlite:///{folder / 'hub.db'}")})  # fmt: skip
        ensure_topics(full)
        KafkaPublisher(full.producer_config(), make_serde(), full.topics.raw).publish(
            plant_load(sites, events), timeout_s=300)  # fmt: skip
        store = GenealogyStore.connect(full.store_url)
        store.migrate()
        worker = _start(full, folder / "worker.log", normalize_only=False)
        try:
            faust_full = _rate_while(lambda: _handled(store, events=events, stored=True),
                                     events, worker, "normalize+sink",
                                     folder / "worker.log")  # fmt: skip
        finally:
            _stop(worker)
            store.close()

        out = settings.topics.enterprise.replace("enterprise", "bare-out")
        _create(settings, out)
        tune_gc()  # like for like: the loop gets the worker's collector settings
        bare = asyncio.run(_bare_loop(settings, events, out))

    print(f"stream worker throughput, {events:,} events of {events * 4 // 13:,}+ lots, "
          "embedded broker, 2 cores")  # fmt: skip
    print(f"{'pipeline':<34} {'events/s':>9} {'vs bare':>8} {'events/CPU-s':>13} {'vs bare':>8}")
    for name, rate in (("bare aiokafka loop (baseline)", bare),
                       ("faust worker without the sink", faust_normalize),
                       ("faust worker, all agents (SQLite)", faust_full)):  # fmt: skip
        print(f"{name:<34} {rate.per_s:>9,.0f} {rate.per_s / bare.per_s:>7.2f}x "
              f"{rate.per_cpu_s:>13,.0f} {rate.per_cpu_s / bare.per_cpu_s:>7.2f}x")  # fmt: skip
    for text in report:
        print(text)


def _create(settings: Settings, topic: str) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient(settings.admin_config())
    for future in admin.create_topics([NewTopic(topic, num_partitions=6)]).values():
        future.result(timeout=30)


def freshness(
    rate: int, seconds: int, database_url: str | None, *, workers: int = 1, split: bool = False
) -> None:
    """Print p50/p99 from publishing a source event to seeing it over HTTP.

    ``workers`` stream worker processes share the partitions (one consumer group, as
    ``deploy/`` runs them); with ``split``, ``workers`` of the ``process`` role and as many
    of the ``store`` role. Every one has joined before the measured load starts.
    """
    sites = load_sites(demo_sites_path())
    count = rate * seconds
    events = plant_load(sites, count + 400)
    warmups, events = (events[:200], events[200:400]), events[400:]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Path(tmp) / "broker.log") as broker:
        folder = Path(tmp)
        url = database_url or f"sqlite:///{folder / 'hub.db'}"
        settings = Settings(kafka_bootstrap=broker.bootstrap, data_dir=folder, database_url=SecretStr(url),
                            topic_prefix=f"fresh{uuid.uuid4().hex[:6]}.",
                            session_timeout_s=SESSION_TIMEOUT_S)  # fmt: skip
        ensure_topics(settings)
        store = GenealogyStore.connect(url)
        store.migrate()
        roles = ["process", "store"] * workers if split else ["all"] * workers
        processes = [_start(settings, folder / f"worker{i}.log", normalize_only=False, role=role)
                     for i, role in enumerate(roles)]  # fmt: skip
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(store), port=port, log_level="warning",
                                               lifespan="off"))  # fmt: skip
        api = threading.Thread(target=server.run, daemon=True)
        api.start()
        publisher = KafkaPublisher(settings.producer_config(), make_serde(), settings.topics.raw)
        try:
            stored = 0
            for warmup in warmups:
                # the second round starts after every worker's join and the rebalance it caused
                publisher.publish(warmup)
                stored += len(warmup)
                deadline = time.monotonic() + 120
                while store.event_count() < stored:
                    if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                        raise SystemExit("the workers did not store the warm-up events")
                    time.sleep(0.1)
                time.sleep(2 * SESSION_TIMEOUT_S if len(processes) > 1 else 0)
            cpu_before = sum(_cpu_s(p.pid) for p in processes)
            try:
                latencies, sent_rate = _measure_freshness(publisher, events, rate, port, sites)
            except SystemExit as exc:
                logs = "\n".join(line for i in range(len(processes))
                                  for line in (folder / f"worker{i}.log").read_text().splitlines()
                                  if "[ERROR]" in line or "[CRITICAL]" in line)  # fmt: skip
                raise SystemExit(f"{exc}; {store.event_count():,} of {stored + len(events):,} "
                                 f"events stored; worker errors:\n{logs[:3000]}") from exc  # fmt: skip
            # every sample seen means the workers are (nearly) done: their CPU per event
            worker_cpu_s = sum(_cpu_s(p.pid) for p in processes) - cpu_before
        finally:
            server.should_exit = True
            api.join(timeout=10)
            for process in processes:
                _stop(process)
            store.close()
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    print(
        f"freshness: {count:,} events at {sent_rate:,.0f} events/s for {seconds} s, "
        f"{len(latencies)} sampled over HTTP ({'PostgreSQL' if database_url else 'SQLite'}, "
        + (
            f"{workers} process + {workers} store worker{'s' if workers > 1 else ''})"
            if split
            else f"{workers} worker{'s' if workers > 1 else ''})"
        )
    )
    print(f"  publish -> visible in the API: p50 {p50:.2f} s, p99 {p99:.2f} s, max {latencies[-1]:.2f} s")  # fmt: skip
    print(f"  worker CPU: {1000 * worker_cpu_s / count:.2f} ms per event")


def _measure_freshness(
    publisher: KafkaPublisher, events: list[Any], rate: int, port: int, sites: Any
) -> tuple[list[float], float]:
    samples: dict[str, tuple[str, float]] = {}  # event id -> (lot id, published at)
    lock = threading.Lock()
    done = threading.Event()
    latencies: list[float] = []

    def poll() -> None:
        due: dict[str, float] = {}  # event id -> when it is asked for next
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while not (done.is_set() and (not samples or time.monotonic() > give_up[0])):
                now = time.perf_counter()
                with lock:
                    todo = [(e, s) for e, s in samples.items() if due.get(e, 0.0) <= now]
                for event_id, (lot, published) in todo:
                    requests[0] += 1
                    items = client.get(f"/api/v1/lots/{lot}/events", params={"limit": 500}).json()
                    if any(i["event_id"] == event_id for i in items.get("items", [])):
                        latencies.append(time.perf_counter() - published)
                        due.pop(event_id, None)
                        with lock:
                            del samples[event_id]
                    else:
                        due[event_id] = time.perf_counter() + POLL_EVERY_S
                time.sleep(0.01)

    give_up = [float("inf")]
    requests = [0]
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    lots = [normalize(e, sites).lots()[0] for e in events]
    began = time.perf_counter()
    for i, event in enumerate(events):
        due = began + i / rate
        if (wait := due - time.perf_counter()) > 0:
            time.sleep(wait)
        publisher.send([event])
        if i % SAMPLE_EVERY == 0:
            with lock:
                samples[event.envelope.event_id] = (lots[i], time.perf_counter())
    sent_rate = len(events) / (time.perf_counter() - began)
    publisher.flush(60)
    give_up[0] = time.monotonic() + 60
    done.set()
    poller.join(timeout=120)
    if samples:
        raise SystemExit(f"{len(samples)} sampled events never appeared in the API")
    print(f"  {requests[0]:,} API requests polled for the samples")
    return latencies, sent_rate


def main(*, events: int = 20_000, profile: bool = False) -> None:
    """``python -m bench streams``."""
    throughput(events, profile)


if __name__ == "__main__":
    run_worker(with_sink="--with-sink" in sys.argv[1:])
