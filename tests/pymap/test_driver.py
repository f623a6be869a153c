"""mu.map's driver against a worker on the other end of a real socket pair, no TLS, no server."""

from __future__ import annotations

import asyncio
import platform
import socket
import time

from coordinator.core.machine import Machine
from coordinator.core.server import WorkerRecord
from lambda_worker.wire import Decoder, encode, meta_message
from mu.driver import Driver, PythonCalls, PythonCallsDone
from mu.schedule import Scheduler


async def _worker_that_says_its_python_after_the_executor_closed() -> tuple[WorkerRecord, list[bytes]]:
    driver = Driver(
        Scheduler(window=2),
        platform.python_version(),
        finish=lambda *_: None,
        fetch=lambda key: asyncio.sleep(0, b""),
        event=lambda text: None,
        state=lambda actor, text: None,
    )
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    worker_reader, worker_writer = await asyncio.open_connection(sock=theirs)
    record = WorkerRecord(0, "test", Machine(PythonCalls, 0), writer, time.monotonic())
    # A replacement worker was seated and said OK:HELLO; its META (which Python it runs) is
    # still on its way when the executor shuts down.
    drive = asyncio.get_running_loop().create_task(
        driver.drive(record, reader, writer, Decoder(meta=record.meta), [b"OK:HELLO"])
    )
    await asyncio.sleep(0.05)
    await driver.close()
    worker_writer.write(encode(meta_message({"python": platform.python_version()})))
    await worker_writer.drain()
    await asyncio.wait_for(drive, 5)  # before the fix it waited for the worker's idle timeout
    heard = Decoder().feed(await asyncio.wait_for(worker_reader.read(1 << 16), 5))
    writer.close()
    worker_writer.close()
    return record, heard


def test_a_worker_that_finishes_connecting_after_the_executor_closed_is_told_to_quit():
    record, heard = asyncio.run(_worker_that_says_its_python_after_the_executor_closed())
    assert heard == [b"quit:"]
    assert isinstance(record.machine.state, PythonCallsDone)
