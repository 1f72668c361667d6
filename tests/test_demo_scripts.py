"""The demo calls: the simulated caller's script drives the conversation through audio
alone (the emergency is transferred, the booking books through the simulated business
backend), the commands say so in one line when the engine is down, and ``simulate
--calls N`` reports progress and totals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from engine.config import ENV_NAMES
from engine.ports import free_port
from engine.signing import sign
from engine.simulator import audio_formats, phrases
from engine.simulator.business import SimulatedBusiness
from engine.simulator.caller import CALLER_SCRIPTS, CallerConfig, place_call, script_audio
from engine.simulator.mulaw import FRAME_BYTES, tone
from engine.simulator.scenarios import understood
from engine.simulator.twilio_rest import SimulatedTwilio
from tests.helpers import (
    ADMIN_TOKEN,
    PUBLIC_URL,
    TWILIO_AUTH_TOKEN,
    http_request,
    running_engine,
)
from tests.test_call_e2e import wait_for_final
from tests.test_simulated_caller import create_project

ROOT = Path(__file__).parents[1]
NUMBER = "+15557654321"
ON_CALL = "+15551234567"
CLI_TIMEOUT_S = 60.0
# As docs/example-project.toml: no "[scenario: ...]", so only the caller's words choose.
PROJECT = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing",
    "timezone": "America/Chicago",
    "instructions": "Burst pipes and flooding are emergencies: transfer. Else book a visit.",
    "onCallNumber": ON_CALL,
}


def heard_pitch_hz(audio: bytes) -> float:
    """What the simulated model's pitch detector makes of ``audio`` (session.py's way:
    voiced 20 ms frames only, the sign carried from frame to frame)."""
    pcmu = {"type": "audio/pcmu"}
    changes, voiced_ms, negative = 0, 0, False
    for start in range(0, len(audio), FRAME_BYTES):
        frame = audio[start : start + FRAME_BYTES]
        if audio_formats.mean_amplitude(frame, pcmu) > 1000:
            counted, negative = audio_formats.sign_changes(frame, pcmu, negative)
            changes += counted
            voiced_ms += 20
    return changes / 2 / (voiced_ms / 1000)


@pytest.mark.parametrize("pitch_hz", sorted(phrases.PHRASES))
def test_each_phrase_is_heard_as_its_own_words(pitch_hz: float) -> None:
    words = phrases.PHRASES[pitch_hz]
    spoken = tone(800, frequency_hz=phrases.pitch_of(words))
    assert abs(heard_pitch_hz(spoken) - pitch_hz) < 2  # measured: within 0.5 Hz
    assert phrases.words_at(heard_pitch_hz(spoken)) == words


def test_the_scripts_words_choose_the_scenarios_and_the_plain_tone_chooses_none() -> None:
    first_words = {name: script[0][2] for name, script in CALLER_SCRIPTS.items()}
    assert understood(first_words["emergency"] or "") == "emergency"
    assert understood(first_words["booking"] or "") == "booking"
    for name in ("conversation", "quick"):
        assert understood(first_words[name] or "") is None
    # The tests' and benchmarks' plain tone is the neutral sentence: it chooses nothing.
    assert phrases.words_at(heard_pitch_hz(tone(400))) == phrases.NEUTRAL
    assert phrases.words_at(heard_pitch_hz(tone(400, frequency_hz=2000.0))) == phrases.NEUTRAL
    assert len(script_audio(CALLER_SCRIPTS["silent"])) == 12 * 8000


def test_the_business_backend_checks_the_engines_signature() -> None:
    business = SimulatedBusiness("fn-secret-123456")
    body = json.dumps({"name": "get_slots", "arguments": {"day": "tomorrow"}}).encode()
    assert business.answer(sign("fn-secret-123456", body).encode(), body)[0] == 200
    assert business.answer(sign("another-secret", body).encode(), body)[0] == 401
    assert business.answer(None, body)[0] == 401
    booking = {"name": "book_appointment", "arguments": {"slot_id": "slot-1", "name": "Sam"}}
    raw = json.dumps(booking).encode()
    status, answer = business.answer(sign("fn-secret-123456", raw).encode(), raw)
    assert (status, answer) == (400, {"error": "missing: phone, address, problem"})
    assert business.bookings == []


async def test_the_emergency_script_is_classified_and_transferred_to_the_on_call_number(
    fresh_database: str, tmp_path: Path
) -> None:
    """No "[scenario: ...]" in the instructions: the caller's words alone (as audio) make
    the simulated model classify an emergency and transfer it; the simulated Twilio gets
    the transfer to the project's on-call number."""
    twilio = SimulatedTwilio.for_auth_token(TWILIO_AUTH_TOKEN)
    async with trio.open_nursery() as nursery:
        rest_url = await nursery.start(twilio.serve)
        async with running_engine(
            fresh_database, tmp_path, MEDIA_PORT="0", TWILIO_API_BASE_URL=rest_url
        ) as engine:
            url = engine.bound_urls[0]
            await create_project(url, PROJECT, NUMBER)
            config = CallerConfig(url, PUBLIC_URL, TWILIO_AUTH_TOKEN, NUMBER, twilio=twilio)
            with trio.fail_after(30):
                summary = await place_call(config, "emergency")
                await wait_for_final(fresh_database, summary.call_sid)
            record = (
                await http_request(
                    "GET", f"{url}/admin/calls/{summary.call_sid}", token=ADMIN_TOKEN
                )
            ).json()
        nursery.cancel_scope.cancel()
    assert (record["status"], record["endReason"], record["intent"]) == (
        "completed",
        "transferred",
        "emergency",
    )
    assert (summary.ended_by, summary.transferred_to) == ("twilio", ON_CALL)
    (update,) = twilio.updates
    assert (update.call_sid, update.transferred_to) == (summary.call_sid, ON_CALL)
    caller_said = [t["text"] for t in record["transcript"] if t["role"] == "caller"]
    assert caller_said == ["My basement is flooding, a pipe burst!"]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    return env | {"TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN, "ADMIN_TOKEN": ADMIN_TOKEN,
                  "PUBLIC_URL": PUBLIC_URL, "PYTHONPATH": str(ROOT)} | extra  # fmt: skip


