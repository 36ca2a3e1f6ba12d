"""The connection limits every protocol shares (``mailserver.listener``)."""

from types import SimpleNamespace

from mailserver.listener import ConnectionTable

LIMITS = SimpleNamespace(max_connections=3, max_connections_per_ip=2)


def test_per_ip_and_total_limits_and_release():
    t = ConnectionTable()
    assert t.admit("10.0.0.1", LIMITS) and t.admit("10.0.0.1", LIMITS)
    assert not t.admit("10.0.0.1", LIMITS)  # per IP
    assert t.admit("10.0.0.2", LIMITS)
    assert not t.admit("10.0.0.3", LIMITS)  # total
    assert t == {"10.0.0.1": 2, "10.0.0.2": 1} and t.total == 3
    t.release("10.0.0.1")
    assert t.admit("10.0.0.3", LIMITS)
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        t.release(ip)
    assert t == {} and t.total == 0


def test_release_of_an_unknown_ip_changes_nothing():
    t = ConnectionTable()
    t.release("10.0.0.9")
    assert t == {} and t.total == 0
