"""The audit trail in the Django admin, driven by a real headless Chromium (Debian's package,
through Playwright; Playwright never downloads a browser here)."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest

from tests.liveserver import CANARY_KEY, ROOT, Client

from .conftest import wait_for_rows

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
if not Path(CHROMIUM).exists():
    pytest.skip("Chromium is not installed (apt-get install chromium; scripts/setup.sh --dev does it)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def admin_login(server):
    username = f"admin-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    done = server.manage("createsuperuser", "--noinput", "--username", username, "--email", "admin@example.com",
                         DJANGO_SUPERUSER_PASSWORD=password)
    assert done.returncode == 0, done.stderr
    return username, password


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


def test_admin_filters_searches_and_shows_an_entry(server, admin_login, browser):
    api = Client(server, headers={"X-API-Key": CANARY_KEY, "User-Agent": "admin-browser-test"})
    up = api.upload("admin-notes.txt", b"for the admin")
    ran = api.exec("py", "open('chart.txt', 'w').write('x' * 2048)\nprint('ok')", user_id="admin-user")
    Client(server, headers={"User-Agent": "admin-browser-test"}).get("/files/" + up["session_id"])  # 401
    wait_for_rows(server, 3, "userAgent = ?", ("admin-browser-test",))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url + "/admin/")
    assert "/admin/login/" in page.url
    username, password = admin_login
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    assert "Audit trail" in page.content()

    # The list: newest first, read-only (no "Add" button), the admin's own CSS loaded.
    page.goto(server.url + "/admin/audit/auditlog/")
    assert page.locator("#result_list tbody tr").count() >= 3
    assert page.locator(".object-tools a.addlink").count() == 0
    assert page.evaluate("getComputedStyle(document.querySelector('#header')).backgroundColor") != "rgba(0, 0, 0, 0)"
    dates = page.locator("#result_list tbody .field-when").all_inner_texts()
    assert dates and all(d.endswith(" UTC") for d in dates), dates
    assert dates == sorted(dates, reverse=True)  # newest first

    # Filter by action.
    page.locator("#changelist-filter a", has_text="exec").first.click()
    page.wait_for_url("**action__exact=exec**")
    actions = page.locator("#result_list tbody td.field-action").all_inner_texts()
    assert actions and set(actions) == {"exec"}

    # Search a session id (and, separately, a file name).
    page.goto(server.url + "/admin/audit/auditlog/")
    page.fill("#searchbar", ran["session_id"])
    page.press("#searchbar", "Enter")
    page.wait_for_url("**q=**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert "exec" in rows.first.inner_text() and "admin-user" in rows.first.inner_text()
    page.screenshot(path=str(ARTIFACTS / "admin-audit-search.png"), full_page=True)

    page.fill("#searchbar", "admin-notes.txt")
    page.press("#searchbar", "Enter")
    page.wait_for_load_state()
    found = page.locator("#result_list tbody td.field-action").all_inner_texts()
    assert found == ["upload"]

    # The exec entry's page: the execution block as a table, nothing editable.
    page.goto(server.url + "/admin/audit/auditlog/?q=" + ran["session_id"])
    page.locator("#result_list tbody tr a").first.click()
    page.wait_for_selector("table.audit-block")
    text = page.inner_text("#content")
    for label in ("Language", "Duration (ms)", "Exit code", "Files generated", "Timed out", "CPU time (ms)"):
        assert label in text, label
    assert "py" in page.inner_text(".field-execution_block")
    assert page.locator("input[name=_save]").count() == 0
    assert page.locator("a.deletelink").count() == 0
    page.screenshot(path=str(ARTIFACTS / "admin-audit-detail.png"), full_page=True)

    # The upload entry's file block.
    page.goto(server.url + "/admin/audit/auditlog/?q=admin-notes.txt")
    page.locator("#result_list tbody tr a").first.click()
    page.wait_for_selector(".field-file_block table.audit-block")
    block = page.inner_text(".field-file_block")
    assert "admin-notes.txt" in block and "13 bytes" in block and "text/plain" in block

    # Sessions, stored files and execution slots are browsable too.
    page.goto(server.url + "/admin/storage/session/?q=" + up["session_id"])
    assert page.locator("#result_list tbody tr").count() == 1
    page.locator("#result_list tbody tr a").first.click()
    page.wait_for_selector(".inline-group")  # the click only waits for the navigation to begin
    assert "admin-notes.txt" in page.inner_text(".inline-group")
    page.goto(server.url + "/admin/storage/storedfile/?q=chart.txt")
    assert "chart.txt" in page.inner_text("#result_list")
    page.goto(server.url + "/admin/executor/executionslot/")
    assert page.locator("#result_list tbody tr").count() >= 1
    page.close()
