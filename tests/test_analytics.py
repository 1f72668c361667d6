"""The analytics API against real PostgreSQL, with numbers worked out by hand for a
small fixture: totals, rates, averages and percentiles; the time-zone boundary (23:30
local belongs to that local day); empty projects and empty days; pagination without
gaps or repeats; the access matrix; every validation error; the two systems side by side
(calls written through the engine's store as the call bridge and Vapi's reports write
them); one call's full record with its function calls."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest

from actors.store.db import open_database
from api.root.engine import Engine
from engine.messages import CallUpdated, FunctionCallRecorded, StoreWrite
from tests.helpers import (
    ADMIN_TOKEN,
    HttpResponse,
    documented_fields,
    http_request,
    returned_fields,
    running_engine,
    wait_until,
)

CHICAGO = "America/Chicago"  # UTC-6 in November
TRANSCRIPT = [
    {"role": "assistant", "text": "Thanks for calling Acme."},
    {"role": "caller", "text": "My tap drips."},
    {"role": "assistant", "text": "I can book a visit."},
    {"role": "caller", "text": "Tomorrow please."},
]
# call_sid, project, started_at (UTC), status, intent, duration_s, cost_usd, ttfa_ms
CALLS: list[tuple[str, str, str, str, str, float | None, float | None, int | None]] = [
    ("CA1", "acme", "2026-11-10T15:00:00", "completed", "routine", 60, 0.10, 400),
    ("CA2", "acme", "2026-11-10T20:00:00", "failed", "emergency", 30, 0.05, 600),
    ("CA3", "acme", "2026-11-11T05:30:00", "missed", "unknown", 0, 0, None),  # 23:30 local
    ("CA4", "acme", "2026-11-12T16:00:00", "completed", "routine", 120, 0.20, 800),
    ("CA5", "acme", "2026-11-12T17:00:00", "active", "unknown", None, None, None),
    ("CA6", "acme", "2026-10-31T12:00:00", "completed", "routine", 10, 0.01, 100),
    ("CA7", "acme", "2026-10-20T12:00:00", "completed", "routine", 10, 0.01, 100),
    ("CA8", "acme", "2026-10-20T12:00:00", "completed", "routine", 10, 0.01, 100),  # a tie
    ("CA9", "other", "2026-11-10T15:00:00", "completed", "routine", 99, 9.99, 999),
]
WINDOW = "from=2026-11-10&to=2026-11-12"


async def seeded(engine: Engine, dsn: str) -> dict[str, str]:
    """Projects acme (Chicago) and other (UTC) with the calls above; API keys by name."""
    base = engine.bound_urls[0]
    keys: dict[str, str] = {}
    for project, timezone in (("acme", CHICAGO), ("other", "UTC")):
        body = {"id": project, "name": project.title(), "timezone": timezone}
        assert (await http_request("POST", f"{base}/admin/projects", json=body,
                                   token=ADMIN_TOKEN)).status == 201  # fmt: skip
        created = await http_request(
            "POST", f"{base}/admin/projects/{project}/api-keys", json={"name": "dash"},
            token=ADMIN_TOKEN,
        )  # fmt: skip
        keys[project] = created.json()["key"]
        keys[f"{project}-id"] = created.json()["id"]
    for number, system in (("+15550002222", "openai"), ("+15550003333", "vapi")):
        added = await http_request(
            "POST",
            f"{base}/admin/projects/acme/phone-numbers",
            json={"number": number, "system": system, "vapiPhoneNumberId": "pn-3"},
            token=ADMIN_TOKEN,
        )
        assert added.status == 201, added.body
    async with open_database(dsn, connect_timeout_s=5) as db:
        for sid, project, started, status, intent, duration, cost, ttfa in CALLS:
            await db.execute(
                "INSERT INTO calls (call_sid, project_id, from_number, status, intent,"
                " started_at, duration_s, cost_usd, time_to_first_audio_ms, transcript)"
                " VALUES ($1, $2, '+15550001111', $3, $4, $5, $6, $7, $8, $9)",
                sid, project, status, intent,
                datetime.fromisoformat(started).replace(tzinfo=UTC),
                duration, cost, ttfa, json.dumps(TRANSCRIPT),
                timeout_s=5,
            )  # fmt: skip
        for n, (outcome, at) in enumerate(
            [("ok", "2026-11-10T16:00:00"), ("error", "2026-11-10T21:00:00"),
             ("timeout", "2026-11-12T16:30:00"), ("error", "2026-10-31T12:00:00")]
        ):  # fmt: skip
            await db.execute(
                "INSERT INTO function_calls (id, call_sid, project_id, name, outcome,"
                " latency_ms, at) VALUES ($1, 'CA1', 'acme', 'get_slots', $2, 50, $3)",
                f"00000000-0000-4000-8000-{n:012d}", outcome,
                datetime.fromisoformat(at).replace(tzinfo=UTC), timeout_s=5,
            )  # fmt: skip
    return keys


async def get(engine: Engine, path: str, token: str | None = ADMIN_TOKEN) -> HttpResponse:
    return await http_request("GET", engine.bound_urls[0] + path, token=token)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ended(sid: str, system: Literal["openai", "vapi"], started: str,
          status: Literal["completed", "failed"], duration_s: float, cost: float,
          ) -> list[StoreWrite]:  # fmt: skip
    """A call's start and end records, as the bridge (openai) or Vapi's report writes them."""
    source: Literal["engine", "vapi"] = "vapi" if system == "vapi" else "engine"
    start = CallUpdated(sid, source=source, project_id="acme", system=system,
                        status="active", started_at=utc(started))  # fmt: skip
    end = CallUpdated(sid, source=source, status=status, duration_s=duration_s,
                      cost_usd=cost, end_reason="caller_hung_up")  # fmt: skip
    return [start, end]


# Written through the engine's store on top of seeded(): the calls there have no system
# (rows from before Vapi, or whose webhook record has not landed), read as openai.
SYSTEM_CALLS = [
    *ended("CAO1", "openai", "2026-11-11T16:00:00", "completed", 60, 0.06),
    *ended("CAV1", "vapi", "2026-11-11T15:00:00", "completed", 90, 0.15),
    *ended("CAV2", "vapi", "2026-11-12T05:30:00", "failed", 30, 0.02),  # 23:30 local, the 11th
]


async def store(engine: Engine, dsn: str, writes: list[StoreWrite], expect: str) -> None:
    """Hand ``writes`` to the engine's store; wait until ``expect`` (a query) is true."""
    for write in writes:
        await engine.mailboxes["store"].send(write)

    async def landed() -> bool:
        async with open_database(dsn, connect_timeout_s=5) as db:
            return bool(await db.fetchval(expect, timeout_s=5))

    await wait_until(landed, timeout_s=10)


