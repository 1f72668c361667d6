"""The admin CLI against a running engine: the TOML apply round trip and the commands."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from engine.config import ENV_NAMES
from engine.ports import free_port
from tests.function_backend import FunctionBackend
from tests.helpers import (
    ADMIN_TOKEN,
    PUBLIC_URL,
    TWILIO_AUTH_TOKEN,
    http_request,
    running_engine,
)

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "docs" / "example-project.toml"
CLI_TIMEOUT_S = 30.0


async def cli(
    url: str, *args: str, token: str = ADMIN_TOKEN, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES} | (env or {})
    env |= {"ADMIN_TOKEN": token, "PYTHONPATH": str(ROOT)}
    with trio.fail_after(CLI_TIMEOUT_S):
        done = await trio.run_process(
            [sys.executable, "-m", "api.cli", *args, "--url", url],
            env=env,
            cwd=ROOT,
            check=False,
            capture_stdout=True,
            capture_stderr=True,
            stdin=subprocess.DEVNULL,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_apply_creates_then_updates_and_the_api_returns_the_file(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        url = engine.bound_urls[0]
        first = await cli(url, "project", "apply", str(EXAMPLE))
        second = await cli(url, "project", "apply", str(EXAMPLE))
        listed = await cli(url, "project", "list")
        view = (
            await http_request("GET", f"{url}/admin/projects/smith-plumbing", token=ADMIN_TOKEN)
        ).json()
    assert first == (0, "created project smith-plumbing\n  number +15557654321 (openai)\n", "")
    assert second[0] == 0
    assert second[1].startswith("updated project smith-plumbing")
    assert listed[1] == (
        "smith-plumbing\tSmith Plumbing & Heating\tAmerica/Chicago\t+15557654321 (openai)\n"
    )
    assert [tool["name"] for tool in view["tools"]] == ["get_slots", "book_appointment"]
    assert view["tools"][1]["parameters"]["required"] == [
        "slot_id", "name", "phone", "address", "problem"
    ]  # fmt: skip
    assert view["onCallNumber"] == "+15551234567"
    assert view["functionSecretSet"] is True
    assert view["instructions"].startswith("You answer the phone for Smith Plumbing")


async def test_number_add_and_key_create(fresh_database: str, tmp_path: Path) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        url = engine.bound_urls[0]
        await cli(url, "project", "apply", str(EXAMPLE))
        added = await cli(url, "number", "add", "+15550009999", "--project", "smith-plumbing",
                          "--system", "vapi", "--vapi-phone-number-id", "pn-9")  # fmt: skip
        key = await cli(url, "key", "create", "--project", "smith-plumbing", "--name", "dash")
        bad_number = await cli(url, "number", "add", "555", "--project", "smith-plumbing")
        no_project = await cli(url, "key", "create", "--project", "nobody")
        wrong_token = await cli(url, "project", "list", token="x" * 32)
        # No ADMIN_TOKEN: the CLI reads the one in DATA_DIR, here a stale one.
        stale = tmp_path / "stale-data"
        stale.mkdir()
        (stale / "admin_token").write_text("y" * 32 + "\n")
        stale_token = await cli(url, "project", "list", token="", env={"DATA_DIR": str(stale)})
    assert added == (0, "+15550009999 (vapi) now belongs to smith-plumbing\n", "")
    assert key[0] == 0
    assert key[1].splitlines()[1].startswith("ahk_")
    assert bad_number[0] == 1
    assert "number: '555' is not an E.164 number" in bad_number[2]
    assert no_project == (1, "", "afterhours: HTTP 404: no project 'nobody'\n")
    assert wrong_token == (
        1,
        "",
        f"afterhours: the engine at {url} refused the admin token (HTTP 401): it is not this "
        "engine's ADMIN_TOKEN. It was taken from ADMIN_TOKEN in the environment; set "
        "ADMIN_TOKEN to the engine's token (or pass the --url of the engine it belongs to)\n",
    )
    assert stale_token[0] == 1
    assert "refused the admin token (HTTP 401)" in stale_token[2]
    assert f"It was taken from {stale / 'admin_token'};" in stale_token[2]
    assert "y" * 32 not in stale_token[2]


async def test_apply_reports_every_invalid_field(fresh_database: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('id = "acme"\nname = "Acme"\ntimezone = "Mars/Base"\nvoice = "robot"\n')
    not_toml = tmp_path / "not.toml"
    not_toml.write_text("id = \n")
    async with running_engine(fresh_database, tmp_path) as engine:
        url = engine.bound_urls[0]
        invalid = await cli(url, "project", "apply", str(broken))
        unreadable = await cli(url, "project", "apply", str(not_toml))
    assert invalid[0] == 1
    assert "timezone: 'Mars/Base' is not an IANA time zone name" in invalid[2]
    assert "voice:" in invalid[2]
    assert unreadable[0] == 1
    assert f"cannot read {not_toml}" in unreadable[2]


async def test_cli_says_when_the_engine_is_not_running() -> None:
    code, _, err = await cli("http://127.0.0.1:1", "project", "list")
    assert code == 1
    assert "cannot reach the engine at http://127.0.0.1:1" in err


async def api(url: str, method: str, path: str, body: object = None) -> Any:
    answer = await http_request(method, url + path, json=body, token=ADMIN_TOKEN)
    assert answer.status < 300, answer.body
    return answer.json() if answer.body else None


async def test_apply_keeps_a_numbers_system_unless_the_file_states_it(
    fresh_database: str, tmp_path: Path
) -> None:
    more = tmp_path / "more.toml"  # a second number, no system: a new one is on openai
    more.write_text(EXAMPLE.read_text() + '\n[[phone_numbers]]\nnumber = "+15550001234"\n')
    back = tmp_path / "back.toml"
    back.write_text(EXAMPLE.read_text().replace('# system = "openai"', 'system = "openai"'))
    other = tmp_path / "other.toml"
    other.write_text(
        'id = "jones-hvac"\nname = "Jones"\ntimezone = "UTC"\n'
        '[[phone_numbers]]\nnumber = "+15557654321"\n'
    )
    async with running_engine(fresh_database, tmp_path) as engine:
        url = engine.bound_urls[0]
        first = await cli(url, "project", "apply", str(EXAMPLE))
        toggled = await cli(url, "number", "set", "+15557654321", "--system", "vapi",
                            "--vapi-phone-number-id", "pn-1")  # fmt: skip
        kept = await cli(url, "project", "apply", str(EXAMPLE))  # the file states no system
        after_kept = await api(url, "GET", "/admin/phone-numbers")
        new_number = await cli(url, "project", "apply", str(more))
        flipped = await cli(url, "project", "apply", str(back))  # system = "openai"
        after_flipped = await api(url, "GET", "/admin/phone-numbers?project=smith-plumbing")
        stolen = await cli(url, "project", "apply", str(other))
    assert first[1].endswith("  number +15557654321 (openai)\n")
    assert toggled[0] == 0, toggled
    assert kept[1].endswith("  number +15557654321 (vapi)\n")
    assert after_kept["phoneNumbers"] == [{
        "number": "+15557654321", "projectId": "smith-plumbing", "system": "vapi",
        "vapiPhoneNumberId": "pn-1", "vapiAssistantId": None,
    }]  # fmt: skip
    assert new_number[1].endswith("  number +15557654321 (vapi)\n  number +15550001234 (openai)\n")
    assert flipped[1].endswith("  number +15557654321 (openai)\n")
    by_number = {n["number"]: n for n in after_flipped["phoneNumbers"]}
    # Back on this engine; Vapi's id is kept for the next toggle.
    toggled_back = by_number["+15557654321"]
    assert (toggled_back["system"], toggled_back["vapiPhoneNumberId"]) == ("openai", "pn-1")
    assert stolen[0] == 1
    assert "number: +15557654321 is already owned by project 'smith-plumbing'" in stolen[2]


async def test_numbers_are_listed_toggled_and_removed(fresh_database: str, tmp_path: Path) -> None:
    number = "+15557654321"
    async with running_engine(fresh_database, tmp_path) as engine:
        url = engine.bound_urls[0]
        await cli(url, "project", "apply", str(EXAMPLE))
        listed = await cli(url, "number", "list")
        no_id = await cli(url, "number", "set", number, "--system", "vapi")
        nothing = await cli(url, "number", "set", number)
        ids = ("--vapi-phone-number-id", "pn-1", "--vapi-assistant-id", "as-1")
        to_vapi = await cli(url, "number", "set", number, "--system", "vapi", *ids)
        cleared = await cli(url, "number", "set", number, "--vapi-assistant-id", "", "--json")
        as_json = await cli(url, "number", "list", "--project", "smith-plumbing", "--json")
        from_api = await api(url, "GET", "/admin/phone-numbers")
        unknown_project = await cli(url, "number", "list", "--project", "nobody")
        removed = await cli(url, "number", "remove", number)
        removed_again = await cli(url, "number", "remove", number)
        empty = await cli(url, "number", "list")
        add_help = await cli(url, "number", "add", "--help")
    assert listed == (0, f"{number}\tsmith-plumbing\topenai\t-\n", "")
    assert no_id[0] == 1
    assert "vapi_phone_number_id: required for a number on vapi" in no_id[2]
    assert (nothing[0], nothing[1]) == (1, "")
    assert "nothing to change" in nothing[2]
    assert to_vapi == (0, (
        f"{number} (smith-plumbing) is answered by Vapi from the next call on\n"
        f"  {number}\tsmith-plumbing\tvapi\tvapi number pn-1, assistant as-1\n"
    ), "")  # fmt: skip
    assert json.loads(cleared[1])["vapiAssistantId"] is None
    assert json.loads(as_json[1]) == from_api
    assert from_api["phoneNumbers"][0]["system"] == "vapi"
    assert unknown_project == (1, "", "afterhours: HTTP 404: no project 'nobody'\n")
    assert removed == (0, f"released {number}: its callers now hear that the number is not in "
                          "service\n", "")  # fmt: skip
    assert removed_again == (1, "", f"afterhours: HTTP 404: no phone number '{number}'\n")
    assert empty[1].startswith("no phone numbers yet")
    assert "re-adding a number of the same project replaces its system" in " ".join(
        add_help[1].split()
    )


async def test_keys_are_listed_without_secrets_and_projects_shown_and_deleted(
    fresh_database: str, tmp_path: Path
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        url = engine.bound_urls[0]
        await cli(url, "project", "apply", str(EXAMPLE))
        made = [
            json.loads((await cli(url, "key", "create", "--project", "smith-plumbing",
                                  "--name", name, "--json"))[1])
            for name in ("dashboard", "reports")
        ]  # fmt: skip
        revoked = await cli(url, "key", "revoke", made[0]["id"])
        keys = await cli(url, "key", "list", "--project", "smith-plumbing")
        keys_json = await cli(url, "key", "list", "--project", "smith-plumbing", "--json")
        shown = await cli(url, "project", "show", "smith-plumbing")
        shown_json = await cli(url, "project", "show", "smith-plumbing", "--json")
        from_api = await api(url, "GET", "/admin/projects/smith-plumbing")
        refused = await cli(url, "project", "delete", "smith-plumbing")
        still_there = await cli(url, "project", "list")
        deleted = await cli(url, "project", "delete", "smith-plumbing", "--yes")
        gone = await cli(url, "project", "show", "smith-plumbing")
    assert revoked == (0, f"revoked key {made[0]['id']}: it reads nothing from now on\n", "")
    lines = keys[1].splitlines()
    assert [line.split("\t")[:2] for line in lines] == [
        [made[0]["id"], "dashboard"], [made[1]["id"], "reports"]
    ]  # fmt: skip
    assert lines[0].split("\t")[3].startswith("revoked ")
    assert lines[1].split("\t")[3] == "active"
    assert json.loads(keys_json[1])["apiKeys"][0]["id"] == made[0]["id"]
    for key in made:
        for output in (keys[1], keys_json[1]):
            assert key["key"] not in output
            assert hashlib.sha256(key["key"].encode()).hexdigest() not in output
    text = shown[1]
    assert text.startswith("project smith-plumbing\n  name       Smith Plumbing & Heating\n")
    assert "  tools      get_slots, book_appointment\n" in text
    assert ", signed, " in text
    assert "phone numbers (1)\n  +15557654321\tsmith-plumbing\topenai\t-\n" in text
    assert json.loads(shown_json[1]) == from_api
    assert refused[0] == 1
    assert "Pass --yes to delete it." in refused[2]
    assert still_there[1].startswith("smith-plumbing\t")
    assert deleted[0] == 0
    assert (gone[0], gone[2]) == (1, "afterhours: HTTP 404: no project 'smith-plumbing'\n")


BOOKING = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing",
    "timezone": "America/Chicago",
    "instructions": "You book plumbing visits. [scenario: booking]",
    "functionSecret": "fn-secret-123456",
    "tools": [
        {"name": name, "description": name, "parameters": {"type": "object"}}
        for name in ("get_slots", "book_appointment")
    ],
}


async def test_a_calls_function_calls_are_printed_by_call_and_call_show(
    fresh_database: str, tmp_path: Path
) -> None:
    """A real call (the simulated caller and model, the booking scenario) whose backend
    fails get_slots: ``afterhours call`` prints the failure with the record, and ``call
    show SID`` prints the whole record, as text and as the API's JSON."""
    backend = FunctionBackend({"get_slots": (500, b'{"error": "calendar down"}', 0.0)})
    rest_url = f"http://127.0.0.1:{free_port()}"  # the simulated Twilio `call` serves
    caller_env = {"TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN, "PUBLIC_URL": PUBLIC_URL,
                  "TWILIO_API_BASE_URL": rest_url}  # fmt: skip
    async with trio.open_nursery() as nursery:
        function_url = await nursery.start(backend.serve)
        async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0",
                                  TWILIO_API_BASE_URL=rest_url) as engine:  # fmt: skip
            url = engine.bound_urls[0]
            await api(url, "POST", "/admin/projects", BOOKING | {"functionUrl": function_url})
            await api(url, "POST", "/admin/projects/smith-plumbing/phone-numbers",
                      {"number": "+15557654321"})  # fmt: skip
            placed = await cli(url, "call", "--to", "+15557654321", "--script", "quick",
                               env=caller_env)  # fmt: skip
            call_sid = placed[1].split()[0]
            shown = await cli(url, "call", "show", call_sid)
            shown_json = await cli(url, "call", "show", call_sid, "--json")
            from_api = await api(url, "GET", f"/admin/calls/{call_sid}")
            unknown = await cli(url, "call", "show", "CA" + "0" * 32)
            no_number = await cli(url, "call")
            wrong = "x" * 32
            refused_show = await cli(url, "call", "show", call_sid, token=wrong)
            refused_call = await cli(url, "call", "--to", "+15557654321", "--script", "quick",
                                     env=caller_env, token=wrong)  # fmt: skip
        nursery.cancel_scope.cancel()
    assert placed[0] == 0, placed
    failed = '    get_slots({"day":"tomorrow"}): error, HTTP 500'
    assert "  function calls (1):\n" in placed[1]
    assert f"{failed}" in placed[1]
    assert "the booking system failed (HTTP 500)" in placed[1]
    lines = shown[1].splitlines()
    assert lines[0] == f"call {call_sid}"
    assert lines[1] == "  project    smith-plumbing, answered by this engine (OpenAI Realtime)"
    assert lines[3].startswith("  status     completed (caller_hung_up), intent routine")
    assert any(line.startswith("    assistant: ") for line in lines)
    assert lines[-2:] == [
        "function calls (1)",
        f"{failed}, {from_api['functionCalls'][0]['latencyMs']} ms: "
        "the booking system failed (HTTP 500)",
    ]
    assert json.loads(shown_json[1]) == from_api
    assert [f["name"] for f in from_api["functionCalls"]] == ["get_slots"]
    assert "fn-secret-123456" not in shown[1] + shown_json[1]
    assert unknown[0] == 1
    assert "no call 'CA" in unknown[2]
    # A wrong token is said as such, never as a missing record: the record is there.
    refused = f"afterhours: the engine at {url} refused the admin token (HTTP 401)"
    assert refused_show[0] == 1
    assert refused_show[2].startswith(refused)
    assert "ADMIN_TOKEN in the environment" in refused_show[2]
    assert refused_call[0] == 1
    assert refused_call[2].startswith(refused), refused_call
    assert "no record found" not in refused_call[1]
    assert (
        refused_call[1].splitlines()[0].endswith("; record not read: the admin token was refused")
    )
    # `afterhours call` alone still places a call, so it still needs --to.
    assert no_number[0] == 2
    assert "required: --to" in no_number[2]
