"""The ``lothub`` command: run the hub, the demo, the stream worker, migrations.

::

    lothub up [--port N]          the whole hub until Ctrl-C
    lothub demo [--check]         the hub plus the three-site simulator
    lothub worker [--role R]      one stream worker (``lothub up`` starts it for you)
    lothub replay-dlq [--dry-run] re-process parked raw events after a mapping fix
    lothub reconcile [--job J] [--site S] [--since D]
                                  compare the plant systems, raise or withdraw gap alerts
    lothub db upgrade             create or upgrade the genealogy store schema
    lothub topics                 print the flow map
    lothub audit verify           detect edited or deleted audit records: topics, producers, consumers
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from schemas.errors import FatalError, LotHubError, RetriableError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lothub", description="Lot-traceability integration hub")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up", help="run the whole hub (embedded broker unless LOTHUB_KAFKA_BOOTSTRAP)"
    )
    up.add_argument(
        "--port", type=int, default=None, help="trace API port (default 8000; 0 = any free)"
    )
    demo = sub.add_parser("demo", help="run the hub with the three-site plant simulator")
    demo.add_argument(
        "--port", type=int, default=None, help="trace API port (default 8000; 0 = any free)"
    )
    demo.add_argument(
        "--check",
        action="store_true",
        help="verify every expected trace over HTTP, print one line, exit 0 or 1",
    )
    worker = sub.add_parser("worker", help="run one stream worker (normalize, check, store)")
    worker.add_argument(
        "--role",
        choices=["all", "process", "store"],
        default=None,
        help="the agents to run: all (default), or process (normalize and check) and store "
        "(write the store) in separate processes, to use two cores; LOTHUB_WORKER_ROLE",
    )
    conn = sub.add_parser("connectors", help="list, run, inspect or backfill connectors")
    conn_sub = conn.add_subparsers(dest="action", required=True)
    conn_sub.add_parser("list", help="the connectors of the site configuration")
    conn_sub.add_parser("status", help="checkpoint, last success and last error of each")
    run = conn_sub.add_parser("run", help="run one connector until Ctrl-C")
    run.add_argument("name")
    run.add_argument("--once", action="store_true", help="stop when the source has nothing new")
    back = conn_sub.add_parser("backfill", help="re-read history from a date (no duplicates)")
    back.add_argument("name")
    back.add_argument("--since", required=True, type=_date, help="YYYY-MM-DD (plant local)")
    replay = sub.add_parser("replay-dlq", help="re-process parked raw events after a mapping fix")
    replay.add_argument("--dry-run", action="store_true", help="only say what would be replayed")
    rec = sub.add_parser(
        "reconcile", help="compare what the plant systems say with each other and the hub"
    )
    rec.add_argument("--job", action="append", help="a job (repeatable; default: all): "
                     "on-hand, consumption, disposition, transfers, capture")  # fmt: skip
    rec.add_argument("--site", help="one site (default: every site)")
    rec.add_argument("--since", type=_date, help="start of the period capture re-reads "
                     "(YYYY-MM-DD, UTC; default: [reconcile] window_days ago)")  # fmt: skip
    db = sub.add_parser("db", help="genealogy store schema")
    db.add_argument("action", choices=["upgrade"])
    sub.add_parser("topics", help="print the flow map")
    audit = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit.add_subparsers(dest="action", required=True)
    verify = audit_sub.add_parser("verify", help="detect edited or deleted audit records")
    verify.add_argument("--expect-head", help="head hash printed by the previous verify")
    return parser


def _date(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-01") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lothub`` console script."""
    args = _parser().parse_args(argv)
    from lothub.settings import Settings

    try:
        overrides: dict[str, object] = {}
        if getattr(args, "port", None) is not None:
            overrides["api_port"] = args.port
        if getattr(args, "role", None) is not None:
            overrides["worker_role"] = args.role
        settings = Settings.from_env(**overrides)
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        return _run(args, settings)
    except KeyboardInterrupt:
        print("lothub: interrupted", file=sys.stderr)
        return 130
    except FatalError as exc:
        print(f"lothub: {exc}", file=sys.stderr)
        return 2
    except RetriableError as exc:
        print(f"lothub: {exc} (transient: try again)", file=sys.stderr)
        return 75  # EX_TEMPFAIL
    except LotHubError as exc:
        print(f"lothub: {exc}", file=sys.stderr)
        return 1


