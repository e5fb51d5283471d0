"""`agenthub keys`, `agenthub policy`, `agenthub audit` and `agenthub whoami`: the hub's trust
service from the command line (credentials: --key, $AGENTHUB_KEY, $AGENTHUB_KEY_FILE or
`.agenthub/admin.key`, as every command)."""

from __future__ import annotations

import json as jsonlib
from typing import Annotated, TypeVar

import grpc
import typer
from rich.table import Table

from agenthub.hub.cli import render
from agenthub.hub.cli.common import DEFAULT_HUB, HubOpt, JsonOpt, fail, run
from agenthub.hub.cli.timespec import ago
from agenthub.sdk.auth import hub_channel, resolve_key
from agenthub.sdk.errors import AgentHubError, from_grpc
from agenthub.sdk.pb import trust_pb2 as tr
from agenthub.sdk.pb import trust_pb2_grpc

T = TypeVar("T")
keys_app = typer.Typer(help="API keys (admin).", no_args_is_help=True)
policy_app = typer.Typer(help="Who may call which agent (admin; operators may list).", no_args_is_help=True)
KeyOpt = Annotated[
    str | None, typer.Option("--key", help="API key or token to call with [default: see above]")
]
RoleOpt = Annotated[str, typer.Option("--role", help="admin, operator, agent or user")]


def attach(app: typer.Typer) -> None:
    """Add the trust commands to the `agenthub` app."""
    app.add_typer(keys_app, name="keys")
    app.add_typer(policy_app, name="policy")
    app.command("audit")(audit)
    app.command("whoami")(whoami)


async def _call(hub: str, key: str | None, rpc: str, request: object) -> object:
    """One call of the trust service; a failure becomes an AgentHub error (one line, its exit code)."""
    channel = hub_channel(hub, resolve_key(key))
    try:
        return await getattr(trust_pb2_grpc.TrustServiceStub(channel), rpc)(request, timeout=30)
    except grpc.aio.AioRpcError as exc:
        raise from_grpc(exc) from None
    finally:
        await channel.close()


def _ask(hub: str, key: str | None, rpc: str, request: object, _: type[T]) -> T:
    """The reply of one trust-service call, typed as the caller expects it."""
    reply: T = run(_call(hub, key, rpc, request))
    return reply


def _keys_table(keys: list[tr.KeyInfo]) -> Table:
    table = Table("ID", "NAME", "ROLE", "AGENT", "CREATED", "BY", "STATE")
    for k in keys:
        state = "revoked" if k.revoked else "active"
        table.add_row(k.id, k.name, k.role, k.agent or "-", render.when(k.created_at), k.created_by, state)
    return table


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="who the key is for (a person, a service, an agent)")],
    role: RoleOpt = "user",
    agent: Annotated[str, typer.Option(help="the agent an agent key speaks for")] = "",
    hub: HubOpt = DEFAULT_HUB,
    key: KeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Make a key. Its secret is printed once, here: the hub keeps only a hash."""
    reply = _ask(
        hub, key, "CreateKey", tr.CreateKeyRequest(name=name, role=role, agent=agent), tr.CreateKeyResponse
    )
    if json:
        render.print_json({**render.as_json(reply.key), "secret": reply.secret})
        return
    typer.echo(reply.secret)
    typer.echo(
        f"key {reply.key.id} ({reply.key.role}) for {name}: store it now, it is not shown again", err=True
    )


@keys_app.command("list")
def keys_list(hub: HubOpt = DEFAULT_HUB, key: KeyOpt = None, json: JsonOpt = False) -> None:
    """Every key, revoked ones included (never their secrets)."""
    reply = _ask(hub, key, "ListKeys", tr.ListKeysRequest(), tr.ListKeysResponse)
    if json:
        render.print_json([render.as_json(k) for k in reply.keys])
    else:
        render.console.print(_keys_table(list(reply.keys)))


@keys_app.command("revoke")
def keys_revoke(
    which: Annotated[str, typer.Argument(help="key id or name")],
    hub: HubOpt = DEFAULT_HUB,
    key: KeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Revoke a key: every hub instance refuses it from now on."""
    revoked = _ask(hub, key, "RevokeKey", tr.RevokeKeyRequest(key=which), tr.KeyInfo)
    if json:
        render.print_json(render.as_json(revoked))
    else:
        typer.echo(f"revoked key {revoked.id} ({revoked.name})")


