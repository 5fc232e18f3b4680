"""The schema evolution gate, and the compatibility checker it stands on.

Three groups of tests:

* the checker (:mod:`schemas.compat`) on small hand-written schemas, one Avro
  schema-resolution rule at a time, cross-checked against what fastavro actually does
  with the bytes;
* **the gate**: every event schema in ``schemas/avro/`` must be fully compatible
  (backward and forward) with its previous committed version. The previous version is
  HEAD if the working tree's ``schemas/avro`` differs from HEAD, otherwise the state
  before the latest commit that touched the folder. With no previous version at all (no
  git, not a checkout, no commits, brand-new folder) the gate skips and says why; a git
  failure in a real checkout (corrupt repository, shallow clone) fails it;
* proofs that the gate bites: a breaking edit to a copy of the folder, and a throwaway
  git repository taken through compatible, uncommitted-breaking and committed-breaking
  changes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema
import pytest

from schemas.compat import full_compatibility, reader_can_read
from schemas.model import EVENT_TYPES, NAMESPACE
from schemas.serde import SchemaCatalog, avro_dir

pytestmark = pytest.mark.unit

BACKWARD = "new readers cannot read old data:"
FORWARD = "old readers cannot read new data:"
EVENT_NAMES = [t.__name__ for t in EVENT_TYPES]
#: Every record the gate checks: the lot events and the integrity alert.
GATED_NAMES = [*EVENT_NAMES, "IntegrityAlert"]


# --------------------------------------------------------------------------- git helpers


class GitError(RuntimeError):
    """git failed in a way that says nothing about schema history: the gate must fail."""


class NoPreviousVersion(Exception):  # noqa: N818 - a verdict, not an error
    """There genuinely is no earlier version of the schema folder to compare with."""


# Variables that point git at a particular repository or index. A pytest run from a git
# hook inherits them, and they would send the throwaway-repository commands below into
# the real checkout, so git is always left to find the repository from its cwd.
_GIT_LOCATION_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARS}
    env["LC_ALL"] = "C"  # stable messages to recognise "not a git repository"
    env["GIT_OPTIONAL_LOCKS"] = "0"  # never take index.lock from a concurrent user
    return env


def _run_git(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=cwd, env=_git_env(), capture_output=True, check=False)


def _git(cwd: Path, *args: str) -> bytes:
    """Run git; any non-zero exit is a :class:`GitError` naming the command."""
    proc = _run_git(cwd, *args)
    if proc.returncode != 0:
        raise GitError(
            f"git {' '.join(args)} failed in {cwd} (exit {proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()}"
        )
    return proc.stdout


@dataclass(frozen=True)
class Baseline:
    """Where the previous version of the schema folder lives in git."""

    root: Path  # top of the work tree
    prefix: str  # the folder, relative to root, with a trailing slash
    revision: str  # a revision git understands, e.g. HEAD or <sha>^
    why: str  # how it was chosen, for the report


def previous_avro_revision(avro_folder: Path) -> Baseline:
    """The git revision holding the previous committed version of ``avro_folder``.

    HEAD if the working tree's folder differs from HEAD; otherwise the parent of the
    latest commit that changed the folder. Raises :class:`NoPreviousVersion` when there
    is none (no git binary, not a checkout, no commits, folder brand new) and
    :class:`GitError` when git fails in a real checkout, including a shallow clone that
    cuts the folder's history off.
    """
    if shutil.which("git") is None:
        raise NoPreviousVersion("no git binary on PATH")
    if not avro_folder.is_dir():
        raise NoPreviousVersion(f"{avro_folder} does not exist")
    probe = _run_git(avro_folder, "rev-parse", "--show-toplevel", "--show-prefix")
    if probe.returncode != 0:
        stderr = probe.stderr.decode(errors="replace")
        if "not a git repository" in stderr:
            raise NoPreviousVersion(f"{avro_folder} is not in a git checkout")
        raise GitError(f"git rev-parse failed in {avro_folder}: {stderr.strip()}")
    root_line, prefix = probe.stdout.decode().splitlines()[:2]
    root = Path(root_line)
    if not prefix:
        raise GitError(f"{avro_folder} is the top of its work tree; expected a subfolder")

    head = _run_git(root, "rev-parse", "--verify", "--quiet", "HEAD")
    if head.returncode != 0:
        # exit 1 with HEAD a symbolic ref to a branch that does not exist yet = unborn
        unborn = _run_git(root, "symbolic-ref", "--quiet", "HEAD")
        if head.returncode == 1 and unborn.returncode == 0:
            raise NoPreviousVersion("the repository has no commits yet")
        raise GitError(f"cannot resolve HEAD in {root}: {head.stderr.decode().strip()}")

    dirty = _run_git(root, "diff", "--quiet", "HEAD", "--", prefix)
    if dirty.returncode not in (0, 1):
        raise GitError(f"git diff HEAD -- {prefix} failed: {dirty.stderr.decode().strip()}")
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z", "--", prefix)
    if dirty.returncode == 1 or untracked:
        if not _avsc_paths(root, "HEAD", prefix):
            raise NoPreviousVersion(f"{prefix} has no schemas in HEAD yet: they are brand new")
        return Baseline(root, prefix, "HEAD", f"working tree {prefix} differs from HEAD")

    commits = _git(root, "log", "--format=%H", "--", prefix).decode().split()
    if not commits:
        raise NoPreviousVersion(f"{prefix} has never been committed")
    latest = commits[0]
    parent = _run_git(root, "rev-parse", "--verify", "--quiet", f"{latest}^{{commit}}^")
    if parent.returncode != 0:
        shallow = _git(root, "rev-parse", "--is-shallow-repository").decode().strip()
        if shallow == "true":
            raise GitError(
                f"shallow clone: history before {latest[:12]} is missing, so the previous "
                f"version of {prefix} cannot be found; fetch full history (fetch-depth: 0)"
            )
        if _run_git(root, "cat-file", "-e", f"{latest}^{{commit}}").returncode != 0:
            raise GitError(f"commit {latest} is unreadable")
        raise NoPreviousVersion(f"{prefix} first appears in root commit {latest[:12]}")
    revision = f"{latest}^"
    if not _avsc_paths(root, revision, prefix):
        raise NoPreviousVersion(f"{prefix} was added in commit {latest[:12]}: brand new")
    return Baseline(root, prefix, revision, f"state before {latest[:12]}, last change")


def _avsc_paths(root: Path, revision: str, prefix: str) -> list[str]:
    out = _git(root, "ls-tree", "-r", "-z", "--name-only", revision, "--", prefix)
    return [
        p
        for p in out.decode().split("\0")
        if p.endswith(".avsc") and "/" not in p.removeprefix(prefix)
    ]


def materialize(baseline: Baseline, dest: Path) -> Path:
    """Write every ``*.avsc`` of the folder, as of ``baseline.revision``, into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in _avsc_paths(baseline.root, baseline.revision, baseline.prefix):
        content = _git(baseline.root, "show", f"{baseline.revision}:{path}")
        (dest / path.rsplit("/", 1)[-1]).write_bytes(content)
    return dest


