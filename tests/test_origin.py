"""The Origin rule (chat_lesson.chat.origin): pure, so every case is one call.

The headers of the proxied cases are the ones measured through
jupyter-server-proxy (tests/test_proxy.py): Host and Origin kept as the
browser sent them, the connection from 127.0.0.1, and whatever Forwarded /
X-Forwarded-* header a proxy in front added passed on unchanged.
"""

from __future__ import annotations

import pytest

from chat_lesson.chat.origin import Address, check_origin, forwarded, is_loopback, origin_of, public_address, same_origin
from chat_lesson.protocol.handshake import Headers
from chat_lesson.notebook import link_for


def h(**fields: str) -> Headers:
    """Headers(("X-Forwarded-Proto", "https"), ...) from X_Forwarded_Proto="https"."""
    return Headers((name.replace("_", "-"), value) for name, value in fields.items())


LAN = "192.168.1.20"


# -- served directly ---------------------------------------------------------------


def test_no_origin_is_not_a_browser_and_is_admitted():
    assert check_origin(h(Host="127.0.0.1:8000"), LAN).allowed


def test_the_page_itself_is_admitted_from_anywhere():
    assert check_origin(h(Host="127.0.0.1:8000", Origin="http://127.0.0.1:8000"), "127.0.0.1")
    assert check_origin(h(Host="192.168.1.5:8000", Origin="http://192.168.1.5:8000"), LAN)
    assert check_origin(h(Host="[::1]:8000", Origin="http://[::1]:8000"), "::1")
    assert check_origin(h(Host="LocalHost:8000", Origin="http://localhost:8000/"), "127.0.0.1")   # case, trailing /


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:8001", "http://127.0.0.1",
                                    "null", "file://", "chrome-extension://abc", "http://127.0.0.1:8000/path",
                                    "http://127.0.0.1:8000, http://127.0.0.1:8000", ""])
def test_other_pages_are_refused(origin):
    verdict = check_origin(h(Host="127.0.0.1:8000", Origin=origin), "127.0.0.1")
    assert not verdict.allowed
    assert "origins=" in verdict.reason                      # says what to do


def test_scheme_is_compared_the_chat_itself_speaks_only_http():
    verdict = check_origin(h(Host="127.0.0.1:8000", Origin="https://127.0.0.1:8000"), "127.0.0.1")
    assert not verdict.allowed
    assert "X-Forwarded-Proto" in verdict.reason


def test_default_ports_are_filled_in():
    assert check_origin(h(Host="hub.example:80", Origin="http://hub.example"), "127.0.0.1")
    assert not check_origin(h(Host="hub.example:443", Origin="http://hub.example"), "127.0.0.1")


def test_listed_origins_are_admitted_whatever_the_host():
    headers = h(Host="127.0.0.1:8000", Origin="http://teacher.example:8888")
    assert not check_origin(headers, LAN)
    assert check_origin(headers, LAN, ["http://teacher.example:8888/"])


def test_a_request_without_a_valid_host_matches_no_page():
    for headers in (h(Origin="http://127.0.0.1:8000"), h(Host="127.0.0.1:port", Origin="http://127.0.0.1:8000")):
        verdict = check_origin(headers, "127.0.0.1")
        assert not verdict.allowed and "Host" in verdict.reason


# -- through a proxy on this machine --------------------------------------------------


def test_jupyter_server_proxy_keeps_host_and_origin_so_the_page_matches():
    # measured: the Jupyter server at 127.0.0.1:8888 proxies /user/alice/proxy/8000/ws to 127.0.0.1:8000/ws
    assert check_origin(h(Host="127.0.0.1:8888", Origin="http://127.0.0.1:8888"), "127.0.0.1")
    assert not check_origin(h(Host="127.0.0.1:8888", Origin="http://evil.example"), "127.0.0.1")


def test_https_hub_in_front_says_so_and_is_believed_from_loopback():
    hub = h(Host="hub.example", Origin="https://hub.example", X_Forwarded_Proto="https",
            X_Forwarded_Host="hub.example", X_Forwarded_Port="443", X_Forwarded_For="203.0.113.7")
    assert check_origin(hub, "127.0.0.1")
    assert check_origin(hub, "::ffff:127.0.0.1")
    assert not check_origin(hub, LAN)                                   # anyone on the network could write that
    assert not check_origin(hub, "127.0.0.1", trust_forwarded=False)
    evil = h(Host="hub.example", Origin="https://evil.example", X_Forwarded_Proto="https")
    assert not check_origin(evil, "127.0.0.1")


def test_a_proxy_that_rewrites_host_names_the_public_one():
    nginx = h(Host="127.0.0.1:8000", Origin="https://chat.school.example", X_Forwarded_Host="chat.school.example",
              X_Forwarded_Proto="https")
    assert check_origin(nginx, "127.0.0.1")
    assert not check_origin(h(Host="127.0.0.1:8000", Origin="http://127.0.0.1:8000", X_Forwarded_Host="chat.school.example"),
                            "127.0.0.1")                                # the proxy's word wins over Host


