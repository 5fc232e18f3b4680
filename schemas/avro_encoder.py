"""Avro writers specialized for each event schema: fastavro's bytes, without the dict round trip.

:func:`compile_encoder` turns one record schema and the pydantic model it mirrors into
a plain Python function (generated source, compiled once) that reads the model's
attributes and appends their Avro binary encoding to a ``bytearray``. It replaces
``model_dump`` + ``fastavro.schemaless_writer`` on the hot path of connectors and
stream workers; the serde uses it and keeps fastavro as the reference:

* a compiled encoder writes exactly the bytes fastavro's strict writer would
  (``tests/unit/test_avro_encoder.py`` compares them for every event type and for
  edge values of every field type);
* it accepts only what it knows to be written the same way: the model's exact
  class, ``str``, in-range ``int``, ``bool``, aware ``datetime``, ``Decimal`` within the
  schema's precision and scale, known enum symbols. Anything else raises
  :class:`UnencodableError`, and the serde hands the event to fastavro, which either
  writes it or refuses it with its own error (writes stay strict);
* a model whose fields differ from its schema's, or that has a serializer the
  encoder does not know, gets no compiled encoder at all (``None``).

Example::

    encode = compile_encoder(schema.parsed, LotMoved, models)   # once
    body = encode(event)                                        # per event; bytes
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal
from typing import Any

from pydantic import BaseModel

#: Model serializers whose Avro effect the encoder reproduces. Envelope's moves the
#: timestamps to UTC (the same instant, hence the same timestamp-micros) and adds
#: ``occurred_at_utc_offset_minutes``, which the model also exposes as a property.
KNOWN_SERIALIZERS = frozenset({("Envelope", "_split_offset")})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_LONG = 1 << 63
_INT = 1 << 31
#: exact decimal scaling: every value the encoder accepts has at most ``precision`` digits
_EXACT = Context(prec=100, Emax=MAX_EMAX, Emin=MIN_EMIN)


class UnencodableError(Exception):
    """The compiled encoder does not take this value; use the reference writer instead."""


class UnsupportedSchemaError(Exception):
    """The schema or model has something the generator does not compile (no fast path)."""


def _zigzag(n: int) -> bytes:
    """Avro ``long`` encoding: zig-zag, then 7 bits per byte, low group first."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


#: per record type, how many instances' bytes are kept (a connector's sites, bins, items)
_CACHED_RECORDS = 4096
_SMALL_COUNT = 8192
#: encodings of 0 .. _SMALL_COUNT-1 (string lengths, symbol indexes, sequence numbers)
_SMALL = [_zigzag(i) for i in range(_SMALL_COUNT)]
#: encodings of -_SMALL_COUNT .. -1 (UTC offsets west of Greenwich, in minutes)
_NEGATIVE = [_zigzag(i) for i in range(-_SMALL_COUNT, 0)]


def _long(n: int) -> bytes:
    if 0 <= n < _SMALL_COUNT:
        return _SMALL[n]
    if -_SMALL_COUNT <= n < 0:
        return _NEGATIVE[n + _SMALL_COUNT]
    return _zigzag(n)


