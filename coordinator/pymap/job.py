"""An executor's job: the server's ``Job`` with mu.map's driver, its launcher, keys and options.

Everything here runs in the executor's event-loop thread; the job is an ordinary job of the
core (``run_job``): the same server, gate, roster, launchers, progress display and timing log
as ``mu run``, with the driver in place of a walk over mu's states.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from coordinator.core.job import Job
from coordinator.core.runner import run_job
from coordinator.core.server import ServerOptions
from coordinator.core.status import Status
from coordinator.core.tls import make_job_keys
from coordinator.launch import Launcher

from .driver import Driver, PythonCalls
from .schedule import Scheduler

if TYPE_CHECKING:
    from .executor import Executor

Finish = Callable[[Any, bytes | None, BaseException | None], None]


def build(
    executor: Executor, finish: Finish, stopping: asyncio.Event
) -> tuple[Job, Coroutine[Any, Any, Any], Status, Launcher]:
    """The job and the coroutine that runs it until ``stopping`` is set and the calls are done."""
    from .executor import status_stream

    opts = executor.options
    job_id = executor._job_id()
    stream, tty = status_stream(opts.progress)
    status = Status(opts.name, 0, stream=stream, tty=tty, unit="calls")
    scheduler = Scheduler(
        window=opts.window or 2 * opts.slots, retries=opts.retries, speculate=opts.speculate
    )

    async def fetch(key: str) -> bytes:
        def get() -> bytes:
            s3 = executor._s3()
            data = bytes(s3.get_object(Bucket=opts.bucket, Key=key)["Body"].read())
            s3.delete_object(Bucket=opts.bucket, Key=key)  # read once: the result now lives here
            return data

        return await asyncio.to_thread(get)

    driver = Driver(scheduler, executor._worker_python(), finish, fetch, status.event, status.state)
    pymap = {"slots": opts.slots, "inline_limit": opts.inline_limit, "prefix": executor._prefix()}
    if opts.memory is not None:
        pymap["memory_mb"] = opts.memory
    job = Job(
        opts.name,
        PythonCalls,
        workers=opts.workers,
        bucket=opts.bucket or "",
        region=opts.region or "us-east-1",
        s3_endpoint=opts.s3_endpoint,
        event={"pymap": pymap},
        driver=driver,
    )
    launcher = make_launcher(executor, status, opts.workers + opts.spares)
    keys = opts.keys or make_job_keys(label=job_id)
    host = opts.host or ("127.0.0.1" if opts.backend == "local" else "0.0.0.0")
    options = ServerOptions(
        host=host,
        port=opts.port,
        connect_timeout=opts.connect_timeout,
        retries=opts.retries,
        deadline=opts.deadline,
        hello_timeout=opts.hello_timeout,
        timing_log=opts.timing_log,
        timing_s3=opts.timing_s3,
        spares=opts.spares,
        meta={
            "job_id": job_id,
            "backend": opts.backend,
            "spares": opts.spares,
            "log_dir": opts.log_dir,
            "lambda_memory_mb": executor.worker_memory,
            "lambda_arch": executor.worker_arch,
        },
    )

    async def run() -> Any:
        job_task = asyncio.get_running_loop().create_task(
            run_job(job, launcher, keys, options, status, opts.advertise, job_id)
        )
        stop_task = asyncio.get_running_loop().create_task(stopping.wait())
        await asyncio.wait({job_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if not job_task.done():
            await driver.close()
        stop_task.cancel()
        return await job_task

    return job, run(), status, launcher


def make_launcher(executor: Executor, status: Status, workers: int) -> Launcher:
    opts = executor.options
    if opts.backend == "aws":
        from .aws import lambda_launcher

        return lambda_launcher(opts, status, workers)
    from coordinator.launch.local import LocalLauncher
    from coordinator.launch.sandbox import NoSandbox

    return LocalLauncher(opts.log_dir, opts.concurrency, isolation=None if opts.sandbox else NoSandbox())
