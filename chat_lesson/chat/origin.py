"""Whose page may open the chat's WebSocket: the Origin rule, as one pure function.

Why a WebSocket server checks Origin at all (RFC 6455 §10.2): a browser lets
*any* page open a WebSocket to *any* server, and sends the cookies it holds
for that server along.  The only thing that tells the server which page is
asking is the ``Origin`` header, which the browser sets and page scripts
cannot change.  So a browser client is admitted only when its Origin is the
chat page's own origin (scheme, host and port; RFC 6454 §4), or one the
teacher listed; a client with no Origin at all is not a browser, and the
check cannot say anything about it (a script may send any header it likes).

*The chat page's own origin* is the subtle part.  Served directly, the page
is at ``http://127.0.0.1:8000/`` and the browser sends ``Host: 127.0.0.1:8000``
with ``Origin: http://127.0.0.1:8000``: compare the two, as scheme, host and
port.  Behind a reverse proxy the chat sees the proxy's request, not the
browser's.  On JupyterHub, Binder or a remote JupyterLab the page is reached
through the Jupyter server itself, with jupyter-server-proxy, at
``<base_url>proxy/<port>/``.  What that proxy forwards was measured (see
``tests/test_proxy.py``): it connects from 127.0.0.1, keeps the browser's
``Host`` and ``Origin`` as they were, adds ``X-Forwarded-Context`` /
``X-Forwarded-Prefix`` on plain HTTP requests only (not on the WebSocket
upgrade), and passes on any ``Forwarded`` / ``X-Forwarded-*`` header the
request already carried (JupyterHub's proxy adds ``X-Forwarded-Proto``,
``-Host``, ``-Port`` and ``-For``).  So through jupyter-server-proxy the
plain comparison already matches, *except* for the scheme: a hub served over
https gives ``Origin: https://hub.example`` while the chat itself only ever
speaks http.  The proxy in front says so in ``X-Forwarded-Proto: https``
(or RFC 7239's ``Forwarded: proto=https``).

Those headers are believed only from a loopback peer: a proxy on this very
machine (the Jupyter server, or a local nginx).  Anyone on the network can
write ``X-Forwarded-Host: whatever`` into a request; only software already
running here can connect from 127.0.0.1 or ::1.  (A browser cannot set them
on a WebSocket handshake at all, which is why believing them never lets a
foreign *page* in.)

The classroom issue adds a Host allowlist (DNS rebinding: a foreign page
whose name suddenly resolves to 127.0.0.1 sends a matching Host and Origin
of its own name): :func:`check_origin` takes it as ``hosts``, and ``None``
(the default) means "any host".
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

__all__ = ["client_address", "Address", "Verdict", "check_origin", "forwarded", "is_loopback", "origin_of", "public_address",
           "same_origin"]

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True)
class Address:
    """A (scheme, host, port) triple: an origin (RFC 6454 §4), host lower-cased, IPv6 without brackets."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = DEFAULT_PORTS.get(self.scheme)
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")


@dataclass(frozen=True)
class Verdict:
    """The decision and the reason for it, in words a log line or a 403 body can show as they are."""

    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def origin_of(scheme: str, authority: str | None) -> Address | None:
    """``scheme`` and a ``host[:port]`` authority (a Host header, say) as an :class:`Address`, or None if malformed."""
    scheme = scheme.lower()
    if not authority or scheme not in DEFAULT_PORTS:
        return None
    try:
        parts = urllib.parse.urlsplit(f"{scheme}://{authority.strip()}")
        host, port = parts.hostname, parts.port
    except ValueError:       # a port that is not a number, or out of range
        return None
    if not host or parts.path or parts.query or parts.username is not None:
        return None
    return Address(scheme, host.lower(), port if port is not None else DEFAULT_PORTS[scheme])


def _parse_origin(origin: str) -> Address | None:
    """The Origin header as an :class:`Address`; None for ``null`` (RFC 6454 §7.3), paths, or other schemes."""
    scheme, sep, authority = origin.strip().partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None
    return origin_of(scheme, authority.rstrip("/"))


def same_origin(origin: str, host: str | None, scheme: str = "http") -> bool:
    """True when the Origin header names the page at ``scheme://host``: same scheme, host and port.

    A page served by this server at http://H:P opens ws://H:P/ws and its
    browser sends ``Origin: http://H:P`` and ``Host: H:P``.  Ports are
    compared with the scheme's default filled in (RFC 6454 §4), so
    ``https://hub.example`` is the page at ``hub.example:443``.
    """
    theirs, ours = _parse_origin(origin), origin_of(scheme, host)
    return theirs is not None and theirs == ours


