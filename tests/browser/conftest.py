"""Playwright against pytest-django's live server, driving Debian's Chromium headless.

Never `playwright install`: the browser is the system's /usr/bin/chromium (`.ci/run` installs
it with apt when missing); without it these tests are skipped with a message saying so.
"""

import os
import time
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in this thread; Django refuses database calls from a
# thread with a running loop unless told the caller knows what it is doing.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
# Screenshots for people to look at (CI keeps the folder as an artefact; git ignores it).
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)
    # Start with the admin's navigation sidebar folded, so screenshots show the content.
    context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def sender():
    """Run the real sender in this thread between browser steps: it sends through the sandbox,
    which posts its signed receipts to the live server's webhook over HTTP."""
    from messaging.models import Message, SandboxReceipt
    from messaging.sender import Sender

    worker = Sender(concurrency=2, batch_size=20)

    def drain(max_seconds=20):
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            worker.tick()
            pending = SandboxReceipt.objects.filter(delivered_at__isnull=True).exists()
            due = Message.objects.filter(status__in=["queued", "sending"]).exists()
            if not pending and not due:
                return
            time.sleep(0.05)
        raise AssertionError("the sender did not finish in time")

    yield drain
    worker.pool.shutdown()


@pytest.fixture
def logged_in(page, live_server, public_url, staff):
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", staff.username)
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    return page