def _event_file(folder: Path, event_name: str) -> Path:
    return folder / f"{NAMESPACE}.{event_name}.avsc"


def compare_event_schema(old_folder: Path, new_folder: Path, event_name: str) -> list[str] | None:
    """Full-compatibility problems of one event schema between two schema folders.

    Each schema is loaded whole through fastavro (named types resolved from its own
    folder). ``None`` means the event is new: ``old_folder`` has no version of it.
    """
    old_file = _event_file(old_folder, event_name)
    if not old_file.exists():
        return None
    old = fastavro.schema.load_schema(str(old_file), _write_hint=False)
    new = fastavro.schema.load_schema(str(_event_file(new_folder, event_name)), _write_hint=False)
    return full_compatibility(old, new)


# --------------------------------------------------------------------------- checker


def _record(name: str, *fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields), **extra}


def _parsed(schema: dict[str, Any]) -> Any:
    return fastavro.parse_schema(schema, _write_hint=False)


def test_adding_a_field_with_a_default_is_fully_compatible() -> None:
    old = _record("Lot", {"name": "id", "type": "string"})
    new = _record(
        "Lot",
        {"name": "id", "type": "string"},
        {"name": "grade", "type": "string", "default": "A"},
    )
    assert full_compatibility(_parsed(old), _parsed(new)) == []


