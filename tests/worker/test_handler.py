"""The Lambda handler around the session: mu's rm_tmpdir, in both of its settings."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile

from lambda_worker import handler
from lambda_worker.handler import lambda_handler
from tests.helpers import TestCoordinator, event_for


def test_rm_tmpdir_empties_tmp_at_the_start_only_on_lambda(tmp_path, monkeypatch):
    """lambda_handler with rm_tmpdir: os.system("rm -rf /tmp/*"). Only where /tmp is the function's
    own (a warm Lambda environment keeps the last invocation's files), never on a shared machine."""
    tmp = tmp_path / "tmp"
    (tmp / "old-worker").mkdir(parents=True)
    (tmp / "leftover.y4m").write_text("x")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    handler._fresh_lambda_tmp()
    assert sorted(p.name for p in tmp.iterdir()) == ["leftover.y4m", "old-worker"]
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "mu-worker")
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(tmp_path))
    handler._fresh_lambda_tmp()
    assert list(tmp.iterdir()) == []


def test_rm_tmpdir_0_keeps_the_temporary_directory(keys):
    """lambda_handler: shutil.rmtree(_tmpdir) at the end only if rm_tmpdir."""

    async def scenario(rm_tmpdir):
        async with TestCoordinator(keys) as coord:
            event = event_for(keys, coord.port, rm_tmpdir=rm_tmpdir)
            task = asyncio.create_task(asyncio.to_thread(lambda_handler, event, None))
            conn = await coord.accept()
            await conn.recv()
            reply = await conn.cmd("run:printf %s $TMPDIR")
            await conn.send("quit:")
            await task
            return reply.split(b"OUTPUT(")[1].split(b")")[0].decode()

    kept = asyncio.run(scenario(0))
    try:
        assert os.path.isdir(kept)
    finally:
        shutil.rmtree(kept, ignore_errors=True)
    assert not os.path.exists(asyncio.run(scenario(1)))
