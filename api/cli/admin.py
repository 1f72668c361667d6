"""``afterhours project|number|key`` and ``afterhours call show``: the admin API from the
command line (api/cli/admin_client.py talks to it).

For operators who keep configuration in files: ``project apply FILE.toml`` creates or
updates a project (and its ``[[phone_numbers]]``) through the running engine's admin API,
so the CLI and HTTP share one validation and one writer; a project the engine cannot
transfer live calls for (its ``/health/detailed`` config warnings) is warned about on
stderr. A number's system and Vapi ids are only changed by an apply whose file states
them: a number toggled to Vapi (``number set``, the dashboard) stays there.

The file's names are the engine's (snake_case, TOML's convention); the API's are
camelCase, so the file's keys are renamed on the way (engine/json_case.py, the one
mapping) and the names in the engine's validation errors back, so that an error names
the key as the file has it.

Every command that reads or writes a record takes ``--json`` and prints the API's JSON
answer as it is, for scripts; the commands whose route answers nothing (``number
remove``, ``key revoke``, ``project delete``) print one line either way.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from api.cli.admin_client import AdminClient, CliError, client_for, describe_failure
from api.http.call_view import SYSTEMS, call_lines
from engine.errors import StartupError
from engine.json_case import camel, field_from_api

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from engine.config import Settings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    project = _group(commands, "project", "manage projects")
    apply = _command(
        project,
        "apply",
        "create or update a project from a TOML file (a number's system is kept "
        "unless the file states it)",
    )
    apply.add_argument("file", type=Path)
    _with_json(_command(project, "list", "list projects and their numbers"))
    show = _with_json(_command(project, "show", "one project's settings and numbers"))
    show.add_argument("project_id", metavar="ID")
    delete = _command(
        project,
        "delete",
        "delete a project with its numbers and keys (its call history stays); asks "
        "nothing, so it needs --yes",
    )
    delete.add_argument("project_id", metavar="ID")
    delete.add_argument("--yes", action="store_true", help="yes, delete it")

    number = _group(commands, "number", "manage phone numbers")
    listed = _with_json(_command(number, "list", "every number, its project and system"))
    listed.add_argument("--project", help="only this project's numbers")
    add = _with_json(
        _command(
            number,
            "add",
            "give a phone number to a project; re-adding a number of the same project "
            "replaces its system and Vapi ids",
        )
    )
    add.add_argument("number")
    add.add_argument("--project", required=True)
    add.add_argument("--system", default="openai", choices=("openai", "vapi"))
    _vapi_ids(add)
    change = _with_json(
        _command(
            number,
            "set",
            "change a number's system (the toggle: the next call goes there) or Vapi ids",
        )
    )
    change.add_argument("number")
    change.add_argument("--system", choices=("openai", "vapi"))
    _vapi_ids(change, clearable=True)
    remove = _command(
        number, "remove", "release a number: its callers then hear it is not in service"
    )
    remove.add_argument("number")

    key = _group(commands, "key", "manage analytics API keys")
    create = _with_json(_command(key, "create", "create a read key for a project (shown once)"))
    create.add_argument("--project", required=True)
    create.add_argument("--name", default="")
    keys = _with_json(_command(key, "list", "a project's keys (never the keys themselves)"))
    keys.add_argument("--project", required=True)
    revoke = _command(key, "revoke", "revoke a key: it reads nothing from then on")
    revoke.add_argument("key_id", metavar="KEY_ID")

    for group in (project, number, key):
        for sub in group.choices.values():
            _with_url(sub)


def add_call_commands(call: argparse.ArgumentParser) -> None:
    """``afterhours call show SID`` beside ``afterhours call --to NUMBER`` (which places a
    simulated call: api/cli/simulate_args.py)."""
    actions = call.add_subparsers(dest="action", metavar="{show}")
    text = "one call's record: status, transcript, function calls, cost"
    show = _with_url(_with_json(_command(actions, "show", text)))
    show.add_argument("call_sid", metavar="SID")


def _group(commands: Any, name: str, text: str) -> Any:
    return commands.add_parser(name, help=text).add_subparsers(dest="action", required=True)


def _command(group: Any, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand whose text shows in its group's list and in its own --help."""
    sub: argparse.ArgumentParser = group.add_parser(name, help=text, description=text)
    return sub


