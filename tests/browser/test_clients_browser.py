"""The Client admin in a real browser: create a client, create an API key and copy it (shown
once: not after a reload, not after going back), revoke it with a confirmation; and the client
pages laid out cleanly at 1366 and 1920 px. Screenshots go to tests/artifacts/."""

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from messaging.models import ApiKey, Client
from messaging.services import clients

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
KEY = re.compile(r"hk_(live|test)_[A-Za-z0-9_-]{43}")

# The admin's one layout check (tests/browser/test_layout.py shows it is not vacuous).
LAYOUT_PROBLEMS = (Path(__file__).parent / "layout_check.js").read_text()


def assert_clean_layout(page, label, artifacts):
    page.screenshot(path=str(artifacts / f"admin-{label}.png"), full_page=True)
    assert page.evaluate(LAYOUT_PROBLEMS) == [], label


def no_key_on(page):
    html = page.content()
    input_values = page.eval_on_selector_all("input", "els => els.map(e => e.value).join(' ')")
    return not KEY.search(html) and not KEY.search(input_values)


def create_key(page, name, kind):
    page.click("#herald-add-key")
    page.fill("#id_name", name)
    page.check(f"input[name=kind][value={kind}]")
    page.click("#herald-create-key")
    expect(page.locator("#herald-new-key")).to_be_visible()
    return page.input_value("#herald-new-key")


def test_create_a_key_see_it_once_and_revoke_it(logged_in, live_server, artifacts):
    page = logged_in
    base = live_server.url
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page.goto(f"{base}/admin/messaging/client/add/")
    page.locator("#id_name").press_sequentially("Shop checkout")  # keys fill in the slug
    expect(page.locator("#id_slug")).to_have_value("shop-checkout")  # prepopulated
    page.click("input[name=_continue]")
    client = Client.objects.get(slug="shop-checkout")
    change_url = f"{base}/admin/messaging/client/{client.pk}/change/"
    page.wait_for_url(change_url)

    key = create_key(page, "web servers", "live")
    assert KEY.fullmatch(key) and key.startswith("hk_live_")
    api_key = ApiKey.objects.get(client=client)
    assert clients.authenticate(key) == api_key
    expect(page.locator(".herald-key-warning")).to_contain_text("will not be shown again")
    page.click("#herald-copy-key")
    expect(page.locator("#herald-copy-state")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == key
    assert page.url == change_url  # the page replaced its history entry
    page.screenshot(path=str(artifacts / "admin-api-key-created.png"), full_page=True)

    page.reload()  # never again: the client's page, the prefix only
    expect(page.locator("#herald-add-key")).to_be_visible()
    expect(page.locator(".field-prefix_display")).to_contain_text(api_key.prefix)
    assert no_key_on(page)
    page.go_back()  # the form page before it: empty, no key, and nothing re-posted
    assert no_key_on(page)
    assert ApiKey.objects.filter(client=client).count() == 1

    page.goto(change_url)
    page.click(".field-revoke_link a")
    expect(page.locator("#herald-revoke-form")).to_be_visible()
    expect(page.locator("#content-main")).to_contain_text(api_key.prefix)
    api_key.refresh_from_db()
    assert api_key.revoked_at is None
    page.click("#herald-confirm-revoke")
    page.wait_for_url(change_url)
    expect(page.locator(".messagelist .success")).to_contain_text("Revoked API key")
    expect(page.locator(".field-state")).to_contain_text("revoked")
    assert clients.authenticate(key) is None


@pytest.mark.parametrize("width", [1366, 1920])
def test_client_pages_layout(logged_in, live_server, artifacts, width):
    page = logged_in
    page.set_viewport_size({"width": width, "height": 900})
    base = live_server.url
    client = clients.create_client("Appointment reminders for the north-west clinics", slug="nw")
    for i, kind in enumerate(["live", "test", "live"]):
        issued = clients.create_api_key(client, name=f"key {i} for the booking system", kind=kind)
    clients.authenticate(issued.key)  # one key with a last use
    clients.revoke_api_key(client.api_keys.order_by("pk").first())
    clients.create_client("Second", slug="second")

    page.goto(f"{base}/admin/messaging/client/")
    assert_clean_layout(page, f"clients-{width}", artifacts)
    page.goto(f"{base}/admin/messaging/client/{client.pk}/change/")
    assert_clean_layout(page, f"client-{width}", artifacts)
    create_key(page, "a key with a fairly long descriptive name", "test")
    key_box = page.locator("#herald-new-key").bounding_box()
    assert key_box["x"] + key_box["width"] <= width
    # The whole key fits in its field, nothing scrolled out of sight.
    assert page.eval_on_selector("#herald-new-key", "e => e.scrollWidth <= e.clientWidth")
    assert_clean_layout(page, f"api-key-created-{width}", artifacts)
    page.goto(f"{base}/admin/messaging/client/{client.pk}/change/")
    page.locator(".field-revoke_link a").first.click()
    assert_clean_layout(page, f"api-key-revoke-{width}", artifacts)
