"""Shared vocabulary of the IMAP command handlers: connection states, the
command registry entry, and the exceptions that become tagged NO / BAD.

A handler is ``async def handler(session, request) -> Done | None``.  It
writes untagged responses through ``session.send`` and returns the tagged
completion (``None`` means ``OK <command> completed``), or raises ``No`` /
``Bad``.  Anything else it raises becomes ``NO [SERVERBUG]`` and is logged.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailserver.imap.receiver import Request
    from mailserver.imap.session import ImapSession


class State(enum.Enum):
    """RFC 3501 section 3 connection states."""

    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


ANY = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})


class Response(Exception):
    """A tagged completion raised from inside a handler."""

    status = "NO"

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class No(Response):
    """Tagged NO: the command was understood but failed."""

    status = "NO"


class Bad(Response):
    """Tagged BAD: protocol or syntax error."""

    status = "BAD"


@dataclass(frozen=True)
class Done:
    """Tagged completion a handler returns."""

    text: str = "completed"
    code: str | None = None
    status: str = "OK"


class Answered(Done):
    """Returned by a handler that already sent its tagged response itself
    (STARTTLS must answer before switching to TLS)."""


ANSWERED = Answered()


Handler = Callable[["ImapSession", "Request"], Awaitable[Done | None]]


@dataclass(frozen=True)
class CommandSpec:
    """One registry entry: the handler, the states it is valid in, and
    whether untagged EXPUNGE may be sent while it completes (RFC 3501 7.4.1:
    never during FETCH, STORE, SEARCH; we extend that to their UID forms)."""

    handler: Handler
    states: frozenset[State]
    expunge_ok: bool = True
    #: NOOP, CHECK, IDLE: always ask the store for changes, not only when notified
    poll: bool = False


def command(
    table: dict[str, CommandSpec],
    name: str,
    states: frozenset[State],
    *,
    expunge_ok: bool = True,
    poll: bool = False,
) -> Callable[[Handler], Handler]:
    """Decorator filling a module's registry table."""

    def deco(fn: Handler) -> Handler:
        table[name] = CommandSpec(fn, states, expunge_ok, poll)
        return fn

    return deco


def expect_args(args: list[Any], n: int, name: str) -> None:
    """BAD unless exactly ``n`` arguments."""
    if len(args) != n:
        raise Bad(f"{name} expects {n} argument{'s' if n != 1 else ''}")


def compact_set(numbers: Iterable[int]) -> str:
    """``1:3,5,7:8`` from numbers (sorted, deduplicated): UIDPLUS sets."""
    return ordered_set(sorted(set(numbers)))


def ordered_set(numbers: Iterable[int]) -> str:
    """A UID set that keeps the given order (COPYUID pairs source and
    destination by position, so the two sets must list UIDs in matching
    order); runs are compacted only while ascending by one."""
    nums = list(numbers)
    out: list[str] = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}:{nums[j]}")
        i = j + 1
    return ",".join(out)
