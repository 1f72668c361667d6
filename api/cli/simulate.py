"""``afterhours call`` and ``afterhours simulate``: calls through the engine's real path,
placed by the simulated Twilio caller (engine/simulator/caller.py), with a summary per
call read back from the engine's own record (``GET /admin/calls/{sid}``): status, end
reason, intent, time to first audio, cost, transcript and function calls. With no
accounts configured, ``make run`` plus ``afterhours simulate`` is a complete call in the
logs and the database.
The exit status is 0 only when every call connected and its record is final.

When the engine sends its REST calls to the simulated Twilio (no TWILIO_ACCOUNT_SID, no
OPENAI_API_KEY: api/http/twilio_access.py), these commands serve it for the calls they place,
so a transfer to a project's on-call number ends the call's stream as Twilio's would and
is printed ("transferred to +1...").

Likewise for Vapi (api/http/vapi_calls.py): with no VAPI_API_KEY and the built-in simulators,
the engine creates the calls of numbers on the ``vapi`` system at the simulated Vapi
(engine/simulator/vapi.py), which these commands serve on VAPI_API_BASE_URL (default
127.0.0.1:PORT+3): its TwiML takes the simulated caller into its own stream, and its
signed reports go to the engine's ``/vapi/events``.

``--business PROJECT_FILE`` serves the simulated business backend
(engine/simulator/business.py) at that file's ``function_url`` (a loopback ``http://``
address) for the calls placed, checking the engine's signatures with its
``function_secret``: ``--script booking`` then books through it.

An engine that does not answer is one line and exit status 1 (as the admin commands
say it), before any call is placed. With more than one call, a line per finished call
goes to stderr as the calls run, and the totals (intents, end reasons, cost, time to
first audio p50 and p95) to stdout before the last line."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import sys
import tomllib
from collections import Counter
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import trio

from api.cli.admin_client import refused_token, token_source
from api.http.call_view import function_call_lines, transcript_lines
from api.http.twilio_access import twilio_access
from api.http.vapi_calls import vapi_access
from engine.config import Secret
from engine.simulator.business import SimulatedBusiness
from engine.simulator.caller import CallerConfig, CallSummary, place_call
from engine.simulator.twilio_rest import SimulatedTwilio
from engine.simulator.vapi import SimulatedVapi

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable

    from engine.config import Settings


RECORD_WAIT_S = 10.0  # the store writes in batches: a record is final within moments
PROBE_TIMEOUT_S = 5.0  # GET /health before any call: a local engine answers in ms
VAPI_REPORTS_WAIT_S = 10.0  # the simulated Vapi posts its reports once a stream ends


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    auth_token = _token(settings, "TWILIO_AUTH_TOKEN")
    admin_token = _token(settings, "ADMIN_TOKEN")
    if auth_token is None or admin_token is None:
        return 1
    engine_url = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    config = CallerConfig(engine_url, settings.public_url, auth_token, args.to, args.from_number)
    calls = 1 if args.command == "call" else args.calls
    concurrency = 1 if args.command == "call" else args.concurrency
    business = None
    if args.business is not None:
        business = _simulated_business(Path(args.business))
        if business is None:
            return 1
    unreachable = trio.run(_unreachable, engine_url)
    if unreachable is not None:
        print(f"afterhours: {unreachable}", file=sys.stderr)
        return 1
    twilio = _simulated_twilio(settings, auth_token)
    vapi = _simulated_vapi(settings, auth_token, engine_url)
    summaries = trio.run(_simulate, config, twilio, vapi, business, args.script, calls, concurrency)
    records: dict[str, dict[str, Any]] = {}
    try:
        trio.run(_records, engine_url, admin_token, summaries, records)
    except TokenRefused as exc:
        # Said once, before the calls: each call's line then says its record went unread,
        # not that there is none (the calls were placed; their records are in the database).
        print(f"afterhours: {refused_token(engine_url, exc.status, token_source(settings))}",
              file=sys.stderr)  # fmt: skip
        for summary in summaries:
            print(_line(summary, None, unread="record not read: the admin token was refused"))
        return 1
    for summary in summaries:
        print(_line(summary, records.get(summary.call_sid)))
    failed = [s for s in summaries if s.error or not s.twiml_ok]
    final = [r for r in records.values() if r.get("status") not in (None, "active")]
    if calls > 1:
        for line in totals_lines(summaries, records):
            print(line)
    print(
        f"{len(summaries) - len(failed)} of {len(summaries)} calls connected; "
        f"{len(final)} records final"
    )
    return 1 if failed or len(final) < len(summaries) else 0


async def _unreachable(engine_url: str) -> str | None:
    """Why the engine cannot be reached, in one line (the admin commands' wording), or
    ``None`` when ``GET /health`` gets any answer at all (a draining engine's 503 too:
    its turning callers away is what the calls will show)."""
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as http:
            await http.get(f"{engine_url}/health")
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        return (
            f"cannot reach the engine at {engine_url} ({reason}): is `afterhours serve` "
            "running? (or pass --url)"
        )
    return None


def _simulated_business(
    project_file: Path,
) -> tuple[SimulatedBusiness, str, int, str] | None:
    """The simulated business backend for a project file, and where to serve it; None
    (said on stderr) when the file cannot be read or its function_url is not a
    loopback http:// URL (the simulator never stands in for a real business)."""
    try:
        project = tomllib.loads(project_file.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        print(f"afterhours: cannot read {project_file}: {exc}", file=sys.stderr)
        return None
    url = urlsplit(str(project.get("function_url") or ""))
    if url.scheme != "http" or not _loopback(url.hostname or ""):
        print(
            f"afterhours: {project_file}: --business needs a function_url on this machine "
            f"(http://127.0.0.1:PORT/...), not {url.geturl() or 'none'}",
            file=sys.stderr,
        )
        return None
    secret = project.get("function_secret")
    business = SimulatedBusiness(str(secret) if secret else None)
    return business, url.hostname or "", url.port or 80, url.path or "/"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def _simulated_vapi(
    settings: Settings, auth_token: str, engine_url: str
) -> tuple[SimulatedVapi, str, int] | None:
    """The simulated Vapi the engine creates Vapi calls at, posting its reports to the
    engine; ``None`` when the engine uses none (a Vapi key, a real model)."""
    completed = dataclasses.replace(settings, twilio_auth_token=Secret(auth_token))
    access = vapi_access(completed)
    key, secret = access.api_key, access.server_secret
    if access.mode != "simulated" or access.base_url is None or key is None or secret is None:
        return None
    vapi = SimulatedVapi(key.reveal(), secret.reveal(), f"{engine_url}/vapi/events")
    address = urlsplit(access.base_url)
    return vapi, address.hostname or "", address.port or 80


async def _simulate(
    config: CallerConfig,
    twilio: tuple[SimulatedTwilio, str, int] | None,
    vapi: tuple[SimulatedVapi, str, int] | None,
    business: tuple[SimulatedBusiness, str, int, str] | None,
    script: str,
    calls: int,
    concurrency: int,
) -> list[CallSummary]:
    async with trio.open_nursery() as nursery:
        if business is not None:
            backend, host, port, path = business
            await _serve(
                nursery, partial(backend.serve, path=path), "business backend", host, port,
                "function calls go to whatever listens there",
            )  # fmt: skip
        if vapi is not None:
            simulated_vapi, host, port = vapi
            await _serve(nursery, simulated_vapi.serve, "Vapi", host, port, "Vapi calls fall back")
        if twilio is not None:
            simulated, host, port = twilio
            if await _serve(nursery, simulated.serve, "Twilio", host, port, "a transfer will fail"):
                config = dataclasses.replace(config, twilio=simulated)
        summaries = await _place_all(config, script, calls, concurrency)
        if vapi is not None:  # its reports go out just after the calls end
            await vapi[0].wait_reported(VAPI_REPORTS_WAIT_S)
        nursery.cancel_scope.cancel()
    return summaries


async def _serve(
    nursery: trio.Nursery,
    serve: Callable[..., Awaitable[None]],
    name: str,
    host: str,
    port: int,
    otherwise: str,
) -> bool:
    """Start a simulator the engine talks to; False (said on stderr) if its port is taken."""
    try:
        await nursery.start(partial(serve, host=host, port=port))
    except OSError as exc:
        print(f"afterhours: cannot serve the simulated {name} on {host}:{port} ({exc}); "
              f"{otherwise}", file=sys.stderr)  # fmt: skip
        return False
    return True


class TokenRefused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


async def _records(
    engine_url: str,
    admin_token: str,
    summaries: list[CallSummary],
    records: dict[str, dict[str, Any]],
) -> None:
    """Each connected call's record into ``records``, once final (or as it is after
    RECORD_WAIT_S). ``TokenRefused`` at the first 401/403: waiting would not help, and
    "no record found" would send the operator after records that exist. A 404 is waited
    out (the store writes in batches)."""
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
                        return
                    if response.status_code in (401, 403):
                        raise TokenRefused(response.status_code)
                    if response.status_code == 200:
                        record = records[summary.call_sid] = response.json()
                        # Vapi's report follows Twilio's callback by moments: its cost.
                        awaiting_vapi = record.get("system") == "vapi" and not record.get("costUsd")
                        if record.get("status") != "active" and not awaiting_vapi:
                            break
                    await trio.sleep(0.1)


async def _place_all(
    config: CallerConfig, script: str, calls: int, concurrency: int
) -> list[CallSummary]:
    limiter = trio.CapacityLimiter(max(1, concurrency))
    summaries: list[CallSummary] = []

    async def one() -> None:
        async with limiter:
            try:
                summary = await place_call(config, script)
            except (OSError, trio.TooSlowError, httpx.HTTPError) as exc:
                # The engine went away mid-run (it was probed before): this call's line.
                summary = CallSummary("-", error=f"{type(exc).__name__}: {exc}")
            summaries.append(summary)
            if calls > 1:  # progress as the calls end: a long run is not silent
                print(f"[{len(summaries)}/{calls}] {_progress(summary)}", file=sys.stderr,
                      flush=True)  # fmt: skip

    async with trio.open_nursery() as nursery:
        for _ in range(calls):
            nursery.start_soon(one)
    return summaries


def _line(
    summary: CallSummary, record: dict[str, Any] | None, *, unread: str = "no record found"
) -> str:
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
        return f"{summary.call_sid}  {heard}; {unread}"
    cost = record.get("costUsd")
    by = " by Vapi" if record.get("system") == "vapi" else ""
    lines = [
        f"{summary.call_sid}  {record.get('status')}{by} ({record.get('endReason')}), "
        f"intent {record.get('intent')}, first audio {record.get('timeToFirstAudioMs')} ms, "
        f"cost ${cost if cost is not None else 0:.4f}; {heard}"
    ]
    lines += transcript_lines(record)
    functions = function_call_lines(record)
    if functions:
        lines += [f"  function calls ({record.get('functionCallsTotal')}):", *functions]
    return "\n".join(lines)


def _progress(summary: CallSummary) -> str:
    if summary.error or not summary.twiml_ok:
        return f"{summary.call_sid} failed: {summary.error}"
    line = (
        f"{summary.call_sid} ended by {summary.ended_by}, heard "
        f"{summary.heard_ms / 1000:.1f} s, first audio after {summary.time_to_first_audio_ms} ms"
    )
    if summary.transferred_to is not None:
        line += f", transferred to {summary.transferred_to}"
    return line


def totals_lines(summaries: list[CallSummary], records: dict[str, dict[str, Any]]) -> list[str]:
    """The run's totals from the engine's records: how many connected, intents, end
    reasons, cost, and time to first audio (p50 and p95, nearest rank)."""
    connected = sum(1 for s in summaries if s.twiml_ok and not s.error)
    found = list(records.values())
    intents = Counter(str(r.get("intent")) for r in found)
    reasons = Counter(str(r.get("endReason")) for r in found)
    cost_usd = sum(float(r.get("costUsd") or 0) for r in found)
    first_ms = sorted(
        int(r["timeToFirstAudioMs"]) for r in found if r.get("timeToFirstAudioMs") is not None
    )
    per_call = f" (${cost_usd / len(found):.4f} per call)" if found else ""
    first = (
        f"p50 {_nearest_rank(first_ms, 0.50)} ms, p95 {_nearest_rank(first_ms, 0.95)} ms "
        f"(the engine's records, {len(first_ms)} calls)"
        if first_ms
        else "none recorded"
    )
    return [
        f"totals: {len(summaries)} calls, {connected} connected, {len(found)} records",
        f"  intents      {_counts(intents)}",
        f"  end reasons  {_counts(reasons)}",
        f"  cost         ${cost_usd:.4f}{per_call}",
        f"  first audio  {first}",
    ]


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.most_common()) or "-"


def _nearest_rank(sorted_values: list[int], share: float) -> int:
    return sorted_values[max(0, math.ceil(share * len(sorted_values)) - 1)]
