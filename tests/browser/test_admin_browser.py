"""The admin in a real browser: send an SMS from the admin form and watch it become delivered
(the page updates itself), resend a failed one and follow the links both ways, and see the
dashboard's charts drawn. Screenshots go to artifacts/screenshots/ (see conftest.py)."""

import re

import pytest
from playwright.sync_api import expect

from messaging.models import Message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def send_from_admin(page, base, to, body="Hello from the admin"):
    page.goto(f"{base}/admin/messaging/message/")
    page.click("#herald-send-sms")
    page.fill("#id_to", to)
    page.fill("#id_body", body)
    page.click("input[name=_send]")
    page.wait_for_url(re.compile(r"/admin/messaging/message/[0-9a-f-]{36}/change/$"))
    expect(page.locator(".messagelist .success")).to_contain_text("queued via sandbox")
    return Message.objects.get(pk=page.url.rstrip("/").split("/")[-2])


def test_send_sms_and_see_it_delivered(logged_in, live_server, sender, artifacts):
    page = logged_in
    message = send_from_admin(page, live_server.url, "+447911123457")
    assert message.status == "queued" and message.created_by.username == "staff"

    expect(page.locator("#herald-live")).to_have_attribute("data-live", "polling")
    sender()
    # No reload: the page asks live.json every few seconds and redraws itself until final.
    status = page.locator("#herald-summary [data-field=status] .herald-status")
    expect(status).to_have_text("delivered", timeout=15_000)
    expect(page.locator("#herald-live")).to_have_attribute("data-live", "final")
    timeline = page.locator("#herald-timeline tbody tr[data-status]")
    expect(timeline).to_have_count(5)  # queued, sending, sent, sent (duplicate), delivered
    expect(timeline.nth(3)).to_have_attribute("data-kind", "duplicate")
    expect(timeline.last).to_have_attribute("data-status", "delivered")
    expect(timeline.last).to_have_attribute("data-applied", "yes")
    expect(page.locator("#herald-timeline")).to_contain_text("Admin")
    expect(page.locator("#herald-timeline")).to_contain_text("staff")  # the actor
    page.locator("#herald-timeline details").last.locator("summary").click()
    expect(page.locator("#herald-timeline details").last.locator("pre")).to_contain_text(
        '"status": "delivered"'
    )
    page.screenshot(path=str(artifacts / "admin-message-timeline.png"), full_page=True)

    page.goto(f"{live_server.url}/admin/messaging/message/?q=%2B44%207911%20123457")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("delivered")


def test_resend_a_failed_message_and_follow_the_links(logged_in, live_server, sender, artifacts):
    page = logged_in
    original = send_from_admin(page, live_server.url, "+447911123450")
    sender()
    page.reload()
    expect(page.locator("#herald-summary [data-field=status] .herald-status")).to_have_text(
        "failed"
    )

    page.click("#herald-resend")
    expect(page.locator("#herald-resend-form")).to_be_visible()
    page.fill("#id_reason", "subscriber back in coverage")
    page.screenshot(path=str(artifacts / "admin-resend-confirm.png"), full_page=True)
    page.click("#herald-confirm-resend")
    page.wait_for_url(re.compile(r"/admin/messaging/message/[0-9a-f-]{36}/change/$"))
    copy = Message.objects.get(resend_of=original)
    assert str(copy.pk) in page.url
    expect(page.locator("#herald-resend-of")).to_have_text(str(original.pk))
    expect(page.locator("#herald-lineage")).to_contain_text("subscriber back in coverage")

    page.click("#herald-resend-of")  # to the original ...
    expect(page.locator(".herald-resend a")).to_have_text(str(copy.pk))
    expect(page.locator("#herald-summary [data-field=status] .herald-status")).to_have_text(
        "failed"
    )
    page.click("#herald-resend")  # a second resend shows the first and needs "send again"
    expect(page.locator("#herald-already-resent")).to_be_visible()
    expect(page.locator(".herald-existing-resends")).to_contain_text(str(copy.pk)[:8])
    page.go_back()
    page.click(".herald-resend a")  # ... and back to the copy
    expect(page.locator("#herald-resend-of")).to_have_text(str(original.pk))

    sender()
    page.goto(f"{live_server.url}/admin/messaging/message/")
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    expect(page.locator("#result_list")).to_contain_text("resend of")
    page.screenshot(path=str(artifacts / "admin-changelist.png"), full_page=True)


