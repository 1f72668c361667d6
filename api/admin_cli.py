"""``afterhours project|number|key``: the admin API from the command line.

For operators who keep configuration in files: ``project apply FILE.toml`` creates or
updates a project (and its ``[[phone_numbers]]``) through the running engine's admin API,
so the CLI and HTTP share one validation and one writer; a project the engine cannot
transfer live calls for (its ``/health/detailed`` config warnings) is warned about on
stderr. The engine's URL comes from
``--url`` or HOST/PORT; the token from ADMIN_TOKEN or the one the engine generated in
DATA_DIR.
"""

from __future__ import annotations

import json
import sys
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from engine.errors import StartupError

if TYPE_CHECKING:
    import argparse

    from engine.config import Settings

REQUEST_TIMEOUT_S = 15.0


class CliError(Exception):
    """One line for the operator, then exit 1."""


@dataclass(frozen=True)
class AdminClient:
    base_url: str
    token: str

    def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the operator's own engine URL
            self.base_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:  # noqa: S310
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None
        except (urllib.error.URLError, OSError) as exc:
            raise CliError(
                f"cannot reach the engine at {self.base_url} ({exc}): is `afterhours serve` "
                "running? (or pass --url)"
            ) from exc

    def expect(self, statuses: tuple[int, ...], method: str, path: str, body: object = None) -> Any:
        status, answer = self.call(method, path, body)
        if status in statuses:
            return answer
        raise CliError(_describe_failure(status, answer))


def _describe_failure(status: int, answer: Any) -> str:
    if isinstance(answer, dict) and answer.get("fields"):
        lines = [f"  {item['field']}: {item['message']}" for item in answer["fields"]]
        return "invalid:\n" + "\n".join(lines)
    message = answer.get("error") if isinstance(answer, dict) else answer
    return f"HTTP {status}: {message}"


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    project = commands.add_parser("project", help="manage projects").add_subparsers(
        dest="action", required=True
    )
    apply = project.add_parser("apply", help="create or update a project from a TOML file")
    apply.add_argument("file", type=Path)
    project.add_parser("list", help="list projects and their numbers")
    number = commands.add_parser("number", help="manage phone numbers").add_subparsers(
        dest="action", required=True
    )
    add = number.add_parser("add", help="give a phone number to a project")
    add.add_argument("number")
    add.add_argument("--project", required=True)
    add.add_argument("--system", default="openai", choices=("openai", "vapi"))
    add.add_argument("--vapi-phone-number-id", help="Vapi's id for the number (for --system vapi)")
    add.add_argument("--vapi-assistant-id", help="the Vapi assistant to answer it (optional)")
    key = commands.add_parser("key", help="manage analytics API keys").add_subparsers(
        dest="action", required=True
    )
    create = key.add_parser("create", help="create a read key for a project (shown once)")
    create.add_argument("--project", required=True)
    create.add_argument("--name", default="")
    for sub in (apply, project.choices["list"], add, create):
        sub.add_argument("--url", help="the engine's base URL (default: http://HOST:PORT)")


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        client = AdminClient(_base_url(args.url, settings), _token(settings))
        handler = {
            ("project", "apply"): _apply,
            ("project", "list"): _list,
            ("number", "add"): _add_number,
            ("key", "create"): _create_key,
        }[(args.command, args.action)]
        handler(client, args)
    except (CliError, StartupError) as exc:
        print(f"afterhours: {exc}", file=sys.stderr)
        return 1
    return 0


def _base_url(url: str | None, settings: Settings) -> str:
    if url:
        return url.rstrip("/")
    if settings.port == 0:
        raise CliError("PORT is 0 (any free port): pass the engine's --url")
    return f"http://{settings.host}:{settings.port}"


def _token(settings: Settings) -> str:
    if settings.admin_token:
        return settings.admin_token.reveal()
    stored = settings.data_dir / "admin_token"
    try:
        return stored.read_text().strip()
    except OSError:
        raise CliError(f"no ADMIN_TOKEN: set it, or run where the engine keeps {stored}") from None


def _apply(client: AdminClient, args: argparse.Namespace) -> None:
    try:
        data = tomllib.loads(args.file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read {args.file}: {exc}") from exc
    numbers = data.pop("phone_numbers", [])
    project_id = data.get("id")
    if not isinstance(project_id, str) or not project_id:
        raise CliError(f"{args.file}: `id` is required (the project's short name)")
    status, answer = client.call("PUT", f"/admin/projects/{quote(project_id)}", data)
    if status not in (200, 201):
        raise CliError(_describe_failure(status, answer))
    print(f"{'created' if status == 201 else 'updated'} project {project_id}")
    for entry in numbers if isinstance(numbers, list) else []:
        client.expect((201,), "POST", f"/admin/projects/{quote(project_id)}/phone-numbers", entry)
        print(f"  number {entry.get('number')} ({entry.get('system', 'openai')})")
    _warn_about(client, project_id)


def _warn_about(client: AdminClient, project_id: str) -> None:
    """The engine's config warnings that name ``project_id`` (a transfer it cannot make),
    on stderr: the project is applied all the same."""
    try:
        status, health = client.call("GET", "/health/detailed")
    except CliError:
        return  # the apply itself went through; the warning is a courtesy
    if status not in (200, 503) or not isinstance(health, dict):
        return
    for warning in health.get("configWarnings") or []:
        if isinstance(warning, dict) and project_id in (warning.get("projects") or []):
            print(f"afterhours: warning: {warning.get('message')}", file=sys.stderr)


def _list(client: AdminClient, args: argparse.Namespace) -> None:
    projects = client.expect((200,), "GET", "/admin/projects")["projects"]
    if not projects:
        print("no projects yet: `afterhours project apply FILE.toml` creates one")
    for project in projects:
        numbers = ", ".join(f"{n['number']} ({n['system']})" for n in project["phone_numbers"])
        print(f"{project['id']}\t{project['name']}\t{project['timezone']}\t{numbers or '-'}")


def _add_number(client: AdminClient, args: argparse.Namespace) -> None:
    body = {"number": args.number, "system": args.system}
    for field in ("vapi_phone_number_id", "vapi_assistant_id"):
        if getattr(args, field):
            body[field] = getattr(args, field)
    client.expect((201,), "POST", f"/admin/projects/{quote(args.project)}/phone-numbers", body)
    print(f"{args.number} ({args.system}) now belongs to {args.project}")


def _create_key(client: AdminClient, args: argparse.Namespace) -> None:
    path = f"/admin/projects/{quote(args.project)}/api-keys"
    created = client.expect((201,), "POST", path, {"name": args.name})
    print(f"key {created['id']} for {created['project_id']} (shown once, store it now):")
    print(created["key"])
