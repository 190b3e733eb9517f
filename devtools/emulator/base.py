"""The provider emulator framework.

One threaded HTTP server serves every registered provider's endpoints at their real paths and
posts receipts in each provider's exact wire format back to Herald's webhooks. Provider modules
(devtools/emulator/<provider>.py) subclass EmulatedProvider and register themselves.

The framework owns what is common:
- fault injection before a handler runs: latency, a share of 429s, 5xx and timeouts, and a
  per-provider rate limit answered with 429 in the provider's own error format;
- the outcome of a message, chosen by the destination's last digit (as the sandbox does);
- timing and posting receipts from a background thread (with retries on 5xx, like providers);
- statistics, served at GET /_emulator/stats.
"""

import importlib
import json
import logging
import random
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import requests

from messaging.providers import sandbox

log = logging.getLogger("herald.emulator")

REGISTRY: dict = {}


def register(cls):
    REGISTRY[cls.name] = cls
    return cls


def load_providers():
    """Import the emulator every known provider's class names (Provider.EMULATOR); importing
    it registers it."""
    from messaging import providers

    for name in providers.known_names():
        path = providers.backend_class(name).EMULATOR
        if path:
            importlib.import_module(path.rsplit(".", 1)[0])
    return REGISTRY


# --- Wire types --------------------------------------------------------------------------------


@dataclass
class EmuRequest:
    method: str
    path: str
    query: dict  # name -> [values]
    headers: dict  # lower-case names
    body: bytes

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def form(self) -> dict:
        return parse_qs(self.body.decode("utf-8"), keep_blank_values=True)


@dataclass
class EmuReply:
    status: int
    body: object = b""  # bytes, str, or anything json.dumps takes
    headers: dict = field(default_factory=dict)
    content_type: str = "application/json"

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass
class Webhook:
    url: str
    body: bytes
    headers: dict = field(default_factory=dict)
    method: str = "POST"


@dataclass(frozen=True)
class Step:
    status: str  # accepted delivered failed expired rejected unknown
    error: str = ""  # "" or "error": the provider picks its own code
    offset_ms: int = 0  # provider timestamp offset from the first receipt


def _steps(table):
    """The sandbox's (status, error code, offset) rows as emulator steps: an error code becomes
    "error", for each emulated provider to pick its own code."""
    return [Step(status, "error" if code else "", offset) for status, code, offset in table]


# The sandbox provider's own table (messaging/providers/sandbox.py): the destination's last
# digit decides, the same for the sandbox and for every emulated provider.
SCENARIOS = {digit: _steps(table) for digit, table in sandbox.SCENARIOS.items()}
DEFAULT_SCENARIO = _steps(sandbox.DEFAULT_SCENARIO)


@dataclass
class Sent:
    """A message the emulated provider accepted."""

    provider: str
    to: str
    provider_ids: list
    callback_url: str
    client_ref: str
    body: str = ""
    segments: int = 1
    sender: str = ""
    accepted_at: float = field(default_factory=time.time)
    status: str = "accepted"  # the latest status, for fetch/report endpoints
    extra: dict = field(default_factory=dict)


@dataclass
class Faults:
    latency_ms: float = 0.0
    rate_429: float = 0.0
    rate_5xx: float = 0.0
    rate_timeout: float = 0.0
    timeout_seconds: float = 30.0  # how long a "timeout" holds the connection before answering
    rate_limit: dict = field(default_factory=dict)  # provider name -> requests per second


# --- Provider base -----------------------------------------------------------------------------


