"""Projects with an on-call number where live calls cannot be transferred (a real model,
no Twilio account): one ERROR line at start-up naming them, a config warning in
``/health/detailed`` that follows the projects, and a warning from ``project apply``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tests.helpers import ADMIN_TOKEN, http_request, running_engine
from tests.test_admin_cli import cli

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

# A real model's key (never used: no call is placed) and no TWILIO_ACCOUNT_SID.
REAL_MODEL = {"OPENAI_API_KEY": "sk-test-never-used", "OPENAI_REALTIME_URL": "ws://127.0.0.1:9"}
ON_CALL_PROJECT = {
    "id": "smith-plumbing",
    "name": "Smith Plumbing",
    "timezone": "America/Chicago",
    "onCallNumber": "+15551234567",
}


async def test_projects_that_cannot_be_transferred_are_named_at_start_and_in_health(
    fresh_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_engine(fresh_database, tmp_path) as engine:  # simulators: no warning
        url = engine.bound_urls[0]
        created = await http_request(
            "POST", f"{url}/admin/projects", json=ON_CALL_PROJECT, token=ADMIN_TOKEN
        )
        assert created.status == 201, created.body
        simulated = (await http_request("GET", f"{url}/health/detailed")).json()
    assert simulated["configWarnings"] == []
    assert not [
        r for r in caplog.records if r.levelno >= logging.WARNING and "transfer" in r.getMessage()
    ]

    caplog.clear()
    async with running_engine(fresh_database, tmp_path, **REAL_MODEL) as engine:
        url = engine.bound_urls[0]
        started = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        health = (await http_request("GET", f"{url}/health/detailed")).json()
        deleted = await http_request(
            "DELETE", f"{url}/admin/projects/smith-plumbing", token=ADMIN_TOKEN
        )
        assert deleted.status == 204
        after = (await http_request("GET", f"{url}/health/detailed")).json()
    (line,) = [m for m in started if "cannot be transferred" in m]
    assert "smith-plumbing" in line
    assert "TWILIO_ACCOUNT_SID" in line
    assert health["status"] == "healthy"  # warned, not refused: callers are still answered
    assert health["services"]["twilio"] == {"status": "not_configured"}
    (warning,) = health["configWarnings"]
    assert warning["code"] == "transfers_unavailable"
    assert warning["projects"] == ["smith-plumbing"]
    assert warning["message"] == line
    assert after["configWarnings"] == []  # it follows the projects as they change


async def test_project_apply_warns_about_an_on_call_number_it_cannot_reach(
    fresh_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with_on_call = tmp_path / "with.toml"
    with_on_call.write_text(
        'id = "smith-plumbing"\nname = "Smith"\ntimezone = "UTC"\non_call_number = "+15551234567"\n'
    )
    without = tmp_path / "without.toml"
    without.write_text('id = "jones-electric"\nname = "Jones"\ntimezone = "UTC"\n')
    caplog.set_level(logging.WARNING, logger="afterhours.admin")
    async with running_engine(fresh_database, tmp_path, **REAL_MODEL) as engine:
        url = engine.bound_urls[0]
        warned = await cli(url, "project", "apply", str(with_on_call))
        quiet = await cli(url, "project", "apply", str(without))
    assert warned[0] == 0  # applied all the same
    assert warned[1] == "created project smith-plumbing\n"
    assert warned[2].startswith("afterhours: warning: live calls cannot be transferred")
    assert "smith-plumbing" in warned[2]
    assert quiet == (0, "created project jones-electric\n", "")
    logged = [r.getMessage() for r in caplog.records if r.name == "afterhours.admin"]
    assert len(logged) == 1
    assert logged[0].startswith("project smith-plumbing has an on-call number")