def is_loopback(peer: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ::ffff:127.x.y.z: a connection from this machine."""
    try:
        address = ipaddress.ip_address((peer or "").split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _first(value: str | None) -> str | None:
    """The first entry of a comma-separated list: the one the proxy nearest the browser wrote."""
    if not value:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    """What the proxies say the browser asked for: {"proto": ..., "host": ...}, either may be missing.

    RFC 7239's ``Forwarded: for=...;proto=https;host=hub.example`` wins;
    otherwise the de-facto ``X-Forwarded-Proto``, ``X-Forwarded-Host`` and
    ``X-Forwarded-Port``.  Each proxy appends its own entry, so the first
    entry is the one written by the proxy nearest the browser, the one that
    saw what the browser saw.  ``headers`` must look names up without regard
    to case (websockets' and our own ``Headers`` do).
    """
    said: dict[str, str] = {}
    element = _first(headers.get("Forwarded"))
    if element:
        for pair in element.split(";"):
            name, _, value = pair.partition("=")
            name, value = name.strip().lower(), value.strip().strip('"')
            if name in ("proto", "host") and value:
                said[name] = value
    if not said:
        proto, host, port = (_first(headers.get(f"X-Forwarded-{n}")) for n in ("Proto", "Host", "Port"))
        if proto:
            said["proto"] = proto
        if host:
            said["host"] = host
            if port and port.isdigit() and ":" not in host.rsplit("]", 1)[-1]:     # a port of its own wins
                said["host"] = f"{host}:{port}"
    return said


def client_address(headers: Mapping[str, str], peer: str | None, trust_forwarded: bool = True) -> str:
    """The browser's IP address: the peer's, or, from a proxy on this machine, the one it forwarded.

    A reverse proxy (nginx in lesson 08) connects from 127.0.0.1 for every
    browser; it names the browser in ``Forwarded: for=...`` (RFC 7239 §5.2)
    or ``X-Forwarded-For``.  Believed only from a loopback peer: anyone
    else could name any address and dodge its budget.  Without such a
    header the proxy's own address stays (jupyter-server-proxy sends none).
    """
    peer = peer or ""
    if not (trust_forwarded and is_loopback(peer)):
        return peer
    element = _first(headers.get("Forwarded"))
    named = None
    for pair in (element or "").split(";"):
        key, _, value = pair.partition("=")
        if key.strip().lower() == "for":
            named = value.strip().strip('"')
    named = named or _first(headers.get("X-Forwarded-For")) or (headers.get("X-Real-IP") or "").strip() or None
    if not named:
        return peer
    if named.startswith("["):                                # "[2001:db8::1]:4711"
        named = named[1:].split("]", 1)[0]
    elif named.count(":") == 1:                              # "192.0.2.43:4711"
        named = named.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(named))
    except ValueError:
        return peer                                          # "unknown" or an obfuscated name: keep the peer


def public_address(headers: Mapping[str, str], peer: str | None, trust_forwarded: bool = True) -> Address | None:
    """Where the browser thinks the page is: Host over http, or what a loopback proxy says instead.

    This server speaks plain http only, so without a proxy the scheme is
    ``http``; a local proxy may say ``https`` (and another host) in
    ``Forwarded`` / ``X-Forwarded-*`` (see :func:`forwarded`).
    """
    said = forwarded(headers) if trust_forwarded and is_loopback(peer) else {}
    return origin_of(said.get("proto", "http"), said.get("host") or headers.get("Host"))


def check_origin(
    headers: Mapping[str, str],
    peer: str | None,
    extra_origins: Iterable[str] = (),
    *,
    hosts: Collection[str] | None = None,
    trust_forwarded: bool = True,
) -> Verdict:
    """May this WebSocket handshake proceed, as far as the page that opened it goes? (RFC 6455 §10.2)

    - ``headers``: the request's headers (case-insensitive lookups).
    - ``peer``: the IP address the connection comes from.
    - ``extra_origins``: other pages the teacher allowed (``http://host:port``).
    - ``hosts``: the host names the request may be addressed to, or None
      for any (the Host allowlist against DNS rebinding).
    - ``trust_forwarded``: believe ``Forwarded`` / ``X-Forwarded-*`` from a
      loopback peer (see the module's docstring).

    In order: no Origin is a non-browser client, admitted; an Origin the
    teacher listed is admitted; then the request must be addressed to an
    allowed host, and the Origin must be that very page: same scheme, host
    and port.
    """
    origin = headers.get("Origin")
    if origin is None:
        return Verdict(True, "no Origin: not a browser, so not a page's request (RFC 6455 §10.2)")
    listed = {o.strip().rstrip("/").lower() for o in extra_origins}
    if origin.strip().rstrip("/").lower() in listed:
        return Verdict(True, f"Origin {origin!r} is listed in origins=")
    page = public_address(headers, peer, trust_forwarded)
    if page is None:
        return Verdict(False, f"the request names no valid Host ({headers.get('Host')!r}), so no page can match "
                              "its Origin; send a Host header (RFC 9112 §3.2)")
    if hosts is not None and page.host not in {h.lower().strip("[]") for h in hosts}:
        return Verdict(False, f"the request is addressed to {page.host!r}, which is not one of this server's names "
                              f"({', '.join(sorted(hosts)) or 'none'}); if it is, allow it (--allow-host {page.host})")
    theirs = _parse_origin(origin)
    fix = f"open the chat from its own link ({page}/), or start the server with origins=[{origin!r}]"
    if theirs is None:
        return Verdict(False, f"Origin {origin!r} is not an http(s) page's origin; {fix}")
    if theirs.scheme != page.scheme:
        proxy = "; a TLS proxy in front of the chat must say so (X-Forwarded-Proto: https)" if theirs.scheme == "https" else ""
        return Verdict(False, f"Origin {origin!r} is an {theirs.scheme} page but the chat was reached over "
                              f"{page.scheme}{proxy}; {fix}")
    if theirs != page:
        return Verdict(False, f"Origin {origin!r} is not the chat's page ({page}); {fix}")
    via = " (as a local proxy forwarded it)" if page != origin_of("http", headers.get("Host")) else ""
    return Verdict(True, f"Origin {origin!r} is the chat's own page{via}")