async def test_the_two_systems_side_by_side(fresh_database: str, tmp_path: Path) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        keys = await seeded(engine, fresh_database)
        await store(engine, fresh_database, SYSTEM_CALLS,
                    "SELECT count(*) = 3 FROM calls WHERE system IS NOT NULL"
                    " AND status <> 'active'")  # fmt: skip
        summary = await get(engine, f"/analytics/project/acme?{WINDOW}", keys["acme"])
        days = await get(engine, "/analytics/project/acme/statistics?start=2026-11-10"
                                 "&end=2026-11-12", keys["acme"])  # fmt: skip
        recent = await get(engine, "/analytics/project/acme/recent?limit=3", keys["acme"])
    assert summary.status == 200, summary.body
    body = summary.json()
    # openai: CA1-CA5 (no system) and CAO1; ended: 60 + 30 + 0 + 120 + 60 s, 0.41 USD.
    assert body["bySystem"] == {
        "openai": {"calls": 6, "completed": 3, "missed": 1, "failed": 1, "active": 1,
                   "minutes": 4.5, "costUsd": 0.41, "costPerMinuteUsd": 0.091111,
                   "averageDurationS": 54.0},
        "vapi": {"calls": 2, "completed": 1, "missed": 0, "failed": 1, "active": 0,
                 "minutes": 2.0, "costUsd": 0.17, "costPerMinuteUsd": 0.085,
                 "averageDurationS": 60.0},
    }  # fmt: skip
    # The totals keep their meaning: both systems together.
    assert (body["totalCalls"], body["minutes"], body["totalCostUsd"]) == (8, 6.5, 0.58)
    assert body["costPerMinuteUsd"] == 0.089231  # 0.58 over 6.5 minutes
    assert days.status == 200, days.body
    by_day = {day["date"]: day for day in days.json()["days"]}
    eleventh = by_day["2026-11-11"]
    assert eleventh["total"] == 3
    assert eleventh["costUsd"] == 0.23
    assert eleventh["bySystem"]["openai"] == {
        "total": 1, "byStatus": {"completed": 1, "missed": 0, "failed": 0, "active": 0},
        "byIntent": {"emergency": 0, "routine": 0, "unknown": 1},
        "durationTotalS": 60.0, "durationAverageS": 60.0, "costUsd": 0.06,
    }  # fmt: skip
    assert eleventh["bySystem"]["vapi"] == {
        "total": 2, "byStatus": {"completed": 1, "missed": 0, "failed": 1, "active": 0},
        "byIntent": {"emergency": 0, "routine": 0, "unknown": 2},
        "durationTotalS": 120.0, "durationAverageS": 60.0, "costUsd": 0.17,
    }  # fmt: skip
    tenth = by_day["2026-11-10"]["bySystem"]
    assert tenth["openai"]["total"] == by_day["2026-11-10"]["total"] == 3
    assert tenth["vapi"] == {
        "total": 0, "byStatus": {"completed": 0, "missed": 0, "failed": 0, "active": 0},
        "byIntent": {"emergency": 0, "routine": 0, "unknown": 0},
        "durationTotalS": 0.0, "durationAverageS": None, "costUsd": 0.0,
    }  # fmt: skip
    rows = {call["callSid"]: call for call in recent.json()["calls"]}
    assert rows["CA5"]["system"] == "openai"  # NULL in the row
    assert set(rows) == {"CA5", "CA4", "CAV2"}
    assert (rows["CAV2"]["system"], rows["CAV2"]["endReason"]) == ("vapi", "caller_hung_up")