def test_adding_a_field_without_a_default_breaks_backward_only() -> None:
    old = _record("Lot", {"name": "id", "type": "string"})
    new = _record("Lot", {"name": "id", "type": "string"}, {"name": "grade", "type": "string"})
    problems = full_compatibility(_parsed(old), _parsed(new))
    assert len(problems) == 1
    assert problems[0].startswith(BACKWARD)
    assert "Lot.grade" in problems[0]
    assert "default" in problems[0]


def test_removing_a_field_without_a_default_breaks_forward_only() -> None:
    old = _record("Lot", {"name": "id", "type": "string"}, {"name": "grade", "type": "string"})
    new = _record("Lot", {"name": "id", "type": "string"})
    problems = full_compatibility(_parsed(old), _parsed(new))
    assert len(problems) == 1
    assert problems[0].startswith(FORWARD)
    assert "Lot.grade" in problems[0]


def test_removing_a_field_that_had_a_default_is_fully_compatible() -> None:
    old = _record(
        "Lot", {"name": "id", "type": "string"}, {"name": "n", "type": "int", "default": 0}
    )
    new = _record("Lot", {"name": "id", "type": "string"})
    assert full_compatibility(_parsed(old), _parsed(new)) == []


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    ],
)
def test_primitive_promotions(writer: str, reader: str) -> None:
    assert reader_can_read(reader, writer) == []


def test_int_to_long_promotes_one_way_only() -> None:
    old = _record("Lot", {"name": "n", "type": "int"})
    new = _record("Lot", {"name": "n", "type": "long"})
    assert reader_can_read(_parsed(new), _parsed(old)) == []
    problems = full_compatibility(_parsed(old), _parsed(new))
    assert problems == [f"{FORWARD} Lot.n: writer type 'long' cannot be read as 'int'"]


@pytest.mark.parametrize(
    ("writer", "reader"),
    [("long", "int"), ("double", "float"), ("string", "int"), ("boolean", "null")],
)
def test_non_promotions_are_refused(writer: str, reader: str) -> None:
    assert reader_can_read(reader, writer) != []


def test_enum_symbol_added_without_default_breaks_forward() -> None:
    def status(*symbols: str, **extra: Any) -> dict[str, Any]:
        enum = {"type": "enum", "name": "Status", "symbols": list(symbols), **extra}
        return _record("Lot", {"name": "status", "type": enum})

    old = status("RELEASED", "ON_HOLD")
    new = status("RELEASED", "ON_HOLD", "QUARANTINED")
    problems = full_compatibility(_parsed(old), _parsed(new))
    assert len(problems) == 1
    assert problems[0].startswith(FORWARD)
    assert "Lot.status" in problems[0]
    assert "QUARANTINED" in problems[0]

    # an old reader whose enum has a default maps the unknown symbol onto it
    old_with_default = status("RELEASED", "ON_HOLD", default="ON_HOLD")
    assert full_compatibility(_parsed(old_with_default), _parsed(new)) == []


