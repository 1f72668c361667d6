"""Drives the dashboard in headless Chromium for tests/test_dashboard.py, in its own
process (Playwright's event loop cannot share the test's). Prints what the page shows as
JSON: ``python -m tests.dashboard_browser CONFIG_JSON`` (see ``browse`` for the keys)."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WAIT_MS = 10_000
ROWS = "rows => rows.map(r => r.innerText)"


def browse(config: dict[str, Any]) -> dict[str, Any]:
    """``config``: url, admin (token), key (a project key), project, quiet_project (one
    with no calls), openai_sid, vapi_sid, moved (a vapi number to move here), kept (an
    openai number), added (a number to add, move to Vapi and release), screenshot."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = _page(browser, errors, 1280, 1100)
        shown: dict[str, Any] = {"admin": _as_admin(page, config)}
        page.set_viewport_size({"width": 375, "height": 800})  # a phone
        shown["phone"] = _phone(page, config)
        page.set_viewport_size({"width": 1280, "height": 1100})
        page.reload()  # signs in again from the tab's sessionStorage
        _ready(page)
        page.screenshot(path=config["screenshot"], full_page=True)
        shown["key"] = _as_key(_page(browser, errors, 1280, 1100), config)
        browser.close()
    shown["errors"] = errors
    return shown


def _page(browser: Browser, errors: list[str], width: int, height: int) -> Page:
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page


def _sign_in(page: Page, config: dict[str, Any], token: str, project: str) -> None:
    page.goto(f"{config['url']}/dashboard")
    page.fill("#token", token)
    page.fill("#project-id", project)
    page.click("#signin button[type=submit]")
    _ready(page)


def _ready(page: Page) -> None:
    try:
        page.wait_for_selector("#dashboard:not([hidden])", timeout=WAIT_MS)
    except Exception as exc:
        said = page.text_content("#signin-error"), page.text_content("#load-error")
        raise AssertionError(f"not signed in: {said}") from exc
    page.wait_for_function("() => document.querySelectorAll('#recent tr').length > 0")
    page.wait_for_load_state("networkidle")  # the redraw at full width


def _number_row(number: str) -> str:
    return f'#numbers tr[data-number="{number}"]'


def _confirm(page: Page, value: str | None = None) -> dict[str, Any]:
    """What the confirmation asks; answers it (``value`` typed first when given)."""
    page.wait_for_selector("#confirm[open]", timeout=WAIT_MS)
    asked = {
        "text": page.text_content("#confirm-text"),
        "asks_vapi_id": page.is_visible("#confirm-field"),
    }
    if value is not None:
        page.click("#confirm-ok")  # empty first: refused in the dialog, nothing sent
        asked["empty_refused"] = page.text_content("#confirm-error")
        page.fill("#confirm-input", value)
    page.click("#confirm-ok")
    return asked


def _status_after(page: Page, action: Callable[[], object]) -> str:
    """The numbers' status line once ``action`` has changed something (the page says so
    once the table is redrawn)."""
    page.evaluate("() => { document.getElementById('numbers-status').textContent = '' }")
    action()
    page.wait_for_function("() => document.getElementById('numbers-status').textContent !== ''")
    return page.text_content("#numbers-status") or ""


def _row(page: Page, number: str) -> str:
    """A number's row as shown (cells apart by tabs)."""
    shown: str = page.inner_text(_number_row(number))
    return shown