CALLER_TEXT = '<img src=x onerror="alert(1)">'


async def test_one_call_with_its_function_calls(fresh_database: str, tmp_path: Path) -> None:
    transcript = [*TRANSCRIPT, {"role": "caller", "text": CALLER_TEXT}]
    writes: list[StoreWrite] = [
        # (seeded() inserted CA1 without a merge rank: the update restates its status)
        CallUpdated("CA1", status="completed", transcript=transcript,
                    end_reason="caller_hung_up", system="openai"),
        FunctionCallRecorded(
            "00000000-0000-4000-8000-000000000099", "CA1", "book_appointment", "error",
            latency_ms=240, at=utc("2026-11-10T15:00:30"), project_id="acme",
            arguments={"slot": "2026-11-11T09:00", "name": CALLER_TEXT,
                       "echo": "sha256=" + "ab" * 32}, http_status=500,
            error="HTTP 500 from the function URL",
        ),
    ]  # fmt: skip
    async with running_engine(fresh_database, tmp_path) as engine:
        keys = await seeded(engine, fresh_database)
        await store(engine, fresh_database, writes,
                    "SELECT count(*) = 5 FROM function_calls WHERE call_sid = 'CA1'")  # fmt: skip
        await store(engine, fresh_database, [], "SELECT system = 'openai' FROM calls"
                                                " WHERE call_sid = 'CA1'")  # fmt: skip
        path = "/analytics/project"
        own = await get(engine, f"{path}/acme/calls/CA1", keys["acme"])
        others = await get(engine, f"{path}/acme/calls/CA9", keys["acme"])  # other's call
        missing = await get(engine, f"{path}/acme/calls/CA404", keys["acme"])
        across = await get(engine, f"{path}/other/calls/CA9", keys["acme"])
        admin = await get(engine, f"{path}/other/calls/CA9")
        bad = await get(engine, f"{path}/acme/calls/CA1%27%20OR%201=1", keys["acme"])
    assert own.status == 200, own.body
    call = own.json()
    assert (call["callSid"], call["system"], call["status"], call["endReason"]) == (
        "CA1", "openai", "completed", "caller_hung_up"
    )  # fmt: skip
    assert (call["durationS"], call["costUsd"], call["timeToFirstAudioMs"]) == (60.0, 0.1, 400)
    assert call["startedAt"] == "2026-11-10T15:00:00+00:00"
    assert call["transcript"] == transcript  # in full, in order, as stored
    assert call["summary"] is None
    functions = call["functionCalls"]
    # In the order they were made (the seeded ones, 10-31 to 11-12, and 11-10 15:00:30).
    assert [(f["name"], f["outcome"]) for f in functions] == [
        ("get_slots", "error"), ("book_appointment", "error"), ("get_slots", "ok"),
        ("get_slots", "error"), ("get_slots", "timeout"),
    ]  # fmt: skip
    assert functions[1] == {
        "name": "book_appointment",
        "arguments": {"slot": "2026-11-11T09:00", "name": CALLER_TEXT,
                      "echo": "sha256=[redacted]"},  # a signature is never shown
        "outcome": "error", "httpStatus": 500, "latencyMs": 240,
        "error": "HTTP 500 from the function URL", "at": "2026-11-10T15:00:30+00:00",
    }  # fmt: skip
    assert call["functionCallsTotal"] == 5
    assert returned_fields(call) == documented_fields("smith-plumbing/calls/CA")
    # Another project's call is not found, in the same words as a call that never was.
    assert (others.status, missing.status) == (404, 404)
    assert others.json()["error"].replace("CA9", "X") == missing.json()["error"].replace(
        "CA404", "X"
    )
    assert "other" not in others.body.decode()
    assert across.status == 403
    assert admin.status == 200
    assert admin.json()["callSid"] == "CA9"
    assert bad.status == 400
    assert bad.json()["field"] == "callSid"


