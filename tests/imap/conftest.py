"""The real-client interop tests named in ``ON_EVERY_BACKEND`` run on the
embedded and the cluster store (test ids ``[embedded]`` / ``[cluster]``);
the rest of the suite stays on the embedded store."""

from __future__ import annotations

import pytest

from tests.support import backend_fixture, parametrize_backends  # noqa: F401  (fixture)

#: every test_interop.py test on the ``server`` fixture (imaplib walkthrough,
#: two sessions, imapclient over TLS, IDLE, ...): ~12 s more on the cluster
ON_EVERY_BACKEND = frozenset(
    f"test_interop.py::{name}"
    for name in (
        "test_imaplib_full_walkthrough",
        "test_two_imaplib_sessions_see_each_others_changes",
        "test_imapclient_over_implicit_tls",
        "test_imapclient_idle_woken_by_delivery",
        "test_imaplib_authenticate_and_remaining_commands",
        "test_sasl_ir_literal_plus_and_enable_over_implicit_tls",
        "test_starttls_drops_pipelined_plaintext_on_the_wire",
        "test_append_with_bare_lf_is_stored_with_crlf_and_sizes_agree",
    )
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_backends(metafunc, ON_EVERY_BACKEND)
