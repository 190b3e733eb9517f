"""/metrics: protected by METRICS_TOKEN (and optionally an address allowlist), counters and
histograms from the one-line calls at their sites, gauges computed from the database at scrape
time, and sums across processes (gunicorn workers and the sender) in multiprocess mode."""

import json
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import responses
import yaml
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from messaging import metrics
from messaging.models import Message, WebhookRequest
from messaging.providers.base import PermanentSendError, Provider, SendRequest, SendResult
from messaging.services import messages, pacing
from messaging.services.heartbeat import Heartbeat

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_IPS = []
    return TOKEN


def scrape(client) -> dict:
    """{(name, frozenset(labels)): value} of every sample /metrics answered."""
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def samples(text: str) -> dict:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found, name, **labels):
    return found.get((name, frozenset(labels.items())), 0.0)


# --- protection --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_without_a_configured_token_metrics_do_not_exist(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"]
)
def test_a_missing_or_wrong_token_is_refused(client, token, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert b"herald_" not in response.content
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
def test_the_address_allowlist(client, token, settings):
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8", "192.0.2.7"]
    assert client.get("/metrics", headers=AUTH).status_code == 403  # test client: 127.0.0.1
    assert client.get("/metrics", headers=AUTH, REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", headers=AUTH, REMOTE_ADDR="192.0.2.7").status_code == 200
    assert client.get("/metrics", headers=AUTH, REMOTE_ADDR="192.0.2.8").status_code == 403


# --- database gauges ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_queue_depth_and_oldest_age_per_provider(client, token):
    for _ in range(3):
        messages.create_outbound(to="+447911123457", body="x", source="api")
    Message.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=120))
    later = messages.create_outbound(to="+447911123457", body="later", source="api")
    Message.objects.filter(pk=later.pk).update(next_attempt_at=timezone.now() + timedelta(hours=1))
    found = scrape(client)
    assert value(found, "herald_queue_messages", provider="sandbox") == 4
    assert 119 <= value(found, "herald_queue_oldest_age_seconds", provider="sandbox") < 180
    Message.objects.update(status="sent")
    found = scrape(client)
    assert value(found, "herald_queue_messages", provider="sandbox") == 0
    assert value(found, "herald_queue_oldest_age_seconds", provider="sandbox") == 0


@pytest.mark.django_db
def test_stored_receipts_waiting_and_their_age(client, token):
    for state in ("received", "received", "processed"):
        row = WebhookRequest.objects.create(
            provider="sandbox", kind="status", method="POST", path="/x", authenticated=True,
            state=state,
        )  # fmt: skip
        WebhookRequest.objects.filter(pk=row.pk).update(
            received_at=timezone.now() - timedelta(seconds=300)
        )
    found = scrape(client)
    assert value(found, "herald_receipts_pending", provider="sandbox") == 2
    assert value(found, "herald_receipts_pending_oldest_age_seconds", provider="sandbox") >= 299
    assert value(found, "herald_scrape_error", source="receipt") == 0


@pytest.mark.django_db
def test_worker_heartbeat_gauges(client, token):
    found = scrape(client)
    assert value(found, "herald_worker_heartbeat_age_seconds", kind="sender") == float("inf")
    Heartbeat("host:1:abc", "sender").beat()
    found = scrape(client)
    assert value(found, "herald_worker_heartbeat_age_seconds", kind="sender") < 5
    assert value(found, "herald_workers", kind="sender") == 1
    assert value(found, "herald_workers", kind="applier") == 0


@pytest.mark.django_db
def test_provider_circuit_and_demotion_gauges(client, token):
    from messaging.models import ProviderHealth

    found = scrape(client)  # no health row yet: closed, not demoted
    assert value(found, "herald_provider_circuit_state", provider="sandbox", state="closed") == 1
    assert value(found, "herald_provider_circuit_state", provider="sandbox", state="open") == 0
    assert value(found, "herald_provider_demoted", provider="sandbox") == 0
    ProviderHealth.objects.create(
        provider="sandbox", state="open", state_since=timezone.now(), demoted=True
    )
    ProviderHealth.objects.create(provider="gone", state="open", state_since=timezone.now())
    found = scrape(client)
    assert value(found, "herald_provider_circuit_state", provider="sandbox", state="open") == 1
    assert value(found, "herald_provider_circuit_state", provider="sandbox", state="closed") == 0
    assert value(found, "herald_provider_demoted", provider="sandbox") == 1
    names = {dict(labels).get("provider") for name, labels in found if "circuit" in name}
    assert "gone" not in names and "other" not in names  # bounded: only providers Herald knows
    assert value(found, "herald_scrape_error", source="routing") == 0


