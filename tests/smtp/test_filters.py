"""The filter chain: verdict order, defaults, headers, failing filters."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserver.filters import FilterChain, FilterInput, FilterResult, Verdict

MSG = FilterInput(sender="a@b.test", recipients=("c@d.test",), raw=b"Subject: x\r\n\r\nhi\r\n")


class Fixed:
    def __init__(self, name: str, result: FilterResult | Exception) -> None:
        self.name = name
        self.result = result
        self.calls = 0

    async def check(self, message: FilterInput) -> FilterResult:
        self.calls += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest_twisted.ensureDeferred
async def test_empty_chain_accepts() -> None:
    r = await FilterChain().run(MSG)
    assert r.verdict is Verdict.ACCEPT and r.decided_by is None


@pytest_twisted.ensureDeferred
async def test_declined_passes_on_and_first_decision_wins() -> None:
    a = Fixed("a", FilterResult.declined([("X-A", "1")]))
    b = Fixed("b", FilterResult.reject("spam", 554, "5.7.1"))
    c = Fixed("c", FilterResult.accept())
    r = await FilterChain([a, b, c]).run(MSG)
    assert r.verdict is Verdict.REJECT and r.decided_by == "b"
    assert r.result.code == 554 and r.result.text == "spam"
    assert r.add_headers == [("X-A", "1")]
    assert c.calls == 0


@pytest_twisted.ensureDeferred
async def test_accept_short_circuits() -> None:
    a = Fixed("allow", FilterResult.accept([("X-Allow", "yes")]))
    b = Fixed("spam", FilterResult.reject())
    r = await FilterChain([a, b]).run(MSG)
    assert r.verdict is Verdict.ACCEPT and b.calls == 0
    assert r.add_headers == [("X-Allow", "yes")]


@pytest_twisted.ensureDeferred
async def test_tempfail_and_broken_filter_tempfail() -> None:
    r = await FilterChain([Fixed("t", FilterResult.tempfail())]).run(MSG)
    assert r.verdict is Verdict.TEMPFAIL and r.result.code == 451
    r = await FilterChain([Fixed("boom", RuntimeError("scanner down"))]).run(MSG)
    assert r.verdict is Verdict.TEMPFAIL and r.decided_by == "boom"


def test_result_codes_checked() -> None:
    with pytest.raises(ValueError):
        FilterResult.reject(code=451)
    with pytest.raises(ValueError):
        FilterResult.tempfail(code=550)
