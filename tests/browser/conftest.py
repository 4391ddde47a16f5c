import os
import shutil

import pytest
from django.contrib.auth.models import Group, User

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (never a downloaded browser).

    While Playwright's sync API runs, this thread has an event loop, so Django treats the ORM calls
    the tests make between page actions as async-unsafe; they are plain synchronous code, so the
    guard is lifted for exactly as long as the browser lives, and the scope is the module so the
    loop is gone before the rest of the suite runs.
    """
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
            )  # fmt: skip
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def operator_login(transactional_db):
    user = User.objects.create_user("olga", password="a-long-operator-password")
    # get_or_create: a transactional test before this one flushed the groups the migration made.
    user.groups.add(Group.objects.get_or_create(name="operator")[0])
    return "olga", "a-long-operator-password"


def log_in(page, live_server, operator_login):
    username, password = operator_login
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/fleet/")
