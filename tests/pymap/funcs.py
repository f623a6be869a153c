"""Functions the mu.map tests run on real workers. A project module: it ships with them."""

from __future__ import annotations

import os
import signal
import threading
import time

import mu  # a function's module may import mu: the worker loads it too

from . import helper_module


class OopsError(Exception):
    """A picklable exception of the project's own: it comes back as itself."""


class UnpicklableError(Exception):
    """An exception holding a lock, which pickle refuses: it comes back as mu.RemoteError."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.lock = threading.Lock()


def square(x: int) -> int:
    return x * x


def add(a: int, b: int = 0, *, c: int = 0) -> int:
    return a + b + c


def oops(x: int) -> int:
    if x == 3:
        raise OopsError(f"item {x} is bad")
    return x


def unpicklable(x: int) -> int:
    raise UnpicklableError(f"no pickle for {x}")


def misbehave(x: int) -> int:
    """Item 1 leaves the interpreter, item 2 grows past its memory, item 3 never returns."""
    if x == 1:
        os._exit(3)
    if x == 2:
        hoard = [bytearray(16 << 20) for _ in range(64)]  # 1 GiB, touched page by page
        return len(hoard)
    if x == 3:
        time.sleep(120)
    return x * 10


def loud_exit(code: int) -> int:
    """Says something in its worker's log, then leaves the interpreter."""
    print(f"leaving with status {code}", flush=True)
    os._exit(code)


def blob(size: int) -> bytes:
    return bytes(range(256)) * (size // 256)


def length(data: bytes) -> int:
    return len(data)


def uses_helper(x: int) -> str:
    return helper_module.shout(f"{x}")


def needs_missing_package(x: int) -> int:
    import mu_surely_not_installed_pkg  # noqa: F401

    return x


def mu_is_importable(x: int) -> str:
    return f"{mu.__name__}:{x}"


def kill_my_worker_once(marker: str, endpoint: str, bucket: str, x: int) -> int:
    """Item 5's first attempt kills its own worker process (SIGKILL) mid-call, as a dying
    Lambda would; its retry, on another worker, returns. The marker lives in the bucket, the
    one place both attempts see."""
    import boto3

    if x != 5:
        time.sleep(0.2)
        return x * 100
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    key = f"{marker}/{x}"
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except Exception:
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
        runner = os.getppid()
        with open(f"/proc/{runner}/stat") as f:
            worker = int(f.read().rsplit(")", 1)[1].split()[1])
        os.kill(worker, signal.SIGKILL)
        time.sleep(60)  # killed with the worker long before this ends
    return x * 100


def leave_in_bucket(endpoint: str, bucket: str, key: str) -> str:
    """Puts an object where a worker stores a result, as an attempt that stored its result and
    then lost its worker (or lost to a duplicate) leaves one that no reply ever names."""
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").put_object(
        Bucket=bucket, Key=key, Body=b"stray"
    )
    return key
