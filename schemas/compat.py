"""Avro schema-resolution compatibility checks: the basis of the schema evolution gate.

lothub's events are written by one release and read by another: a connector that has
been upgraded keeps producing while stream workers still run the previous release, and
topics retain data written under every schema a lot event ever had. A change to a file
in ``schemas/avro/`` is therefore only safe if Avro *schema resolution* (Avro 1.11
specification, section "Schema Resolution") can still reconcile writer and reader in
both directions:

* **backward**: new readers can read data written with the old schema;
* **forward**: old readers can read data written with the new schema.

:func:`reader_can_read` answers one direction and :func:`full_compatibility` both. They
work on schemas as :func:`fastavro.schema.load_schema` / :func:`fastavro.schema.parse_schema`
produce them (each named type defined in full at its first use and referenced by its full
name afterwards); plain JSON schemas with ``namespace`` attributes and short names are
accepted too. Every problem comes back as a readable message that starts with the path of
the offending field, e.g. ``LotReceived.envelope.tenant: ...``; an empty list means the
reader can resolve everything the writer can produce.

The rules applied, per the specification:

* primitives must be equal or promotable: ``int`` to ``long``, ``float`` or ``double``;
  ``long`` to ``float`` or ``double``; ``float`` to ``double``; ``string`` to ``bytes``
  and ``bytes`` to ``string``;
* records, enums and fixed types match by unqualified name, or by one of the reader's
  aliases; fixed sizes must be equal;
* record fields match by name or by one of the reader field's aliases; a writer field
  the reader lacks is skipped; a reader field the writer lacks needs a default;
* every symbol the writer's enum can hold must be in the reader's enum, unless the
  reader's enum has a default;
* array items and map values are resolved recursively;
* a writer union is readable if every one of its branches is; a non-union writer is
  readable by a reader union if the first reader branch that matches it (as the
  specification defines "match") resolves.

Logical types are not part of resolution in the specification (readers fall back to the
underlying type), but a change to how the bytes are *interpreted* corrupts data just the
same, so two further rules are applied: a ``decimal`` must keep its precision and scale
(and cannot appear on or vanish from a field's type), and two different logical types on
the same underlying type (``timestamp-millis`` vs ``timestamp-micros``) are refused.
Adding or removing any other logical type annotation is allowed.

Defaults are only checked for presence, not for validity against the field's type.

Example::

    >>> old = {"type": "record", "name": "A", "fields": [{"name": "x", "type": "int"}]}
    >>> new = {"type": "record", "name": "A", "fields": [
    ...     {"name": "x", "type": "long"}, {"name": "y", "type": "string", "default": ""}]}
    >>> reader_can_read(new, old)
    []
    >>> for problem in full_compatibility(old, new):
    ...     print(problem)
    old readers cannot read new data: A.x: writer type 'long' cannot be read as 'int'
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = ["AvroSchema", "full_compatibility", "reader_can_read"]

#: A schema as JSON-decoded or as fastavro parses it: a type name, a union, or an object.
AvroSchema: TypeAlias = str | Sequence[Any] | Mapping[str, Any]

BACKWARD_PREFIX = "new readers cannot read old data:"
FORWARD_PREFIX = "old readers cannot read new data:"

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
_PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


def reader_can_read(reader: AvroSchema, writer: AvroSchema) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader``.

    Both schemas may be fastavro-parsed (named types referenced by full name after their
    first definition) or plain JSON. Returns one message per incompatibility, each
    starting with the path of the offending field; an empty list means compatible.
    """
    checker = _Checker(_SchemaIndex(reader), _SchemaIndex(writer))
    root = checker.reader.resolve(reader, "")
    path = _short(root.full_name) if root.full_name else root.kind
    checker.check(reader, "", writer, "", path)
    return checker.problems


def full_compatibility(old: AvroSchema, new: AvroSchema) -> list[str]:
    """Problems in both directions between an ``old`` and a ``new`` version of a schema.

    Backward problems (new readers, old data) are prefixed
    ``"new readers cannot read old data:"``; forward problems (old readers, new data)
    ``"old readers cannot read new data:"``. An empty list means fully compatible.
    """
    backward = [f"{BACKWARD_PREFIX} {p}" for p in reader_can_read(new, old)]
    forward = [f"{FORWARD_PREFIX} {p}" for p in reader_can_read(old, new)]
    return backward + forward


@dataclass(frozen=True, slots=True)
class _Node:
    """One schema with named-type references resolved.

    ``kind`` is a primitive name or one of record/enum/fixed/array/map/union;
    ``namespace`` is the one that short names inside this schema are relative to.
    """

    kind: str
    schema: Any
    namespace: str
    full_name: str | None = None

    @property
    def attrs(self) -> Mapping[str, Any]:
        """The schema's JSON attributes (empty for a bare type name or a union)."""
        return self.schema if isinstance(self.schema, Mapping) else {}

    @property
    def label(self) -> str:
        """How to name this schema in a message."""
        return _short(self.full_name) if self.full_name else self.kind


