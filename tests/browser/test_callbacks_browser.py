"""Status callbacks in the admin, in a real browser: a message's page lists its callbacks with
their attempts, the callbacks list and the endpoint health page render; at 1366 and 1920 px no
table overflows its page. Screenshots go to tests/artifacts/."""

import pytest
from playwright.sync_api import expect

from messaging.models import Callback
from messaging.services import messages
from tests.callbacks.conftest import drain, make_client, running_receiver

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Elements wider than the page (a table pushing the layout sideways), as "tag#id.class width".
OVERFLOW = """() => {
  const limit = document.documentElement.clientWidth;
  return [...document.querySelectorAll('#content table, #content .module, #content pre')]
    .filter(e => e.getBoundingClientRect().right > limit + 1)
    .map(e => `${e.tagName}#${e.id}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`);
}"""


@pytest.fixture
def callbacks_made(settings):
    settings.CALLBACK_ALLOW_PRIVATE_NETWORKS = True
    settings.CALLBACK_BACKOFF_BASE = 60
    with running_receiver(plan=lambda n, p: (500 if n == 1 else 200, 0, {})) as receiver:
        client, _ = make_client("acme", receiver.url())
        message = messages.create_outbound(to="+447911123457", body="hi", source="api",
                                           client=client)  # fmt: skip
        messages.cancel(message, reason="browser test")
        drain()
        Callback.objects.update(next_attempt_at=Callback.objects.get().occurred_at)
        drain()
    return message


@pytest.mark.parametrize("width", [1366, 1920])
def test_callbacks_pages_render_without_overflow(logged_in, live_server, callbacks_made,
                                                 artifacts, width):  # fmt: skip
    page = logged_in
    page.set_viewport_size({"width": width, "height": 1000})
    page.goto(f"{live_server.url}/admin/messaging/message/{callbacks_made.pk}/change/")
    section = page.locator("#herald-callbacks")
    expect(section).to_contain_text("Status callbacks (1)")
    expect(section.locator(".herald-callback-attempt")).to_have_count(2)  # a 500, then a 200
    expect(section.locator(".herald-callback-attempt").first).to_contain_text("500")
    expect(section.locator("tr[data-callback-state]")).to_have_attribute(
        "data-callback-state", "delivered"
    )
    assert page.evaluate(OVERFLOW) == []
    page.screenshot(path=str(artifacts / f"callbacks-message-{width}.png"), full_page=True)

    page.goto(f"{live_server.url}/admin/messaging/callback/")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    assert page.evaluate(OVERFLOW) == []
    page.screenshot(path=str(artifacts / f"callbacks-list-{width}.png"), full_page=True)

    page.goto(f"{live_server.url}/admin/messaging/callbackhealth/")
    expect(page.locator("#result_list tbody tr")).to_contain_text("50% of 2")
    assert page.evaluate(OVERFLOW) == []
    page.screenshot(path=str(artifacts / f"callbacks-health-{width}.png"), full_page=True)
