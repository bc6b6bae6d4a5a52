"""index.html in Debian's chromium: no console error, no request leaving the file, and an assessor's path
from a PCI DSS requirement to a control to its evidence, by clicking. The screenshot is left in tmp."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billkit.system import ensure_packages
from tests.unit.reporthelpers import quick

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ensure_packages(["chromium"], "browser test of the evidence report")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.mark.control("CMP-07")
def test_index_html_loads_clean_and_leads_from_requirement_to_evidence(browser: Any, tmp_path: Path) -> None:
    quick(tmp_path, "bundle")
    index = tmp_path / "bundle" / "index.html"
    text = index.read_text()
    assert "<script" not in text and 'http-equiv="Content-Security-Policy"' in text
    page = browser.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    url = index.as_uri()
    page.goto(url)
    assert page.locator("svg").count() >= 3  # practice, requirement and evidence-age charts
    # PCI DSS requirement -> control -> evidence
    page.click('a[href="#pci"]')
    page.click('li[id="pci-3.3.1"] a[href="#ctl-LOG-12"]', timeout=5000)  # LOG-12 cites 3.3.1
    assert page.url.endswith("#ctl-LOG-12")
    control = page.locator('[id="ctl-LOG-12"]')
    assert "satisfied" in control.inner_text()
    control.locator('a[href^="#ev-"]').first.click(timeout=5000)
    assert "#ev-" in page.url
    row = page.locator(f'[id="{page.url.split("#")[1]}"]')
    assert row.is_visible() and "evidence/" in row.inner_text()
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=False)
    print(f"screenshot: {shot}")
    page.close()
    assert not errors, errors
    assert {u.split("#")[0] for u in requests} == {url}, requests  # nothing but the file itself
