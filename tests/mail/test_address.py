"""parse_address_list against RFC 5322 Appendix A and real-world breakage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.mail.address import parse_address_list
from mailserver.mail.message import Address

A = Address
START = lambda name: A(None, None, name, None)  # noqa: E731
END = A(None, None, None, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # A.1.1
        ("John Doe <jdoe@machine.example>", [A("John Doe", None, "jdoe", "machine.example")]),
        # A.1.2
        (
            '"Joe Q. Public" <john.q.public@example.com>',
            [A("Joe Q. Public", None, "john.q.public", "example.com")],
        ),
        (
            "Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>",
            [
                A("Mary Smith", None, "mary", "x.test"),
                A(None, None, "jdoe", "example.org"),
                A("Who?", None, "one", "y.test"),
            ],
        ),
        (
            '<boss@nil.test>, "Giant; \\"Big\\" Box" <sysservices@example.net>',
            [
                A(None, None, "boss", "nil.test"),
                A('Giant; "Big" Box', None, "sysservices", "example.net"),
            ],
        ),
        # A.1.3 groups
        (
            "A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;",
            [
                START("A Group"),
                A("Ed Jones", None, "c", "a.test"),
                A(None, None, "joe", "where.test"),
                A("John", None, "jdoe", "one.test"),
                END,
            ],
        ),
        ("Undisclosed recipients:;", [START("Undisclosed recipients"), END]),
        # A.5 white space, comments
        (
            "Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
            [A("Pete", None, "pete", "silly.test")],
        ),
        (
            "A Group(Some people)\r\n     :Chris Jones <c@(Chris's host.)public.example>,\r\n"
            "         joe@example.org,\r\n  John <jdoe@one.test> (my dear friend); (the end of the group)",
            [
                START("A Group"),
                A("Chris Jones", None, "c", "public.example"),
                A(None, None, "joe", "example.org"),
                A("John", None, "jdoe", "one.test"),
                END,
            ],
        ),
        # A.6.1 obsolete list syntax: empty members
        (
            "Mary Smith <mary@x.test>, , jdoe@test  . example",
            [A("Mary Smith", None, "mary", "x.test"), A(None, None, "jdoe", "test.example")],
        ),
        # A.6.2 obsolete route
        (
            "Joe Q. Public <john.q.public@example.com>",
            [A("Joe Q. Public", None, "john.q.public", "example.com")],
        ),
        (
            "<@machine.tld:mary@example.net>, , jdoe@test",
            [A(None, "@machine.tld", "mary", "example.net"), A(None, None, "jdoe", "test")],
        ),
        (
            "<@a.test,@b.test:user@host.test>",
            [A(None, "@a.test,@b.test", "user", "host.test")],
        ),
        # comment as the name, as in RFC 822 style
        ("jdoe@example.org (John Doe)", [A("John Doe", None, "jdoe", "example.org")]),
        # encoded words stay raw in the envelope
        ("=?utf-8?q?J=C3=B6rg?= <j@x.test>", [A("=?utf-8?q?J=C3=B6rg?=", None, "j", "x.test")]),
        # quoted local part
        ('"john doe"@example.org', [A(None, None, '"john doe"', "example.org")]),
        # domain literal
        ("user@[192.0.2.1]", [A(None, None, "user", "[192.0.2.1]")]),
        # missing domain: host "" (None would mean a group marker)
        ("root", [A(None, None, "root", "")]),
        ("Root <root>", [A("Root", None, "root", "")]),
        ("<>", [A(None, None, "", "")]),
        ("", []),
        ("  ,  , ", []),
        # broken: unclosed angle, missing group end, unquoted comma-free junk
        (
            "Bob <bob@x.test, carol@y.test",
            [A("Bob", None, "bob", "x.test"), A(None, None, "carol", "y.test")],
        ),
        (
            "team: a@b.test, c@d.test",
            [START("team"), A(None, None, "a", "b.test"), A(None, None, "c", "d.test"), END],
        ),
        ("a@b.test>", [A(None, None, "a", "b.test")]),
        ('"unterminated <x@y.test>', [A(None, None, '"unterminated <x@y.test>"', "")]),
        ("user@host@other", [A(None, None, "user@host", "other")]),
        ("Dr. Who <who@tardis.test>", [A("Dr. Who", None, "who", "tardis.test")]),
        ('"" <empty@name.test>', [A(None, None, "empty", "name.test")]),
    ],
)
def test_parse_address_list(value: str, expected: list[Address]) -> None:
    assert parse_address_list(value) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('<>@,;:."()[]\\ aZ\t\r\n=?é')), max_size=200))
def test_never_raises_and_groups_balance(value: str) -> None:
    out = parse_address_list(value)
    depth = 0
    for a in out:
        if a.host is None and a.mailbox is not None:
            assert depth == 0
            depth += 1
        elif a.host is None:
            assert a.mailbox is None and depth == 1
            depth -= 1
        else:
            assert isinstance(a.mailbox, str)
    assert depth == 0


def test_long_input_is_cut_not_slow() -> None:
    out = parse_address_list("a@b.test, " * 200_000)
    assert 0 < len(out) <= 30_000