def test_decimal_scale_change_is_refused_both_ways() -> None:
    def amount(scale: int) -> dict[str, Any]:
        decimal = {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": scale}
        return _record("Quantity", {"name": "value", "type": decimal})

    problems = full_compatibility(_parsed(amount(6)), _parsed(amount(4)))
    assert len(problems) == 2
    assert all("Quantity.value" in p and "decimal scale" in p for p in problems)
    assert full_compatibility(_parsed(amount(6)), _parsed(amount(6))) == []


def test_decimal_precision_change_and_dropping_decimal_are_refused() -> None:
    decimal = {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 6}
    wider = {**decimal, "precision": 20}
    assert any("precision" in p for p in reader_can_read(wider, decimal))
    assert reader_can_read("bytes", decimal) != []


def test_other_logical_type_changes() -> None:
    micros = {"type": "long", "logicalType": "timestamp-micros"}
    millis = {"type": "long", "logicalType": "timestamp-millis"}
    assert reader_can_read(millis, micros) != []
    assert reader_can_read("long", micros) == []  # reader falls back to the underlying type


def test_renamed_record_with_alias_is_readable_by_the_new_reader() -> None:
    old = _record("Lot", {"name": "id", "type": "string"})
    new = _record("TracedLot", {"name": "id", "type": "string"}, aliases=["t.Lot"])
    assert reader_can_read(_parsed(new), _parsed(old)) == []
    # aliases live on the reader only: old readers do not know the new name
    assert full_compatibility(_parsed(old), _parsed(new)) == [
        f"{FORWARD} Lot: writer record 't.TracedLot' does not match reader record 't.Lot' "
        "by name or alias"
    ]
    unaliased = _record("TracedLot", {"name": "id", "type": "string"})
    assert reader_can_read(_parsed(unaliased), _parsed(old)) != []


def test_renamed_field_with_alias_is_readable_by_the_new_reader() -> None:
    old = _record("Lot", {"name": "qty", "type": "long"})
    new = _record("Lot", {"name": "quantity", "type": "long", "aliases": ["qty"]})
    assert reader_can_read(_parsed(new), _parsed(old)) == []


def test_making_a_field_nullable_via_union() -> None:
    old = _record("Lot", {"name": "site", "type": "string"})
    new = _record("Lot", {"name": "site", "type": ["null", "string"], "default": None})
    assert reader_can_read(_parsed(new), _parsed(old)) == []
    # new data may hold null, which an old string reader cannot take
    problems = full_compatibility(_parsed(old), _parsed(new))
    assert problems == [f"{FORWARD} Lot.site<null>: writer type 'null' cannot be read as 'string'"]


def test_adding_a_nullable_field_with_null_default_is_fully_compatible() -> None:
    old = _record("Lot", {"name": "id", "type": "string"})
    new = _record(
        "Lot",
        {"name": "id", "type": "string"},
        {"name": "site", "type": ["null", "string"], "default": None},
    )
    assert full_compatibility(_parsed(old), _parsed(new)) == []


def test_union_branches_added_and_removed() -> None:
    assert reader_can_read(["null", "string", "long"], ["null", "string"]) == []
    problems = reader_can_read(["null", "string"], ["null", "string", "long"])
    assert problems == [
        "union<long>: writer type 'long' matches no branch of reader union [null, string]"
    ]
    assert reader_can_read(["null", "double"], "int") == []  # first matching branch, promoted


def test_fixed_arrays_and_maps() -> None:
    md5 = {"type": "fixed", "name": "Md5", "size": 16}
    assert reader_can_read({**md5, "size": 20}, md5) != []
    assert (
        reader_can_read({"type": "array", "items": "long"}, {"type": "array", "items": "int"}) == []
    )
    problems = reader_can_read({"type": "map", "values": "int"}, {"type": "map", "values": "long"})
    assert problems == ["map{}: writer type 'long' cannot be read as 'int'"]


def test_named_type_references_and_recursion() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "namespace": "t",
        "fields": [
            {"name": "children", "type": {"type": "array", "items": "Node"}},
            {"name": "weight", "type": "int"},
            {"name": "parent", "type": ["null", "t.Node"], "default": None},
        ],
    }
    widened = json.loads(json.dumps(node).replace('"int"', '"long"'))
    assert reader_can_read(_parsed(widened), _parsed(node)) == []
    assert reader_can_read(_parsed(node), _parsed(widened)) == [
        "Node.weight: writer type 'long' cannot be read as 'int'"
    ]


def test_reference_visited_before_its_definition() -> None:
    # fastavro defines Party in full at its first use ("supplier"); the reader's field
    # order reaches the by-name reference ("customer") first.
    party = {"type": "record", "name": "Party", "fields": [{"name": "id", "type": "string"}]}
    writer = _record(
        "Ship", {"name": "supplier", "type": party}, {"name": "customer", "type": "t.Party"}
    )
    reader = _record(
        "Ship", {"name": "customer", "type": party}, {"name": "supplier", "type": "t.Party"}
    )
    assert full_compatibility(_parsed(writer), _parsed(reader)) == []
    assert reader_can_read(_parsed(reader), "t.Party") == [
        "Ship: writer schema refers to unknown type 't.Party'"
    ]


def _fastavro_reads(reader: Any, writer: Any, datum: Any) -> bool:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(writer), datum)
    buf.seek(0)
    try:
        fastavro.schemaless_reader(
            buf, fastavro.parse_schema(writer), fastavro.parse_schema(reader)
        )
    except fastavro.read.SchemaResolutionError:
        return False
    return True


