"""``voucher-distributor api-client add|rotate|revoke|list``: who may call the HTTP API.

The clients live in the stack's ``ApiClientsSecret`` (Secrets Manager); the API re-reads it
within a minute, so a revoked client is refused soon after, and no other client notices.
A new secret or token is printed once and never again (``list`` shows none).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from voucher_distributor.adapters.api_clients import (
    ApiClientsUnreadable,
    read_clients,
    write_clients,
)
from voucher_distributor.domain.standard_webhooks import new_secret
from voucher_distributor.models.api import ApiClient, ApiClients, Scope
from voucher_distributor_cli.arguments import HelpFormatter
from voucher_distributor_cli.ops.target import OpsError, Target, add_stack_options

ALL_SCOPES = ",".join(s.value for s in Scope)


def clients_secret(target: Target) -> str:
    arn = target.function_env.get("API_CLIENTS_SECRET_ARN")
    if not arn:
        raise OpsError("the stack has no HTTP API (no ApiClientsSecret): deploy this version")
    return arn


def add_client(
    target: Target,
    client_id: str,
    *,
    scopes: list[Scope],
    bearer: bool = False,
    description: str = "",
    secret: str | None = None,
) -> dict[str, Any]:
    """Create a client with a fresh ``whsec_`` secret (and a bearer token if asked)."""
    if not client_id.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise OpsError("a client id is letters, digits, '-', '_' and '.' (e.g. workday-prod)")
    sm, arn = target.client("secretsmanager"), clients_secret(target)
    clients = _read(sm, arn)
    if client_id in clients.clients and not clients.clients[client_id].revoked:
        raise OpsError(
            f"client {client_id!r} exists; `api-client rotate {client_id}` for a new key"
        )
    token = secrets.token_urlsafe(32) if bearer else None
    client = ApiClient(
        scopes=frozenset(scopes),
        secrets=(secret or new_secret(),),
        bearerToken=token,
        description=description,
    )
    clients.clients[client_id] = client
    write_clients(sm, arn, clients)
    return {
        "clientId": client_id,
        "scopes": sorted(s.value for s in client.scopes),
        "secret": client.secrets[0],
        **({"bearerToken": token} if token else {}),
    }


def rotate_client(target: Target, client_id: str, *, drop_old: bool = False) -> dict[str, Any]:
    """A new secret beside the current one (both valid until ``--drop-old``)."""
    sm, arn = target.client("secretsmanager"), clients_secret(target)
    clients = _read(sm, arn)
    current = _existing(clients, client_id)
    if drop_old:
        kept: tuple[str, ...] = current.secrets[:1]
        fresh = None
    else:
        fresh = new_secret()
        kept = (fresh, *current.secrets[:1])
    clients.clients[client_id] = current.model_copy(update={"secrets": kept})
    write_clients(sm, arn, clients)
    return {"clientId": client_id, "secrets": len(kept), **({"secret": fresh} if fresh else {})}


def revoke_client(target: Target, client_id: str) -> dict[str, Any]:
    sm, arn = target.client("secretsmanager"), clients_secret(target)
    clients = _read(sm, arn)
    _existing(clients, client_id)
    del clients.clients[client_id]
    write_clients(sm, arn, clients)
    return {"clientId": client_id, "revoked": True}


def list_clients(target: Target) -> list[dict[str, Any]]:
    clients = _read(target.client("secretsmanager"), clients_secret(target))
    return [
        {
            "clientId": name,
            "scopes": sorted(s.value for s in c.scopes),
            "secrets": len(c.secrets),
            "bearer": c.bearer_token is not None,
            **({"description": c.description} if c.description else {}),
        }
        for name, c in sorted(clients.clients.items())
        if not c.revoked
    ]


def _read(sm: Any, arn: str) -> ApiClients:
    try:
        return read_clients(sm, arn)
    except ApiClientsUnreadable as exc:
        raise OpsError(str(exc)) from exc


def _existing(clients: ApiClients, client_id: str) -> ApiClient:
    found = clients.clients.get(client_id)
    if found is None or found.revoked:
        names = ", ".join(sorted(clients.active())) or "none"
        raise OpsError(f"no API client {client_id!r} (clients: {names})")
    return found


def _scopes(text: str) -> list[Scope]:
    try:
        return [Scope(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"scopes are a comma list of {ALL_SCOPES}") from exc


# ------------------------------------------------------------------ the command


def add_api_client_command(subparsers: Any) -> None:
    where = argparse.ArgumentParser(add_help=False)
    add_stack_options(where, suppress_defaults=True)
    parser = subparsers.add_parser(
        "api-client",
        formatter_class=HelpFormatter,
        help="add, rotate, revoke or list the HTTP API's clients (HR systems)",
        description=(
            "Each HR system gets its own client: a whsec_ signing secret (Standard Webhooks) "
            "and scopes (submit, read, approve); with --bearer also a bearer token, for senders "
            "that cannot sign. Secrets are printed once. The API picks up a change within a "
            "minute."
        ),
    )
    actions = parser.add_subparsers(dest="api_client_action", required=True, metavar="ACTION")
    add = actions.add_parser("add", parents=[where], help="a new client; prints its secret once")
    add.add_argument("client_id", metavar="CLIENT_ID", help="a name, e.g. workday-prod")
    add.add_argument(
        "--scopes",
        type=_scopes,
        default=[Scope.SUBMIT, Scope.READ],
        help=f"comma list of {ALL_SCOPES} (default: submit,read)",
    )
    add.add_argument("--bearer", action="store_true", help="also issue a bearer token")
    add.add_argument("--description", default="", help="who this client is, for `list`")
    rotate = actions.add_parser(
        "rotate", parents=[where], help="a new secret beside the current one (both valid)"
    )
    rotate.add_argument("client_id", metavar="CLIENT_ID")
    rotate.add_argument(
        "--drop-old", action="store_true", help="keep only the newest secret (rotation done)"
    )
    revoke = actions.add_parser("revoke", parents=[where], help="shut one client out")
    revoke.add_argument("client_id", metavar="CLIENT_ID")
    actions.add_parser("list", parents=[where], help="the clients and their scopes (no secrets)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        target = Target.from_args(args)
        action = args.api_client_action
        result: Any
        if action == "add":
            result = add_client(
                target, args.client_id, scopes=args.scopes, bearer=args.bearer,
                description=args.description,
            )  # fmt: skip
        elif action == "rotate":
            result = rotate_client(target, args.client_id, drop_old=args.drop_old)
        elif action == "revoke":
            result = revoke_client(target, args.client_id)
        else:
            result = list_clients(target)
    except (OpsError, ClientError, BotoCoreError) as exc:
        print(f"voucher-distributor api-client: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2), flush=True)
    return 0