def test_dashboard_charts_render(logged_in, live_server, sender, artifacts):
    page = logged_in
    for number in ("+447911123457", "+447911123458", "+447911123450", "+447911123451"):
        send_from_admin(page, live_server.url, number)
    sender()

    page.goto(f"{live_server.url}/admin/")
    page.click("#herald-dashboard-link a:text('Delivery dashboard')")
    page.wait_for_url(re.compile(r"/admin/messaging/message/dashboard/"))
    page.click("a[data-period='24h']")
    expect(page.locator("body")).to_have_attribute("data-charts-ready", "true")
    for canvas in ("chart-delivery-rate", "chart-status", "chart-latency"):
        drawn = page.evaluate(
            """(id) => {
                const canvas = document.getElementById(id);
                const chart = Chart.getChart(canvas);
                const pixels = canvas.getContext("2d")
                    .getImageData(0, 0, canvas.width, canvas.height).data;
                let painted = 0;
                for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) painted++; }
                return {chart: !!chart, datasets: chart ? chart.data.datasets.length : 0,
                        width: canvas.width, painted: painted};
            }""",
            canvas,
        )
        assert drawn["chart"] and drawn["datasets"] >= 1, (canvas, drawn)
        assert drawn["width"] > 0 and drawn["painted"] > 500, (canvas, drawn)
    status = page.evaluate("Chart.getChart(document.getElementById('chart-status')).data")
    assert dict(zip(status["labels"], status["datasets"][0]["data"], strict=True)) == {
        "delivered": 2, "failed": 1, "expired": 1,
    }  # fmt: skip
    expect(page.locator("#herald-by-status")).to_contain_text("delivered")
    expect(page.locator("#herald-top-errors")).to_contain_text("absent-subscriber")
    page.screenshot(path=str(artifacts / "admin-dashboard.png"), full_page=True)


STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"
)
CSP_PORT = 18501


@pytest.fixture
def csp_server():
    """The same Django app (and test database) behind a second local server that adds a strict
    Content-Security-Policy to every response, as a production proxy or middleware would."""
    import socketserver
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.handlers.wsgi import WSGIHandler

    app = StaticFilesHandler(WSGIHandler())

    def with_csp(environ, start_response):
        def start(status, headers, exc_info=None):
            return start_response(status, [*headers, ("Content-Security-Policy", STRICT_CSP)],
                                  exc_info)  # fmt: skip

        return app(environ, start)

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = make_server("127.0.0.1", CSP_PORT, with_csp, server_class=Server,
                         handler_class=QuietHandler)  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{CSP_PORT}"
    server.shutdown()
    server.server_close()


def test_the_message_page_updates_itself_under_a_strict_csp(
    page, live_server, public_url, staff, csp_server, sender
):
    """The live updates come from a static script, so a Content-Security-Policy without
    'unsafe-inline' for scripts does not stop them (and the admin logs no CSP violation)."""
    violations = []
    page.on(
        "console", lambda m: violations.append(m.text) if "Content Security" in m.text else None
    )
    page.goto(f"{csp_server}/admin/login/")
    page.fill("#id_username", staff.username)
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_url(f"{csp_server}/admin/")
    # The policy is in force: an inline event handler (not allowed by script-src 'self') does
    # not run. (Code Playwright evaluates is exempt, so the probe is a handler the page runs.)
    ran = page.evaluate(
        """() => { const b = document.createElement('button');
                   b.setAttribute('onclick', 'window.heraldInline = 1');
                   document.body.appendChild(b); b.click(); b.remove();
                   return window.heraldInline === 1; }"""
    )
    assert ran is False and violations, violations
    violations.clear()

    message = send_from_admin(page, csp_server, "+447911123458")
    expect(page.locator("#herald-live")).to_have_attribute("data-live", "polling")
    sender()
    status = page.locator("#herald-summary [data-field=status] .herald-status")
    expect(status).to_have_text("delivered", timeout=15_000)
    expect(page.locator("#herald-live")).to_have_attribute("data-live", "final")
    assert Message.objects.get(pk=message.pk).status == "delivered"
    assert not violations, violations


@pytest.mark.parametrize("width", [1366, 1920])
def test_the_send_form_quotes_as_staff_type(logged_in, live_server, artifacts, width):
    page = logged_in
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server.url}/admin/messaging/message/send/")
    quote = page.locator("#herald-quote-text")
    page.fill("#id_to", "+447400123456")
    page.fill("#id_body", "Your order ships tomorrow - thank you!")
    expect(quote).to_contain_text("1 segment")
    expect(quote).to_contain_text("GSM-7")
    page.fill("#id_body", "Your order ships tomorrow — thank you! " * 2)
    expect(quote).to_contain_text("2 segments")
    expect(quote).to_contain_text("UCS-2 (forced by “—”")
    expect(quote).to_contain_text("via sandbox")
    page.screenshot(path=str(artifacts / f"admin-send-quote-{width}.png"), full_page=True)
