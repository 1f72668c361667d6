"""``afterhours call`` and ``afterhours simulate``: calls through the engine's real path,
placed by the simulated Twilio caller (engine/simulator/caller.py), with a summary per
call read back from the engine's own record (``GET /admin/calls/{sid}``): status, end
reason, intent, time to first audio, cost, transcript and function calls. With no
accounts configured, ``make run`` plus ``afterhours simulate`` is a complete call in the
logs and the database.
The exit status is 0 only when every call connected and its record is final.

When the engine sends its REST calls to the simulated Twilio (no TWILIO_ACCOUNT_SID, no
OPENAI_API_KEY: api/twilio_access.py), these commands serve it for the calls they place,
so a transfer to a project's on-call number ends the call's stream as Twilio's would and
is printed ("transferred to +1...")."""

from __future__ import annotations

import dataclasses
import sys
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import trio

from api.call_view import function_call_lines, transcript_lines
from api.twilio_access import twilio_access
from engine.config import Secret
from engine.simulator.caller import CallerConfig, CallSummary, place_call
from engine.simulator.twilio_rest import SimulatedTwilio

if TYPE_CHECKING:
    import argparse

    from engine.config import Settings


RECORD_WAIT_S = 10.0  # the store writes in batches: a record is final within moments


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    auth_token = _token(settings, "TWILIO_AUTH_TOKEN")
    admin_token = _token(settings, "ADMIN_TOKEN")
    if auth_token is None or admin_token is None:
        return 1
    engine_url = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    config = CallerConfig(engine_url, settings.public_url, auth_token, args.to, args.from_number)
    calls = 1 if args.command == "call" else args.calls
    concurrency = 1 if args.command == "call" else args.concurrency
    twilio = _simulated_twilio(settings, auth_token)
    summaries = trio.run(_simulate, config, twilio, args.script, calls, concurrency)
    records = trio.run(_records, engine_url, admin_token, summaries)
    for summary in summaries:
        print(_line(summary, records.get(summary.call_sid)))
    failed = [s for s in summaries if s.error or not s.twiml_ok]
    final = [r for r in records.values() if r.get("status") not in (None, "active")]
    print(
        f"{len(summaries) - len(failed)} of {len(summaries)} calls connected; "
        f"{len(final)} records final"
    )
    return 1 if failed or len(final) < len(summaries) else 0


def _token(settings: Settings, name: str) -> str | None:
    """The token from the settings, or the one the engine generated in DATA_DIR."""
    value = settings.admin_token if name == "ADMIN_TOKEN" else settings.twilio_auth_token
    if value is not None:
        return value.reveal()
    stored = settings.data_dir / name.lower()
    if not stored.exists():
        print(f"afterhours: no {name} and no {stored}", file=sys.stderr)
        return None
    return stored.read_text().strip()


def _simulated_twilio(
    settings: Settings, auth_token: str
) -> tuple[SimulatedTwilio, str, int] | None:
    """The simulated Twilio the engine sends its REST calls to, and where to serve it;
    ``None`` when the engine does not use one (a real account, a real model)."""
    completed = dataclasses.replace(settings, twilio_auth_token=Secret(auth_token))
    access = twilio_access(completed)
    if access.mode != "simulated" or access.rest is None:
        return None
    address = urlsplit(access.rest.base_url)
    return SimulatedTwilio.for_auth_token(auth_token), address.hostname or "", address.port or 80


async def _simulate(
    config: CallerConfig,
    twilio: tuple[SimulatedTwilio, str, int] | None,
    script: str,
    calls: int,
    concurrency: int,
) -> list[CallSummary]:
    async with trio.open_nursery() as nursery:
        if twilio is not None:
            simulated, host, port = twilio
            try:
                await nursery.start(partial(simulated.serve, host=host, port=port))
            except OSError as exc:
                print(
                    f"afterhours: cannot serve the simulated Twilio on {host}:{port} ({exc}); "
                    "a transfer will fail",
                    file=sys.stderr,
                )
            else:
                config = dataclasses.replace(config, twilio=simulated)
        summaries = await _place_all(config, script, calls, concurrency)
        nursery.cancel_scope.cancel()
    return summaries


async def _records(
    engine_url: str, admin_token: str, summaries: list[CallSummary]
) -> dict[str, dict[str, Any]]:
    """Each connected call's record, once final (or as it is after RECORD_WAIT_S)."""
    records: dict[str, dict[str, Any]] = {}
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(timeout=5, headers=headers) as http:
        with trio.move_on_after(RECORD_WAIT_S):
            for summary in summaries:
                if not summary.twiml_ok:
                    continue
                while True:
                    try:
                        response = await http.get(f"{engine_url}/admin/calls/{summary.call_sid}")
                    except httpx.HTTPError as exc:
                        print(f"afterhours: cannot read records: {exc}", file=sys.stderr)
                        return records
                    if response.status_code == 200:
                        records[summary.call_sid] = response.json()
                        if response.json().get("status") != "active":
                            break
                    await trio.sleep(0.1)
    return records


async def _place_all(
    config: CallerConfig, script: str, calls: int, concurrency: int
) -> list[CallSummary]:
    limiter = trio.CapacityLimiter(max(1, concurrency))
    summaries: list[CallSummary] = []

    async def one() -> None:
        async with limiter:
            try:
                summaries.append(await place_call(config, script))
            except (OSError, trio.TooSlowError) as exc:
                summaries.append(CallSummary("-", error=f"{type(exc).__name__}: {exc}"))

    async with trio.open_nursery() as nursery:
        for _ in range(calls):
            nursery.start_soon(one)
    return summaries


def _line(summary: CallSummary, record: dict[str, Any] | None) -> str:
    if summary.error:
        return f"{summary.call_sid}  failed: {summary.error}"
    first = summary.time_to_first_audio_ms
    heard = (
        f"heard {summary.heard_ms / 1000:.1f} s of audio, first after {first} ms, "
        f"ended by {summary.ended_by}"
    )
    if summary.transferred_to is not None:
        heard += f": transferred to {summary.transferred_to}"
    if record is None:
        return f"{summary.call_sid}  {heard}; no record found"
    cost = record.get("cost_usd")
    lines = [
        f"{summary.call_sid}  {record.get('status')} ({record.get('end_reason')}), "
        f"intent {record.get('intent')}, first audio {record.get('time_to_first_audio_ms')} ms, "
        f"cost ${cost if cost is not None else 0:.4f}; {heard}"
    ]
    lines += transcript_lines(record)
    functions = function_call_lines(record)
    if functions:
        lines += [f"  function calls ({record.get('function_calls_total')}):", *functions]
    return "\n".join(lines)