class _Generator:
    """Emits the body of one encoder function; named types resolve as fastavro expands them."""

    def __init__(self, models: Mapping[str, type[BaseModel]]) -> None:
        self.models = models
        self.named: dict[str, Any] = {}
        self.lines: list[str] = []
        self.env: dict[str, Any] = {
            "UnencodableError": UnencodableError, "datetime": datetime, "Decimal": Decimal,
            "_EPOCH": _EPOCH, "_MICROSECOND": _MICROSECOND, "_LONG": _LONG, "_INT": _INT,
            "_EXACT": _EXACT, "_SMALL": _SMALL, "_N": _SMALL_COUNT, "_zigzag": _zigzag,
            "_long": _long,
        }  # fmt: skip
        self._names = 0

    def var(self, stem: str) -> str:
        self._names += 1
        return f"{stem}{self._names}"

    def const(self, stem: str, value: Any) -> str:
        name = self.var(f"_{stem}")
        self.env[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def write(self, schema: Any, v: str, indent: int) -> None:
        """Emit code appending the encoding of the value in variable ``v`` to ``out``."""
        if isinstance(schema, str):
            if schema in self.named:
                return self.write_named(self.named[schema], v, indent)
            return self.write_primitive(schema, v, indent)
        if isinstance(schema, list):
            return self.write_union(schema, v, indent)
        kind = schema["type"]
        logical = schema.get("logicalType")
        if kind == "record":
            self.named[schema["name"]] = schema
            return self.write_record(schema, v, indent)
        if kind == "enum":
            self.named[schema["name"]] = schema
            return self.write_enum(schema, v, indent)
        if kind == "array":
            return self.write_array(schema, v, indent)
        if kind == "long" and logical == "timestamp-micros":
            return self.write_timestamp(v, indent)
        if kind == "bytes" and logical == "decimal":
            return self.write_decimal(schema, v, indent)
        if logical is None:
            return self.write_primitive(kind, v, indent)
        raise UnsupportedSchemaError(f"type {kind} with logicalType {logical}")

    def write_named(self, schema: dict[str, Any], v: str, indent: int) -> None:
        if schema["type"] == "record":
            return self.write_record(schema, v, indent)
        return self.write_enum(schema, v, indent)

    def write_primitive(self, kind: str, v: str, indent: int) -> None:
        e = self.emit
        if kind == "string":
            b, n = self.var("b"), self.var("n")
            # a str subclass (an enum member in a text field) is written as its value
            e(
                indent,
                f"if type({v}) is not str and not isinstance({v}, str): raise UnencodableError",
            )
            e(indent, f"{b} = {v}.encode()")
            e(indent, f"{n} = len({b})")
            e(indent, f"out += _SMALL[{n}] if {n} < _N else _zigzag({n})")
            e(indent, f"out += {b}")
        elif kind in ("long", "int"):
            bound = "_LONG" if kind == "long" else "_INT"
            e(
                indent,
                f"if type({v}) is not int or not -{bound} <= {v} < {bound}: raise UnencodableError",
            )
            e(indent, f"out += _long({v})")
        elif kind == "boolean":
            e(indent, f"if {v} is True: out += b'\\x01'")
            e(indent, f"elif {v} is False: out += b'\\x00'")
            e(indent, "else: raise UnencodableError")
        else:
            raise UnsupportedSchemaError(f"primitive type {kind}")

    def write_timestamp(self, v: str, indent: int) -> None:
        # naive datetimes are read as local time by fastavro: leave them to it
        self.emit(
            indent, f"if type({v}) is not datetime or {v}.tzinfo is None: raise UnencodableError"
        )
        self.emit(indent, f"out += _zigzag(({v} - _EPOCH) // _MICROSECOND)")

    def write_decimal(self, schema: dict[str, Any], v: str, indent: int) -> None:
        e = self.emit
        scale, precision = int(schema.get("scale", 0)), int(schema["precision"])
        t, u = self.var("t"), self.var("u")
        e(indent, f"if type({v}) is not Decimal: raise UnencodableError")
        e(indent, f"{t} = {v}.as_tuple()")
        # the same refusals as fastavro: too many digits, or finer than the scale
        e(indent, f"if type({t}.exponent) is not int or len({t}.digits) > {precision} "
                  f"or {t}.exponent + {scale} < 0: raise UnencodableError")  # fmt: skip
        e(indent, f"{u} = int({v}.scaleb({scale}, _EXACT))")
        e(indent, f"{u} = {u}.to_bytes(({u}.bit_length() + 8) // 8, 'big', signed=True)")
        e(indent, f"out += _SMALL[len({u})]")
        e(indent, f"out += {u}")

    def write_enum(self, schema: dict[str, Any], v: str, indent: int) -> None:
        index = self.const("symbols", {s: _long(i) for i, s in enumerate(schema["symbols"])})
        x = self.var("x")
        self.emit(indent, f"{x} = {index}.get({v}) if isinstance({v}, str) else None")
        self.emit(indent, f"if {x} is None: raise UnencodableError")
        self.emit(indent, f"out += {x}")

    def write_array(self, schema: dict[str, Any], v: str, indent: int) -> None:
        item = self.var("i")
        self.emit(indent, f"if type({v}) is not list: raise UnencodableError")
        self.emit(indent, f"if {v}: out += _long(len({v}))")
        self.emit(indent, f"for {item} in {v}:")
        self.write(schema["items"], item, indent + 1)
        self.emit(indent, "out += b'\\x00'")

    def write_union(self, branches: list[Any], v: str, indent: int) -> None:
        if len(branches) != 2 or branches[0] != "null":
            raise UnsupportedSchemaError(f"union {branches} (only [null, T] is compiled)")
        self.emit(indent, f"if {v} is None: out += b'\\x00'")
        self.emit(indent, "else:")
        self.emit(indent + 1, "out += b'\\x02'")
        self.write(branches[1], v, indent + 1)

    def write_record(self, schema: dict[str, Any], v: str, indent: int) -> None:
        short = schema["name"].rsplit(".", 1)[-1]
        model = self.models.get(short)
        if model is None:
            raise UnsupportedSchemaError(f"no model class for record {schema['name']}")
        check_model(model, [f["name"] for f in schema["fields"]])
        cls = self.const(short, model)
        if not self.is_text_record(schema):
            self.emit(indent, f"if type({v}) is not {cls}: raise UnencodableError")
            return self.write_fields(schema, v, indent)
        # Records of text only (sources, locations, items, parties) are few and shared by
        # many events: their bytes are kept per instance. The models are frozen and hold
        # only immutable values, and the cache holds the instance, so its id is not reused.
        cache, hit, start = self.const(f"{short}_bytes", {}), self.var("c"), self.var("s")
        e = self.emit
        e(indent, f"{hit} = {cache}.get(id({v}))")
        e(indent, f"if {hit} is not None and {hit}[0] is {v}: out += {hit}[1]")
        e(indent, "else:")
        e(indent + 1, f"if type({v}) is not {cls}: raise UnencodableError")
        e(indent + 1, f"{start} = len(out)")
        self.write_fields(schema, v, indent + 1)
        e(indent + 1, f"if len({cache}) >= {_CACHED_RECORDS}: {cache}.clear()")
        e(indent + 1, f"{cache}[id({v})] = ({v}, bytes(out[{start}:]))")

    def write_fields(self, schema: dict[str, Any], v: str, indent: int) -> None:
        for f in schema["fields"]:
            value = self.var("v")
            self.emit(indent, f"{value} = {v}.{f['name']}")
            self.write(f["type"], value, indent)

    def is_text_record(self, schema: dict[str, Any]) -> bool:
        """True for a record whose fields are strings, enums, optional strings or such records."""

        def text(t: Any) -> bool:
            if isinstance(t, str):
                named = self.named.get(t)
                return t == "string" if named is None else text(named)
            if isinstance(t, list):
                return len(t) == 2 and t[0] == "null" and text(t[1])
            if t["type"] == "record":
                self.named.setdefault(t["name"], t)
                return all(text(f["type"]) for f in t["fields"])
            return bool(t["type"] == "enum")

        return text(schema)


def check_model(model: type[BaseModel], fields: list[str]) -> None:
    """Raise :class:`UnsupportedSchemaError` unless ``model`` maps 1:1 onto the Avro ``fields``.

    Every model field must be in the schema (fastavro's strict writer refuses extra
    fields); a schema field the model lacks must be a property of it.
    """
    extra = set(model.model_fields) - set(fields)
    if extra:
        raise UnsupportedSchemaError(f"{model.__name__} has fields {sorted(extra)} not in Avro")
    for name in set(fields) - set(model.model_fields):
        if not isinstance(getattr(model, name, None), property):
            raise UnsupportedSchemaError(f"{model.__name__} does not provide Avro field {name}")
    decorators = model.__pydantic_decorators__
    serializers = {*decorators.model_serializers, *decorators.field_serializers}
    unknown = {s for s in serializers if (model.__name__, s) not in KNOWN_SERIALIZERS}
    if unknown:
        raise UnsupportedSchemaError(f"{model.__name__} has serializers {sorted(unknown)}")


def compile_encoder(
    schema: dict[str, Any], model: type[BaseModel], models: Mapping[str, type[BaseModel]]
) -> Callable[[BaseModel], bytes]:
    """The Avro body writer of ``model`` against the record ``schema`` (fastavro-expanded).

    ``models`` maps record short names to model classes (nested records). Raises
    :class:`UnsupportedSchemaError` if the pair cannot be compiled; the returned
    function raises :class:`UnencodableError` for a value it does not take.
    """
    gen = _Generator({**models, schema["name"].rsplit(".", 1)[-1]: model})
    gen.write(schema, "event", 1)
    name = "encode_" + model.__name__
    source = "\n".join([f"def {name}(event):", "    out = bytearray()", *gen.lines,
                        "    return bytes(out)"])  # fmt: skip
    namespace = dict(gen.env)
    exec(compile(source, f"<avro encoder {schema['name']}>", "exec"), namespace)  # noqa: S102
    encoder: Callable[[BaseModel], bytes] = namespace[name]
    return encoder
