"""`MessageToJson`, several times faster, with the very same output: thread rows and replayed records
render every message as JSON, and protobuf's printer spent most of replay and rebuild deciding,
per field and per call, what kind of field it holds.

`to_json(message)` equals `json_format.MessageToJson(message, indent=None)` (and, with
`proto_names=True`, `preserving_proto_field_name=True`) byte for byte: the per-field decisions are
made once per message type: each gets a function, generated and compiled on first use, that reads
its fields by name (a field is printed when `ListFields` would list it), and timestamps print
without building a datetime. Everything unusual (extensions, float fields, enum values unknown to
their type, other well-known types, any error) goes through protobuf's own printer. Never change
what it prints: tests compare it with `MessageToJson` on fuzzed messages of every type we render.
"""

from __future__ import annotations

import base64
import datetime
import json
import keyword
from collections.abc import Callable
from typing import Any, cast

from google.protobuf import json_format, message_factory, symbol_database, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

Convert = Callable[[Any], Any]
Fill = Callable[..., dict[str, Any]]  # (message, JSON object to fill = a new one) -> the object
_INT64 = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})
_IDENTITY = frozenset({FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_UINT32})


class _Printer(json_format._Printer):
    """protobuf's printer with a plan per field descriptor and a message class per Any type URL."""

    def __init__(self, proto_names: bool) -> None:
        super().__init__(preserving_proto_field_name=proto_names)
        self._fields: dict[FieldDescriptor, tuple[str, Convert] | None] = {}
        self._messages: dict[Descriptor, bool] = {}  # descriptor -> a regular (not well-known) type
        self._converters: dict[Descriptor, Convert] = {}
        self._compiling: set[Descriptor] = set()
        self._any_types: dict[str, tuple[type[Message], Fill | None]] = {}  # type URL -> class, filler

    def _is_regular(self, descriptor: Descriptor) -> bool:
        """Whether messages of this type print field by field (not a wrapper or well-known type)."""
        regular = self._messages.get(descriptor)
        if regular is None:
            regular = self._messages[descriptor] = not (
                json_format._IsWrapperMessage(descriptor)
                or descriptor.full_name in json_format._WKTJSONMETHODS
            )
        return regular

    def _MessageToJsonObject(self, message: Message) -> Any:
        return self._converter(message.DESCRIPTOR)(message)

    def _converter(self, descriptor: Descriptor) -> Convert:
        """How a message of this type becomes JSON, decided (and compiled) once per type; a
        regular type's converter also takes the JSON object to fill (an Any's, with its type)."""
        convert = self._converters.get(descriptor)
        if convert is None:
            if descriptor in self._compiling:  # a type that holds itself: found when called
                return lambda message: self._converters[descriptor](message)
            convert = self._converters[descriptor] = self._new_converter(descriptor)
        return convert

    def _new_converter(self, descriptor: Descriptor) -> Convert:
        if descriptor.full_name == TIMESTAMP:
            return lambda message: timestamp_json(message.seconds, message.nanos)
        if descriptor.full_name == ANY:
            return self._AnyMessageToJsonObject
        if not self._is_regular(descriptor):
            return lambda message: json_format._Printer._MessageToJsonObject(self, message)
        self._compiling.add(descriptor)
        try:
            return self._compile(descriptor)
        finally:
            self._compiling.discard(descriptor)

    def _compile(self, descriptor: Descriptor) -> Fill:
        """A function printing the fields `ListFields` lists, in its order (by number), straight
        from the attributes, and on any error falling back to protobuf's way (which raises what
        protobuf raises); protobuf's way for types with extensions or implicit float fields (whose
        presence is their bit pattern: -0.0 is listed)."""
        fields = sorted(descriptor.fields, key=lambda f: f.number)
        floats = (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE)
        if descriptor.extension_ranges or any(
            f.cpp_type in floats and not f.has_presence and not f.is_repeated for f in fields
        ):
            return lambda message, js=None: self._RegularMessageToJsonObject(message, js or {})
        namespace: dict[str, Any] = {
            "slow": self._RegularMessageToJsonObject,
            "failures": (ValueError, json_format.SerializeToJsonError),
            "timestamp_json": timestamp_json,
        }
        body = [self._statement(field, f"c{i}", namespace) for i, field in enumerate(fields)]
        source = "\n".join([
            "def fill(m, js=None):",
            "    if js is None:",
            "        js = {}",
            "    try:",
            *body,
            "    except failures:",
            "        return slow(m, {'@type': js['@type']} if '@type' in js else {})",
            "    return js",
        ])  # fmt: skip
        exec(compile(source, f"<protojson {descriptor.full_name}>", "exec"), namespace)
        fill: Fill = namespace["fill"]
        return fill

    def _statement(self, field: FieldDescriptor, convert: str, namespace: dict[str, Any]) -> str:
        """The generated lines printing one field (its converter goes into `namespace`)."""
        plan = self._plan(field)
        assert plan is not None  # only extensions lack a plan, and they are not in `fields`
        name, namespace[convert] = plan
        value = f"m.{field.name}" if field.name.isidentifier() and not keyword.iskeyword(field.name) else (
            f"getattr(m, {field.name!r})"
        )  # fmt: skip
        if field.has_presence and not field.is_repeated:
            if field.message_type is not None and field.message_type.full_name == TIMESTAMP:
                converted = "timestamp_json(v.seconds, v.nanos)"
            else:
                converted = f"{convert}(v)"
            set_value = f"            v = {value}\n            js[{name!r}] = {converted}"
            return f"        if m.HasField({field.name!r}):\n{set_value}"
        plain = field.cpp_type in _IDENTITY or (
            field.cpp_type == FieldDescriptor.CPPTYPE_STRING and field.type != FieldDescriptor.TYPE_BYTES
        )
        converted = "v" if plain and not field.is_repeated else f"{convert}(v)"
        return f"        v = {value}\n        if v:\n            js[{name!r}] = {converted}"

    def _RegularMessageToJsonObject(self, message: Message, js: dict[str, Any]) -> dict[str, Any]:
        plans = self._fields
        for field, value in message.ListFields():
            plan = plans[field] if field in plans else self._plan(field)
            if plan is None:  # a field only protobuf's printer knows how to print
                return super()._RegularMessageToJsonObject(message, js)
            name, convert = plan
            try:
                js[name] = convert(value)
            except ValueError as exc:  # as protobuf reports it
                raise json_format.SerializeToJsonError(
                    f"Failed to serialize {field.name} field: {exc}."
                ) from exc
        return js

    def _plan(self, field: FieldDescriptor) -> tuple[str, Convert] | None:
        """The JSON name of a field and how to convert its value (None: leave it to protobuf)."""
        plan: tuple[str, Convert] | None = None
        if not field.is_extension:
            name = field.name if self.preserving_proto_field_name else field.json_name
            if json_format._IsMapEntry(field):
                convert = self._map(field)
            else:
                one = self._scalar(field)
                convert = (lambda values: [one(v) for v in values]) if field.is_repeated else one
            plan = (name, convert)
        self._fields[field] = plan
        return plan

    def _map(self, field: FieldDescriptor) -> Convert:
        value_field = field.message_type.fields_by_name["value"]
        one = self._scalar(value_field)

        def convert(values: Any) -> dict[str, Any]:
            return {
                ("true" if key else "false") if isinstance(key, bool) else str(key): one(values[key])
                for key in values
            }

        return convert

    def _scalar(self, field: FieldDescriptor) -> Convert:
        """How one value of `field` becomes JSON, as `_FieldToJsonObject` does it."""
        kind = field.cpp_type
        if kind == FieldDescriptor.CPPTYPE_MESSAGE:
            return self._converter(field.message_type)
        if kind == FieldDescriptor.CPPTYPE_STRING:
            if field.type == FieldDescriptor.TYPE_BYTES:
                return lambda value: base64.b64encode(value).decode("utf-8")
            return str
        if kind == FieldDescriptor.CPPTYPE_BOOL:
            return bool
        if kind in _INT64:
            return str
        if kind in _IDENTITY:
            return _same
        if kind == FieldDescriptor.CPPTYPE_ENUM:
            return self._enum(field)
        return lambda value: self._FieldToJsonObject(field, value)  # floats: NaN, infinities, shortest

    def _enum(self, field: FieldDescriptor) -> Convert:
        """Enum values by name (as protobuf names them, JSON options included), known ones cached."""
        names = {v.number: self._FieldToJsonObject(field, v.number) for v in field.enum_type.values}

        def convert(value: int) -> Any:
            return names[value] if value in names else self._FieldToJsonObject(field, value)

        return convert

    def _AnyMessageToJsonObject(self, message: Message) -> Any:
        type_url = message.type_url  # type: ignore[attr-defined]
        known = self._any_types.get(type_url)
        if known is None:
            if not message.ListFields():
                return {}
            try:
                descriptor = symbol_database.Default().pool.FindMessageTypeByName(type_url.split("/")[-1])
            except KeyError:
                return super()._AnyMessageToJsonObject(message)  # raises protobuf's own error
            fill = cast(Fill, self._converter(descriptor)) if self._is_regular(descriptor) else None
            known = self._any_types[type_url] = (message_factory.GetMessageClass(descriptor), fill)
        cls, fill = known
        if fill is None:  # a well-known type inside: protobuf's way
            return super()._AnyMessageToJsonObject(message)
        inner = cls()
        inner.ParseFromString(message.value)  # type: ignore[attr-defined]
        return fill(inner, {"@type": type_url})


