"""Fuzzing the hub's doors: hypothesis strategies for malformed input on every head, the drivers
that send it, and the judge that says what is wrong with an answer.

Shared by tests/test_fuzz.py (a few thousand cases in the suite) and scripts/fuzz.py (a longer run
with a summary). The hub runs in a thread of its own (`BackgroundHub`) so the fuzzers are plain
synchronous code driving real sockets: gRPC (every method of A2AService, RegistryService,
ThreadService and OperatorService, with garbled protobuf messages and with raw random bytes),
A2A JSON-RPC and A2A HTTP+JSON (random JSON, random bytes, random media types and versions).

A client mistake must come back as a client error: never INTERNAL / UNKNOWN on gRPC, never a 5xx or
-32603 on HTTP, never an exception class name, a traceback or a Python repr in what is answered.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import httpx
from a2a.types import a2a_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.json_format import MessageToDict, SerializeToJsonError
from google.protobuf.message import Message
from hypothesis import strategies as st

from agenthub.hub.config import HubSettings
from agenthub.hub.server import Hub
from agenthub.sdk import Agent, ScriptedModel, tool
from agenthub.sdk.pb import operator_pb2, registry_pb2, threads_pb2

AGENT = "echo"
V1 = {"A2A-Version": "1.0"}
CALL_TIMEOUT_S = 20.0
STREAM_ITEMS = 20
SERVICES: list[ServiceDescriptor] = [
    a2a_pb2.DESCRIPTOR.services_by_name["A2AService"],
    registry_pb2.DESCRIPTOR.services_by_name["RegistryService"],
    threads_pb2.DESCRIPTOR.services_by_name["ThreadService"],
    operator_pb2.DESCRIPTOR.services_by_name["OperatorService"],
]
# WatchAgents never ends by design; the fuzzers only make calls that end by themselves.
METHODS: list[MethodDescriptor] = [
    m for s in SERVICES for m in s.methods if m.full_name != "agenthub.v1.RegistryService.WatchAgents"
]


@tool
def echo(text: str) -> str:
    """Say the text back."""
    return f"echo: {text}"


# ---- the hub under fuzz ------------------------------------------------------------------------


class BackgroundHub:
    """A hub (embedded log; SQLite store unless `threads_url` names another) and the `echo` agent,
    running in their own thread and event loop, so synchronous fuzzers can hammer it;
    `with BackgroundHub(dir) as hub:`."""

    def __init__(self, data_dir: Path, threads_url: str | None = None) -> None:
        self._data_dir = data_dir
        self._threads_url = threads_url
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="fuzzed-hub", daemon=True)
        self._error: BaseException | None = None
        self.address = ""
        self.http_url = ""

    def __enter__(self) -> BackgroundHub:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None or not self.address:
            raise RuntimeError("the fuzzed hub did not start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        settings = HubSettings(
            port=0,
            http_port=0,
            data_dir=self._data_dir,
            threads_url=self._threads_url,
            health_interval_s=0,
            retry_backoff_s=0.05,
        )
        async with (
            Hub(settings) as hub,
            Agent(AGENT, description="says it back", tools=[echo], model=ScriptedModel(), hub=hub.address),
        ):
            self.address, self.http_url = hub.address, hub.http_url
            self._ready.set()
            await self._stop.wait()


# ---- what an answer must not be ----------------------------------------------------------------


def _exception_names() -> set[str]:
    """Every exception class loaded in this process (builtins, grpc, protobuf, sqlite3, httpx,
    a2a-sdk, AgentHub...): none of their names may appear in an answer."""
    import sqlite3  # noqa: F401 - loaded so its exception classes are counted

    names: set[str] = set()
    pending: list[type[BaseException]] = [BaseException]
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    names.update(n for n in dir(builtins) if isinstance(getattr(builtins, n), type))
    # CamelCase names only: plain words ("Exit", "Warning") can be honest prose.
    return {n for n in names if re.fullmatch(r"_?[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+", n)}


LEAKS = re.compile(
    r"\b(?:" + "|".join(sorted(map(re.escape, _exception_names()), key=len, reverse=True)) + r")\b"
    r"|Traceback \(most recent call last\)|<class '|File \"/"
)


@dataclass(frozen=True)
class Answer:
    """What a head answered to one fuzz case."""

    head: str  # grpc, grpc-bytes, jsonrpc, rest
    method: str
    status: str  # gRPC status name, or HTTP status code (and JSON-RPC code) as text
    text: str


def faults(answer: Answer) -> list[str]:
    """What is wrong with an answer: kinds of fault, empty when it is a fine answer."""
    found = []
    if answer.head.startswith("grpc"):
        if answer.status in {"INTERNAL", "UNKNOWN"}:
            found.append(f"grpc-{answer.status.lower()}")
        if answer.status == "DEADLINE_EXCEEDED":
            found.append("hang")
    else:
        http_status = int(answer.status.split()[0])
        if http_status >= 500:
            found.append("http-5xx")
        if "-32603" in answer.status or re.search(r'"code":\s*-32603', answer.text):
            found.append("jsonrpc-internal")
        if answer.status == "0":
            found.append("hang")
    if LEAKS.search(answer.text):
        found.append("exception-name")
    return found


# ---- strategies ----------------------------------------------------------------------------------

NASTY_TEXT = [
    "", " ", "%", "%" * 5000, "_", "\\", "'", '"', "\x00", "a\x00b", "9" * 40, "-1", "1e9", "NaN",
    AGENT, "nobody", "../../etc/passwd", "' OR 1=1 --", "TASK_STATE_FAILED", "http://[::1", "ftp://x",
    "http://", "😀" * 300, "x" * 70_000, "agenthub.inbox.echo", "request", "{}", "null",
]  # fmt: skip
texts = st.one_of(st.text(max_size=30), st.sampled_from(NASTY_TEXT), st.text(min_size=100, max_size=600))
VERSIONS = ["1.0", "1.0", "1.0", None, "2.0", "0.3", "1", "x" * 300, ""]
HEADERS = ["agenthub-sender", "agenthub-parent-task", "traceparent", "authorization"]
HEADER_VALUES = ["", "user", AGENT, "x" * 4000, "00-zz-zz-01", "00-" + "0" * 32 + "-" + "0" * 16 + "-00",
                 "no-such-task", "' OR 1=1 --", "%", "Bearer x"]  # fmt: skip
INT_EDGES = [0, 1, -1, 2**31 - 1, -(2**31), 2**53, 2**63 - 1, -(2**63), 10**15]


def _int_range(field: FieldDescriptor) -> tuple[int, int]:
    bits = 64 if field.cpp_type in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64) else 32
    if field.cpp_type in (FieldDescriptor.CPPTYPE_UINT32, FieldDescriptor.CPPTYPE_UINT64):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_STRING:
        if field.type == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=64)
        return texts
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-3, 1000))
    low, high = _int_range(field)
    return st.one_of(st.integers(low, high), st.sampled_from([v for v in INT_EDGES if low <= v <= high]))


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    """A protobuf message of `descriptor` with a random subset of its fields set to random,
    often nasty, values (nested messages, maps and repeated fields included, a few levels deep)."""
    out = message_factory.GetMessageClass(descriptor)()
    fields = [f for f in descriptor.fields if depth < 3 or f.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE]
    for field in draw(st.lists(st.sampled_from(fields), max_size=6, unique=True)) if fields else []:
        _set(draw, out, field, depth)
    return out


def _set(draw: st.DrawFn, out: Message, field: FieldDescriptor, depth: int) -> None:
    target = getattr(out, field.name)
    is_message = field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
    if is_message and field.message_type.GetOptions().map_entry:
        key_field, value_field = (
            field.message_type.fields_by_name["key"],
            field.message_type.fields_by_name["value"],
        )
        for key in draw(st.lists(_scalar(key_field), max_size=3)):
            if value_field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                target[key].CopyFrom(draw(messages(value_field.message_type, depth + 1)))
            else:
                target[key] = draw(_scalar(value_field))
    elif field.is_repeated:
        count = draw(st.integers(0, 3))
        for _ in range(count):
            if is_message:
                target.add().CopyFrom(draw(messages(field.message_type, depth + 1)))
            else:
                target.append(draw(_scalar(field)))
    elif is_message:
        target.CopyFrom(draw(messages(field.message_type, depth + 1)))
    else:
        setattr(out, field.name, draw(_scalar(field)))


def _aimed(method: MethodDescriptor, request: Message) -> Message:
    """Point half-random requests at the live agent, so the checks past routing are reached too;
    keep the fuzzer from writing (re-drive, rebuild) or from unregistering the agent under test."""
    if "tenant" in method.input_type.fields_by_name and request.tenant in ("", "nobody"):  # type: ignore[attr-defined]
        request.tenant = AGENT  # type: ignore[attr-defined]
    if "apply" in method.input_type.fields_by_name:
        request.apply = False  # type: ignore[attr-defined]
    if method.name in ("DeregisterAgent", "RegisterAgent") and getattr(request, "name", "") == AGENT:
        request.name = "not-" + AGENT  # type: ignore[attr-defined]
    if method.name == "RegisterAgent" and request.url.startswith(("http://", "https://")):  # type: ignore[attr-defined]
        request.url = request.url.replace("//", "//127.0.0.1:9/", 1)  # type: ignore[attr-defined]
    return request


@dataclass(frozen=True)
class GrpcCase:
    """One gRPC call to make: the method, the request's bytes, and its A2A-Version metadata."""

    method: MethodDescriptor
    payload: bytes
    version: str | None
    headers: tuple[tuple[str, str], ...] = ()


