"""A real HTTP receiver on 127.0.0.1 for the callback tests (no mocks), and helpers."""

import contextlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from messaging.callback_http import Transport
from messaging.models import Client
from messaging.services import callback_delivery, callbacks

PORTS = range(18200, 18300)  # this work's port range on the shared machine


@dataclass
class Received:
    at: float
    path: str
    headers: dict
    body: bytes


@dataclass
class Receiver:
    """Records every request. `plan(n, path)` (n counts from 1) returns (status, delay seconds,
    extra headers); the default answers 200 at once."""

    server: ThreadingHTTPServer = None
    requests: list = field(default_factory=list)
    plan: object = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self):
        return self.server.server_address[1]

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, count, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.01)
        raise AssertionError(f"got {len(self.requests)} request(s), wanted {count}")


def _handler(receiver):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.lock:
                receiver.requests.append(
                    Received(time.monotonic(), self.path, dict(self.headers.items()), body)
                )
                n = len(receiver.requests)
            status, delay, extra = (receiver.plan or (lambda n, path: (200, 0, {})))(n, self.path)
            if delay:
                time.sleep(delay)
            answer = b'{"ok": true}' if status < 300 else b"nope"
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(answer)

        def log_message(self, *args):
            pass

    return Handler


def _bind(handler):
    for port in PORTS:
        try:
            return ThreadingHTTPServer(("127.0.0.1", port), handler)
        except OSError:
            continue
    raise RuntimeError("no free port in 18200-18299")


@contextlib.contextmanager
def running_receiver(plan=None):
    receiver = Receiver(plan=plan)
    receiver.server = _bind(_handler(receiver))
    receiver.server.daemon_threads = True
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture
def receiver():
    with running_receiver() as r:
        yield r


@pytest.fixture
def local_callbacks(settings):
    """Callbacks may go to http://127.0.0.1 (CALLBACK_ALLOW_PRIVATE_NETWORKS), quick retries."""
    settings.CALLBACK_ALLOW_PRIVATE_NETWORKS = True
    settings.CALLBACK_BACKOFF_BASE = 0.01
    settings.CALLBACK_BACKOFF_CAP = 0.05
    settings.CALLBACK_TIMEOUT = 2.0
    settings.CALLBACK_POLL_INTERVAL = 0.05
    return settings


def make_client(slug, url):
    client = Client.objects.create(name=slug, slug=slug)
    secret = callbacks.configure_endpoint(client, url) if url else None
    return client, secret


def drain(owner="test", rounds=50, transport=None):
    """Claim and deliver in this thread until nothing is due (tests without a worker)."""
    transport = transport or Transport()
    answers = []
    for _ in range(rounds):
        claimed = callback_delivery.claim_due(owner, 50)
        if not claimed:
            break
        answers += [callback_delivery.deliver(c, transport, owner) for c in claimed]
    return answers
