"""The filter chain: every message passes it before it is stored.

A filter looks at the envelope and the raw message and gives one verdict
(the Apache James hook results):

- ``ACCEPT``: take the message now; later filters are not asked
  (e.g. a sender allow-list in front of the spam check);
- ``REJECT``: refuse permanently with the filter's 5xx reply;
- ``TEMPFAIL``: refuse temporarily (451 unless the filter says otherwise);
- ``DECLINED``: no opinion, ask the next filter.

A chain where every filter declined accepts.  A filter may also ask for
header fields to be prepended (``X-Spam-Status``, ``Authentication-Results``),
kept from every filter that ran.  A filter that raises makes the chain answer
TEMPFAIL: a broken virus scanner must neither lose mail nor wave it through.

Spam, virus and SPF/DKIM/DMARC filters arrive later as ``twisted.plugin``
plugins implementing ``IMessageFilter``; the configuration picks which run
and in what order, and ``FilterChain`` runs them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from twisted.logger import Logger

log = Logger(namespace="mailserver.filters")


class Verdict(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    TEMPFAIL = "tempfail"
    DECLINED = "declined"


@dataclass(frozen=True)
class FilterResult:
    """A verdict plus, for REJECT/TEMPFAIL, the reply to give.  ``code`` and
    ``enhanced`` default per verdict (550 5.7.1 / 451 4.7.1)."""

    verdict: Verdict
    code: int | None = None
    enhanced: str | None = None
    text: str = ""
    add_headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def accept(cls, add_headers: Sequence[tuple[str, str]] = ()) -> FilterResult:
        return cls(Verdict.ACCEPT, add_headers=tuple(add_headers))

    @classmethod
    def declined(cls, add_headers: Sequence[tuple[str, str]] = ()) -> FilterResult:
        return cls(Verdict.DECLINED, add_headers=tuple(add_headers))

    @classmethod
    def reject(
        cls, text: str = "Message rejected", code: int = 550, enhanced: str = "5.7.1"
    ) -> FilterResult:
        if not 500 <= code <= 599:
            raise ValueError("a REJECT needs a 5xx code")
        return cls(Verdict.REJECT, code, enhanced, text)

    @classmethod
    def tempfail(
        cls,
        text: str = "Temporarily rejected, try again later",
        code: int = 451,
        enhanced: str = "4.7.1",
    ) -> FilterResult:
        if not 400 <= code <= 499:
            raise ValueError("a TEMPFAIL needs a 4xx code")
        return cls(Verdict.TEMPFAIL, code, enhanced, text)


@dataclass(frozen=True)
class FilterInput:
    """What a filter may look at.  ``raw`` is the message as received (no
    trace headers of ours yet)."""

    sender: str  # "" for the null reverse-path
    recipients: tuple[str, ...]
    raw: bytes
    remote_ip: str | None = None
    helo: str | None = None
    authenticated: str | None = None  # login of a submission client
    tls: bool = False


@runtime_checkable
class IMessageFilter(Protocol):
    """One filter.  ``name`` is how logs and the configuration call it."""

    name: str

    async def check(self, message: FilterInput) -> FilterResult:
        """Give a verdict; must not block the reactor."""


@dataclass
class ChainResult:
    """The chain's verdict (ACCEPT, REJECT or TEMPFAIL; never DECLINED), the
    filter that decided, and header fields to prepend."""

    verdict: Verdict
    result: FilterResult | None = None
    decided_by: str | None = None
    add_headers: list[tuple[str, str]] = field(default_factory=list)


class FilterChain:
    """Runs filters in order until one decides."""

    def __init__(self, filters: Sequence[IMessageFilter] = ()) -> None:
        self.filters = list(filters)

    async def run(self, message: FilterInput) -> ChainResult:
        headers: list[tuple[str, str]] = []
        for f in self.filters:
            try:
                result = await f.check(message)
            except Exception:
                log.failure("filter {name} failed; message deferred", name=f.name)
                return ChainResult(Verdict.TEMPFAIL, FilterResult.tempfail(), f.name, headers)
            headers.extend(result.add_headers)
            if result.verdict is Verdict.DECLINED:
                continue
            if result.verdict is Verdict.ACCEPT:
                return ChainResult(Verdict.ACCEPT, result, f.name, headers)
            return ChainResult(result.verdict, result, f.name, headers)
        return ChainResult(Verdict.ACCEPT, None, None, headers)
