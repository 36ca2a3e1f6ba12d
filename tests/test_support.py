import pytest_twisted

from tests.support import add_test_user, close_test_context, make_test_context


@pytest_twisted.ensureDeferred
async def test_ctx(tmp_path):
    ctx = await make_test_context(tmp_path)
    await add_test_user(ctx, "alice@example.test", "pw")
    acct = await ctx.auth.authenticate("alice@example.test", "pw", "127.0.0.1")
    assert acct is not None
    assert await ctx.auth.authenticate("alice@example.test", "bad", "127.0.0.1") is None
    stored = await ctx.delivery.ingest(b"Subject: hi\r\n\r\nbody\r\n")
    assert stored.size == 21
    await close_test_context(ctx)