async def test_summary_numbers_worked_out_by_hand(fresh_database: str, tmp_path: Path) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        keys = await seeded(engine, fresh_database)
        summary = await get(engine, f"/analytics/project/acme?{WINDOW}", keys["acme"])
        empty = await get(engine, "/analytics/project/other?from=2026-11-01&to=2026-11-02")
    assert summary.status == 200, summary.body
    body = summary.json()
    assert body["from"] == "2026-11-10T06:00:00+00:00"  # local midnight in Chicago
    assert body["to"] == "2026-11-13T06:00:00+00:00"
    assert (body["totalCalls"], body["completed"], body["missed"], body["failed"],
            body["active"]) == (5, 2, 1, 1, 1)  # fmt: skip
    assert body["callsByStatus"] == {"completed": 2, "missed": 1, "failed": 1, "active": 1}
    assert body["callsByIntent"] == {"emergency": 1, "routine": 2, "unknown": 2}
    assert body["averageDurationS"] == 52.5  # (60 + 30 + 0 + 120) / 4 ended calls
    assert body["errorRate"] == 0.25  # 1 failed of 4 ended
    assert body["totalCostUsd"] == 0.35
    assert body["averageCostUsd"] == 0.0875  # 0.35 over the 4 calls with a cost
    assert body["timeToFirstAudioMs"] == {"p50": 600.0, "p95": 780.0}  # of 400, 600, 800
    assert body["functionCalls"] == {"total": 3, "failed": 2, "failureRate": 0.6667}
    assert body["phoneNumbers"] == [
        {"number": "+15550002222", "system": "openai"},
        {"number": "+15550003333", "system": "vapi"},
    ]
    assert body["minutes"] == 3.5  # (60 + 30 + 0 + 120) s of ended calls
    assert body["costPerMinuteUsd"] == 0.1  # 0.35 USD over 3.5 minutes
    assert body["comparisonRatePerMinuteUsd"] is None  # COMPARISON_RATE_PER_MIN_USD unset
    assert returned_fields(body) == documented_fields("smith-plumbing?from=")
    # No call here has a system recorded: all are read as this engine's (docs/api.md).
    assert body["bySystem"] == {
        "openai": {"calls": 5, "completed": 2, "missed": 1, "failed": 1, "active": 1,
                   "minutes": 3.5, "costUsd": 0.35, "costPerMinuteUsd": 0.1,
                   "averageDurationS": 52.5},
        "vapi": {"calls": 0, "completed": 0, "missed": 0, "failed": 0, "active": 0,
                 "minutes": 0.0, "costUsd": 0.0, "costPerMinuteUsd": None,
                 "averageDurationS": None},
    }  # fmt: skip
    assert body["daily"] == [
        {"date": "2026-11-10", "total": 3, "completed": 1, "missed": 1, "failed": 1,
         "active": 0, "costUsd": 0.15},  # CA3 at 23:30 local counts on the 10th
        {"date": "2026-11-11", "total": 0, "completed": 0, "missed": 0, "failed": 0,
         "active": 0, "costUsd": 0.0},  # an empty day is present
        {"date": "2026-11-12", "total": 2, "completed": 1, "missed": 0, "failed": 0,
         "active": 1, "costUsd": 0.2},
    ]  # fmt: skip
    assert empty.status == 200
    nothing = empty.json()
    assert (nothing["totalCalls"], nothing["errorRate"], nothing["averageDurationS"]) == (
        0, 0.0, None
    )  # fmt: skip
    assert nothing["timeToFirstAudioMs"] == {"p50": None, "p95": None}
    assert [day["total"] for day in nothing["daily"]] == [0, 0]


