"""The teams' pages in a real browser: Playwright drives Debian's Chromium (/usr/bin/chromium; Playwright's own
browser download is never used) against `churnops serve` on loopback, signs in, filters, opens a customer, exports,
and reads what a person sees. Screenshots go to CHURNOPS_PAGES_SCREENSHOTS (default: the test's tmp folder); the
ones in docs/results/pages/ were written this way."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest

from tests.serving.conftest import start_server
from tests.serving.pages_platform import PAGES_API_KEY, platform_with_records

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)"),
]


@pytest.fixture(scope="module")
def server(trained_platform, platform_database_url, tmp_path_factory):
    settings = platform_with_records(trained_platform, platform_database_url, tmp_path_factory.mktemp("pages") / "home")
    env = {"CHURNOPS_DATABASE_URL": platform_database_url, "CHURNOPS_SERVING__API_KEY": PAGES_API_KEY}
    running = start_server(settings, tmp_path_factory.mktemp("pages-server"), env=env)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("CHURNOPS_PAGES_SCREENSHOTS") or tmp_path_factory.mktemp("pages-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sign_in(page, server) -> None:
    page.goto(f"{server.base_url}/pages/list")
    page.get_by_label("API key").fill(PAGES_API_KEY)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/pages/list")


def column_texts(page, header: str) -> list[str]:
    """The cells of the list's column headed `header`, found by its heading (columns move: a list with value
    columns shows four more)."""
    headings = [text.strip() for text in page.locator("thead th").all_inner_texts()]
    return page.locator(f"tbody tr td:nth-child({headings.index(header) + 1})").all_inner_texts()


def test_a_browser_without_the_key_sees_only_the_sign_in_form(page, server, screenshots) -> None:
    response = page.goto(f"{server.base_url}/pages/list")
    assert response.status == 401
    page.screenshot(path=str(screenshots / "sign-in.png"))
    assert page.get_by_label("API key").is_visible()
    assert page.locator("table").count() == 0
    page.get_by_label("API key").fill("wrong key")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text().startswith("API key")


def test_filter_the_list_open_a_customer_and_read_the_reasons(page, server, screenshots) -> None:
    sign_in(page, server)
    everyone = int(page.locator("#matches").inner_text().replace(",", ""))
    # Keyboard only: tick the band, move on with Tab, submit with Enter.
    page.get_by_label("high", exact=True).focus()
    page.keyboard.press("Space")
    page.get_by_label("Plan").select_option("premium")
    page.get_by_label("Lowest score").fill("0.1")
    page.get_by_label("Lowest score").press("Enter")
    page.wait_for_url("**band=high**")
    page.screenshot(path=str(screenshots / "list-filtered.png"), full_page=True)
    filtered = int(page.locator("#matches").inner_text().replace(",", ""))
    assert 0 < filtered < everyone
    bands = page.locator("tbody td.band").all_inner_texts()
    plans = column_texts(page, "Plan")
    assert set(bands) == {"high"} and set(plans) == {"premium"}
    first_customer = page.locator("tbody tr td:nth-child(2) a").first.inner_text()
    page.get_by_role("link", name=first_customer, exact=True).click()
    page.wait_for_url(f"**/pages/customers/{first_customer}")
    page.screenshot(path=str(screenshots / "customer.png"), full_page=True)
    assert page.get_by_role("heading", name=f"Customer {first_customer}").is_visible()
    reasons = page.locator("ol.reasons li").all_inner_texts()
    assert reasons and all(text.endswith("the risk.") for text in reasons)
    assert page.get_by_role("heading", name="Score history").is_visible()


def test_export_downloads_the_selection_under_the_budget(page, server, screenshots) -> None:
    sign_in(page, server)
    page.get_by_label("Customers to contact").fill("30")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**budget_count=30**")
    page.screenshot(path=str(screenshots / "list-budget.png"))
    assert page.locator("#selected").inner_text() == "30"
    shown = page.locator("tbody tr td:nth-child(2)").all_inner_texts()
    with page.expect_download() as download_info:
        page.locator("#export").click()
    rows = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text(encoding="utf-8-sig"))))
    assert [row["customer_id"] for row in rows] == shown and len(rows) == 30


def test_model_page_shows_the_champion_its_plots_and_the_monitoring(
    page, server, screenshots, trained_platform
) -> None:
    sign_in(page, server)
    page.get_by_role("link", name="Model").click()
    page.wait_for_url("**/pages/model")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(screenshots / "model.png"), full_page=True)
    heading = page.get_by_role("heading", level=1).inner_text()
    assert f"version {trained_platform.model_version}" in heading
    roc = page.get_by_alt_text("ROC curve", exact=False)
    assert roc.is_visible() and roc.evaluate("image => image.naturalWidth") > 0
    assert page.get_by_role("heading", name="Latest drift report").is_visible()
    assert "No drift report yet" not in page.content()