class EmulatedProvider:
    name = ""
    per_part_receipts = False  # Vonage SMS API: one receipt per part

    def __init__(self, emulator: "Emulator"):
        self.emulator = emulator
        self.lock = threading.Lock()
        self.sent: dict = {}  # provider id -> Sent

    @property
    def options(self) -> dict:
        from django.conf import settings

        return settings.SMS_PROVIDERS.get(self.name, {}).get("OPTIONS", {})

    def first_secret(self, key) -> str:
        return str(self.options.get(key) or "").split(",")[0].strip()

    def routes(self) -> list:
        raise NotImplementedError

    def receipt(self, sent: Sent, step: Step, part_index: int) -> Webhook:
        raise NotImplementedError

    def error_reply(self, status: int) -> EmuReply:
        return EmuReply(status, {"error": f"emulated {status}"})

    def new_id(self) -> str:
        return uuid.uuid4().hex

    def default_webhook_url(self, kind="status") -> str:
        return f"{self.emulator.webhook_base}/webhooks/{self.name}/{kind}/"

    def accept(self, *, to, provider_ids, callback_url="", client_ref="", body="", segments=1,
               sender="", webhooks=True, **extra) -> Sent:  # fmt: skip
        """Record an accepted send and schedule its receipts (none with webhooks=False: the
        provider would not send any for this request)."""
        sent = Sent(self.name, to, list(provider_ids), callback_url, client_ref, body, segments,
                    sender, extra=extra)  # fmt: skip
        with self.lock:
            for pid in sent.provider_ids:
                self.sent[pid] = sent
        self.emulator.stats.record_send(self.name, to)
        digits = re.sub(r"\D", "", to)
        steps = SCENARIOS.get(digits[-1:] if digits else "", DEFAULT_SCENARIO) if webhooks else []
        parts = range(len(sent.provider_ids)) if self.per_part_receipts else [0]
        for n, step in enumerate(steps):
            for part in parts:
                self.emulator.schedule(self, sent, step, part, n)
        return sent

    def lookup(self, provider_id) -> Sent | None:
        with self.lock:
            return self.sent.get(provider_id)


# --- Statistics --------------------------------------------------------------------------------


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = Counter()  # provider -> requests received (incl. faults)
        self.faults = Counter()  # (provider, kind) -> count
        self.sends = defaultdict(Counter)  # provider -> destination -> accepted sends
        self.webhooks_posted = Counter()
        self.webhooks_failed = Counter()

    def record_send(self, provider, to):
        with self.lock:
            self.sends[provider][to] += 1

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "requests": dict(self.requests),
                "faults": {f"{p}:{k}": n for (p, k), n in self.faults.items()},
                "sends": {p: dict(c) for p, c in self.sends.items()},
                "webhooks_posted": dict(self.webhooks_posted),
                "webhooks_failed": dict(self.webhooks_failed),
            }