def _stop_on_sigterm() -> None:
    # Children run in their own sessions, so a plain SIGTERM to us would orphan them;
    # turning it into SystemExit lets the Hub context stop them first.
    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    # A shell without job control starts background commands with SIGINT ignored, and
    # Python keeps it ignored; Ctrl-C (or an interrupt from a supervisor) must still stop us.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _run(args: argparse.Namespace, settings: object) -> int:
    from lothub.settings import Settings

    assert isinstance(settings, Settings)
    if args.command in {"up", "demo"}:
        _stop_on_sigterm()
    if args.command == "up":
        from lothub.connectors import freeze_startup_heap
        from lothub.runtime import Hub

        with Hub(settings) as hub:
            hub.wait_ready()
            freeze_startup_heap()
            if hub.access is not None and hub.access.local_mode:
                print("lothub: LOCAL MODE - no API keys configured: full access for anyone on this "
                      "machine, API bound to loopback only (set LOTHUB_API_KEYS_FILE to require keys)",
                      flush=True)  # fmt: skip
            print(
                f"lothub is up: trace API on {hub.api_url} (docs at {hub.api_url}/docs, web UI at "
                f"{hub.api_url}/ui/); Ctrl-C stops it",
                flush=True,
            )
            hub.supervise()
        return 0
    if args.command == "demo":
        from lothub.demo import run_demo

        return run_demo(settings, check=args.check)
    if args.command == "worker":
        from lothub.worker import run_worker

        return run_worker(settings)
    if args.command == "connectors":
        return _connectors(args, settings)
    if args.command == "replay-dlq":
        from lothub.replay import replay_dead_letters

        print("\n".join(replay_dead_letters(settings, dry_run=args.dry_run).lines()))
        return 0
    if args.command == "reconcile":
        return _reconcile(args, settings)
    if args.command == "db":
        from genealogy.store import GenealogyStore

        store = GenealogyStore.connect(settings.store_url)
        try:
            store.migrate()
        finally:
            store.close()
        print("genealogy store schema is up to date")
        return 0
    if args.command == "audit":
        from genealogy.audit import verify as verify_audit
        from genealogy.store import GenealogyStore

        store = GenealogyStore.connect(settings.store_url)
        try:
            result = verify_audit(store, expect_head=args.expect_head)
        finally:
            store.close()
        for line in result.problems:
            print(f"TAMPERED: {line}")
        print(f"audit trail: {result.records} records, {'intact' if result.intact else 'NOT intact'}; "
              f"head {result.head}")  # fmt: skip
        return 0 if result.intact else 1
    if args.command == "topics":
        for name, spec in settings.topics.all():
            print(
                f"{name}\n  schema:    {spec.schema}\n  producers: {', '.join(spec.producers)}\n"
                f"  consumers: {', '.join(spec.consumers)}\n  dead letters: {spec.dead_letter or '-'}"
            )
        return 0
    raise AssertionError(args.command)  # argparse only lets known commands through


def _reconcile(args: argparse.Namespace, settings: Any) -> int:
    """Run the reconciliation once; one line per job and site, then the mismatches."""
    from datetime import UTC

    from genealogy.store import GenealogyStore
    from lothub.reconcile import reconcile

    since = (
        args.since.replace(tzinfo=UTC) if args.since and args.since.tzinfo is None else args.since
    )
    store = GenealogyStore.connect(settings.store_url)
    try:
        store.migrate()
        results = reconcile(settings, store, jobs=args.job, site=args.site, since=since)
    finally:
        store.close()
    failed = False
    for r in results:
        state = f"ERROR {r.error}" if r.error else f"{len(r.mismatches)} mismatch(es)"
        print(f"{r.job:<12} {r.site:<6} {state}; {r.opened} alert(s) opened, "
              f"{r.withdrawn} withdrawn; {r.duration_ms} ms")  # fmt: skip
        failed = failed or r.error is not None
    for r in results:
        for m in r.mismatches:
            print(f"  {m.job} {m.site}: {m.summary}")
    return 1 if failed else 0


def _connectors(args: argparse.Namespace, settings: Any) -> int:
    from lothub import connectors

    if args.action == "list":
        for name, spec in sorted(settings.sites().connectors.items()):
            state = "enabled" if spec.enabled else "disabled"
            print(
                f"{name:<20} {spec.kind:<12} site={spec.site:<6} every {spec.poll_interval_s:g}s  {state}"
            )
        return 0
    if args.action == "status":
        print("\n".join(connectors.status_lines(settings)) or "no connectors configured")
        return 0
    if args.action == "backfill":
        published = connectors.backfill(settings, args.name, args.since)
        print(
            f"backfill of {args.name} since {args.since:%Y-%m-%d}: {published} events re-published"
        )
        return 0
    _stop_on_sigterm()
    from connectors.registry import is_push

    if is_push(args.name, settings.sites()):
        return _run_intake(settings, args.name, once=args.once)
    connector = connectors.make_connector(settings, args.name)
    connectors.freeze_startup_heap()
    stop = threading.Event()
    try:
        connector.run(stop, until_idle=args.once)
    except KeyboardInterrupt:
        stop.set()
    print(f"{args.name}: {connector.status.as_dict()}")
    return 0


def _run_intake(settings: Any, name: str, *, once: bool) -> int:
    """Watch a push connector's drop folder in the foreground (its HTTP side needs ``up``)."""
    from lothub import connectors

    intake = connectors.make_intake(settings, name)
    if intake.watch is None:
        print(
            f"{name} ({intake.kind}) has no drop folder: it receives over HTTP, which "
            f"`lothub up` serves at /intake/{name}{', '.join(intake.paths)}",
            file=sys.stderr,
        )
        return 2
    stop = threading.Event()
    try:
        intake.watch(stop, until_idle=once)
    except KeyboardInterrupt:
        stop.set()
    finally:
        intake.sink.close()
    print(f"{name}: {intake.sink.status.as_dict()}")
    return 0
