"""The admin's routing page in headless Chromium, at 1366 and 1920 px (issue 16, item 2)."""

import pytest
from django.utils import timezone

from messaging.models import ProviderHealth, ProviderHealthEvent, Route
from messaging.services import provider_health

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def two_providers(settings):
    backend = {"OPTIONS": {}, "ENV": {}}
    settings.SMS_PROVIDERS = {
        **settings.SMS_PROVIDERS,
        "sinch": {**backend, "BACKEND": "messaging.providers.sinch.SinchProvider"},
        "infobip": {**backend, "BACKEND": "messaging.providers.infobip.InfobipProvider"},
    }
    settings.SMS_PROVIDERS_ENABLED = ["sandbox", "sinch", "infobip"]
    settings.SMS_ROUTES = "GB: sinch 70, infobip 30; *: sandbox"


@pytest.mark.parametrize("width", [1366, 1920])
def test_routing_page_layout(logged_in, live_server, two_providers, artifacts, width):
    for _ in range(7):
        provider_health.note("sinch", "ok")
    for _ in range(5):
        provider_health.note("sinch", "http_5xx")
    provider_health.flush()
    ProviderHealth.objects.update_or_create(
        provider="sinch", defaults={"state": "open", "state_since": timezone.now()}
    )
    ProviderHealth.objects.update_or_create(
        provider="infobip",
        defaults={"state_since": timezone.now(), "demoted": True, "delivery_rate": 0.62,
                  "latency_p95": 412.0, "receipt_sample": 180},
    )  # fmt: skip
    ProviderHealthEvent.objects.create(provider="sinch", kind="open", reason="5 of 12 failed")
    Route.objects.create(destination="+4477", providers="infobip 100")

    page = logged_in
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server.url}/admin/messaging/providerhealth/")
    assert page.locator("h1").inner_text() == "Provider routing"
    sinch = page.locator('tr[data-provider="sinch"]')
    assert sinch.get_attribute("data-state") == "open"
    cells = sinch.locator("td").all_inner_texts()
    assert cells[1] == "open" and cells[4] == "7" and cells[5] == "5"
    infobip = page.locator('tr[data-provider="infobip"]').locator("td").all_inner_texts()
    assert infobip[3].startswith("demoted") and infobip[10] == "62%" and infobip[11] == "412.0 s"
    assert page.locator("#herald-routes").inner_text().count("SMS_ROUTES") == 2
    assert "5 of 12 failed" in page.locator("#herald-health-events").inner_text()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at {width}px"
    for table in ("#herald-providers", "#herald-routes", "#herald-health-events"):
        box = page.locator(table).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, (table, box)
    page.screenshot(path=str(artifacts / f"routing-{width}.png"), full_page=True)
