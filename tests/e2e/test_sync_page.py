"""The Sync page in a real browser: Debian's chromium, headless, driven by selenium through
Debian's chromedriver (nothing is downloaded), against a running ``airflow standalone``
after one real run of contact_customer with a hostile record in quarantine.

The test logs in through Airflow's login page with the credentials the standalone wrote,
opens the Sync page inside the Airflow UI and on its own, reads the quarantine, releases
the hostile record, checks the link store, and keeps screenshots in its tmp dir
(``CRMSYNC_SYNC_PAGE_SCREENSHOT=docs/sync-page.png`` also writes the README's one).
Without chromium the test fails: CI installs it (.ci/run).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crmsync.store.schema import quarantine
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from tests.chaos.hostile import CRM, plant
from tests.e2e.standalone import Standalone
from tests.e2e.test_scheduler import link_store_ready

pytestmark = [pytest.mark.e2e, pytest.mark.scheduler]

DAG_ID = "contact_customer"
HOSTILE_NAME = "<img src=x onerror=alert(1)>Mallory"
HOSTILE_EMAIL = "mallory<script>@@bad"
WAIT = 60
HEALTHY_TIMEOUT = 300.0


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless chromium through Debian's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, (
        "chromium and chromedriver are needed: apt-get install -y chromium chromium-driver (.ci/run does)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@contextlib.contextmanager
def started(sa: Standalone) -> Iterator[Standalone]:
    """``with Standalone(...)``, with more time to come up: five test workers share two
    cores here, and the standalone's 120 s were not always enough (load average 12)."""
    try:
        sa.start()
        sa.wait_healthy(timeout=HEALTHY_TIMEOUT)
        sa.login()
        yield sa
    finally:
        sa.stop()


def held(db_url: str, record_id: str) -> dict[str, Any] | None:
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            row = (
                conn.execute(
                    select(quarantine).where(quarantine.c.flow == DAG_ID, quarantine.c.record_id == record_id)
                )
                .mappings()
                .first()
            )
    finally:
        engine.dispose()
    return None if row is None else dict(row)


def log_in(driver: Any, sa: Standalone) -> None:
    """Through Airflow's own login page, as a person would (the page redirects there)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    password = json.loads((sa.home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    driver.get(f"{sa.base_url}/crmsync/")
    wait = WebDriverWait(driver, WAIT)
    pw = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "input[type=password]")))
    assert "/auth/login" in driver.current_url, driver.current_url
    user = driver.find_element(By.CSS_SELECTOR, "input:not([type=password]):not([type=hidden])")
    user.send_keys("admin")
    pw.send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "/auth/login" not in d.current_url)


def test_the_sync_page_in_chromium(sandboxes, tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    # planted as stored data (the sandbox's own API validates emails; a real CRM may not)
    (hostile_id,) = plant(sandboxes, CRM, "contacts", [{"FirstName": HOSTILE_NAME, "Email": HOSTILE_EMAIL}])
    with started(Standalone(tmp_path / "airflow")) as sa:
        link_store_ready(sa.db_url)
        sa.wait_for_dag(DAG_ID)
        run_id = sa.trigger(DAG_ID)
        state = sa.wait_for_run(DAG_ID, run_id)
        assert state == "success", f"{run_id} {state}\n{sa.task_logs(DAG_ID, run_id)}"
        assert held(sa.db_url, hostile_id) is not None, "the hostile contact was not quarantined"

        # Airflow's Plugins page lists it, loaded once (no "already registered" import error)
        plugins = sa.api("GET", "plugins")["plugins"]
        (mine,) = [p for p in plugins if p["name"] == "crmsync"]
        assert [v["name"] for v in mine["external_views"]] == ["Sync"], mine
        assert sa.api("GET", "plugins/importErrors")["total_entries"] == 0

        log_in(browser, sa)
        wait = WebDriverWait(browser, WAIT)

        # the page inside the Airflow UI (its nav entry "Sync" opens /plugin/crmsync-sync)
        browser.get(f"{sa.base_url}/plugin/crmsync-sync")
        frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe")))
        browser.switch_to.frame(frame)
        wait.until(ec.presence_of_element_located((By.ID, "flow")))
        browser.switch_to.default_content()
        browser.save_screenshot(str(tmp_path / "sync-page-in-airflow.png"))

        # the page itself
        browser.get(f"{sa.base_url}/crmsync/?flow={DAG_ID}")
        assert wait.until(ec.presence_of_element_located((By.ID, "flow"))).text == DAG_ID
        body = browser.find_element(By.TAG_NAME, "body").text
        assert run_id in body
        assert HOSTILE_EMAIL in body, body[:3000]  # shown as text: escaped, not markup
        assert not browser.find_elements(By.CSS_SELECTOR, "img"), "a record's value became markup"
        shot = tmp_path / "sync-page.png"
        browser.save_screenshot(str(shot))
        if os.environ.get("CRMSYNC_SYNC_PAGE_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["CRMSYNC_SYNC_PAGE_SCREENSHOT"])

        release = f'button[name=action][value=release][data-record="{hostile_id}"]'
        browser.find_element(By.CSS_SELECTOR, release).click()
        message = wait.until(ec.presence_of_element_located((By.ID, "message"))).text
        assert f"Customcrm {hostile_id} released" in message, message
        assert held(sa.db_url, hostile_id) is None
        assert not browser.find_elements(By.CSS_SELECTOR, release)
        browser.save_screenshot(str(tmp_path / "sync-page-after-release.png"))