@pytest.mark.parametrize(
    ("reader", "writer", "datum"),
    [
        pytest.param(
            _record("R", {"name": "a", "type": "long"}),
            _record("R", {"name": "a", "type": "int"}),
            {"a": 1},
            id="int-to-long",
        ),
        pytest.param(
            _record("R", {"name": "a", "type": "int"}),
            _record("R", {"name": "a", "type": "long"}),
            {"a": 1},
            id="long-to-int",
        ),
        pytest.param(
            _record("R", {"name": "a", "type": "int"}, {"name": "b", "type": "int"}),
            _record("R", {"name": "a", "type": "int"}),
            {"a": 1},
            id="missing-no-default",
        ),
        pytest.param(
            _record("R", {"name": "a", "type": "string"}),
            _record("R", {"name": "a", "type": ["null", "string"]}),
            {"a": None},
            id="null-into-string",
        ),
        pytest.param(
            _record("S", {"name": "a", "type": "int"}, aliases=["R"]),
            _record("R", {"name": "a", "type": "int"}),
            {"a": 1},
            id="alias",
        ),
        pytest.param(
            {"type": "enum", "name": "E", "symbols": ["A"]},
            {"type": "enum", "name": "E", "symbols": ["A", "B"]},
            "B",
            id="enum-new-symbol",
        ),
    ],
)
def test_checker_agrees_with_fastavro(reader: Any, writer: Any, datum: Any) -> None:
    verdict = reader_can_read(_parsed(reader), _parsed(writer)) == []
    assert verdict == _fastavro_reads(reader, writer, datum)


# --------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class GateBaseline:
    folder: Path
    description: str


@pytest.fixture(scope="module")
def gate_baseline(tmp_path_factory: pytest.TempPathFactory) -> GateBaseline:
    """The previous committed ``schemas/avro``, materialized; skips if there is none."""
    try:
        baseline = previous_avro_revision(avro_dir())
    except NoPreviousVersion as reason:
        pytest.skip(f"schema evolution gate: no previous schema version to compare: {reason}")
    folder = materialize(baseline, tmp_path_factory.mktemp("previous-avro"))
    return GateBaseline(folder, f"{baseline.revision} ({baseline.why})")


@pytest.mark.parametrize("event_name", GATED_NAMES)
def test_event_schema_is_compatible_with_previous_version(
    event_name: str, gate_baseline: GateBaseline
) -> None:
    problems = compare_event_schema(gate_baseline.folder, avro_dir(), event_name)
    if problems is None:
        # A new event type has no previous version; it must still resolve against itself
        # (every named type it references exists and is consistent).
        new = fastavro.schema.load_schema(
            str(_event_file(avro_dir(), event_name)), _write_hint=False
        )
        print(f"{event_name}: new since {gate_baseline.description}; checked against itself")
        assert full_compatibility(new, new) == []
        return
    print(f"{event_name}: compared against {gate_baseline.description}")
    assert problems == [], (
        f"{event_name} changed incompatibly since {gate_baseline.description}:\n  "
        + "\n  ".join(problems)
    )


# --------------------------------------------------------------------------- the gate bites


ENVELOPE = f"{NAMESPACE}.Envelope.avsc"
SYSTEM_KIND = f"{NAMESPACE}.SystemKind.avsc"


def _edit_schema(folder: Path, file_name: str, edit: Any) -> None:
    path = folder / file_name
    schema = json.loads(path.read_text())
    edit(schema)
    path.write_text(json.dumps(schema, indent=2) + "\n")


def _add_envelope_field(field: dict[str, Any]) -> Any:
    return lambda schema: schema["fields"].append(field)