async def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    with trio.fail_after(CLI_TIMEOUT_S):
        done = await trio.run_process(
            [sys.executable, "-m", "api.cli", *args], env=env, cwd=cwd, capture_stdout=True,
            capture_stderr=True, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_the_booking_script_books_through_the_business_backend_the_command_serves(
    fresh_database: str, tmp_path: Path
) -> None:
    """``call --script booking --business FILE``: the command serves the simulated
    backend at the file's function_url; the record holds get_slots and book_appointment,
    both ok, and the backend checked the engine's signature on each."""
    function_url = f"http://127.0.0.1:{free_port()}/afterhours"
    secret = "fn-secret-123456"
    project_file = tmp_path / "project.toml"
    project_file.write_text(f'function_url = "{function_url}"\nfunction_secret = "{secret}"\n')
    tools = [
        {"name": "get_slots", "description": "Free slots", "parameters": {"type": "object"}},
        {"name": "book_appointment", "description": "Book", "parameters": {"type": "object"}},
    ]
    project: dict[str, Any] = PROJECT | {
        "functionUrl": function_url,
        "functionSecret": secret,
        "tools": tools,
    }
    rest_url = f"http://127.0.0.1:{free_port()}"
    async with running_engine(
        fresh_database, tmp_path, MEDIA_PORT="0", TWILIO_API_BASE_URL=rest_url
    ) as engine:
        url = engine.bound_urls[0]
        await create_project(url, project, NUMBER)
        args = ["call", "--to", NUMBER, "--script", "booking", "--business", str(project_file),
                "--url", url]  # fmt: skip
        code, out, err = await run_cli(args, cli_env(TWILIO_API_BASE_URL=rest_url), tmp_path)
        call_sid = out.split()[0]
        record = (
            await http_request("GET", f"{url}/admin/calls/{call_sid}", token=ADMIN_TOKEN)
        ).json()
    assert code == 0, err
    assert (record["status"], record["endReason"], record["intent"]) == (
        "completed",
        "end_call",
        "routine",
    )
    functions = [(f["name"], f["outcome"], f["httpStatus"]) for f in record["functionCalls"]]
    assert functions == [("get_slots", "ok", 200), ("book_appointment", "ok", 200)]
    assert record["functionCalls"][1]["arguments"]["slot_id"] == "slot-1"
    said = [t["text"] for t in record["transcript"] if t["role"] == "assistant"]
    assert said[-1] == "You're booked for nine tomorrow. Goodbye!"
    assert "  function calls (2):\n" in out
    assert '    get_slots({"day":"tomorrow"}): ok, HTTP 200, ' in out


async def test_without_the_backend_the_booking_fails_and_the_model_says_so(
    fresh_database: str, tmp_path: Path
) -> None:
    """Nothing at the function_url: the model reads the error and does not book."""
    project: dict[str, Any] = PROJECT | {
        "functionUrl": f"http://127.0.0.1:{free_port()}/afterhours",
        "tools": [
            {"name": "get_slots", "description": "Free slots", "parameters": {"type": "object"}}
        ],
    }
    async with running_engine(fresh_database, tmp_path, MEDIA_PORT="0") as engine:
        url = engine.bound_urls[0]
        await create_project(url, project, NUMBER)
        config = CallerConfig(url, PUBLIC_URL, TWILIO_AUTH_TOKEN, NUMBER)
        with trio.fail_after(30):
            summary = await place_call(config, "booking")
            await wait_for_final(fresh_database, summary.call_sid)
        record = (
            await http_request("GET", f"{url}/admin/calls/{summary.call_sid}", token=ADMIN_TOKEN)
        ).json()
    assert [(f["name"], f["outcome"]) for f in record["functionCalls"]] == [("get_slots", "error")]
    said = [t["text"] for t in record["transcript"] if t["role"] == "assistant"]
    assert "I'm sorry, I couldn't do that just now." in said[1]
    assert not any("booked" in line for line in said)


@pytest.mark.parametrize("command", [["call"], ["simulate", "--calls", "3"]])
async def test_with_the_engine_down_the_command_says_so_in_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    code, out, err = await run_cli([*command, "--to", NUMBER, "--url", down], cli_env(), tmp_path)
    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        f"afterhours: cannot reach the engine at {down} (all attempts to connect to "
        f"{down.removeprefix('http://')} failed): is `afterhours serve` running? (or pass --url)"
    ]


