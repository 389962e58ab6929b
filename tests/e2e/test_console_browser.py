"""The console in a real browser: Debian's Chromium, headless, driven by Playwright (never
Playwright's own browser builds). Log in, see an alert arrive live after an ingest, acknowledge
and close it, open a timeline from it, search, log out; a script stored in an event never runs.

Screenshots of each page go to ~/.cache/containertrail/screenshots/ (CTRAIL_SCREENSHOTS
overrides), outside the repository, for a reviewer to look at."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

from console_scenario import PASSWORD, add_users, exec_into, incident, ingest, serve, write_lines
from ctrail.console.app import ConsoleServer

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("CTRAIL_SCREENSHOTS")
             or Path.home() / ".cache" / "containertrail" / "screenshots")


@pytest.fixture
def console(tmp_path: Path) -> Iterator[ConsoleServer]:
    start = datetime.now(timezone.utc) - timedelta(minutes=30)
    first = [line for line in incident(start) if "exec-shop" not in line["auditID"]]
    ingest(tmp_path / "data", write_lines(tmp_path / "audit.log", first))
    add_users(tmp_path / "data")
    server = serve(tmp_path / "data", live_poll_secs=0.3)
    yield server
    server.stop()


def test_log_in_triage_a_live_alert_follow_its_timeline_search_and_log_out(
        console: ConsoleServer, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: scripts/test installs it (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(console.url + "/alerts")
            expect(page).to_have_url(console.url + "/login")
            page.fill("#user", "admin")
            page.fill("#password", "not the password")
            page.click("#login-submit")
            expect(page.locator("#login-error")).to_contain_text("wrong user name or password")
            page.fill("#user", "admin")
            page.fill("#password", PASSWORD)
            page.screenshot(path=SHOTS / "01-login.png")
            page.click("#login-submit")
            expect(page).to_have_url(console.url + "/alerts")
            expect(page.locator("#live-status")).to_have_text("Live: connected")
            rows = page.locator("#alerts tbody tr")
            expect(rows).to_have_count(2)

            # An exec into a shop pod, ingested now, appears without a reload.
            late = exec_into(datetime.now(timezone.utc), "mallory", "payments", "checkout-1",
                             tag="late")
            ingest(console.db.path.parent, write_lines(tmp_path / "late.log", [late]))
            expect(rows).to_have_count(3, timeout=20_000)
            new_row = page.locator("#alerts tbody tr.new")
            expect(new_row).to_contain_text("mallory")
            page.screenshot(path=SHOTS / "02-alert-arrived-live.png")

            new_row.locator("a.open").click()
            expect(page.locator("#alert-status")).to_have_text("open")
            page.click("#ack")
            expect(page.locator("#alert-status")).to_have_text("acknowledged")
            page.fill("#note", "mallory is not on call")
            page.click("#add-note")
            expect(page.locator("#history")).to_contain_text("mallory is not on call")
            page.select_option("#reason", "true_positive")
            page.click("#close")
            expect(page.locator("#alert-status")).to_have_text("closed")
            expect(page.locator("#history li")).to_have_count(3)
            page.screenshot(path=SHOTS / "03-alert-closed.png")

            page.click("#timeline-pod")
            expect(page.locator("#timeline-events tbody tr").first).to_be_visible()
            expect(page.locator("#timeline-events")).to_contain_text("mallory")
            expect(page.locator("#subject")).to_contain_text("checkout-1")
            graph = page.locator("#entity-graph")
            expect(graph).to_contain_text("deployed by")
            expect(graph.locator('a[href="/timeline?kind=user&value=alice"]')).to_have_count(1)
            page.screenshot(path=SHOTS / "04-timeline.png", full_page=True)

            page.click("#nav-search")
            page.fill("#q", "kubernetes.namespace:shop")
            page.click("#search-submit")
            expect(page.locator("#results tbody tr")).to_have_count(1)
            # The user name and pod name hold scripts: shown as text, never run.
            expect(page.locator("#results")).to_contain_text("<script>window.__xss='user'")
            page.locator("#results a").first.click()
            expect(page.locator("#fields")).to_contain_text("<script>window.__xss='label'")
            page.screenshot(path=SHOTS / "05-event.png", full_page=True)
            page.go_back()
            page.screenshot(path=SHOTS / "06-search.png", full_page=True)
            assert page.evaluate("window.__xss") is None

            page.goto(console.url + "/alerts")
            expect(page.locator("#alerts")).to_contain_text("closed")
            page.click("#logout")
            expect(page).to_have_url(console.url + "/login")
            page.goto(console.url + "/alerts")
            expect(page).to_have_url(console.url + "/login")
            page.screenshot(path=SHOTS / "07-logged-out.png")
            assert errors == []
        finally:
            browser.close()
