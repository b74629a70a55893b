"""`imagejobs tenants …` and `imagejobs keys …`: the admin API (`/v1/tenants`) from a shell, with ADMIN_API_KEY.

Each command prints the API's answer as JSON, so its output can be piped (`| jq -r .key`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from cli.client import EXIT_OK, ApiError, JobsApi

LIMITS = (
    ("--starts-per-minute", "startsPerMinute", int, "starts (jobs and canvas runs) a minute; more answer 429"),
    ("--max-concurrent-jobs", "maxConcurrentJobs", int, "jobs running at once; more wait, pending"),
    ("--budget-usd-per-day", "budgetUsdPerDay", float, "USD a UTC day; more answer 429 budget_exceeded"),
)


def add_commands(commands: Any, server: argparse.ArgumentParser) -> None:
    """Register `tenants` and `keys` on the CLI's subcommands; `server` gives them --api."""
    admin = argparse.ArgumentParser(add_help=False, parents=[server])
    admin.add_argument(
        "--admin-key",
        default=os.environ.get("IMAGEJOBS_ADMIN_KEY"),
        help="the server's ADMIN_API_KEY (default: IMAGEJOBS_ADMIN_KEY)",
    )
    tenants = commands.add_parser("tenants", help="make, list and limit tenants (needs the admin key)")
    tenant_commands = tenants.add_subparsers(dest="tenants_command", required=True, metavar="COMMAND")
    create = tenant_commands.add_parser("create", parents=[admin], help="a new tenant")
    create.add_argument("name")
    create.set_defaults(handler=_command(lambda api, args: api.call("POST", "/v1/tenants", json={"name": args.name})))
    listing = tenant_commands.add_parser("list", parents=[admin], help="every tenant and its limits")
    listing.set_defaults(handler=_command(lambda api, args: api.call("GET", "/v1/tenants")))
    limit = tenant_commands.add_parser(
        "set", parents=[admin], help="rename a tenant or set its limits (0 or 'default' clears one)"
    )
    limit.add_argument("tenant_id", metavar="tenantId")
    limit.add_argument("--name")
    for flag, _, _, text in LIMITS:
        limit.add_argument(flag, metavar="N", help=text)
    limit.set_defaults(handler=_command(_set_limits))

    keys = commands.add_parser("keys", help="make, list and revoke a tenant's API keys (needs the admin key)")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    new_key = key_commands.add_parser("create", parents=[admin], help="a new key; printed once, stored only hashed")
    new_key.add_argument("tenant_id", metavar="tenantId")
    new_key.add_argument("--name", help="what the key is for, e.g. 'production backend'")
    new_key.set_defaults(
        handler=_command(lambda api, args: api.call("POST", _keys(args.tenant_id), json={"name": args.name}))
    )
    key_list = key_commands.add_parser("list", parents=[admin], help="a tenant's keys (never the keys themselves)")
    key_list.add_argument("tenant_id", metavar="tenantId")
    key_list.set_defaults(handler=_command(lambda api, args: api.call("GET", _keys(args.tenant_id))))
    revoke = key_commands.add_parser("revoke", parents=[admin], help="revoke a key at once, on every API process")
    revoke.add_argument("tenant_id", metavar="tenantId")
    revoke.add_argument("key_id", metavar="keyId")
    revoke.set_defaults(handler=_command(_revoke))


def _keys(tenant_id: str) -> str:
    return f"/v1/tenants/{quote(tenant_id, safe='')}/keys"


def _set_limits(api: JobsApi, args: argparse.Namespace) -> dict[str, Any]:
    change: dict[str, Any] = {"name": args.name} if args.name else {}
    for flag, field, kind, _ in LIMITS:
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is not None:
            change[field] = None if value in ("0", "default") else kind(value)
    return api.call("PATCH", f"/v1/tenants/{quote(args.tenant_id, safe='')}", json=change)


def _revoke(api: JobsApi, args: argparse.Namespace) -> dict[str, Any]:
    api.call("DELETE", f"{_keys(args.tenant_id)}/{quote(args.key_id, safe='')}")
    return {"revoked": args.key_id}


def _command(call: Callable[[JobsApi, argparse.Namespace], dict[str, Any]]) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        with JobsApi(args.api, args.admin_key) as api:
            try:
                print(json.dumps(call(api, args), indent=2))
            except ApiError as error:
                print(f"error: {error.code}: {error.message}", file=sys.stderr)
                return error.exit_code
        return EXIT_OK

    return handler