def _as_admin(page: Page, config: dict[str, Any]) -> dict[str, Any]:
    _sign_in(page, config, config["admin"], "")
    shown: dict[str, Any] = {
        "comparison": page.eval_on_selector_all("#comparison-rows tr", ROWS),
        "comparison_note": page.text_content("#comparison-note"),
        "function_failure_rate": page.text_content("#function-failure-rate"),
        "function_failures": page.text_content("#function-failures"),
        "period_calls": page.text_content("#period-calls"),
        "numbers_before": page.eval_on_selector_all("#numbers tr", ROWS),
        "bars": page.eval_on_selector_all("#chart-calls rect.vapi", "bars => bars.length"),
        "started_header": page.text_content("#recent-started"),
    }
    moved, kept, added = config["moved"], config["kept"], config["added"]

    def change(number: str, action: str, key: str, value: str | None = None) -> str:
        def click_and_confirm() -> None:
            page.click(f"{_number_row(number)} button[data-action={action}]")
            shown[key] = _confirm(page, value)

        return _status_after(page, click_and_confirm)

    # Cancelled: nothing changes.
    page.click(f"{_number_row(kept)} button[data-action=toggle]")
    page.wait_for_selector("#confirm[open]", timeout=WAIT_MS)
    page.click("#confirm-cancel")
    shown["kept_after_cancel"] = _row(page, kept)
    # A Vapi number moved back here.
    shown["moved_status"] = change(moved, "toggle", "moved_asked")
    shown["moved_row"] = _row(page, moved)
    # A new number: added here, moved to Vapi (its Vapi id asked for), released.
    page.fill("#add-number-value", added)
    shown["added_status"] = _status_after(page, lambda: page.click("#add-number button"))
    shown["added_to_vapi_status"] = change(added, "toggle", "added_asked", "pn-new-1")
    shown["added_row"] = _row(page, added)
    shown["released_status"] = change(added, "release", "release_asked")
    shown["numbers_after"] = page.eval_on_selector_all("#numbers tr", ROWS)
    shown["pages"] = _pages(page)
    shown["openai_call"] = _open_call(page, config["openai_sid"])
    shown["vapi_call"] = _open_call(page, config["vapi_sid"])
    shown["vapi_started"] = page.text_content(f'#recent tr[data-sid="{config["vapi_sid"]}"] td')
    # Another project, with no Vapi call: the configured rate stands in, labelled.
    page.select_option("#project", config["quiet_project"])
    page.wait_for_function(  # its page drawn: no call at all
        "() => document.getElementById('period-calls').textContent === '0'"
    )
    shown["quiet_comparison"] = page.eval_on_selector_all("#comparison-rows tr", ROWS)
    page.select_option("#project", config["project"])
    page.wait_for_function("() => document.getElementById('period-calls').textContent !== '0'")
    return shown


def _sids(page: Page) -> list[str]:
    sids: list[str] = page.eval_on_selector_all(
        "#recent tr", "rows => rows.map(r => r.dataset.sid)"
    )
    return sids


def _pages(page: Page) -> dict[str, Any]:
    first = _sids(page)
    page.click("#older")
    page.wait_for_function("() => document.getElementById('page').textContent === 'page 2'")
    second = _sids(page)
    newer_enabled = page.is_enabled("#newer")
    page.click("#newer")
    page.wait_for_function("() => document.getElementById('page').textContent === 'page 1'")
    return {"first": first, "second": second, "back": _sids(page), "newer_enabled": newer_enabled}


def _open_call(page: Page, call_sid: str) -> dict[str, Any]:
    page.click(f'#recent tr[data-sid="{call_sid}"] button')
    page.wait_for_selector("#call-view[open]", timeout=WAIT_MS)
    page.wait_for_function(
        "sid => document.getElementById('call-title').textContent === 'Call ' + sid", arg=call_sid
    )
    shown = {
        "facts": page.inner_text("#call-facts"),
        "summary": page.text_content("#call-summary"),
        "transcript": page.eval_on_selector_all("#call-transcript li", ROWS),
        "functions": page.eval_on_selector_all("#call-functions tr", ROWS),
        "images": page.eval_on_selector_all("#call-view img", "images => images.length"),
        "injected": page.evaluate("() => window.__xss === undefined ? null : window.__xss"),
    }
    page.click("#call-close")
    return shown


def _phone(page: Page, config: dict[str, Any]) -> dict[str, Any]:
    page.wait_for_timeout(200)  # the layout at the new width
    widths = page.evaluate(
        "() => ({page: document.documentElement.scrollWidth,"
        " view: document.documentElement.clientWidth})"
    )
    page.click(f'#recent tr[data-sid="{config["openai_sid"]}"] button')
    page.wait_for_selector("#call-view[open]", timeout=WAIT_MS)
    dialog = page.evaluate(
        "() => document.getElementById('call-view').getBoundingClientRect().right"
    )
    page.click("#call-close")
    return {"widths": widths, "dialog_right": dialog}


def _as_key(page: Page, config: dict[str, Any]) -> dict[str, Any]:
    _sign_in(page, config, config["key"], config["project"])
    return {
        "numbers": page.eval_on_selector_all("#numbers tr", ROWS),
        "buttons": page.eval_on_selector_all("#numbers button", "buttons => buttons.length"),
        "add_form_visible": page.is_visible("#add-number"),
        "project_choice_visible": page.is_visible("#project"),
        "call": _open_call(page, config["openai_sid"]),
    }


if __name__ == "__main__":
    print(json.dumps(browse(json.loads(sys.argv[1]))))