@pytest.mark.django_db
def test_a_failing_gauge_source_is_reported_not_fatal(client, token, monkeypatch):
    def broken(now):
        raise RuntimeError("database down")

    monkeypatch.setattr(metrics, "DATABASE_GAUGES", [broken, metrics.heartbeat_families])
    found = scrape(client)
    assert value(found, "herald_scrape_error", source="broken") == 1
    assert value(found, "herald_scrape_error", source="heartbeat") == 0


# --- counters and histograms at their sites ----------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sends_receipts_and_receipt_latency_are_counted(api, public_url, client, token):
    from tests.test_sandbox_round_trip import drain

    before = scrape(client)
    for to in ("+447911123457", "+447911123454"):  # 7: delivered; 4: refused at send
        assert api.post("/api/v1/messages/", {"to": to, "body": "hi"}, format="json").status_code
    drain()
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("herald_sends_total", provider="sandbox", outcome="sent") == 1
    assert delta("herald_sends_total", provider="sandbox", outcome="rejected") == 1
    # accepted (ignored: already sent), then delivered (applied)
    assert delta("herald_receipts_total", provider="sandbox", outcome="applied") == 1
    assert delta("herald_receipts_total", provider="sandbox", outcome="ignored") == 1
    assert delta("herald_receipt_latency_seconds_count", provider="sandbox") == 1


@pytest.mark.django_db
def test_receipt_outcomes_duplicate_and_unmatched(client, token):
    from tests.test_webhooks import receipt, sent_message, signed

    before = scrape(client)
    sent_message("p-77")
    signed(client, receipt("p-77"))
    signed(client, receipt("p-77"))  # the same receipt again
    signed(client, receipt("nobody-knows"))
    after = scrape(client)
    for outcome, n in (("applied", 1), ("duplicate", 1), ("unmatched", 1)):
        key = (
            "herald_receipts_total",
            frozenset({"provider": "sandbox", "outcome": outcome}.items()),
        )
        assert after.get(key, 0) - before.get(key, 0) == n, outcome
    assert value(after, "herald_receipts_unmatched") == 1


@pytest.mark.django_db
def test_webhook_authentication_failures_by_provider(client, token):
    before = value(scrape(client), "herald_webhook_auth_failures_total", provider="sandbox",
                   kind="status")  # fmt: skip
    for _ in range(3):
        assert client.post("/webhooks/sandbox/status/", b"{}", content_type="application/json")
    after = value(scrape(client), "herald_webhook_auth_failures_total", provider="sandbox",
                  kind="status")  # fmt: skip
    assert after - before == 3


class _Http(Provider):
    def build_send_request(self, sms):
        return SendRequest("POST", "https://provider.test/send", json={})

    def parse_send_response(self, response):
        if response.status_code >= 400:
            raise PermanentSendError("refused", code=str(response.status_code))
        return SendResult(provider_message_ids=["x"])


@responses.activate
def test_provider_request_latency_is_observed_for_answers_and_errors():
    from messaging.providers.base import OutboundSms

    child = metrics.provider_request_seconds.labels("twilio")
    before = _hist_count(child)
    responses.post("https://provider.test/send", json={}, status=200)
    responses.post("https://provider.test/send", json={}, status=400)
    provider = _Http("twilio", {})
    sms = OutboundSms("id", "+1", "", "hi", "GSM-7", 1, "https://x/cb")
    provider.send(sms, requests.Session())
    with pytest.raises(PermanentSendError):
        provider.send(sms, requests.Session())
    assert _hist_count(child) - before == 2
    # an unknown name is never a label value of its own
    assert metrics.provider_label("made-up-by-a-client") == "other"


@pytest.mark.django_db
def test_pacing_waits_are_observed():
    child = metrics.pacing_wait_seconds.labels("sandbox")
    before = _hist_count(child)
    for _ in range(3):
        pacing.wait_for_slot("sandbox", rate=200.0)
    assert _hist_count(child) - before == 3


def _hist_count(child) -> float:
    for family in child.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                return sample.value
    return 0.0


# --- several processes -------------------------------------------------------------------------


def _free_port():
    for port in range(18400, 18500):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18400-18499")


