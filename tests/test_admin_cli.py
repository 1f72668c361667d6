"""The admin CLI against a running engine: the TOML apply round trip and the commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

from engine.config import ENV_NAMES
from tests.helpers import ADMIN_TOKEN, http_request, running_engine

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "docs" / "example-project.toml"
CLI_TIMEOUT_S = 30.0


async def cli(url: str, *args: str, token: str = ADMIN_TOKEN) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
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
    assert view["on_call_number"] == "+15551234567"
    assert view["function_secret_set"] is True
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
    assert added == (0, "+15550009999 (vapi) now belongs to smith-plumbing\n", "")
    assert key[0] == 0
    assert key[1].splitlines()[1].startswith("ahk_")
    assert bad_number[0] == 1
    assert "number: '555' is not an E.164 number" in bad_number[2]
    assert no_project == (1, "", "afterhours: HTTP 404: no project 'nobody'\n")
    assert wrong_token[0] == 1
    assert "HTTP 401" in wrong_token[2]


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