# --- The server --------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are written separately: without TCP_NODELAY the body waits for the
    # client's delayed ACK, adding ~40 ms to every emulated request.
    disable_nagle_algorithm = True
    emulator: "Emulator" = None

    def log_message(self, format, *args):  # quiet: the stats endpoint tells what happened
        pass

    def _handle(self):
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = EmuRequest(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        reply = self.emulator.dispatch(request)
        if reply is None:  # an injected timeout: hold the connection, then drop it
            time.sleep(self.emulator.faults.timeout_seconds)
            self.close_connection = True
            return
        payload = reply.encoded()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


class Emulator:
    """Run with `with Emulator(...) as emu:` in tests, or `serve_forever()` from the command."""

    def __init__(self, host="127.0.0.1", port=0, webhook_base=None, receipt_delay=1.0,
                 faults: Faults | None = None, seed=None, providers=None):  # fmt: skip
        from django.conf import settings

        self.host, self.port = host, port
        self.webhook_base = (webhook_base or settings.PUBLIC_BASE_URL).rstrip("/")
        self.receipt_delay = receipt_delay
        self.faults = faults or Faults()
        self.random = random.Random(seed)
        self.stats = Stats()
        registry = providers if providers is not None else load_providers()
        self.providers = {name: cls(self) for name, cls in registry.items()}
        self._routes = [
            (method, re.compile(pattern), handler, provider)
            for provider in self.providers.values()
            for method, pattern, handler in provider.routes()
        ]
        self._rate_next = {}
        self._rate_lock = threading.Lock()
        self._queue = []  # (due, seq, webhook) kept sorted by due
        self._queue_lock = threading.Condition()
        self._seq = 0
        self._inflight = 0
        self._stopping = False
        self._server = None
        self._threads = []
        self._session = requests.Session()

    # --- lifecycle ---

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self):
        handler = type("Handler", (_Handler,), {"emulator": self})
        self._server = _Server((self.host, self.port), handler)
        self.port = self._server.server_address[1]
        for target in (self._server.serve_forever, self._post_receipts):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self):
        self._stopping = True
        with self._queue_lock:
            self._queue_lock.notify_all()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        self._session.close()  # drop keep-alive connections before the webhook server goes

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def serve_forever(self):
        self.start()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            self.stop()

    # --- requests ---

    def dispatch(self, request: EmuRequest):
        if request.path == "/_emulator/stats":
            return EmuReply(200, self.stats.snapshot())
        for method, pattern, handler, provider in self._routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                with self.stats.lock:
                    self.stats.requests[provider.name] += 1
                fault = self._fault(provider)
                if fault == "timeout":
                    return None
                if fault:
                    with self.stats.lock:
                        self.stats.faults[(provider.name, str(fault))] += 1
                    return provider.error_reply(fault)
                return handler(request, match)
        return EmuReply(404, {"error": f"no emulated endpoint for {request.method} {request.path}"})

    def _fault(self, provider):
        faults = self.faults
        # The limit admits a request when it arrives, as a provider's front door does; the
        # latency is the work behind it. (Taking the token after the sleep measured this
        # thread's wake-up delay too, which on a busy machine made on-time requests look early.)
        limit = faults.rate_limit.get(provider.name)
        throttled = bool(limit) and not self._take_token(provider.name, limit)
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if throttled:
            return 429
        roll = self.random.random()
        if roll < faults.rate_429:
            return 429
        if roll < faults.rate_429 + faults.rate_5xx:
            return 503
        if roll < faults.rate_429 + faults.rate_5xx + faults.rate_timeout:
            with self.stats.lock:
                self.stats.faults[(provider.name, "timeout")] += 1
            return "timeout"
        return None

    def _take_token(self, name, rate) -> bool:
        """A strict pacing limit: at most `rate` requests per second, no bursts beyond one."""
        with self._rate_lock:
            now = time.monotonic()
            allowed_at = self._rate_next.get(name, now)
            if allowed_at - now > 1.0 / rate:  # more than one request ahead of schedule
                return False
            self._rate_next[name] = max(allowed_at, now) + 1.0 / rate
            return True

    # --- receipts ---

    def schedule(self, provider, sent, step, part_index, order):
        due = time.monotonic() + self.receipt_delay + order * 0.05
        with self._queue_lock:
            self._seq += 1
            self._queue.append((due, self._seq, provider, sent, step, part_index))
            self._queue.sort(key=lambda item: (item[0], item[1]))
            self._queue_lock.notify_all()

    def _post_receipts(self):
        while not self._stopping:
            with self._queue_lock:
                while not self._stopping and (
                    not self._queue or self._queue[0][0] > time.monotonic()
                ):
                    wait = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._queue_lock.wait(timeout=wait)
                if self._stopping:
                    return
                due, seq, provider, sent, step, part = self._queue.pop(0)
                self._inflight += 1
            try:
                self._post(provider, sent, step, part)
            finally:
                with self._queue_lock:
                    self._inflight -= 1
                    self._queue_lock.notify_all()

    def _post(self, provider, sent, step, part, attempt=1):
        sent.status = step.status
        webhook = provider.receipt(sent, step, part)
        try:
            response = self._session.request(
                webhook.method, webhook.url, data=webhook.body, headers=webhook.headers, timeout=10
            )
            ok = response.status_code < 300
            retry = response.status_code == 429 or response.status_code >= 500
        except requests.RequestException:
            ok, retry = False, True
        with self.stats.lock:
            (self.stats.webhooks_posted if ok else self.stats.webhooks_failed)[provider.name] += 1
        if not ok and retry and attempt < 5 and not self._stopping:
            time.sleep(0.2 * attempt)  # providers retry 5xx and 429 with backoff
            self._post(provider, sent, step, part, attempt + 1)

    def wait_idle(self, timeout=30.0) -> bool:
        """Block until every scheduled receipt is posted. False on timeout."""
        deadline = time.monotonic() + timeout
        with self._queue_lock:
            while self._queue or self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue_lock.wait(timeout=min(remaining, 0.1))
        return True
