"""Drives the dashboard in headless Chromium for tests/test_dashboard.py, in its own
process (Playwright's event loop cannot share the test's). Prints what the page shows as
JSON: ``python -m tests.dashboard_browser URL KEY SCREENSHOT``."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def browse(url: str, key: str, screenshot: Path) -> dict[str, Any]:
    """Sign in and read the page, in a worker thread (Playwright's sync API)."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/dashboard")
        page.fill("#token", key)
        page.fill("#project-id", "smith-plumbing")
        page.click("button[type=submit]")
        page.wait_for_selector("#dashboard:not([hidden])", timeout=10_000)
        page.wait_for_function("document.querySelectorAll('#recent tr').length > 0")
        page.wait_for_load_state("networkidle")  # the redraw at full width
        shown = {
            "sign_in_hidden": page.is_hidden("#signin-view"),
            "period_calls": page.text_content("#period-calls"),
            "today_calls": page.text_content("#today-calls"),
            "live_calls": page.text_content("#live-calls"),
            "error_rate": page.text_content("#period-error-rate"),
            "numbers": page.eval_on_selector_all(
                "#numbers tr", "rows => rows.map(r => r.innerText)"
            ),
            "recent": page.eval_on_selector_all("#recent tr", "rows => rows.length"),
            "today_by_status": page.eval_on_selector_all(
                "#today-by-status tr", "rows => rows.map(r => r.innerText)"
            ),
            "bars": page.eval_on_selector_all("#chart-calls rect", "bars => bars.length"),
            "comparison": page.text_content("#cost-comparison"),
        }
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    shown["errors"] = errors
    return shown


if __name__ == "__main__":
    print(json.dumps(browse(sys.argv[1], sys.argv[2], Path(sys.argv[3]))))
