"""The report in a real browser: headless Chromium driven by Playwright (no browser download)."""

from __future__ import annotations

import os
import shutil

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    if CHROMIUM is None:
        pytest.skip("no Chromium binary on PATH (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.problems = []
        page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
        page.on("pageerror", lambda e: page.problems.append(str(e)))
        yield page
        browser.close()


def test_report_loads_renders_images_and_sorts(page, run_dir, tmp_path):
    page.goto((run_dir / "report.html").resolve().as_uri())
    page.wait_for_load_state("load")
    assert page.problems == [], f"console errors: {page.problems}"

    images = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth > 0)")
    assert len(images) >= 16 and all(images), "every image must render"

    def column(index):
        return page.eval_on_selector_all(
            "#leaderboard-table tbody tr", f"rows => rows.map(r => r.cells[{index}].dataset.value)"
        )

    before = column(0)
    page.click("#leaderboard-table th:nth-child(2)")  # CV accuracy, descending first
    descending = [float(v) for v in column(1)]
    assert descending == sorted(descending, reverse=True)
    page.click("#leaderboard-table th:nth-child(2)")
    ascending = [float(v) for v in column(1)]
    assert ascending == sorted(ascending)
    page.click("#leaderboard-table th:nth-child(1)")
    assert sorted(column(0), reverse=True) == column(0) and sorted(before) == sorted(column(0))

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    keep = os.environ.get("OCTBENCH_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, os.path.join(keep, "report.png"))
