"""``voucher-distributor api-client add|update|rotate|revoke|list``: who may call the HTTP API,
and for which partners.

The clients live in the stack's ``ApiClientsSecret`` (Secrets Manager); the API re-reads it
within a minute, so a revoked client is refused soon after, and no other client notices.
A new secret or token is printed once and never again (``list`` shows none). Each client is
bound to its partners (``--partners``, optionally ``--programs``) or, for an operator's own
tool, to every partner (``--all-partners``); an entry from before that binding keeps every
partner, and ``list`` flags it until ``update`` narrows it.
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
    partners: list[str] | None = None,
    all_partners: bool = False,
    programs: list[str] | None = None,
) -> dict[str, Any]:
    """Create a client with a fresh ``whsec_`` secret (and a bearer token if asked), bound to
    ``partners`` (and ``programs``), or to every partner with ``all_partners``. The command
    insists on one of the two; called with neither, the entry is written unbound (every
    partner, flagged by ``list``)."""
    if not client_id.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise OpsError("a client id is letters, digits, '-', '_' and '.' (e.g. workday-prod)")
    _check_binding(partners, all_partners, programs)
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
        partners=tuple(partners) if partners else None,
        allPartners=all_partners,
        programs=tuple(programs) if programs else None,
    )
    clients.clients[client_id] = client
    write_clients(sm, arn, clients)
    return {
        "clientId": client_id,
        "scopes": sorted(s.value for s in client.scopes),
        **_binding_view(client),
        "secret": client.secrets[0],
        **({"bearerToken": token} if token else {}),
    }


def update_client(
    target: Target,
    client_id: str,
    *,
    partners: list[str] | None = None,
    all_partners: bool = False,
    programs: list[str] | None = None,
    all_programs: bool = False,
    scopes: list[Scope] | None = None,
) -> dict[str, Any]:
    """Re-bind a client: ``partners`` (or ``all_partners``), ``programs`` (or every program
    of its partners with ``all_programs``), ``scopes``; what is not given stays."""
    _check_binding(partners, all_partners, programs)
    if programs and all_programs:
        raise OpsError("give --programs or --all-programs, not both")
    sm, arn = target.client("secretsmanager"), clients_secret(target)
    clients = _read(sm, arn)
    current = _existing(clients, client_id)
    changes: dict[str, Any] = {}
    if partners:
        changes.update(partners=tuple(partners), all_partners=False)
    elif all_partners:
        changes.update(partners=None, all_partners=True)
    if programs:
        changes["programs"] = tuple(programs)
    elif all_programs:
        changes["programs"] = None
    if scopes:
        changes["scopes"] = frozenset(scopes)
    if not changes:
        raise OpsError("nothing to change: give --partners, --all-partners, --programs, "
                       "--all-programs or --scopes")  # fmt: skip
    # Validated again as a whole (names trimmed, no empty list).
    updated = ApiClient.model_validate({**current.model_dump(by_alias=True), **_aliased(changes)})
    clients.clients[client_id] = updated
    write_clients(sm, arn, clients)
    return {"clientId": client_id, "scopes": sorted(s.value for s in updated.scopes),
            **_binding_view(updated)}  # fmt: skip


def _aliased(changes: dict[str, Any]) -> dict[str, Any]:
    return {("allPartners" if k == "all_partners" else k): v for k, v in changes.items()}


def _check_binding(
    partners: list[str] | None,
    all_partners: bool,
    programs: list[str] | None,
) -> None:
    if partners and all_partners:
        raise OpsError("give --partners or --all-partners, not both")
    if programs is not None and not [p for p in programs if p.strip()]:
        raise OpsError("--programs names at least one program")
    if partners is not None and not [p for p in partners if p.strip()]:
        raise OpsError("--partners names at least one partner (or use --all-partners)")


def _binding_view(client: ApiClient) -> dict[str, Any]:
    """What ``list`` and ``add`` show of a client's partners and programs."""
    if client.unbound:
        partners: Any = "all (unbound: an entry from before partners; narrow it with "
        partners += "`api-client update ID --partners …` or confirm with --all-partners)"
    elif client.all_partners:
        partners = "all"
    else:
        partners = list(client.partners or ())
    return {
        "partners": partners,
        **({"programs": list(client.programs)} if client.programs else {}),
        **({"unbound": True} if client.unbound else {}),
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
            **_binding_view(c),
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


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError('a comma list of names, e.g. "Acme Corp,Acme EMEA"')
    return names


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
        help="add, update, rotate, revoke or list the HTTP API's clients (HR systems)",
        description=(
            "Each HR system gets its own client: a whsec_ signing secret (Standard Webhooks), "
            "scopes (submit, read, approve) and the partners it works for (--partners, "
            "optionally --programs; --all-partners for an operator's own tool); with --bearer "
            "also a bearer token, for senders that cannot sign. Outside its partners nothing "
            "exists for a client (404), and submitting there is 403. Secrets are printed once. "
            "The API picks up a change within a minute."
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
    bound = add.add_mutually_exclusive_group(required=True)
    bound.add_argument(
        "--partners",
        type=_names,
        metavar='"A,B"',
        help="comma list of the partners it submits, reads and approves for",
    )
    bound.add_argument(
        "--all-partners", action="store_true", help="every partner (an operator's own tool)"
    )
    add.add_argument(
        "--programs", type=_names, metavar='"P,Q"', help="only these programs of its partners"
    )
    add.add_argument("--bearer", action="store_true", help="also issue a bearer token")
    add.add_argument("--description", default="", help="who this client is, for `list`")
    update = actions.add_parser(
        "update", parents=[where], help="re-bind a client: its partners, programs or scopes"
    )
    update.add_argument("client_id", metavar="CLIENT_ID")
    rebound = update.add_mutually_exclusive_group()
    rebound.add_argument("--partners", type=_names, metavar='"A,B"', help="only these partners")
    rebound.add_argument("--all-partners", action="store_true", help="every partner")
    reprogram = update.add_mutually_exclusive_group()
    reprogram.add_argument("--programs", type=_names, metavar='"P,Q"', help="only these programs")
    reprogram.add_argument(
        "--all-programs", action="store_true", help="every program of its partners"
    )
    update.add_argument("--scopes", type=_scopes, help=f"comma list of {ALL_SCOPES}")
    rotate = actions.add_parser(
        "rotate", parents=[where], help="a new secret beside the current one (both valid)"
    )
    rotate.add_argument("client_id", metavar="CLIENT_ID")
    rotate.add_argument(
        "--drop-old", action="store_true", help="keep only the newest secret (rotation done)"
    )
    revoke = actions.add_parser("revoke", parents=[where], help="shut one client out")
    revoke.add_argument("client_id", metavar="CLIENT_ID")
    actions.add_parser(
        "list", parents=[where], help="the clients, their scopes and partners (no secrets)"
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        target = Target.from_args(args)
        action = args.api_client_action
        result: Any
        if action == "add":
            result = add_client(
                target, args.client_id, scopes=args.scopes, bearer=args.bearer,
                description=args.description, partners=args.partners,
                all_partners=args.all_partners, programs=args.programs,
            )  # fmt: skip
        elif action == "update":
            result = update_client(
                target, args.client_id, partners=args.partners, all_partners=args.all_partners,
                programs=args.programs, all_programs=args.all_programs, scopes=args.scopes,
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
