"""`agenthub certs dev`: a local CA and certificates for trying TLS and mTLS on one machine, with
the `serve` options and client variables that use them; and the app's `--tls`/`--ca` options."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from agenthub.hub.cli import render
from agenthub.hub.cli.common import JsonOpt, VersionOpt, fail
from agenthub.sdk.errors import AgentHubError

certs_app = typer.Typer(help="Certificates for TLS.", no_args_is_help=True)


def attach(app: typer.Typer) -> None:
    """Add `agenthub certs` to the `agenthub` app."""
    app.add_typer(certs_app, name="certs")


@certs_app.command("dev")
def dev(
    folder: Annotated[Path, typer.Option("--dir", help="where to write them")] = Path(".agenthub/certs"),
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host", help="one more name or address of the hub (repeatable; localhost is always in)"
        ),
    ] = None,
    client: Annotated[str, typer.Option("--client", help="CN of the client certificate")] = "dev-client",
    json: JsonOpt = False,
) -> None:
    """Make a local CA (or reuse the one in --dir), a server certificate for localhost, 127.0.0.1
    and each --host, and a client certificate: for trying TLS, never for production."""
    from agenthub.hub.devcerts import make_dev_certs

    try:
        made = make_dev_certs(folder, tuple(host or ()), client)
    except AgentHubError as exc:
        fail(exc)
    files = {
        "ca": made.ca, "ca_key": made.ca_key, "server_cert": made.server_cert,
        "server_key": made.server_key, "client_cert": made.client_cert, "client_key": made.client_key,
    }  # fmt: skip
    if json:
        render.print_json(
            {**{k: str(v) for k, v in files.items()}, "client": client, "hosts": list(made.hosts)}
        )
        return
    typer.echo(
        f"dev certificates in {folder} (a local CA: for trying TLS, not for production)\n"
        f"  CA      {made.ca}  (its key: {made.ca_key})\n"
        f"  server  {made.server_cert}  {made.server_key}  for {', '.join(made.hosts)}\n"
        f"  client  {made.client_cert}  {made.client_key}  CN {client}\n"
        f"Serve with TLS:\n"
        f"  agenthub serve --auth --tls-cert {made.server_cert} --tls-key {made.server_key}\n"
        f"  (add --tls-client-ca {made.ca} to require client certificates: mTLS)\n"
        f"Clients (CLI, HubClient, agents):\n"
        f"  export AGENTHUB_TLS_CA={made.ca}\n"
        f"  export AGENTHUB_TLS_CLIENT_CERT={made.client_cert} AGENTHUB_TLS_CLIENT_KEY={made.client_key}"
        f"  # mTLS"
    )


def client_tls(
    tls: Annotated[
        bool,
        typer.Option("--tls", envvar="AGENTHUB_TLS", help="call the hub over TLS (system roots unless --ca)"),
    ] = False,
    ca: Annotated[
        Path | None,
        typer.Option("--ca", envvar="AGENTHUB_TLS_CA", help="CA file that verifies the hub; turns TLS on"),
    ] = None,
    client_cert: Annotated[
        Path | None, typer.Option(envvar="AGENTHUB_TLS_CLIENT_CERT", help="client certificate for mTLS")
    ] = None,
    client_key: Annotated[
        Path | None, typer.Option(envvar="AGENTHUB_TLS_CLIENT_KEY", help="the client certificate's key")
    ] = None,
    version: VersionOpt = False,
) -> None:
    """The app's own options, before any command (`agenthub --ca ca.pem agents list`): how to reach
    the hub over TLS, which become the AGENTHUB_TLS_* variables every client of the hub reads; and
    `--version`."""
    given = {
        "AGENTHUB_TLS": "1" if tls else None, "AGENTHUB_TLS_CA": ca,
        "AGENTHUB_TLS_CLIENT_CERT": client_cert, "AGENTHUB_TLS_CLIENT_KEY": client_key,
    }  # fmt: skip
    for name, value in given.items():
        if value is not None:
            os.environ[name] = str(value)