@st.composite
def grpc_cases(draw: st.DrawFn) -> GrpcCase:
    """A garbled protobuf request to any method of the hub's services, or raw random bytes, with
    odd metadata the hub reads (sender, parent task, trace context)."""
    method = draw(st.sampled_from(METHODS))
    version = draw(st.sampled_from(VERSIONS))
    headers = tuple(
        draw(st.lists(st.tuples(st.sampled_from(HEADERS), st.sampled_from(HEADER_VALUES)), max_size=2))
    )
    if draw(st.integers(0, 4)) == 0:
        return GrpcCase(method, draw(st.binary(max_size=200)), version, headers)
    if method.name in ("SendMessage", "SendStreamingMessage") and draw(st.booleans()):
        return GrpcCase(method, draw(sends()).SerializeToString(), version, headers)
    request = _aimed(method, draw(messages(method.input_type)))
    return GrpcCase(method, request.SerializeToString(), version, headers)


@st.composite
def sends(draw: st.DrawFn) -> a2a_pb2.SendMessageRequest:
    """SendMessage requests close enough to valid to reach the hub's own checks and the agent."""
    request = draw(messages(a2a_pb2.SendMessageRequest.DESCRIPTOR))
    request.tenant = draw(st.sampled_from([AGENT, AGENT, "", "nobody"]))
    request.message.message_id = draw(st.one_of(st.just(str(uuid.uuid4())), texts))
    if draw(st.booleans()):
        request.message.parts.add().text = draw(texts)
    return request


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
MEDIA_TYPES = [
    None, "application/json", "application/a2a+json", "text/plain", "application/json; charset=latin-1",
    "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", ";;", "application/json+x",
]  # fmt: skip