def _short(full_name: str) -> str:
    return full_name.rsplit(".", 1)[-1]


def _qualify(name: str, namespace: str) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _namespace_of(full_name: str) -> str:
    return full_name.rpartition(".")[0]


class _SchemaIndex:
    """Every named type defined anywhere in one schema, by full name.

    fastavro defines a named type where it is first used, and the checker may visit a
    reference before that first use (reader and writer field orders differ, skipped
    writer fields), so all definitions are collected up front.
    """

    def __init__(self, schema: AvroSchema) -> None:
        self.named: dict[str, _Node] = {}
        self.unresolved: set[str] = set()
        self._collect(schema, "")

    def _collect(self, schema: Any, namespace: str) -> None:
        if isinstance(schema, Mapping):
            kind = schema.get("type")
            if isinstance(kind, str) and kind in _NAMED and isinstance(schema.get("name"), str):
                own_ns = schema.get("namespace")
                full = _qualify(schema["name"], own_ns if isinstance(own_ns, str) else namespace)
                if full in self.named:
                    return
                namespace = _namespace_of(full)
                self.named[full] = _Node(_kind(kind), schema, namespace, full)
                for fld in schema.get("fields", ()) if kind != "enum" else ():
                    if isinstance(fld, Mapping):
                        self._collect(fld.get("type"), namespace)
            elif kind == "array":
                self._collect(schema.get("items"), namespace)
            elif kind == "map":
                self._collect(schema.get("values"), namespace)
            elif isinstance(kind, Mapping | list):
                self._collect(kind, namespace)
        elif isinstance(schema, list):
            for branch in schema:
                self._collect(branch, namespace)

    def resolve(self, schema: Any, namespace: str) -> _Node:
        """The node for ``schema``, following a named-type reference if it is one."""
        if isinstance(schema, list):
            return _Node("union", schema, namespace)
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return _Node(schema, schema, namespace)
            for candidate in (_qualify(schema, namespace), schema):
                if candidate in self.named:
                    return self.named[candidate]
            return _Node("unknown", schema, namespace, _qualify(schema, namespace))
        if isinstance(schema, Mapping):
            kind = schema.get("type")
            if isinstance(kind, Mapping | list):  # {"type": {...}} wraps another schema
                return self.resolve(kind, namespace)
            if not isinstance(kind, str):
                return _Node("unknown", schema, namespace)
            if kind in _NAMED:
                own_ns = schema.get("namespace")
                name = schema.get("name")
                if isinstance(name, str):
                    full = _qualify(name, own_ns if isinstance(own_ns, str) else namespace)
                    return self.named.get(full) or _Node(
                        _kind(kind), schema, _namespace_of(full), full
                    )
            if kind in _PRIMITIVES or kind in {"array", "map"} or kind in _NAMED:
                return _Node(_kind(kind), schema, namespace)
            return self.resolve(kind, namespace)  # {"type": "io.x.Named"}
        return _Node("unknown", schema, namespace)


def _kind(kind: str) -> str:
    return "record" if kind == "error" else kind