@pytest.mark.django_db(transaction=True)
def test_counters_are_summed_across_gunicorn_workers_and_a_sender(tmp_path, settings):
    """A real gunicorn with three workers and the Procfile's config, plus a separate 'sender'
    process writing to the same directory: every scrape, whichever worker answers it, sums the
    auth failures all workers counted and the sends the other process counted."""
    from django.db import connection

    metrics_dir = tmp_path / "prom"
    db = settings.DATABASES["default"]
    if connection.vendor == "sqlite":
        database_url = f"sqlite:///{db['NAME']}"
    else:
        database_url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.test_settings",
        DATABASE_URL=database_url,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        METRICS_TOKEN=TOKEN,
        RATELIMIT_ENABLE="false",
    )
    # The "sender": another live process counting sends into the same directory (gunicorn
    # removes the files of dead processes when it starts, keeps a running sender's).
    code = (
        "import sys, django; django.setup()\n"
        "from messaging import metrics\n"
        "for _ in range(5): metrics.send_outcome('sandbox', 'sent')\n"
        "print('ready', flush=True); sys.stdin.read()\n"
    )
    metrics_dir.mkdir()
    sender = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert sender.stdout.readline().strip() == "ready"
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi", "-c", "config/gunicorn.conf.py",
         "--bind", f"127.0.0.1:{port}", "--workers", "3"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        session = requests.Session()
        session.headers["Connection"] = "close"  # spread the requests over the workers
        for _ in range(12):
            r = session.post(f"{base}/webhooks/sandbox/status/", data=b"{}", timeout=10,
                             headers={"Content-Type": "application/json"})  # fmt: skip
            assert r.status_code == 401
        for _ in range(6):
            r = session.get(f"{base}/metrics", headers=AUTH, timeout=10)
            assert r.status_code == 200
            found = samples(r.text)
            failures = value(found, "herald_webhook_auth_failures_total",
                             provider="sandbox", kind="status")  # fmt: skip
            assert failures == 12
            assert value(found, "herald_sends_total", provider="sandbox", outcome="sent") == 5
        pids = {p.name.rpartition("_")[2] for p in metrics_dir.glob("counter_*.db")}
        assert len(pids) >= 2  # the sender's file and at least one worker's
    finally:
        server.terminate()
        server.wait(timeout=30)
        sender.communicate("", timeout=30)


def test_gunicorn_config_prunes_only_dead_processes(tmp_path):
    import importlib.util

    # Loaded by path: gunicorn's own package would shadow a `config.gunicorn...` import name.
    spec = importlib.util.spec_from_file_location(
        "herald_gunicorn", ROOT / "config/gunicorn.conf.py"
    )
    ours = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ours)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (tmp_path / f"counter_{os.getpid()}.db").write_bytes(b"")
    (tmp_path / f"counter_{dead}.db").write_bytes(b"")
    removed = ours.prune_dead(str(tmp_path))
    assert [Path(p).name for p in removed] == [f"counter_{dead}.db"]
    assert (tmp_path / f"counter_{os.getpid()}.db").exists()


# --- the shipped alert rules and dashboard -----------------------------------------------------


def _exported_names(client) -> set:
    text = client.get("/metrics", headers=AUTH).content.decode()
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
    return names


def _herald_names(expr: str) -> set:
    import re

    return set(re.findall(r"\bherald_[a-z_]+\b", expr))


@pytest.mark.django_db
def test_every_metric_the_alert_rules_use_is_exported(client, token):
    rules = yaml.safe_load((ROOT / "ops/prometheus/alerts.yml").read_text())
    exported = _exported_names(client)
    seen = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
            assert rule["labels"]["severity"] in ("page", "ticket")
            used = _herald_names(rule["expr"])
            assert used, rule["alert"]
            assert used <= exported, (rule["alert"], used - exported)
            seen.add(rule["alert"])
    assert {"HeraldQueueBacklogOld", "HeraldReceiptLatencyHigh",
            "HeraldWebhookAuthFailures", "HeraldNoSenderHeartbeat",
            "HeraldProviderCircuitOpen", "HeraldProviderDemoted",
            "HeraldCallbacksFailing", "HeraldCallbacksDelayed"} <= seen  # fmt: skip


@pytest.mark.django_db
def test_every_metric_the_dashboard_uses_is_exported(client, token):
    dashboard = json.loads((ROOT / "ops/grafana/herald.json").read_text())
    exported = _exported_names(client)
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 6
    for expr in exprs:
        assert _herald_names(expr) <= exported, expr


@pytest.mark.django_db
def test_callbacks_waiting_and_failed_by_client(client, token):
    from messaging.models import Callback, Client

    acme = Client.objects.create(name="Acme", slug="acme")
    now = timezone.now()
    for n, state in enumerate(["pending", "pending", "failed", "delivered"]):
        Callback.objects.create(
            event_id=f"evt_{n}", event_type="message.status", client=acme, payload={},
            url="https://93.184.215.14/h", state=state, next_attempt_at=now,
            occurred_at=now - timedelta(seconds=120), give_up_at=now + timedelta(hours=24),
        )  # fmt: skip
    found = scrape(client)
    assert value(found, "herald_callbacks_pending", client="acme") == 2
    assert value(found, "herald_callbacks_failed", client="acme") == 1
    assert value(found, "herald_callbacks_pending_oldest_age_seconds", client="acme") >= 119
    assert value(found, "herald_scrape_error", source="callback") == 0