def test_rfc7239_forwarded_wins_and_its_first_element_counts():
    headers = h(Host="127.0.0.1:8000", Origin="https://hub.example",
                Forwarded='for=203.0.113.7;proto=https;host="hub.example", for=10.0.0.2;proto=http;host=inner:80',
                X_Forwarded_Proto="http")
    assert forwarded(headers) == {"proto": "https", "host": "hub.example"}
    assert check_origin(headers, "127.0.0.1")


def test_x_forwarded_port_only_fills_a_missing_port():
    assert forwarded(h(X_Forwarded_Host="hub.example", X_Forwarded_Port="8443")) == {"host": "hub.example:8443"}
    assert forwarded(h(X_Forwarded_Host="hub.example:9000", X_Forwarded_Port="8443")) == {"host": "hub.example:9000"}
    assert forwarded(h(X_Forwarded_Host="[::1]", X_Forwarded_Port="8443")) == {"host": "[::1]:8443"}
    assert forwarded(h(X_Forwarded_Proto="https, http")) == {"proto": "https"}


def test_public_address():
    assert public_address(h(Host="127.0.0.1:8000"), LAN) == Address("http", "127.0.0.1", 8000)
    assert public_address(h(Host="h:1", X_Forwarded_Proto="https"), "127.0.0.1") == Address("https", "h", 1)
    assert public_address(h(Host="h:1", X_Forwarded_Proto="https"), LAN) == Address("http", "h", 1)
    assert str(Address("https", "hub.example", 443)) == "https://hub.example"
    assert str(Address("http", "::1", 8000)) == "http://[::1]:8000"


@pytest.mark.parametrize(("peer", "loopback"), [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True),
                                                ("::ffff:127.0.0.1", True), (LAN, False), ("::ffff:10.0.0.1", False),
                                                ("", False), (None, False), ("not an address", False)])
def test_is_loopback(peer, loopback):
    assert is_loopback(peer) is loopback


# -- the Host allowlist (classroom mode fits in as a parameter) ------------------------


def test_host_allowlist_refuses_a_rebound_name():
    # DNS rebinding: evil.example now resolves to 127.0.0.1, so its page's Host and Origin agree
    rebound = h(Host="evil.example:8000", Origin="http://evil.example:8000")
    assert check_origin(rebound, "127.0.0.1")                           # no allowlist: admitted
    names = {"localhost", "127.0.0.1", "::1"}
    verdict = check_origin(rebound, "127.0.0.1", hosts=names)
    assert not verdict.allowed and "--allow-host evil.example" in verdict.reason
    assert check_origin(h(Host="[::1]:8000", Origin="http://[::1]:8000"), "::1", hosts=names)


# -- the old helper and its neighbours -------------------------------------------------


def test_same_origin_compares_scheme_host_and_port():
    assert same_origin("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert not same_origin("https://127.0.0.1:8000", "127.0.0.1:8000")
    assert same_origin("https://hub.example", "hub.example", scheme="https")
    assert not same_origin("http://127.0.0.1:8000", None)
    assert origin_of("ftp", "h:1") is None and origin_of("http", "h:99999") is None


def test_the_start_cell_link_goes_through_jupyter_under_a_hub():
    hub = {"JUPYTERHUB_SERVICE_PREFIX": "/user/alice/"}
    assert link_for("http://127.0.0.1:8000/", "auto", {}) == "http://127.0.0.1:8000/"
    assert link_for("http://127.0.0.1:8000/", "auto", hub) == "/user/alice/proxy/8000/"
    assert link_for("http://127.0.0.1:8000/", "direct", hub) == "http://127.0.0.1:8000/"
    assert link_for("http://127.0.0.1:8000/", "proxy", {}) == "/proxy/8000/"
    assert link_for("http://127.0.0.1:8000/", "proxy", {"JUPYTERHUB_SERVICE_PREFIX": "/user/bob"}) == "/user/bob/proxy/8000/"
    with pytest.raises(ValueError, match="'proxy'"):
        link_for("http://127.0.0.1:8000/", "hub", {})


@pytest.mark.parametrize("headers, peer, expected", [
    ({"X-Forwarded-For": "192.0.2.7, 10.0.0.1"}, "127.0.0.1", "192.0.2.7"),
    ({"Forwarded": 'for="[2001:db8::1]:4711";proto=https'}, "127.0.0.1", "2001:db8::1"),
    ({"Forwarded": "for=192.0.2.43:4711"}, "::1", "192.0.2.43"),
    ({"X-Real-IP": "192.0.2.9"}, "127.0.0.1", "192.0.2.9"),
    ({"X-Forwarded-For": "192.0.2.7"}, "10.0.0.5", "10.0.0.5"),        # only a proxy on this machine is believed
    ({"X-Forwarded-For": "unknown"}, "127.0.0.1", "127.0.0.1"),
    ({}, "127.0.0.1", "127.0.0.1"),
])
def test_the_client_address_behind_a_local_proxy(headers, peer, expected):
    from chat_lesson.chat.origin import client_address

    assert client_address(headers, peer) == expected
    assert client_address(headers, peer, trust_forwarded=False) == peer