async def test_statistics_by_local_day_zero_filled(fresh_database: str, tmp_path: Path) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        await seeded(engine, fresh_database)
        response = await get(engine, "/analytics/project/acme/statistics?start=2026-11-10"
                                      "&end=2026-11-12")  # fmt: skip
        default = await get(engine, "/analytics/project/acme/statistics")
    assert response.status == 200, response.body
    days = response.json()["days"]
    assert [day["date"] for day in days] == ["2026-11-10", "2026-11-11", "2026-11-12"]
    split = days[0].pop("bySystem")
    assert split["openai"] == {k: v for k, v in days[0].items() if k != "date"}  # all openai
    assert split["vapi"]["total"] == 0
    assert days[0] == {
        "date": "2026-11-10", "total": 3,
        "byStatus": {"completed": 1, "missed": 1, "failed": 1, "active": 0},
        "byIntent": {"emergency": 1, "routine": 1, "unknown": 1},
        "durationTotalS": 90.0, "durationAverageS": 30.0, "costUsd": 0.15,
    }  # fmt: skip
    assert days[1]["total"] == 0
    assert days[1]["durationAverageS"] is None
    assert days[2]["durationTotalS"] == 120.0  # the active call has no duration yet
    assert days[2]["byStatus"]["active"] == 1
    assert len(default.json()["days"]) == 30  # the last 30 local days by default


async def test_recent_pages_have_no_gaps_or_repeats(fresh_database: str, tmp_path: Path) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        await seeded(engine, fresh_database)
        pages: list[dict[str, Any]] = []
        cursor = ""
        while True:
            page = await get(engine, f"/analytics/project/acme/recent?limit=3{cursor}")
            assert page.status == 200, page.body
            pages.append(page.json())
            if page.json()["nextCursor"] is None:
                break
            cursor = f"&cursor={page.json()['nextCursor']}"
        default = await get(engine, "/analytics/project/acme/recent")
    sids = [call["callSid"] for page in pages for call in page["calls"]]
    # Newest first; the tie at the same instant is broken by CallSid, and never split.
    assert sids == ["CA5", "CA4", "CA3", "CA2", "CA1", "CA6", "CA8", "CA7"]
    assert [len(page["calls"]) for page in pages] == [3, 3, 2]
    first = pages[0]["calls"][0]
    assert first["status"] == "active"
    assert first["from"] == "+15550001111"
    assert first["transcriptPreview"] == (
        "assistant: Thanks for calling Acme. / caller: My tap drips. / assistant: I can book a "
        "visit."
    )
    assert pages[0]["calls"][2]["costUsd"] == 0.0  # CA3, missed
    assert pages[0]["calls"][2]["durationS"] == 0.0
    assert len(default.json()["calls"]) == 8  # default limit 20
    assert returned_fields(pages[0]) == documented_fields("smith-plumbing/recent")


