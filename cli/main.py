"""The `imagejobs` command line: its parser and the commands that only read or write files."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from cli.client import DEFAULT_API_URL, DEFAULT_CANVAS_ID, EXIT_OK, ApiError, JobsApi
from cli.dev import run_dev
from cli.processes import apply_migrations, run_api, run_worker_process
from cli.progress import follow_and_report, say
from cli.tenants import add_commands as add_tenant_commands

EXIT_CODES_HELP = "exit codes: 0 completed, 1 the job failed or was cancelled, 2 bad usage or the API is unreachable"


def job_request(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /v1/jobs body for `imagejobs generate`; options left out are left to the API's defaults."""
    spec = {
        "basePrompt": args.prompt,
        "styleModifiers": args.style or None,
        "negativePrompt": args.negative_prompt,
        "size": args.size,
        "aspectRatio": args.aspect_ratio,
        "n": args.n,
        "seed": args.seed,
        "previousImage": args.previous_image,
        "strength": args.strength,
    }
    request = {
        "workflowId": args.canvas,
        "nodeId": args.node or f"node-{uuid.uuid4().hex[:8]}",
        "provider": args.provider,
        "model": args.model,
        "promptSpec": {key: value for key, value in spec.items() if value is not None},
    }
    return {key: value for key, value in request.items() if value is not None}


def _generate(args: argparse.Namespace) -> int:
    with JobsApi(args.api, args.api_key) as api:
        try:
            record = api.start_job(job_request(args))
            return follow_and_report(api, str(record["jobId"]))
        except ApiError as error:
            return _report_api_error(error)


def _watch(args: argparse.Namespace) -> int:
    with JobsApi(args.api, args.api_key) as api:
        try:
            return follow_and_report(api, args.job_id)
        except ApiError as error:
            return _report_api_error(error)


def _report_api_error(error: ApiError) -> int:
    print(f"error: {error.code}: {error.message}", file=sys.stderr)
    return error.exit_code


def _openapi(args: argparse.Namespace) -> int:
    from api.main import openapi_document

    return _write(openapi_document(), args.output)


def _write(document: str, output: Path | None) -> int:
    """A generated file to `output`, or to standard output."""
    if output:
        output.write_text(document)
    else:
        sys.stdout.write(document)
    return EXIT_OK


def _providers_check(args: argparse.Namespace) -> int:
    """Each configured provider's key and model list beside the catalog; needs only the provider settings."""
    from core.config import get_settings
    from providers import check
    from providers.discovery import build_directory
    from providers.registry import build_providers

    async def run() -> int:
        settings = get_settings()
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
            checks = await check.check_providers(build_providers(settings, http), build_directory(settings))
        sys.stdout.write(check.render(checks))
        return check.exit_code(checks)

    return asyncio.run(run())


def _providers_table(args: argparse.Namespace) -> int:
    """The README's model table from the catalog: printed, or written into the file's marked section."""
    from providers import catalog_docs
    from providers.catalog import CATALOG, utc_today

    if args.write:
        changed = catalog_docs.write_table(args.write, CATALOG, utc_today())
        say(f"{args.write}: {'model table rewritten' if changed else 'model table already current'}")
    else:
        sys.stdout.write(catalog_docs.markdown_table(CATALOG, utc_today()) + "\n")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagejobs",
        description="Durable AI image generation jobs for canvas apps, orchestrated by Temporal.",
        epilog=EXIT_CODES_HELP,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="run the whole stack on this machine until Ctrl-C")
    dev.add_argument("--port", type=int, default=8000, help="API port (default: %(default)s)")
    dev.add_argument("--temporal-port", type=int, default=7233, help="Temporal gRPC port (default: %(default)s)")
    dev.add_argument("--ui-port", type=int, default=8233, help="Temporal Web UI port (default: %(default)s)")
    dev.add_argument("--data-dir", type=Path, help="where all state is kept (default: DATA_DIR, else .data)")
    dev.set_defaults(handler=run_dev)

    server = argparse.ArgumentParser(add_help=False)
    server.add_argument(
        "--api",
        default=os.environ.get("IMAGEJOBS_API_URL", DEFAULT_API_URL),
        help="API base URL (default: IMAGEJOBS_API_URL, else %(default)s)",
    )
    client = argparse.ArgumentParser(add_help=False, parents=[server])
    client.add_argument(
        "--api-key", default=os.environ.get("IMAGEJOBS_API_KEY"), help="API key (default: IMAGEJOBS_API_KEY)"
    )

    generate = commands.add_parser(
        "generate", parents=[client], help="start an image job and follow it to the end", epilog=EXIT_CODES_HELP
    )
    generate.add_argument("prompt", help="what to draw")
    generate.add_argument("--provider", default="local", help="image provider (default: %(default)s)")
    generate.add_argument("--model", help="the provider's model (default: the provider's default)")
    generate.add_argument("--size", help="WIDTHxHEIGHT, e.g. 1024x1024")
    generate.add_argument("--aspect-ratio", help="e.g. 16:9 (instead of --size)")
    generate.add_argument("-n", "--n", type=int, help="number of images")
    generate.add_argument("--seed", type=int, help="seed, for repeatable images where the provider supports it")
    generate.add_argument("--negative-prompt", help="what to keep out of the image")
    generate.add_argument(
        "--previous-image", metavar="URL", help="an image to refine or start from (image-to-image, upscaling)"
    )
    generate.add_argument("--strength", type=float, help="with --previous-image: 0 keeps it, 1 ignores it")
    generate.add_argument(
        "--style", action="append", metavar="MODIFIER", help="a style modifier (repeat for several), e.g. watercolor"
    )
    generate.add_argument("--canvas", default=DEFAULT_CANVAS_ID, help="canvas (workflowId) (default: %(default)s)")
    generate.add_argument("--node", help="canvas node id (default: a new node-<id>)")
    generate.set_defaults(handler=_generate)

    watch = commands.add_parser("watch", parents=[client], help="follow a job to its end", epilog=EXIT_CODES_HELP)
    watch.add_argument("job_id", metavar="jobId")
    watch.set_defaults(handler=_watch)

    api = commands.add_parser("api", help="serve the HTTP API (settings from the environment)")
    api.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    api.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    api.set_defaults(handler=run_api)

    openapi = commands.add_parser("openapi", help="write the API's OpenAPI schema (the canvas' types come from it)")
    openapi.add_argument("--output", type=Path, help="file to write (default: standard output)")
    openapi.set_defaults(handler=_openapi)

    worker = commands.add_parser("worker", help="run a Temporal worker (settings from the environment)")
    worker.set_defaults(handler=run_worker_process)

    migrate = commands.add_parser("migrate", help="apply the database migrations to DATABASE_URL")
    migrate.set_defaults(handler=apply_migrations)

    providers = commands.add_parser("providers", help="the providers' keys and the model catalog")
    provider_commands = providers.add_subparsers(dest="providers_command", required=True, metavar="COMMAND")
    provider_check = provider_commands.add_parser(
        "check",
        help="check each configured key with one cheap call and list its models beside the catalog "
        "(exit 1: a key was refused; 2: a provider could not be reached)",
    )
    provider_check.set_defaults(handler=_providers_check)
    table = provider_commands.add_parser("table", help="the README's model table, from the catalog")
    table.add_argument("--write", type=Path, metavar="FILE", help="rewrite the marked section of FILE")
    table.set_defaults(handler=_providers_table)
    add_tenant_commands(commands, server)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `imagejobs` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