def whoami(hub: HubOpt = DEFAULT_HUB, key: KeyOpt = None, json: JsonOpt = False) -> None:
    """Who the hub takes you for, with the credentials you would call it with."""
    me = _ask(hub, key, "WhoAmI", tr.WhoAmIRequest(), tr.Principal)
    if json:
        render.print_json(render.as_json(me))
    else:
        typer.echo(f"{me.name} ({me.role}{', agent ' + me.agent if me.agent else ''}; by {me.method})")


def audit(
    since: Annotated[str | None, typer.Option(help="only events this long ago or later, e.g. 1h")] = None,
    principal: Annotated[str, typer.Option(help="only this principal's events")] = "",
    action: Annotated[str, typer.Option(help="only actions starting with this, e.g. keys. or auth.")] = "",
    limit: Annotated[int, typer.Option(help="at most this many events")] = 1000,
    hub: HubOpt = DEFAULT_HUB,
    key: KeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Read the audit log: authentication failures, denials, administrative and operator actions."""
    request = tr.ReadAuditRequest(principal=principal, action=action, limit=limit)
    if since:
        try:
            request.since.CopyFrom(ago(since))
        except AgentHubError as exc:
            fail(exc)
    events = _ask(hub, key, "ReadAudit", request, tr.ReadAuditResponse).events
    if json:
        for event in events:
            typer.echo(jsonlib.dumps(render.as_json(event)))
        return
    table = Table("TIME", "PRINCIPAL", "ROLE", "ACTION", "RESOURCE", "DECISION", "REASON", "SOURCE")
    for e in events:
        table.add_row(
            render.when(e.time), e.principal, e.role, e.action, e.resource, e.decision, e.reason, e.source
        )
    render.console.print(table)


@policy_app.command("list")
def policy_list(hub: HubOpt = DEFAULT_HUB, key: KeyOpt = None, json: JsonOpt = False) -> None:
    """The rules, and what a call that no rule matches gets."""
    reply = _ask(hub, key, "ListRules", tr.ListRulesRequest(), tr.ListRulesResponse)
    if json:
        render.print_json(render.as_json(reply))
        return
    table = Table("ID", "EFFECT", "PRINCIPAL", "ROLE", "AGENT", "CREATED", "BY")
    for r in reply.rules:
        table.add_row(r.id, r.effect, r.principal, r.role, r.agent, render.when(r.created_at), r.created_by)
    render.console.print(table)
    typer.echo(f"no rule matching: {reply.default_effect}")


PatternOpt = Annotated[str, typer.Option(help="glob; * matches every one")]


def _show_rule(rule: tr.PolicyRule, done: str, json: bool) -> None:
    if json:
        render.print_json(render.as_json(rule))
    else:
        typer.echo(f"{done} rule {rule.id}: {rule.effect} {rule.principal} ({rule.role}) -> {rule.agent}")


def _add_rule(
    effect: str, principal: str, role: str, agent: str, hub: str, key: str | None, json: bool
) -> None:
    rule = tr.PolicyRule(effect=effect, principal=principal, role=role, agent=agent)
    _show_rule(_ask(hub, key, "AddRule", tr.AddRuleRequest(rule=rule), tr.PolicyRule), "added", json)


@policy_app.command("allow")
def policy_allow(
    agent: PatternOpt = "*", principal: PatternOpt = "*", role: PatternOpt = "*",
    hub: HubOpt = DEFAULT_HUB, key: KeyOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    """Let matching principals call matching agents (needed when the default is deny)."""
    _add_rule("allow", principal, role, agent, hub, key, json)


@policy_app.command("deny")
def policy_deny(
    agent: PatternOpt = "*", principal: PatternOpt = "*", role: PatternOpt = "*",
    hub: HubOpt = DEFAULT_HUB, key: KeyOpt = None, json: JsonOpt = False,
) -> None:  # fmt: skip
    """Refuse matching principals' calls to matching agents (a deny wins over any allow)."""
    _add_rule("deny", principal, role, agent, hub, key, json)


@policy_app.command("remove")
def policy_remove(
    rule_id: Annotated[str, typer.Argument(help="the rule's id (see `agenthub policy list`)")],
    hub: HubOpt = DEFAULT_HUB,
    key: KeyOpt = None,
    json: JsonOpt = False,
) -> None:
    """Remove a rule."""
    _show_rule(_ask(hub, key, "RemoveRule", tr.RemoveRuleRequest(id=rule_id), tr.PolicyRule), "removed", json)
