"""The report in a real browser: headless Chromium driven by Playwright (no browser download)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "reports" / "breastmnist-example" / "report.html"

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    if CHROMIUM is None:
        pytest.skip("no Chromium binary on PATH (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


def open_page(browser, width: int):
    """A page of ``width`` CSS pixels that records console errors and every request that is not the file itself."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.problems, page.requests = [], []
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("request", lambda r: r.url.startswith(("file:", "data:")) or page.requests.append(r.url))
    return page


@pytest.fixture
def page(browser):
    page = open_page(browser, 1366)
    yield page
    page.close()


@pytest.mark.slow
def test_report_loads_renders_images_and_sorts(page, numbers_dir, tmp_path):
    page.goto((numbers_dir / "report.html").resolve().as_uri())
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


def report_page(which: str, request) -> Path:
    if which == "breastmnist-example":
        return EXAMPLE  # the committed page of a real run (re-rendered with every change to the report)
    out, _ = request.getfixturevalue("smoke_dir")
    return out / "report.html"


@pytest.mark.slow
@pytest.mark.parametrize("width", [390, 1400])
@pytest.mark.parametrize("which", ["smoke", "breastmnist-example"])
def test_the_page_fits_phones_and_wide_screens_with_every_compare_view(browser, request, which, width, tmp_path):
    page = open_page(browser, width)
    try:
        page.goto(report_page(which, request).resolve().as_uri())
        page.wait_for_load_state("load")
        assert page.problems == [] and page.requests == [], (page.problems, page.requests)
        overflow = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert overflow[0] <= overflow[1], f"{which} at {width}px is {overflow[0]}px wide"

        summary = page.inner_text("#summary")
        assert "reference: baseline" in summary
        assert "fold cross-validation × 1 seed" in summary, summary
        for alt in ("ROC curves of every variant overlaid", "confusion matrices of every variant"):
            shown = page.eval_on_selector_all(
                f'img[alt^="{alt}"]',
                "els => els.map(e => [e.complete && e.naturalWidth > 0, e.getBoundingClientRect().right])",
            )
            assert shown and all(ok and right <= width for ok, right in shown), (alt, shown)
        # the images (montage, pipelines, Grad-CAM, near-copies; errors and flips inside the folded sections) render
        thumbs = page.eval_on_selector_all("img.thumb", "els => els.map(e => e.complete && e.naturalWidth > 0)")
        assert len(thumbs) > 50 and all(thumbs), f"{sum(thumbs)} of {len(thumbs)} thumbnails rendered"
        for section in ("#images", "#duplicates", "#pipelines", "#looks"):
            assert page.locator(section).count() == 1, section
        details = page.eval_on_selector_all("section.variant details", "els => els.map(e => e.open)")
        assert details and not any(details), "per-variant detail starts folded"

        shot = tmp_path / f"{which}-{width}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        keep = os.environ.get("OCTBENCH_SCREENSHOT_DIR")
        if keep:
            shutil.copy(shot, os.path.join(keep, shot.name))
    finally:
        page.close()