@dataclass(frozen=True)
class HttpCase:
    """One HTTP request to send."""

    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    params: dict[str, str]


def _headers(draw: st.DrawFn) -> dict[str, str]:
    headers = {}
    if (media_type := draw(st.sampled_from(MEDIA_TYPES))) is not None:
        headers["content-type"] = media_type
    if (version := draw(st.sampled_from(VERSIONS))) is not None:
        headers["A2A-Version"] = version
    return headers


def _json_value(draw: st.DrawFn, descriptor: Descriptor | None) -> Any:
    """The JSON of a garbled protobuf message (perhaps with one value garbled more), or any JSON."""
    choice = draw(st.integers(0, 4))
    if choice > 2 or descriptor is None:
        return draw(json_values)
    try:
        value: Any = MessageToDict(draw(messages(descriptor)))
    except (SerializeToJsonError, ValueError, TypeError):  # NaN in a Value, a timestamp out of range...
        return draw(json_values)
    if choice == 2 and value:
        value[draw(st.sampled_from(sorted(value)))] = draw(json_values)
    return value


def _json_body(draw: st.DrawFn, descriptor: Descriptor | None) -> bytes:
    """A request body: JSON (see `_json_value`), or random bytes."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=200))
    return json.dumps(_json_value(draw, descriptor)).encode()


A2A_METHODS = {m.name: m for m in a2a_pb2.DESCRIPTOR.services_by_name["A2AService"].methods}


@st.composite
def jsonrpc_cases(draw: st.DrawFn) -> HttpCase:
    """A JSON-RPC POST: a well-formed envelope around garbled params, or anything at all."""
    name = draw(st.sampled_from([*A2A_METHODS, "Teleport", "message/send", ""]))
    method = A2A_METHODS.get(name)
    if draw(st.integers(0, 3)) == 0:
        body = _json_body(draw, None)
    else:
        params = _json_value(draw, method.input_type if method else None)
        envelope = {
            "jsonrpc": draw(st.sampled_from(["2.0", "2.0", "1.0", 2])),
            "method": name,
            "params": params,
        }
        envelope["id"] = draw(
            st.one_of(st.integers(), texts, st.none(), st.floats(), st.lists(st.integers()))
        )
        body = json.dumps(envelope).encode()
    agent = draw(st.sampled_from([AGENT, AGENT, AGENT, "nobody", "%00", "a" * 300]))
    return HttpCase("POST", f"/agents/{quote(agent, safe='')}/", body, _headers(draw), {})


REST_ROUTES = [
    ("POST", "/message:send", "SendMessage"), ("POST", "/message:stream", "SendStreamingMessage"),
    ("GET", "/tasks/{id}", None), ("GET", "/tasks", None), ("POST", "/tasks/{id}:cancel", None),
    ("GET", "/tasks/{id}:subscribe", None), ("POST", "/tasks/{id}:subscribe", None),
    ("POST", "/tasks/{id}/pushNotificationConfigs", "CreateTaskPushNotificationConfig"),
    ("GET", "/tasks/{id}/pushNotificationConfigs", None),
    ("GET", "/tasks/{id}/pushNotificationConfigs/{push_id}", None),
    ("DELETE", "/tasks/{id}/pushNotificationConfigs/{push_id}", None),
    ("GET", "/extendedAgentCard", None), ("GET", "/.well-known/agent-card.json", None),
    ("PUT", "/tasks", None), ("GET", "/nowhere", None),
]  # fmt: skip
QUERY_KEYS = ["pageSize", "pageToken", "historyLength", "status", "contextId", "includeArtifacts",
              "statusTimestampAfter", "tenant", "id", "x"]  # fmt: skip


@st.composite
def rest_cases(draw: st.DrawFn) -> HttpCase:
    """An HTTP+JSON request: any route, odd path segments, odd query values, garbled bodies."""
    verb, template, body_method = draw(st.sampled_from(REST_ROUTES))
    segment = st.one_of(st.just(str(uuid.uuid4())), texts.filter(lambda t: len(t) < 2000))
    path = template.replace("{id}", quote(draw(segment), safe="")).replace(
        "{push_id}", quote(draw(segment), safe="")
    )
    params = draw(
        st.dictionaries(st.sampled_from(QUERY_KEYS), texts.filter(lambda t: len(t) < 2000), max_size=3)
    )
    body = None
    if verb in ("POST", "PUT"):
        body = _json_body(draw, A2A_METHODS[body_method].input_type if body_method else None)
    agent = draw(st.sampled_from([AGENT, AGENT, AGENT, "nobody"]))
    return HttpCase(verb, f"/agents/{agent}{path}", body, _headers(draw), params)


# ---- drivers -----------------------------------------------------------------------------------


def grpc_call(channel: grpc.Channel, case: GrpcCase) -> Answer:
    """Send raw request bytes to a gRPC method; the status and everything the server said."""
    method, payload, head = case.method, case.payload, "grpc"
    metadata = ((("a2a-version", case.version),) if case.version else ()) + case.headers
    path = f"/{method.containing_service.full_name}/{method.name}"
    identity: Callable[[bytes], bytes] = lambda data: data  # noqa: E731
    texts_seen: list[str] = []
    try:
        if method.server_streaming:
            call = channel.unary_stream(path, request_serializer=identity, response_deserializer=identity)
            stream = call(payload, timeout=CALL_TIMEOUT_S, metadata=metadata)
            for count, item in enumerate(stream):
                texts_seen.append(repr(item)[:2000])
                if count >= STREAM_ITEMS:
                    stream.cancel()
                    break
        else:
            call = channel.unary_unary(path, request_serializer=identity, response_deserializer=identity)
            texts_seen.append(repr(call(payload, timeout=CALL_TIMEOUT_S, metadata=metadata))[:2000])
    except grpc.RpcError as exc:
        code = exc.code()  # type: ignore[attr-defined]
        if code == grpc.StatusCode.CANCELLED:
            return Answer(head, method.name, "OK", "\n".join(texts_seen))
        return Answer(head, method.name, code.name, exc.details() or "")  # type: ignore[attr-defined]
    return Answer(head, method.name, "OK", "\n".join(texts_seen))


def http_call(http: httpx.Client, case: HttpCase, head: str) -> Answer:
    """Send one HTTP request; its status (and JSON-RPC error code) and the body as text."""
    try:
        with http.stream(
            case.method, case.path, content=case.body, headers=case.headers, params=case.params
        ) as reply:
            text = reply.read().decode("utf-8", "replace")
    except httpx.TimeoutException:
        return Answer(head, f"{case.method} {case.path[:60]}", "0", "timed out")
    status = str(reply.status_code)
    if head == "jsonrpc" and reply.headers.get("content-type", "").startswith("application/json"):
        try:
            error = json.loads(text).get("error")
        except (ValueError, AttributeError):
            error = None
        if isinstance(error, dict):
            status += f" {error.get('code')}"
    return Answer(head, f"{case.method} {case.path[:60]}", status, text)


@contextmanager
def clients(hub: BackgroundHub) -> Iterator[tuple[grpc.Channel, httpx.Client]]:
    """A gRPC channel and an HTTP client on the fuzzed hub."""
    with (
        grpc.insecure_channel(hub.address) as channel,
        httpx.Client(base_url=hub.http_url, timeout=CALL_TIMEOUT_S) as http,
    ):
        yield channel, http


def serves_normally(hub: BackgroundHub) -> dict[str, str]:
    """A plain question to the agent on every binding; the state of each answer's task."""
    from a2a.types import a2a_pb2_grpc

    question = {"message": {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": "hi"}]}}
    with clients(hub) as (channel, http):
        request = a2a_pb2.SendMessageRequest(tenant=AGENT)
        request.message.message_id, request.message.role = str(uuid.uuid4()), a2a_pb2.ROLE_USER
        request.message.parts.add().text = "hi"
        grpc_reply = a2a_pb2_grpc.A2AServiceStub(channel).SendMessage(request, timeout=CALL_TIMEOUT_S)
        rpc = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": question}
        rpc_reply = http.post(f"/agents/{AGENT}/", json=rpc, headers=V1).json()
        question["message"]["messageId"] = str(uuid.uuid4())
        rest_reply = http.post(f"/agents/{AGENT}/message:send", json=question, headers=V1).json()
    return {
        "GRPC": a2a_pb2.TaskState.Name(grpc_reply.task.status.state),
        "JSONRPC": rpc_reply["result"]["task"]["status"]["state"],
        "HTTP+JSON": rest_reply["task"]["status"]["state"],
    }


def parked(hub: BackgroundHub) -> int:
    """Records the hub could not record in its threads (parked): a fuzz case must not lose any."""
    from agenthub.sdk.pb import operator_pb2_grpc

    with grpc.insecure_channel(hub.address) as channel:
        stats = operator_pb2_grpc.OperatorServiceStub(channel).TopicStats(operator_pb2.TopicStatsRequest())
    return sum(t.records for t in stats.topics if t.topic.endswith(".parked"))


def elapsed(start: float) -> str:
    return f"{time.monotonic() - start:.1f}s"
