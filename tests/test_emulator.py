"""The emulator framework itself, with a minimal provider: routing, faults, rate limit, receipts."""

import json
import time

import pytest
import requests

from devtools.emulator.base import EmulatedProvider, Emulator, EmuReply, Faults, Webhook


class Echo(EmulatedProvider):
    name = "echo"

    def routes(self):
        return [("POST", r"^/send$", self.send)]

    def send(self, req, match):
        data = req.json()
        sent = self.accept(to=data["to"], provider_ids=[self.new_id()],
                           callback_url=data["callback"])  # fmt: skip
        return EmuReply(201, {"id": sent.provider_ids[0]})

    def receipt(self, sent, step, part_index):
        body = json.dumps({"id": sent.provider_ids[0], "status": step.status}).encode()
        return Webhook(url=sent.callback_url, body=body, headers={"Content-Type": "text/plain"})

    def error_reply(self, status):
        return EmuReply(status, {"echo_error": status})


@pytest.fixture
def sink():
    """A second emulator-side server is overkill: collect receipts with a tiny HTTP server."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    received = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", received
    server.shutdown()


def test_scenarios_post_receipts(sink):
    url, received = sink
    with Emulator(receipt_delay=0, providers={"echo": Echo}) as emu:
        for to in ("+447911123457", "+447911123450", "+447911123453"):
            r = requests.post(f"{emu.url}/send", json={"to": to, "callback": url}, timeout=5)
            assert r.status_code == 201
        assert emu.wait_idle(10)
        stats = requests.get(f"{emu.url}/_emulator/stats", timeout=5).json()
    statuses = sorted(r["status"] for r in received)
    # ...7 delivered, ...0 failed, ...3 no receipt: two `accepted` receipts
    assert statuses == ["accepted", "accepted", "delivered", "failed"]
    assert stats["requests"] == {"echo": 3}
    assert stats["webhooks_posted"] == {"echo": 4}


def test_injected_errors_use_provider_format():
    with Emulator(receipt_delay=0, providers={"echo": Echo}, faults=Faults(rate_5xx=1.0)) as emu:
        r = requests.post(f"{emu.url}/send", json={"to": "+1", "callback": "x"}, timeout=5)
    assert r.status_code == 503
    assert r.json() == {"echo_error": 503}


def test_injected_timeout_holds_the_connection():
    faults = Faults(rate_timeout=1.0, timeout_seconds=0.5)
    with (
        Emulator(receipt_delay=0, providers={"echo": Echo}, faults=faults) as emu,
        pytest.raises(requests.RequestException),
    ):
        requests.post(f"{emu.url}/send", json={"to": "+1", "callback": "x"}, timeout=0.2)


def test_rate_limit_answers_429(sink):
    url, _ = sink
    faults = Faults(rate_limit={"echo": 20})
    with Emulator(receipt_delay=60, providers={"echo": Echo}, faults=faults) as emu:
        codes = [
            requests.post(
                f"{emu.url}/send", json={"to": "+13", "callback": url}, timeout=5
            ).status_code
            for _ in range(10)
        ]
        time.sleep(0.5)
        later = requests.post(f"{emu.url}/send", json={"to": "+13", "callback": url}, timeout=5)
        emu.stop()
    assert 429 in codes and codes[0] == 201
    assert later.status_code == 201


def test_unknown_path_is_404():
    with Emulator(providers={"echo": Echo}) as emu:
        assert requests.get(f"{emu.url}/nope", timeout=5).status_code == 404