@dataclass(slots=True)
class _Checker:
    reader: _SchemaIndex
    writer: _SchemaIndex
    problems: list[str] = field(default_factory=list)
    _in_progress: set[tuple[str, str]] = field(default_factory=set)

    def report(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def check(self, reader: Any, r_ns: str, writer: Any, w_ns: str, path: str) -> None:
        """Record every reason ``reader`` cannot read data written as ``writer``."""
        r = self.reader.resolve(reader, r_ns)
        w = self.writer.resolve(writer, w_ns)
        for node, side in ((r, "reader"), (w, "writer")):
            if node.kind == "unknown":
                self.report(path, f"{side} schema refers to unknown type {node.schema!r}")
                return
        if w.kind == "union":
            for branch in w.schema:
                b = self.writer.resolve(branch, w.namespace)
                self.check(reader, r.namespace, branch, w.namespace, f"{path}<{b.label}>")
            return
        if r.kind == "union":
            chosen = next(
                (br for br in r.schema if self._matches(self.reader.resolve(br, r.namespace), w)),
                None,
            )
            if chosen is None:
                branches = ", ".join(self.reader.resolve(br, r.namespace).label for br in r.schema)
                self.report(
                    path, f"writer type '{w.label}' matches no branch of reader union [{branches}]"
                )
                return
            self.check(chosen, r.namespace, writer, w.namespace, path)
            return
        self._check_non_union(r, w, path)

    def _matches(self, r: _Node, w: _Node) -> bool:
        """The specification's notion of a union branch matching (shallow)."""
        if r.kind == "union" or w.kind == "union":
            return False
        if r.kind in _PRIMITIVES and w.kind in _PRIMITIVES:
            return r.kind == w.kind or r.kind in _PROMOTIONS.get(w.kind, frozenset())
        if r.kind != w.kind:
            return False
        if r.kind in {"record", "enum"}:
            return _names_match(r, w)
        if r.kind == "fixed":
            return _names_match(r, w) and r.attrs.get("size") == w.attrs.get("size")
        if r.kind == "array":
            return self._matches(
                self.reader.resolve(r.attrs.get("items"), r.namespace),
                self.writer.resolve(w.attrs.get("items"), w.namespace),
            )
        if r.kind == "map":
            return self._matches(
                self.reader.resolve(r.attrs.get("values"), r.namespace),
                self.writer.resolve(w.attrs.get("values"), w.namespace),
            )
        return False

    def _check_non_union(self, r: _Node, w: _Node, path: str) -> None:
        if r.kind in _PRIMITIVES and w.kind in _PRIMITIVES:
            if r.kind != w.kind and r.kind not in _PROMOTIONS.get(w.kind, frozenset()):
                self.report(path, f"writer type '{w.kind}' cannot be read as '{r.kind}'")
                return
            self._check_logical(r, w, path)
            return
        if r.kind != w.kind:
            self.report(path, f"writer type '{w.label}' cannot be read as '{r.label}'")
            return
        if r.kind == "array":
            self.check(
                r.attrs.get("items"), r.namespace, w.attrs.get("items"), w.namespace, f"{path}[]"
            )
        elif r.kind == "map":
            self.check(
                r.attrs.get("values"),
                r.namespace,
                w.attrs.get("values"),
                w.namespace,
                f"{path}{{}}",
            )
        elif r.kind in {"record", "enum", "fixed"}:
            if not _names_match(r, w):
                self.report(
                    path,
                    f"writer {w.kind} '{w.full_name}' does not match reader {r.kind} "
                    f"'{r.full_name}' by name or alias",
                )
                return
            key = (r.full_name or "", w.full_name or "")
            if key in self._in_progress:  # recursive type: assume what is being proven
                return
            self._in_progress.add(key)
            try:
                if r.kind == "record":
                    self._check_record(r, w, path)
                elif r.kind == "enum":
                    self._check_enum(r, w, path)
                else:
                    if r.attrs.get("size") != w.attrs.get("size"):
                        self.report(
                            path,
                            f"fixed '{r.label}' size differs (writer {w.attrs.get('size')}, "
                            f"reader {r.attrs.get('size')})",
                        )
                        return
                    self._check_logical(r, w, path)
            finally:
                self._in_progress.discard(key)
        else:
            self.report(path, f"cannot resolve writer '{w.label}' against reader '{r.label}'")

    def _check_record(self, r: _Node, w: _Node, path: str) -> None:
        writer_fields = {f["name"]: f for f in _fields(w) if isinstance(f.get("name"), str)}
        for r_field in _fields(r):
            name = r_field.get("name")
            if not isinstance(name, str):
                continue
            candidates = [name, *(a for a in r_field.get("aliases", ()) if isinstance(a, str))]
            w_field = next((writer_fields[c] for c in candidates if c in writer_fields), None)
            if w_field is None:
                if "default" not in r_field:
                    self.report(
                        f"{path}.{name}",
                        f"field '{name}' is missing from the writer's schema and the reader "
                        "gives no default",
                    )
                continue
            self.check(
                r_field.get("type"), r.namespace, w_field.get("type"), w.namespace, f"{path}.{name}"
            )

    def _check_enum(self, r: _Node, w: _Node, path: str) -> None:
        reader_symbols = set(r.attrs.get("symbols", ()))
        missing = [s for s in w.attrs.get("symbols", ()) if s not in reader_symbols]
        if missing and "default" not in r.attrs:
            self.report(
                path,
                f"enum '{r.label}' symbol(s) {', '.join(missing)} written but unknown to the "
                "reader, which has no default symbol",
            )

    def _check_logical(self, r: _Node, w: _Node, path: str) -> None:
        r_logical = r.attrs.get("logicalType")
        w_logical = w.attrs.get("logicalType")
        if r_logical == "decimal" or w_logical == "decimal":
            if r_logical != w_logical:
                self.report(
                    path,
                    f"logical type changes from {w_logical or 'none'} (writer) to "
                    f"{r_logical or 'none'} (reader); decimal bytes would be misread",
                )
                return
            for attr, default in (("precision", None), ("scale", 0)):
                w_value = w.attrs.get(attr, default)
                r_value = r.attrs.get(attr, default)
                if w_value != r_value:
                    self.report(
                        path, f"decimal {attr} differs (writer {w_value}, reader {r_value})"
                    )
        elif r_logical is not None and w_logical is not None and r_logical != w_logical:
            self.report(path, f"logical type differs (writer {w_logical}, reader {r_logical})")


def _fields(node: _Node) -> Iterator[Mapping[str, Any]]:
    for fld in node.attrs.get("fields", ()):
        if isinstance(fld, Mapping):
            yield fld


def _names_match(r: _Node, w: _Node) -> bool:
    """Unqualified names equal, or one of the reader's aliases names the writer's type."""
    w_full = w.full_name or ""
    if _short(r.full_name or "") == _short(w_full):
        return True
    return any(
        isinstance(alias, str) and _short(alias) == _short(w_full)
        for alias in r.attrs.get("aliases", ())
    )
