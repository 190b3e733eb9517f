"""Outbound HTTP for status callbacks, behind the SSRF guard.

A callback URL is the client's to choose, so it must not become a way into our own network:
- `check_url` (when a URL is set, and again before every request) allows only `https` and a host
  whose every address is public (not loopback, private, link-local, multicast, reserved,
  shared or unspecified);
- `Transport.post` resolves the host ONCE, checks those addresses, and connects to the checked
  address itself (TLS still verifies the certificate for, and sends SNI with, the URL's host
  name). A DNS answer that changes between the check and the connection (rebinding) therefore
  never reaches the network: nothing resolves the name a second time;
- redirects are never followed (a 3xx is a failed attempt).
`CALLBACK_ALLOW_PRIVATE_NETWORKS` (development and tests only) allows `http` and any address.

`resolve` is the one place a name is looked up (tests replace `socket.getaddrinfo` there).
"""

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3
from django.conf import settings
from django.core.exceptions import ValidationError

EXCERPT_BYTES = 512  # the first bytes of an answer kept on the attempt


class Refused(ValueError):
    """A URL (or what its host resolves to) that callbacks must not be sent to."""


def allow_private() -> bool:
    return settings.CALLBACK_ALLOW_PRIVATE_NETWORKS


def _split(url: str):
    parts = urlsplit(url.strip())
    schemes = ("https", "http") if allow_private() else ("https",)
    if parts.scheme not in schemes:
        raise Refused("The callback URL must use https.")
    if not parts.hostname:
        raise Refused("The callback URL has no host.")
    if parts.username or parts.password:
        raise Refused("The callback URL must not contain credentials.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Refused("The callback URL has an invalid port.") from None
    return parts, port


def resolve(host: str, port: int) -> list:
    """Every address `host` resolves to (the one DNS seam)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"The callback host {host} does not resolve ({exc}).") from None
    addresses = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise Refused(f"The callback host {host} does not resolve.")
    return addresses


def is_public(address) -> bool:
    if address.version == 6 and address.ipv4_mapped:  # ::ffff:127.0.0.1 is 127.0.0.1
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_link_local
    )


def check_url(url: str) -> tuple:
    """(parts, port, addresses) of a URL callbacks may go to; raises Refused otherwise."""
    parts, port = _split(url)
    addresses = resolve(parts.hostname, port)
    if not allow_private():
        for address in addresses:
            if not is_public(address):
                raise Refused(
                    f"The callback host {parts.hostname} resolves to {address}, which is not "
                    "a public address."
                )
    return parts, port, addresses


def validate_url(url: str):
    """The rule as a field validator (model fields, forms, the API serializer): "" is allowed
    (no callbacks); anything else must pass check_url."""
    if not url:
        return
    if len(url) > 500:
        raise ValidationError("The callback URL must be at most 500 characters.")
    try:
        check_url(url)
    except Refused as exc:
        raise ValidationError(str(exc)) from None


@dataclass
class Answer:
    status: int | None = None
    latency_ms: int = 0
    excerpt: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Transport:
    """One per worker thread: keeps a connection per (checked address, host) alive between
    callbacks to the same endpoint."""

    def __init__(self):
        self._pools = {}

    def _pool(self, scheme: str, address, port: int, host: str, timeout: float):
        key = (scheme, str(address), port, host)
        pool = self._pools.get(key)
        if pool is None:
            kwargs = {"maxsize": 1, "retries": False, "timeout": urllib3.Timeout(total=timeout)}
            if scheme == "https":
                pool = urllib3.HTTPSConnectionPool(
                    str(address), port, server_hostname=host, assert_hostname=host,
                    cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(), **kwargs,
                )  # fmt: skip
            else:
                pool = urllib3.HTTPConnectionPool(str(address), port, **kwargs)
            if len(self._pools) > 64:  # bounded: one thread talks to many endpoints
                self.close()
            self._pools[key] = pool
        return pool

    def close(self):
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def post(self, url: str, body: bytes, headers: dict, timeout: float) -> Answer:
        started = time.monotonic()
        try:
            parts, port, addresses = check_url(url)
        except Refused as exc:
            return Answer(error=f"refused: {exc}")
        host = parts.hostname
        default_port = 443 if parts.scheme == "https" else 80
        host_header = f"[{host}]" if ":" in host else host
        if port != default_port:
            host_header += f":{port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        pool = self._pool(parts.scheme, addresses[0], port, host, timeout)
        try:
            response = pool.urlopen(
                "POST", path, body=body, headers={**headers, "Host": host_header},
                redirect=False, retries=False, preload_content=False, assert_same_host=False,
            )  # fmt: skip
            try:
                excerpt = response.read(EXCERPT_BYTES)
            finally:
                if response.length_remaining == 0:
                    response.release_conn()
                else:  # a long or unread answer: not worth draining
                    response.close()
        except Exception as exc:  # timeouts, refused connections, TLS errors
            return Answer(latency_ms=_ms(started), error=f"{type(exc).__name__}: {exc}"[:1000])
        answer = Answer(
            status=response.status,
            latency_ms=_ms(started),
            excerpt=excerpt.decode("utf-8", "replace"),
        )
        if 300 <= response.status < 400:
            location = response.headers.get("Location", "")[:300]
            answer.error = f"redirect not followed (Location: {location})"
        elif not answer.ok:
            answer.error = f"HTTP {response.status}"
        return answer


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
