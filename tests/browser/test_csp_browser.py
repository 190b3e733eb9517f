"""Content-Security-Policy in a real browser: the admin index, the delivery dashboard (its
charts drawn), a message page with its timeline, a webhook request page and the Swagger UI API
docs all load with no CSP violation (a `securitypolicyviolation` event or a console report
fails the test), and every page carries CSP, Referrer-Policy and X-Content-Type-Options."""

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from messaging.models import Message, WebhookRequest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Recorded before any page script runs, so a violation during parsing is caught too.
LISTEN = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'}` +
    ` at ${e.sourceFile}:${e.lineNumber}`);
});
"""


@pytest.fixture
def watched(logged_in):
    page = logged_in
    page.context.add_init_script(LISTEN)
    console = []
    page.on(
        "console",
        lambda msg: (
            console.append(msg.text)
            if "Content Security Policy" in msg.text or "Content-Security-Policy" in msg.text
            else None
        ),
    )
    page.console_csp = console
    return page


def visit(page, url, ready):
    page.console_csp.clear()  # what earlier pages reported is theirs
    response = page.goto(url)
    assert response.status == 200, url
    headers = response.headers
    csp = headers.get("content-security-policy", "")
    assert "default-src 'self'" in csp and "script-src 'self'" in csp, url
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers.get("referrer-policy") == "same-origin"
    assert headers.get("x-content-type-options") == "nosniff"
    expect(page.locator(ready).first).to_be_visible()
    page.wait_for_load_state("networkidle")
    violations = page.evaluate("window.__cspViolations") + page.console_csp
    assert violations == [], f"{url}: {violations}"


def test_admin_dashboard_message_and_api_docs_work_under_the_csp(
    watched, live_server, sender, artifacts
):
    from tests.browser.test_admin_browser import send_from_admin

    page, base = watched, live_server.url
    message = send_from_admin(page, base, "+447911123457")
    sender()
    visit(page, f"{base}/admin/", "#herald-dashboard-link")
    # the favicon and "View site" (the API docs)
    assert page.locator("link[rel=icon]").get_attribute("href").endswith("herald/favicon.svg")
    assert page.locator("#user-tools a", has_text="View site").get_attribute("href") == (
        "/api/v1/docs/"
    )
    visit(page, f"{base}{reverse('admin:messaging_dashboard')}", "canvas")
    # The charts were drawn by the static scripts (an inline script blocked would leave them blank)
    drawn = page.evaluate(
        "Array.from(document.querySelectorAll('canvas')).filter(c => c.width > 0"
        " && c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v)).length"
    )
    assert drawn >= 1
    Message.objects.get(pk=message.pk)
    visit(page, f"{base}/admin/messaging/message/{message.pk}/change/", "#herald-timeline")
    visit(page, f"{base}/admin/messaging/message/", "#result_list")
    webhook = WebhookRequest.objects.order_by("id").first()
    visit(page, f"{base}/admin/messaging/webhookrequest/{webhook.pk}/change/", "#content")
    visit(page, f"{base}/api/v1/docs/", ".swagger-ui .info")
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()  # operations rendered
    page.screenshot(path=str(artifacts / "api-docs-under-csp.png"), full_page=False)


def test_a_violation_is_caught(watched, live_server):
    """The listener works: an inline script injected into a page is blocked and recorded."""
    page = watched
    page.goto(f"{live_server.url}/admin/")
    page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.__ran = 1'; document.body.appendChild(s); }"
    )
    page.wait_for_timeout(200)
    assert page.evaluate("window.__ran") is None
    assert any("script-src" in v for v in page.evaluate("window.__cspViolations"))
