"""Trust: every head authenticates, every role gets exactly its rights, identity comes from the
credential and never from a header, and refusals and administrative actions are audited.

Real hubs with `auth` on, reference agents each holding their own agent key, stock a2a-sdk clients,
raw gRPC stubs and raw HTTP; keys made through the hub's own key store.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
from a2a.client import ClientCallContext, ClientConfig, ClientFactory
from a2a.client.auth import AuthInterceptor, CredentialService
from a2a.server.agent_execution import RequestContext
from a2a.server.events import EventQueue
from a2a.types import GetTaskRequest, Message, Part, Role, SendMessageRequest, TaskState, a2a_pb2_grpc
from cryptography.hazmat.primitives.asymmetric import rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agenthub.agents import calculator, notes, triage
from agenthub.hub.config import HubSettings
from agenthub.hub.server import Hub
from agenthub.sdk import HubClient, ScriptedModel
from agenthub.sdk.errors import RateLimited
from agenthub.sdk.pb import operator_pb2 as op
from agenthub.sdk.pb import operator_pb2_grpc, registry_pb2_grpc, threads_pb2_grpc, trust_pb2_grpc
from agenthub.sdk.pb import registry_pb2 as reg
from agenthub.sdk.pb import threads_pb2 as thr
from agenthub.sdk.pb import trust_pb2 as tr
from tests.broker import behind_a_link
from tests.conftest import eventually
from tests.plain_agent import PlainEcho, serve_plain_agent
from tests.scripted import calculator_model, triage_model
from tests.test_cli import agenthub, agenthub_env

ISSUER, AUDIENCE = "https://idp.example", "agenthub"
ALLOWED_ORIGIN = "https://console.example"
V1 = {"A2A-Version": "1.0"}
OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED


@dataclass
class Secured:
    hub: Hub
    keys: dict[str, str]
    signing_key: Any

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        base = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "carol",
            "exp": now + 300,
            "iat": now,
            "roles": ["user"],
        }
        return jwt.encode({**base, **claims}, self.signing_key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture
async def secured(
    tmp_path: Path, hub_settings: Callable[..., HubSettings], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Secured]:
    """A hub with authentication, JWTs from a test issuer, a CORS allowlist, and the reference
    agents each registered and delegating with its own agent key."""
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    settings = hub_settings(
        tmp_path / "hub", auth=True, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, jwt_jwks=str(jwks),
        cors_origins=[ALLOWED_ORIGIN],
    )  # fmt: skip
    async with Hub(settings) as hub:
        keys = {"admin": (tmp_path / "hub" / "admin.key").read_text().strip()}
        for name, role, agent in [
            ("ops", "operator", ""), ("alice", "user", ""), ("bob", "user", ""), ("revoked", "user", ""),
            ("calculator-key", "agent", "calculator"), ("triage-key", "agent", "triage"),
            ("notes-key", "agent", "notes"),
        ]:  # fmt: skip
            _, keys[name] = await hub.gate.keys.create(name, role, agent)
        await hub.gate.keys.revoke("revoked")
        models = {"triage": triage_model(), "calculator": calculator_model(), "notes": ScriptedModel()}
        builders = {"triage": triage.build, "calculator": calculator.build, "notes": notes.build}
        async with AsyncExitStack() as stack:
            for name, build in builders.items():
                monkeypatch.setenv("AGENTHUB_KEY", keys[f"{name}-key"])  # read when the agent starts
                await stack.enter_async_context(build(hub=hub.address, model=models[name]))
            monkeypatch.delenv("AGENTHUB_KEY")
            yield Secured(hub, keys, signing_key)


def question(text: str, tenant: str = "calculator") -> SendMessageRequest:
    message = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])
    return SendMessageRequest(tenant=tenant, message=message)


async def status_of(hub: Hub, credential: str | None, service: str, method: str, request: Any) -> Any:
    """(status code, reply) of one raw gRPC call with `credential` as a bearer token (or none)."""
    stubs = {
        "a2a": a2a_pb2_grpc.A2AServiceStub, "registry": registry_pb2_grpc.RegistryServiceStub,
        "threads": threads_pb2_grpc.ThreadServiceStub, "operator": operator_pb2_grpc.OperatorServiceStub,
        "trust": trust_pb2_grpc.TrustServiceStub,
    }  # fmt: skip
    metadata = (("authorization", f"Bearer {credential}"),) if credential else ()
    async with grpc.aio.insecure_channel(hub.address) as channel:
        call = getattr(stubs[service](channel), method)(request, metadata=metadata, timeout=30)
        try:
            if hasattr(call, "__aiter__"):
                return OK, [item async for item in call]
            return OK, await call
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details()


def card_json(name: str) -> str:
    return json.dumps({"name": name, "description": "probe", "version": "1", "supportedInterfaces": []})


# Every hub method a role may or may not call: (service, method, request factory, roles allowed).
EVERYONE = {"admin", "operator", "agent", "user", "jwt-user"}
MATRIX: list[tuple[str, str, Callable[[], Any], set[str]]] = [
    ("a2a", "SendMessage", lambda: question("What is 2 + 2?"), EVERYONE),
    ("registry", "ListAgents", reg.ListAgentsRequest, EVERYONE),
    ("registry", "GetAgent", lambda: reg.GetAgentRequest(name="calculator"), EVERYONE),
    ("registry", "Heartbeat", lambda: reg.HeartbeatRequest(name="calculator"), {"admin", "agent"}),
    ("registry", "DeregisterAgent", lambda: reg.DeregisterAgentRequest(name="ghost"), {"admin"}),
    ("threads", "ListThreads", thr.ListThreadsRequest, EVERYONE),
    ("operator", "TopicStats", op.TopicStatsRequest, {"admin", "operator"}),
    ("operator", "Rebuild", op.RebuildRequest, {"admin", "operator"}),
    ("trust", "WhoAmI", tr.WhoAmIRequest, EVERYONE),
    ("trust", "ListKeys", tr.ListKeysRequest, {"admin"}),
    (
        "trust",
        "CreateKey",
        lambda: tr.CreateKeyRequest(name=f"k{uuid.uuid4().hex[:6]}", role="user"),
        {"admin"},
    ),
    ("trust", "ReadAudit", tr.ReadAuditRequest, {"admin", "operator"}),
    ("trust", "ListRules", tr.ListRulesRequest, {"admin", "operator"}),
    (
        "trust",
        "AddRule",
        lambda: tr.AddRuleRequest(rule=tr.PolicyRule(effect="allow", agent="notes")),
        {"admin"},
    ),
]


async def test_authorization_matrix_on_grpc(secured: Secured) -> None:
    """Every hub method x every role, and no, revoked, garbage, expired, forged and foreign-audience
    credentials: allowed, PERMISSION_DENIED or UNAUTHENTICATED, exactly as the roles say."""
    hub, keys = secured.hub, secured.keys
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    credentials: dict[str, str | None] = {
        "admin": keys["admin"], "operator": keys["ops"], "agent": keys["calculator-key"],
        "user": keys["alice"], "jwt-user": secured.token(),
        "none": None, "revoked": keys["revoked"], "garbage": "ahk_000000000000_" + "x" * 43,
        "expired": secured.token(exp=int(time.time()) - 60),
        "wrong-audience": secured.token(aud="someone-else"),
        "forged": jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 300,
                              "roles": ["admin"]}, other_key, algorithm="RS256", headers={"kid": "k1"}),
    }  # fmt: skip
    wrong: list[str] = []
    for who, credential in credentials.items():
        for service, method, request, allowed in MATRIX:
            code, reply = await status_of(hub, credential, service, method, request())
            got = code if code in (DENIED, UNAUTH) else OK  # allowed: past the gate, whatever came next
            expected = OK if who in allowed else DENIED if who in EVERYONE else UNAUTH
            if got != expected:
                wrong.append(f"{who} {method}: {code.name} ({reply!s:.80}), expected {expected.name}")
    assert not wrong, "\n".join(wrong)


async def test_every_head_refuses_a_caller_without_credentials_but_discovery_is_public(
    secured: Secured,
) -> None:
    hub = secured.hub
    body = {"message": {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": "1 + 1"}]}}
    async with httpx.AsyncClient(base_url=hub.http_url, headers=V1) as http:
        rest = await http.post("/agents/calculator/message:send", json=body)
        rpc = await http.post(
            "/agents/calculator/", json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": body}
        )
        card = await http.get("/agents/calculator/.well-known/agent-card.json")
        listing = await http.get("/agents")
        with_key = await http.post(
            "/agents/calculator/message:send",
            json=body,
            headers={"authorization": f"Bearer {secured.keys['bob']}"},
        )
    assert rest.status_code == 401 and rest.json()["error"]["status"] == "UNAUTHENTICATED"
    assert rest.headers["www-authenticate"].startswith("Bearer")
    assert rpc.status_code == 401 and rpc.json()["error"]["code"] == -32055
    assert card.status_code == 200 and listing.status_code == 200
    assert card.json()["securitySchemes"]["agenthub-bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
    assert card.json()["securityRequirements"] == [{"schemes": {"agenthub-bearer": {}}}]
    assert with_key.status_code == 200, with_key.text
    assert with_key.json()["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    async with grpc.aio.insecure_channel(hub.address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_recorded_sender_is_the_authenticated_principal(secured: Secured) -> None:
    """A user claiming to be `calculator` is recorded as itself; the triage -> calculator hop is
    recorded as triage because triage authenticated with its own key."""
    hub, keys = secured.hub, secured.keys
    async with HubClient(hub.address, key=keys["alice"], sender="calculator") as alice:
        task = await alice.send("triage", "What is 12 + 30?")
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        async with HubClient(hub.address, key=keys["admin"]) as admin:
            thread = await admin.get_thread(task.context_id)
    hops = {(m.sender, m.recipient) for m in thread.messages if m.role == "user"}
    assert hops == {("user:alice", "triage"), ("triage", "calculator")}
    assert list(thread.summary.agents) == ["calculator", "triage"]  # people are not agents
    _, listed = await status_of(hub, keys["admin"], "threads", "ListThreads", thr.ListThreadsRequest())
    (summary,) = [t for t in listed.threads if t.context_id == task.context_id]
    assert list(summary.agents) == ["calculator", "triage"]


async def test_users_see_only_their_own_tasks_and_threads(secured: Secured) -> None:
    hub, keys = secured.hub, secured.keys
    async with HubClient(hub.address, key=keys["alice"]) as alice:
        task = await alice.send("calculator", "What is 1 + 2?")
        assert (await alice.get_task("calculator", task.id)).id == task.id
    get = GetTaskRequest(id=task.id, tenant="calculator")
    assert (await status_of(hub, keys["bob"], "a2a", "GetTask", get))[0] == grpc.StatusCode.NOT_FOUND
    assert (await status_of(hub, keys["ops"], "a2a", "GetTask", get))[0] == OK
    assert (await status_of(hub, keys["calculator-key"], "a2a", "GetTask", get))[0] == OK  # it served it
    assert (await status_of(hub, keys["notes-key"], "a2a", "GetTask", get))[0] == grpc.StatusCode.NOT_FOUND
    for who, sees in (("bob", False), ("alice", True), ("ops", True)):
        _, listed = await status_of(hub, keys[who], "threads", "ListThreads", thr.ListThreadsRequest())
        assert (task.context_id in {t.context_id for t in listed.threads}) is sees, who
        expected = OK if sees else grpc.StatusCode.NOT_FOUND
        get = thr.GetThreadRequest(context_id=task.context_id)
        assert (await status_of(hub, keys[who], "threads", "GetThread", get))[0] == expected, who
        export = thr.ExportThreadsRequest(context_id=task.context_id)
        assert (await status_of(hub, keys[who], "threads", "ExportThreads", export))[0] == expected, who


async def test_only_the_agent_serving_a_task_may_name_it_as_parent(secured: Secured) -> None:
    hub, keys = secured.hub, secured.keys
    async with HubClient(hub.address, key=keys["alice"]) as alice:
        parent = await alice.send("calculator", "What is 3 + 4?")
    claim = (("authorization", f"Bearer {keys['bob']}"), ("agenthub-parent-task", parent.id))
    async with grpc.aio.insecure_channel(hub.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await a2a_pb2_grpc.A2AServiceStub(channel).SendMessage(
                question("1 + 1"), metadata=claim, timeout=30
            )
    assert refused.value.code() == DENIED and "parent" in (refused.value.details() or "")


async def test_an_agent_may_register_and_deregister_only_itself(secured: Secured) -> None:
    hub, keys = secured.hub, secured.keys
    hijack = reg.RegisterAgentRequest(card_json=card_json("calculator"), endpoint="127.0.0.1:1")
    code, _ = await status_of(hub, keys["notes-key"], "registry", "RegisterAgent", hijack)
    assert code == DENIED
    code, _ = await status_of(
        hub, keys["notes-key"], "registry", "DeregisterAgent", reg.DeregisterAgentRequest(name="calculator")
    )
    assert code == DENIED
    assert hub.registry.get("calculator").endpoint != "127.0.0.1:1"


class KeyChain(CredentialService):
    """The credential service a stock a2a-sdk client is given: one bearer credential."""

    def __init__(self, credential: str) -> None:
        self._credential = credential

    async def get_credentials(
        self, security_scheme_name: str, context: ClientCallContext | None
    ) -> str | None:
        return self._credential


@pytest.mark.parametrize("binding", ["GRPC", "JSONRPC", "HTTP+JSON"])
async def test_stock_client_with_its_auth_interceptor_uses_a_key_and_a_jwt(
    secured: Secured, binding: str
) -> None:
    hub = secured.hub
    config = ClientConfig(
        streaming=False, supported_protocol_bindings=[binding], use_client_preference=True,
        grpc_channel_factory=grpc.aio.insecure_channel,
        httpx_client=httpx.AsyncClient(timeout=60),  # a2a-sdk's default 5 s is short on a loaded broker
    )  # fmt: skip
    for credential in (secured.keys["bob"], secured.token(sub="dave")):
        client = await ClientFactory(config).create_from_url(
            f"{hub.http_url}/agents/calculator", interceptors=[AuthInterceptor(KeyChain(credential))]
        )
        (reply,) = [e async for e in client.send_message(question("What is 5 + 5?", tenant=""))]
        assert reply.task.status.state == TaskState.TASK_STATE_COMPLETED
    anonymous = await ClientFactory(config).create_from_url(f"{hub.http_url}/agents/calculator")
    with pytest.raises(Exception, match=r"(?i)authentication required|401|unauthenticated"):
        [e async for e in anonymous.send_message(question("What is 5 + 5?", tenant=""))]


async def test_refusals_and_admin_actions_are_audited_and_the_cli_filters_them(secured: Secured) -> None:
    hub, keys = secured.hub, secured.keys
    await status_of(hub, keys["alice"], "operator", "TopicStats", op.TopicStatsRequest())
    await status_of(hub, "ahk_000000000000_" + "y" * 43, "trust", "WhoAmI", tr.WhoAmIRequest())
    await status_of(hub, keys["ops"], "operator", "Rebuild", op.RebuildRequest(apply=True))
    env = {"AGENTHUB_KEY": keys["admin"]}
    code, out, err = await agenthub_env(env, "audit", "--principal", "alice", "--json", "--hub", hub.address)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["principal"], e["action"], e["decision"]) for e in events] == [
        ("alice", "replay.read", "denied")
    ]
    assert events[0]["reason"] == "role user may not replay.read" and events[0]["source"]
    code, out, _ = await agenthub_env(env, "audit", "--action", "auth.", "--json", "--hub", hub.address)
    assert code == 0 and any(json.loads(line)["reason"] == "invalid API key" for line in out.splitlines())
    code, out, _ = await agenthub_env(env, "audit", "--principal", "ops", "--json", "--hub", hub.address)
    assert [json.loads(line)["action"] for line in out.splitlines()] == ["Rebuild"]
    code, _, err = await agenthub_env(env, "audit", "--since", "soon", "--hub", hub.address)
    assert code == 2 and err.startswith("error: invalid duration") and len(err.splitlines()) == 1
    code, reason = await status_of(hub, keys["admin"], "trust", "ReadAudit", tr.ReadAuditRequest(limit=-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "limit" in reason


async def test_keys_are_made_listed_and_revoked_on_the_command_line(secured: Secured) -> None:
    hub, admin = secured.hub, secured.keys["admin"]
    code, out, err = await agenthub(
        "keys", "create", "erin", "--role", "user", "--hub", hub.address, "--key", admin
    )
    assert code == 0 and "not shown again" in err
    erin = out.strip()
    assert erin.startswith("ahk_")
    code, me = await status_of(hub, erin, "trust", "WhoAmI", tr.WhoAmIRequest())
    assert code == OK and (me.name, me.role, me.method) == ("erin", "user", "key")
    code, out, _ = await agenthub("keys", "list", "--json", "--hub", hub.address, "--key", admin)
    listed = {k["name"]: k for k in json.loads(out)}
    assert code == 0 and listed["erin"]["role"] == "user" and erin.split("_", 2)[2] not in out
    code, out, _ = await agenthub("keys", "revoke", "erin", "--hub", hub.address, "--key", admin)
    assert code == 0 and "revoked key" in out
    assert (await status_of(hub, erin, "trust", "WhoAmI", tr.WhoAmIRequest()))[0] == UNAUTH
    code, _, err = await agenthub(
        "keys", "create", "x", "--role", "user", "--hub", hub.address, "--key", erin
    )
    assert code == 6 and err.strip() == "error: this API key has been revoked"
    code, _, err = await agenthub(
        "keys", "create", "y", "--role", "root", "--hub", hub.address, "--key", admin
    )
    assert code == 2 and "unknown role 'root'" in err
    actions = [e.action for e in await hub.gate.audit.read(action="keys.")]
    assert actions == ["keys.create", "keys.revoke"]


async def test_policy_rules_decide_who_calls_which_agent(secured: Secured) -> None:
    hub, keys = secured.hub, secured.keys
    deny = tr.AddRuleRequest(rule=tr.PolicyRule(effect="deny", principal="alice", agent="calc*"))
    code, rule = await status_of(hub, keys["admin"], "trust", "AddRule", deny)
    assert code == OK
    assert (await status_of(hub, keys["alice"], "a2a", "SendMessage", question("1 + 1")))[0] == DENIED
    assert (await status_of(hub, keys["bob"], "a2a", "SendMessage", question("1 + 1")))[0] == OK
    await status_of(hub, keys["admin"], "trust", "RemoveRule", tr.RemoveRuleRequest(id=rule.id))
    assert (await status_of(hub, keys["alice"], "a2a", "SendMessage", question("1 + 1")))[0] == OK


async def test_a_principal_over_its_rate_is_refused_while_others_are_served(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    settings = hub_settings(tmp_path / "hub", auth=True, rate_limit_per_s=0.01, rate_limit_burst=3)
    async with Hub(settings) as hub:
        _, alice = await hub.gate.keys.create("alice", "user")
        _, bob = await hub.gate.keys.create("bob", "user")
        codes = [(await status_of(hub, alice, "trust", "WhoAmI", tr.WhoAmIRequest()))[0] for _ in range(4)]
        assert codes == [OK, OK, OK, grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert (await status_of(hub, bob, "trust", "WhoAmI", tr.WhoAmIRequest()))[0] == OK
        async with httpx.AsyncClient(base_url=hub.http_url, headers=V1) as http:
            refused = await http.get("/agents/none/tasks/t1", headers={"authorization": f"Bearer {alice}"})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"


async def test_browsers_from_foreign_origins_are_refused(secured: Secured) -> None:
    hub, bob = secured.hub, secured.keys["bob"]
    body = {"message": {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": "1 + 1"}]}}
    headers = {"authorization": f"Bearer {bob}"}
    async with httpx.AsyncClient(base_url=hub.http_url, headers=V1) as http:
        foreign = await http.post(
            "/agents/calculator/message:send", content=json.dumps(body),
            headers={**headers, "origin": "https://evil.example", "content-type": "text/plain"},
        )  # fmt: skip
        allowed = await http.post(
            "/agents/calculator/message:send", json=body, headers={**headers, "origin": ALLOWED_ORIGIN}
        )
        preflight = await http.options(
            "/agents/calculator/message:send",
            headers={"origin": ALLOWED_ORIGIN, "access-control-request-method": "POST",
                     "access-control-request-headers": "authorization,content-type"},
        )  # fmt: skip
    assert foreign.status_code == 403 and "evil.example" in foreign.json()["error"]["message"]
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


async def test_serve_refuses_an_open_address_without_auth(tmp_path: Path) -> None:
    code, _, err = await agenthub("serve", "--host", "0.0.0.0", "--port", "0", "--http-port", "0",
                                  "--data-dir", str(tmp_path))  # fmt: skip
    assert code == 2 and err.strip().startswith("error: refusing to serve on 0.0.0.0 without authentication")
    assert len(err.strip().splitlines()) == 1


async def test_the_bootstrap_admin_key_is_private_and_used_by_the_cli(secured: Secured) -> None:
    hub = secured.hub
    path = hub.settings.admin_key_path
    assert path.stat().st_mode & 0o777 == 0o600
    code, out, _ = await agenthub_env({"AGENTHUB_KEY_FILE": str(path)}, "whoami", "--hub", hub.address)
    assert code == 0 and "(admin; by key)" in out


class Held(PlainEcho):
    """Answers like the plain agent, but only once `release` is set; counts the calls it holds."""

    def __init__(self, release: asyncio.Event) -> None:
        self.release, self.holding = release, 0

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        self.holding += 1
        await self.release.wait()
        await super().execute(context, event_queue)


async def test_a_principal_over_its_in_flight_quota_is_refused_while_others_are_served(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    settings = hub_settings(tmp_path / "hub", auth=True, max_in_flight_per_principal=1)
    held = Held(asyncio.Event())
    async with Hub(settings) as hub, serve_plain_agent(executor=held, name="held") as base:
        admin = settings.admin_key_path.read_text().strip()
        _, alice = await hub.gate.keys.create("alice", "user")
        _, bob = await hub.gate.keys.create("bob", "user")
        async with HubClient(hub.address, key=admin) as root, HubClient(hub.address, key=alice) as a, \
                HubClient(hub.address, key=bob) as b:  # fmt: skip
            await root.register_url(base)
            first = asyncio.create_task(a.send("held", "one"))
            assert await eventually(lambda: _holding(held, 1))
            with pytest.raises(RateLimited, match="alice already has 1 sends in flight"):
                await a.send("held", "two")
            other = asyncio.create_task(b.send("held", "three"))
            assert await eventually(lambda: _holding(held, 2))
            held.release.set()
            answers = await asyncio.gather(first, other)
            assert [t.status.state for t in answers] == [TaskState.TASK_STATE_COMPLETED] * 2
            assert (await a.send("held", "four")).status.state == TaskState.TASK_STATE_COMPLETED
    assert held.holding == 3  # the refused send never reached the agent


async def _holding(held: Held, count: int) -> bool:
    return held.holding == count


async def test_authorization_matrix_on_the_http_bindings(secured: Secured) -> None:
    """Every credential kind on JSON-RPC and HTTP+JSON: send, read a task someone else started, and
    cancel it: allowed, not found (another's task is never revealed), or refused with the codes of
    the one error table (401 / -32055, 403 / -32056)."""
    hub, keys = secured.hub, secured.keys
    async with HubClient(hub.address, key=keys["alice"]) as alice:
        task = await alice.send("calculator", "What is 4 + 4?")
    credentials = {
        "admin": keys["admin"], "operator": keys["ops"], "agent": keys["calculator-key"],
        "other-agent": keys["notes-key"], "owner": keys["alice"], "user": keys["bob"],
        "jwt-user": secured.token(), "none": None, "revoked": keys["revoked"],
        "expired": secured.token(exp=int(time.time()) - 60), "wrong-audience": secured.token(aud="x"),
    }  # fmt: skip
    sees_task = {"admin", "operator", "agent", "owner"}
    unauthenticated = {"none", "revoked", "expired", "wrong-audience"}
    wrong: list[str] = []
    async with httpx.AsyncClient(
        base_url=f"{hub.http_url}/agents/calculator", headers=V1, timeout=60
    ) as http:
        for who, credential in credentials.items():
            auth = {"authorization": f"Bearer {credential}"} if credential else {}
            body = {
                "message": {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": "1 + 1"}]}
            }
            rest_send = await http.post("/message:send", json=body, headers=auth)
            rpc_send = await http.post(
                "/", json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": body}, headers=auth
            )
            rest_get = await http.get(f"/tasks/{task.id}", headers=auth)
            rpc_get = await http.post(
                "/",
                json={"jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": {"id": task.id}},
                headers=auth,
            )
            if who in unauthenticated:
                expected = {"rest_send": 401, "rpc_send": -32055, "rest_get": 401, "rpc_get": -32055}
            else:
                found = who in sees_task
                expected = {"rest_send": 200, "rpc_send": 0, "rest_get": 200 if found else 404,
                            "rpc_get": 0 if found else -32001}  # fmt: skip
            got = {
                "rest_send": rest_send.status_code, "rest_get": rest_get.status_code,
                "rpc_send": rpc_send.json().get("error", {}).get("code", 0),
                "rpc_get": rpc_get.json().get("error", {}).get("code", 0),
            }  # fmt: skip
            if got != expected:
                wrong.append(f"{who}: {got}, expected {expected}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(("backend", "threads_url"), [("kafka", "sqlite")], indirect=True)
async def test_a_refusal_the_log_cannot_audit_is_unavailable_and_the_gate_recovers(
    tmp_path: Path, hub_settings: Callable[..., HubSettings]
) -> None:
    """The broker is cut while keys are in use: a bad key, which must be audited before it is
    refused, is answered UNAVAILABLE within produce_timeout_s (not INTERNAL, not a hang) on gRPC and
    HTTP; a good key still works; once the broker is back the refusal is audited again."""
    async with behind_a_link() as link:
        settings = hub_settings(tmp_path / "hub", auth=True, bootstrap=link.address, produce_timeout_s=1.0)
        async with Hub(settings) as hub:
            _, alice = await hub.gate.keys.create("alice", "user")
            bad = "ahk_000000000000_" + "z" * 43
            await link.cut()
            assert (await status_of(hub, bad, "trust", "WhoAmI", tr.WhoAmIRequest()))[
                0
            ] == grpc.StatusCode.UNAVAILABLE
            code, me = await status_of(hub, alice, "trust", "WhoAmI", tr.WhoAmIRequest())
            assert code == OK and me.name == "alice"
            async with httpx.AsyncClient(base_url=hub.http_url, headers=V1, timeout=30) as http:
                refused = await http.get("/agents/x/tasks/t", headers={"authorization": f"Bearer {bad}"})
            assert refused.status_code == 503 and "cannot be audited" in refused.json()["error"]["message"]
            await link.restore()

            async def audited() -> bool:
                code, _ = await status_of(hub, bad, "trust", "WhoAmI", tr.WhoAmIRequest())
                return code == UNAUTH

            assert await eventually(audited, timeout=60, interval=0.5)


async def test_the_sdk_and_cli_send_their_key_with_streaming_calls_too(secured: Secured) -> None:
    """HubClient and the CLI authenticate every call, streams included: a streamed send, a
    replay and a thread export with a key are served (each was UNAUTHENTICATED when the key went
    with unary calls only), and the same commands without a key are refused with exit 6."""
    hub, keys = secured.hub, secured.keys
    async with HubClient(hub.address, key=keys["alice"]) as alice:
        events = [event async for event in alice.stream("calculator", "What is 2 + 3?")]
    final = events[-1].status_update.status
    assert final.state == TaskState.TASK_STATE_COMPLETED
    assert final.message.parts[0].text == "2 + 3 = 5"
    context = events[-1].status_update.context_id

    alice_env = {"AGENTHUB_KEY": keys["alice"]}
    code, out, err = await agenthub_env(alice_env, "send", "calculator", "What is 4 + 4?", "--stream",
                                        "--hub", hub.address)  # fmt: skip
    assert (code, err) == (0, ""), err
    assert "[completed] 4 + 4 = 8" in out.splitlines()
    code, out, err = await agenthub_env(alice_env, "threads", "export", context, "--hub", hub.address)
    assert code == 0, err
    assert {json.loads(line)["envelope"]["context_id"] for line in out.splitlines()} == {context}
    code, out, err = await agenthub_env({"AGENTHUB_KEY": keys["ops"]}, "replay", "--thread", context,
                                        "--kind", "request", "--hub", hub.address)  # fmt: skip
    assert code == 0, err
    (request,) = [json.loads(line) for line in out.splitlines()]
    assert request["envelope"]["context_id"] == context

    for command in (["send", "calculator", "1 + 1", "--stream"], ["replay", "--kind", "request"]):
        code, _, err = await agenthub(*command, "--hub", hub.address)
        assert code == 6 and err.startswith("error: authentication required"), (command, err)