def _same(value: Any) -> Any:
    return value


TIMESTAMP = "google.protobuf.Timestamp"
ANY = "google.protobuf.Any"
_EPOCH = datetime.datetime(1970, 1, 1)
TIMESTAMP_SECONDS = range(-62135596800, 253402300800)  # the years 1 to 9999, as protobuf checks them
_DAY = 86_400
_seconds_json: dict[int, str] = {}  # recent whole seconds, printed


def timestamp_json(seconds: int, nanos: int) -> str:
    """`Timestamp.ToJsonString()` of these seconds and nanos, printing each second only once: records
    of one second share it, and protobuf builds a datetime every time."""
    if seconds not in TIMESTAMP_SECONDS or not 0 <= nanos < 1_000_000_000:
        return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos).ToJsonString()  # its error
    whole = _seconds_json.get(seconds)
    if whole is None:
        if len(_seconds_json) >= 4096:
            _seconds_json.clear()
        whole = _seconds_json[seconds] = (
            _EPOCH + datetime.timedelta(seconds // _DAY, seconds % _DAY)
        ).isoformat()
    if not nanos:
        return f"{whole}Z"
    if not nanos % 1_000_000:
        return f"{whole}.{nanos // 1_000_000:03d}Z"
    if not nanos % 1_000:
        return f"{whole}.{nanos // 1_000:06d}Z"
    return f"{whole}.{nanos:09d}Z"


_PRINTERS = {False: _Printer(proto_names=False), True: _Printer(proto_names=True)}


def to_json(message: Message, *, proto_names: bool = False) -> str:
    """`json_format.MessageToJson(message, indent=None, preserving_proto_field_name=proto_names)`."""
    return json.dumps(to_object(message, proto_names=proto_names), indent=None)


def to_object(message: Message, *, proto_names: bool = False) -> Any:
    """`json_format.MessageToDict(message, preserving_proto_field_name=proto_names)`: the JSON value
    `to_json` prints, for a caller that puts it into a larger document."""
    return _PRINTERS[proto_names]._MessageToJsonObject(message)
