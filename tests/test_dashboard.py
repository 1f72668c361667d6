"""The dashboard in a real browser: headless Chromium (the Debian package, driven by
Playwright's Python package with ``executable_path``; Playwright never downloads a
browser) loads ``/dashboard`` from an engine that has answered simulated calls, signs in
with a project's API key, and shows the numbers the analytics API returns; no console
errors; a screenshot is saved (``AFTERHOURS_DASHBOARD_SCREENSHOT`` names where)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import trio

from engine.simulator.caller import CallerConfig, place_call
from tests.dashboard_browser import CHROMIUM
from tests.helpers import ADMIN_TOKEN, PUBLIC_URL, TWILIO_AUTH_TOKEN, http_request, running_engine
from tests.test_simulated_caller import final_rows
from tests.test_twilio_webhooks import ANSWERED, ELSEWHERE, setup_project


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")
async def test_the_dashboard_shows_what_the_analytics_api_returns(
    fresh_database: str, tmp_path: Path
) -> None:
    screenshot = Path(os.environ.get("AFTERHOURS_DASHBOARD_SCREENSHOT", tmp_path / "dash.png"))
    async with running_engine(
        fresh_database, tmp_path, MEDIA_PORT="0", COMPARISON_RATE_PER_MIN_USD="0.12"
    ) as engine:
        base = engine.bound_urls[0]
        await setup_project(engine)
        config = CallerConfig(base, PUBLIC_URL, TWILIO_AUTH_TOKEN, ANSWERED)
        with trio.fail_after(60):
            for _ in range(2):
                await place_call(config, "quick")
            await final_rows(fresh_database, expected=2)
        created = await http_request(
            "POST",
            f"{base}/admin/projects/smith-plumbing/api-keys",
            json={"name": "dash"},
            token=ADMIN_TOKEN,
        )
        key = created.json()["key"]
        summary = await http_request("GET", f"{base}/analytics/project/smith-plumbing", token=key)
        # Its own process: Playwright's event loop cannot share ours (trio-asyncio).
        done = await trio.run_process(
            [sys.executable, "-m", "tests.dashboard_browser", base, key, str(screenshot)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=Path(__file__).parents[1],
        )
        assert done.returncode == 0, done.stderr.decode()
        shown = json.loads(done.stdout)
    api = summary.json()
    assert shown["errors"] == []
    assert shown["sign_in_hidden"] is True
    assert shown["period_calls"] == str(api["totalCalls"]) == "2"
    assert shown["today_calls"] == "2"
    assert shown["live_calls"] == "0"
    assert shown["error_rate"] == "0.0 %"
    assert shown["numbers"] == [f"{ELSEWHERE}\tvapi", f"{ANSWERED}\topenai (this engine)"]
    assert shown["recent"] == 2
    assert shown["today_by_status"] == ["completed\t2", "missed\t0", "failed\t0", "active\t0"]
    assert shown["bars"] == 30  # a bar per day of the last 30
    assert "$0.1200 / min" in (shown["comparison"] or "")
    assert screenshot.stat().st_size > 10_000