def _with_json(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sub.add_argument("--json", action="store_true", help="print the API's JSON answer")
    return sub


def _with_url(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sub.add_argument("--url", help="the engine's base URL (default: http://HOST:PORT)")
    return sub


def _vapi_ids(sub: argparse.ArgumentParser, *, clearable: bool = False) -> None:
    cleared = " ('' clears it)" if clearable else ""
    sub.add_argument(
        "--vapi-phone-number-id", help=f"Vapi's id for the number (needed on vapi){cleared}"
    )
    sub.add_argument("--vapi-assistant-id", help=f"the Vapi assistant to answer it{cleared}")


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    handlers: dict[tuple[str, str], Callable[[AdminClient, argparse.Namespace], None]] = {
        ("project", "apply"): _apply,
        ("project", "list"): _list_projects,
        ("project", "show"): _show_project,
        ("project", "delete"): _delete_project,
        ("number", "list"): _list_numbers,
        ("number", "add"): _add_number,
        ("number", "set"): _set_number,
        ("number", "remove"): _remove_number,
        ("key", "create"): _create_key,
        ("key", "list"): _list_keys,
        ("key", "revoke"): _revoke_key,
        ("call", "show"): _show_call,
    }
    try:
        handlers[(args.command, args.action)](client_for(args.url, settings), args)
    except (CliError, StartupError) as exc:
        print(f"afterhours: {exc}", file=sys.stderr)
        return 1
    return 0


def _show(args: argparse.Namespace, answer: Any, lines: Callable[[Any], list[str]]) -> None:
    """The API's answer as JSON with ``--json``, else as ``lines`` renders it."""
    if getattr(args, "json", False):
        print(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        print("\n".join(lines(answer)))


# -- projects -----------------------------------------------------------------------------


def _apply(client: AdminClient, args: argparse.Namespace) -> None:
    try:
        data = tomllib.loads(args.file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read {args.file}: {exc}") from exc
    numbers = data.pop("phone_numbers", [])
    project_id = data.get("id")
    if not isinstance(project_id, str) or not project_id:
        raise CliError(f"{args.file}: `id` is required (the project's short name)")
    if not isinstance(numbers, list) or not all(isinstance(n, dict) for n in numbers):
        raise CliError(f"{args.file}: `phone_numbers` must be tables ([[phone_numbers]])")
    path = f"/admin/projects/{quote(project_id)}"
    status, answer = client.call("PUT", path, _api_names(args.file, data))
    if status not in (200, 201):
        raise CliError(describe_failure(status, answer, field_from_api))
    print(f"{'created' if status == 201 else 'updated'} project {project_id}")
    owned = {n["number"]: n for n in answer["phoneNumbers"]}
    for entry in numbers:
        print(f"  number {_apply_number(client, project_id, entry, owned)}")
    _warn_about(client, project_id)


def _apply_number(
    client: AdminClient, project_id: str, entry: dict[str, Any], owned: dict[str, dict[str, Any]]
) -> str:
    """A ``[[phone_numbers]]`` entry: a number the project has is patched with what the
    entry states (nothing stated: left as it is), any other is added (the server's
    validation names what is wrong with it, and refuses another project's number)."""
    number = entry.get("number")
    sent = _api_names(f"number {number}", entry)
    if isinstance(number, str) and number in owned:
        changes = {k: v for k, v in sent.items() if k != "number"}
        view = owned[number]
        if changes:
            path = f"/admin/phone-numbers/{quote(number)}"
            view = _expect_named(client, (200,), "PATCH", path, changes)
    else:
        path = f"/admin/projects/{quote(project_id)}/phone-numbers"
        view = _expect_named(client, (201,), "POST", path, sent)
    return f"{view['number']} ({view['system']})"


def _api_names(where: object, table: dict[str, Any]) -> dict[str, Any]:
    """A TOML table's top-level keys as the API names them (``on_call_number`` is sent
    as ``onCallNumber``); nested values are sent as written (a tool's JSON schema is the
    business's). A key given both ways would leave the engine to pick one: refused."""
    sent: dict[str, Any] = {}
    for key, value in table.items():
        name = camel(key)
        if name in sent:
            raise CliError(f"{where}: `{key}` is given twice (also as `{name}` or its old form)")
        sent[name] = value
    return sent


def _expect_named(
    client: AdminClient, statuses: tuple[int, ...], method: str, path: str, body: object
) -> Any:
    """``client.expect`` with the fields of a refusal named as the operator wrote them:
    the TOML file's names, which the options' follow (``--vapi-phone-number-id``)."""
    status, answer = client.call(method, path, body)
    if status in statuses:
        return answer
    raise CliError(describe_failure(status, answer, field_from_api))


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


def _list_projects(client: AdminClient, args: argparse.Namespace) -> None:
    _show(args, client.expect((200,), "GET", "/admin/projects"), _project_list_lines)


def _project_list_lines(answer: dict[str, Any]) -> list[str]:
    if not answer["projects"]:
        return ["no projects yet: `afterhours project apply FILE.toml` creates one"]
    lines = []
    for project in answer["projects"]:
        numbers = ", ".join(f"{n['number']} ({n['system']})" for n in project["phoneNumbers"])
        lines.append(f"{project['id']}\t{project['name']}\t{project['timezone']}\t{numbers or '-'}")
    return lines


def _show_project(client: AdminClient, args: argparse.Namespace) -> None:
    project = client.expect((200,), "GET", f"/admin/projects/{quote(args.project_id)}")
    _show(args, project, _project_lines)


def _project_lines(project: dict[str, Any]) -> list[str]:
    tools = ", ".join(tool["name"] for tool in project["tools"]) or "-"
    rows = [
        ("name", project["name"]),
        ("timezone", project["timezone"]),
        ("language", f"{project['language']}, voice {project['voice']}"),
        ("model", project["model"] or "OPENAI_REALTIME_MODEL"),
        ("on call", project["onCallNumber"] or "-"),
        ("tools", tools),
        ("functions", _function_backend(project)),
        (
            "limits",
            f"calls end after {project['maxCallS']} s, or "
            f"{project['silenceTimeoutS']} s of silence",
        ),
        ("vapi down", "answered here" if project["vapiFallback"] == "engine" else "on call"),
    ]
    numbers = project["phoneNumbers"]
    return [
        f"project {project['id']}",
        *(f"  {label:<10} {value}" for label, value in rows),
        f"phone numbers ({len(numbers)})" if numbers else "phone numbers: none",
        *(f"  {_number_line(number)}" for number in numbers),
    ]


def _function_backend(project: dict[str, Any]) -> str:
    if not project["functionUrl"]:
        return "-"
    # The query is left out: a backend's URL may carry a token there.
    url = urlsplit(project["functionUrl"])
    shown = f"{url.scheme}://{url.hostname}{f':{url.port}' if url.port else ''}{url.path}"
    shown += "?..." if url.query else ""
    signed = "signed" if project["functionSecretSet"] else "NOT signed (no function_secret)"
    return f"{shown}, {signed}, {project['functionTimeoutS']:g} s timeout"


def _delete_project(client: AdminClient, args: argparse.Namespace) -> None:
    if not args.yes:
        raise CliError(
            f"deleting {args.project_id} also removes its phone numbers (their callers then "
            "hear the number is not in service) and its API keys; its call history stays. "
            "Pass --yes to delete it."
        )
    client.expect((204,), "DELETE", f"/admin/projects/{quote(args.project_id)}")
    print(f"deleted project {args.project_id}, its numbers and its keys (call history kept)")


# -- numbers ------------------------------------------------------------------------------


def _number_line(number: dict[str, Any]) -> str:
    ids = [
        f"{label} {number[key]}"
        for key, label in (
            ("vapiPhoneNumberId", "vapi number"),
            ("vapiAssistantId", "assistant"),
        )
        if number.get(key)
    ]
    return "\t".join(
        [number["number"], number["projectId"], number["system"], ", ".join(ids) or "-"]
    )


def _list_numbers(client: AdminClient, args: argparse.Namespace) -> None:
    query = f"?project={quote(args.project)}" if args.project is not None else ""
    _show(args, client.expect((200,), "GET", f"/admin/phone-numbers{query}"), _number_list_lines)


def _number_list_lines(answer: dict[str, Any]) -> list[str]:
    if not answer["phoneNumbers"]:
        return ["no phone numbers yet: `afterhours number add NUMBER --project ID` adds one"]
    return [_number_line(number) for number in answer["phoneNumbers"]]


def _add_number(client: AdminClient, args: argparse.Namespace) -> None:
    body = {"number": args.number, "system": args.system}
    for field in ("vapi_phone_number_id", "vapi_assistant_id"):
        if getattr(args, field):
            body[camel(field)] = getattr(args, field)
    path = f"/admin/projects/{quote(args.project)}/phone-numbers"
    view = _expect_named(client, (201,), "POST", path, body)
    _show(args, view, lambda v: [f"{v['number']} ({v['system']}) now belongs to {v['projectId']}"])


def _set_number(client: AdminClient, args: argparse.Namespace) -> None:
    changes: dict[str, str | None] = {}
    if args.system is not None:
        changes["system"] = args.system
    for field in ("vapi_phone_number_id", "vapi_assistant_id"):
        value = getattr(args, field)
        if value is not None:
            changes[camel(field)] = value or None  # '' clears it
    if not changes:
        raise CliError("nothing to change: give --system, --vapi-phone-number-id or "
                       "--vapi-assistant-id")  # fmt: skip
    path = f"/admin/phone-numbers/{quote(args.number)}"
    _show(args, _expect_named(client, (200,), "PATCH", path, changes), _set_lines)


def _set_lines(view: dict[str, Any]) -> list[str]:
    return [
        f"{view['number']} ({view['projectId']}) is answered by {SYSTEMS[view['system']]} "
        "from the next call on",
        f"  {_number_line(view)}",
    ]


def _remove_number(client: AdminClient, args: argparse.Namespace) -> None:
    client.expect((204,), "DELETE", f"/admin/phone-numbers/{quote(args.number)}")
    print(f"released {args.number}: its callers now hear that the number is not in service")


# -- keys ---------------------------------------------------------------------------------


def _create_key(client: AdminClient, args: argparse.Namespace) -> None:
    path = f"/admin/projects/{quote(args.project)}/api-keys"
    created = client.expect((201,), "POST", path, {"name": args.name})
    _show(args, created, lambda key: [
        f"key {key['id']} for {key['projectId']} (shown once, store it now):", key["key"],
    ])  # fmt: skip


def _list_keys(client: AdminClient, args: argparse.Namespace) -> None:
    answer = client.expect((200,), "GET", f"/admin/projects/{quote(args.project)}/api-keys")
    _show(args, answer, _key_lines)


def _key_lines(answer: dict[str, Any]) -> list[str]:
    if not answer["apiKeys"]:
        return ["no keys yet: `afterhours key create --project ID` makes one"]
    return [
        f"{key['id']}\t{key['name'] or '-'}\tcreated {key['createdAt']}\t"
        + (f"revoked {key['revokedAt']}" if key["revokedAt"] else "active")
        for key in answer["apiKeys"]
    ]


def _revoke_key(client: AdminClient, args: argparse.Namespace) -> None:
    client.expect((204,), "DELETE", f"/admin/api-keys/{quote(args.key_id)}")
    print(f"revoked key {args.key_id}: it reads nothing from now on")


# -- calls --------------------------------------------------------------------------------


def _show_call(client: AdminClient, args: argparse.Namespace) -> None:
    _show(args, client.expect((200,), "GET", f"/admin/calls/{quote(args.call_sid)}"), call_lines)