async def test_access_matrix(fresh_database: str, tmp_path: Path) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        keys = await seeded(engine, fresh_database)
        acme, path = keys["acme"], "/analytics/project"
        results = {
            "none": await get(engine, f"{path}/acme", None),
            "wrong": await get(engine, f"{path}/acme", "ahk_nope_nope"),
            "own": await get(engine, f"{path}/acme/recent", acme),
            "other": await get(engine, f"{path}/other", acme),
            "other-recent": await get(engine, f"{path}/other/recent", acme),
            "other-days": await get(engine, f"{path}/other/statistics", acme),
            "other-missing": await get(engine, f"{path}/ghost", acme),
            "admin-other": await get(engine, f"{path}/other/statistics"),
            "admin-missing": await get(engine, f"{path}/ghost"),
        }
        revoke = f"{engine.bound_urls[0]}/admin/api-keys/{keys['acme-id']}"
        assert (await http_request("DELETE", revoke, token=ADMIN_TOKEN)).status in (200, 204)
        results["revoked"] = await get(engine, f"{path}/acme", acme)
        results["post"] = await http_request(
            "POST", f"{engine.bound_urls[0]}{path}/acme", json={}, token=ADMIN_TOKEN
        )
    statuses = {name: response.status for name, response in results.items()}
    assert statuses == {
        "none": 401, "wrong": 401, "own": 200, "other": 403, "other-recent": 403,
        "other-days": 403, "other-missing": 403,
        "admin-other": 200, "admin-missing": 404, "revoked": 401, "post": 405,
    }  # fmt: skip
    assert results["none"].headers["www-authenticate"].startswith("Bearer")
    assert acme not in results["other"].body.decode()
    # The key's own recent calls are its project's only (CA9 is the other project's).
    own_calls = {call["callSid"] for call in results["own"].json()["calls"]}
    assert own_calls == {f"CA{n}" for n in range(1, 9)}


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("?from=2026-13-01", "from", "is not a calendar date"),
        ("?from=yesterday", "from", "expected a date YYYY-MM-DD or a timestamp"),
        ("?from=2026-11-10T00:00:00", "from", "a timestamp needs an offset"),
        ("?from=2026-11-12&to=2026-11-10", "to", "must be after from"),
        ("?from=2025-01-01&to=2026-01-02", "to", "the range is over 366 days"),
        ("?from=0001-01-01", "from", "must be from 2000-01-01 to "),
        ("?from=0001-01-01T00:00:00Z", "from", "must be from 2000-01-01T00:00:00Z to "),
        ("?from=2026-01-01&to=9999-12-31T23:59:59-05:00", "to", "must be from 2000-01-01"),
        ("/statistics?start=1999-12-31", "start", "must be from 2000-01-01 to "),
        ("/recent?limit=0", "limit", "expected an integer from 1 to 100"),
        ("/recent?limit=101", "limit", "expected an integer from 1 to 100"),
        ("/recent?limit=ten", "limit", "expected an integer from 1 to 100"),
        ("/recent?cursor=bm90LWEtY3Vyc29y", "cursor", "not a cursor this API returned"),
        ("/statistics?start=2026-11-10T00:00:00Z", "start", "expected a date YYYY-MM-DD"),
        ("/statistics?start=2026-11-12&end=2026-11-01", "end", "must be after start"),
    ],
)
async def test_bad_parameters_get_400_naming_the_field(
    fresh_database: str, tmp_path: Path, query: str, field: str, message: str
) -> None:
    async with running_engine(fresh_database, tmp_path) as engine:
        await seeded(engine, fresh_database)
        response = await get(engine, f"/analytics/project/acme{query}")
    assert response.status == 400, response.body
    assert response.json()["field"] == field
    assert message in response.json()["error"]