@pytest.mark.parametrize("event_name", EVENT_NAMES)
def test_a_changed_event_schema_keeps_its_previous_version_readable(
    event_name: str, gate_baseline: GateBaseline
) -> None:
    old_file = _event_file(gate_baseline.folder, event_name)
    if not old_file.exists():
        print(f"{event_name}: new since {gate_baseline.description}; no earlier version to keep")
        assert SchemaCatalog.load().schema_for(event_name).reader is None
        return
    old = fastavro.schema.load_schema(str(old_file), _write_hint=False)
    canonical = fastavro.schema.to_parsing_canonical_form(old)
    fingerprint = int(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"), 16)
    # In-flight events written by the previous version must still decode after an upgrade.
    assert fingerprint.to_bytes(8, "little") in SchemaCatalog.load().by_fingerprint, (
        f"{event_name} changed since {gate_baseline.description}: save the previous version as "
        f"schemas/avro/history/{event_name}.{fingerprint:016x}.avsc (json.dumps of "
        "SchemaCatalog.load().by_name[...].parsed, taken before the change)"
    )


def test_gate_catches_a_required_field_added_to_a_shared_type(tmp_path: Path) -> None:
    new_folder = tmp_path / "avro"
    shutil.copytree(avro_dir(), new_folder)
    _edit_schema(new_folder, ENVELOPE, _add_envelope_field({"name": "tenant", "type": "string"}))
    for event_name in EVENT_NAMES:
        problems = compare_event_schema(avro_dir(), new_folder, event_name)
        assert problems is not None
        assert len(problems) == 1, problems
        assert problems[0].startswith(BACKWARD)
        assert f"{event_name}.envelope.tenant" in problems[0]
        assert "'tenant'" in problems[0]


def test_gate_catches_an_enum_symbol_added_without_default(tmp_path: Path) -> None:
    new_folder = tmp_path / "avro"
    shutil.copytree(avro_dir(), new_folder)
    _edit_schema(new_folder, SYSTEM_KIND, lambda s: s["symbols"].append("PLC"))
    problems = compare_event_schema(avro_dir(), new_folder, "LotReceived")
    assert problems is not None
    assert len(problems) == 1
    assert problems[0].startswith(FORWARD)
    assert "LotReceived.envelope.source.system_kind" in problems[0]
    assert "PLC" in problems[0]


def test_gate_accepts_the_current_folder_against_itself() -> None:
    for event_name in EVENT_NAMES:
        assert compare_event_schema(avro_dir(), avro_dir(), event_name) == []


# ------------------------------------------------------- the git lookup, on a scratch repo


class ScratchRepo:
    """A throwaway git repository holding a copy of ``schemas/avro``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.avro = root / "schemas" / "avro"
        root.mkdir(parents=True, exist_ok=True)
        _git(root, "init", "--quiet")

    def copy_current_schemas(self) -> None:
        shutil.copytree(avro_dir(), self.avro, dirs_exist_ok=True)

    def commit(self, message: str) -> str:
        _git(self.root, "add", "--all")
        _git(
            self.root,
            "-c", "user.name=Schema Gate",
            "-c", "user.email=gate@lothub.invalid",
            "-c", "commit.gpgsign=false",
            "-c", "core.hooksPath=/dev/null",
            "commit", "--quiet", "--allow-empty", "-m", message,
        )  # fmt: skip
        return _git(self.root, "rev-parse", "HEAD").decode().strip()

    def gate(self, tmp: Path) -> tuple[Baseline, dict[str, list[str] | None]]:
        """Run the gate's lookup and comparison against this repository."""
        baseline = previous_avro_revision(self.avro)
        old = materialize(baseline, tmp)
        return baseline, {n: compare_event_schema(old, self.avro, n) for n in EVENT_NAMES}


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ScratchRepo:
    if shutil.which("git") is None:
        pytest.skip("no git binary on PATH: cannot build a scratch repository")
    # never let git wander up out of tmp_path into an enclosing repository
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    return ScratchRepo(tmp_path / "repo")


def test_lookup_without_a_repository_or_commits(scratch: ScratchRepo, tmp_path: Path) -> None:
    outside = tmp_path / "plain" / "schemas" / "avro"
    shutil.copytree(avro_dir(), outside)
    with pytest.raises(NoPreviousVersion, match="not in a git checkout"):
        previous_avro_revision(outside)

    scratch.copy_current_schemas()
    with pytest.raises(NoPreviousVersion, match="no commits yet"):
        previous_avro_revision(scratch.avro)


def test_lookup_with_brand_new_schemas(scratch: ScratchRepo) -> None:
    (scratch.root / "README").write_text("hub\n")
    scratch.commit("readme")
    scratch.copy_current_schemas()  # untracked: not in HEAD
    with pytest.raises(NoPreviousVersion, match="brand new"):
        previous_avro_revision(scratch.avro)
    scratch.commit("schemas")  # committed, but the parent has no schemas
    with pytest.raises(NoPreviousVersion, match="brand new"):
        previous_avro_revision(scratch.avro)


def test_lookup_with_schemas_in_the_root_commit(scratch: ScratchRepo) -> None:
    scratch.copy_current_schemas()
    scratch.commit("schemas")
    with pytest.raises(NoPreviousVersion, match="root commit"):
        previous_avro_revision(scratch.avro)


def test_lookup_and_verdicts_through_history(scratch: ScratchRepo, tmp_path: Path) -> None:
    scratch.copy_current_schemas()
    first = scratch.commit("schemas v1")

    # compatible change, committed: compared against the state before it (= v1)
    _edit_schema(
        scratch.avro,
        ENVELOPE,
        _add_envelope_field({"name": "tenant", "type": ["null", "string"], "default": None}),
    )
    second = scratch.commit("envelope: optional tenant")
    (scratch.root / "README").write_text("unrelated\n")
    scratch.commit("unrelated change")  # does not touch the folder: still v2 vs v1
    baseline, verdicts = scratch.gate(tmp_path / "b1")
    assert baseline.revision == f"{second}^"
    assert _git(scratch.root, "rev-parse", baseline.revision).decode().strip() == first
    assert verdicts == {name: [] for name in EVENT_NAMES}
    assert (tmp_path / "b1" / ENVELOPE).read_bytes() == (avro_dir() / ENVELOPE).read_bytes()

    # breaking change in the working tree only: compared against HEAD
    _edit_schema(scratch.avro, ENVELOPE, _add_envelope_field({"name": "plant", "type": "string"}))
    baseline, verdicts = scratch.gate(tmp_path / "b2")
    assert baseline.revision == "HEAD"
    for event_name, problems in verdicts.items():
        assert problems is not None
        assert [p for p in problems if f"{event_name}.envelope.plant" in p] == problems
        assert len(problems) == 1

    # the same breaking change committed: compared against the state before it (= v2)
    third = scratch.commit("envelope: required plant")
    baseline, verdicts = scratch.gate(tmp_path / "b3")
    assert baseline.revision == f"{third}^"
    assert all(p is not None and len(p) == 1 and "plant" in p[0] for p in verdicts.values())

    # a new, untracked event schema has nothing to compare with; the rest still are
    _edit_schema(scratch.avro, ENVELOPE, lambda s: s["fields"].pop())  # back to v2
    new_event = json.loads((scratch.avro / f"{NAMESPACE}.LotReceived.avsc").read_text())
    new_event["name"] = "LotSampled"
    (scratch.avro / f"{NAMESPACE}.LotSampled.avsc").write_text(json.dumps(new_event))
    baseline, _ = scratch.gate(tmp_path / "b4")
    assert baseline.revision == "HEAD"
    old = tmp_path / "b4"
    assert compare_event_schema(old, scratch.avro, "LotSampled") is None
    # HEAD (v3, required plant) -> working tree (v2): new readers are fine, old readers
    # miss the required field
    problems = compare_event_schema(old, scratch.avro, "LotReceived")
    assert problems is not None
    assert len(problems) == 1
    assert problems[0].startswith(FORWARD)
    assert "plant" in problems[0]


def test_git_failure_in_a_real_checkout_fails_instead_of_skipping(scratch: ScratchRepo) -> None:
    scratch.copy_current_schemas()
    scratch.commit("v1")
    _edit_schema(scratch.avro, SYSTEM_KIND, lambda s: s["symbols"].append("PLC"))
    scratch.commit("v2")
    for loose in (scratch.root / ".git" / "objects").glob("??"):
        shutil.rmtree(loose)  # corrupt: every object is gone, refs still point at them
    with pytest.raises(GitError):
        previous_avro_revision(scratch.avro)


def test_shallow_clone_fails_instead_of_skipping(scratch: ScratchRepo, tmp_path: Path) -> None:
    scratch.copy_current_schemas()
    scratch.commit("v1")
    _edit_schema(scratch.avro, SYSTEM_KIND, lambda s: s["symbols"].append("PLC"))
    scratch.commit("v2")
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "--quiet", "--depth", "1", scratch.root.as_uri(), str(clone))
    with pytest.raises(GitError, match="shallow clone"):
        previous_avro_revision(clone / "schemas" / "avro")