async def test_the_business_backend_is_only_served_on_a_loopback_url(tmp_path: Path) -> None:
    project_file = tmp_path / "project.toml"
    project_file.write_text('function_url = "https://hooks.example.com/afterhours"\n')
    args = ["call", "--to", NUMBER, "--business", str(project_file), "--url", "http://127.0.0.1:9"]
    code, out, err = await run_cli(args, cli_env(), tmp_path)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"afterhours: {project_file}: --business needs a function_url on this machine "
        "(http://127.0.0.1:PORT/...), not https://hooks.example.com/afterhours"
    ]


async def test_simulate_prints_progress_as_calls_end_and_totals(
    fresh_database: str, tmp_path: Path
) -> None:
    rest_url = f"http://127.0.0.1:{free_port()}"
    async with running_engine(
        fresh_database, tmp_path, MEDIA_PORT="0", TWILIO_API_BASE_URL=rest_url
    ) as engine:
        url = engine.bound_urls[0]
        await create_project(url, PROJECT, NUMBER)
        args = ["simulate", "--calls", "3", "--concurrency", "2", "--to", NUMBER,
                "--script", "emergency", "--url", url]  # fmt: skip
        code, out, err = await run_cli(args, cli_env(TWILIO_API_BASE_URL=rest_url), tmp_path)
        records = [await _record(url, line.split()[0]) for line in out.splitlines()
                   if line.startswith("CA")]  # fmt: skip
    assert code == 0, err
    progress = err.splitlines()
    assert [line.split()[0] for line in progress] == ["[1/3]", "[2/3]", "[3/3]"]
    assert all(line.endswith(f"transferred to {ON_CALL}") for line in progress)
    first_ms = sorted(r["timeToFirstAudioMs"] for r in records)
    cost_usd = sum(r["costUsd"] for r in records)
    assert out.splitlines()[-6:] == [
        "totals: 3 calls, 3 connected, 3 records",
        "  intents      emergency 3",
        "  end reasons  transferred 3",
        f"  cost         ${cost_usd:.4f} (${cost_usd / 3:.4f} per call)",
        f"  first audio  p50 {first_ms[1]} ms, p95 {first_ms[2]} ms "
        "(the engine's records, 3 calls)",
        "3 of 3 calls connected; 3 records final",
    ]


async def _record(url: str, call_sid: str) -> Any:
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.get(
            f"{url}/admin/calls/{call_sid}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    return answer.json()
