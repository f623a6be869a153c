"""mu.map end to end: real local worker processes, their call runners, and moto's S3."""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import uuid

import pytest

import mu
from tests.pymap import funcs


@pytest.fixture
def bucket(s3):
    name = f"pymap-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def executor(s3, bucket, tmp_path):
    """An executor on the test's bucket; its workers' logs (kept when a call fails) in tmp_path."""

    def make(**kw):
        return mu.Executor(
            kw.pop("workers", 2), bucket=bucket, s3_endpoint=s3.endpoint, log_dir=str(tmp_path), **kw
        )

    return make


def test_results_come_back_in_item_order_for_scalars_tuples_and_dicts(executor):
    with executor() as ex:
        assert ex.map(funcs.square, range(40)).results() == [i * i for i in range(40)]
        assert ex.map(funcs.add, [(1, 2), (3,), {"a": 1, "c": 5}]).results() == [3, 3, 6]
        assert ex.map(funcs.length, [(1, 2)], star=False).results() == [2]
        assert ex.call_async(funcs.add, 1, 2, c=3).result(timeout=60) == 6
        futures = ex.map(funcs.square, range(10))
        assert sorted(f.result() for f in mu.as_completed(futures, timeout=60)) == [i * i for i in range(10)]
        done, not_done = mu.wait(futures, timeout=60)
        assert len(done) == 10 and not not_done


def test_lambdas_closures_and_main_functions_go_by_value(executor):
    offset = 7
    with executor() as ex:
        assert ex.map(lambda x: x + offset, [1, 2]).results() == [8, 9]


def test_an_exception_comes_back_as_itself_with_the_remote_traceback(executor):
    with executor() as ex:
        futures = ex.map(funcs.oops, range(5))
        with pytest.raises(funcs.OopsError, match="item 3 is bad") as info:
            futures.results()
        cause = info.value.__cause__
        assert isinstance(cause, mu.RemoteTraceback)
        assert (
            "funcs.py" in cause.tb
            and "in oops" in cause.tb
            and 'raise OopsError(f"item {x} is bad")' in cause.tb
        )
        assert [f.result() for f in futures if f is not futures[3]] == [0, 1, 2, 4]


def test_an_exception_that_does_not_pickle_comes_back_as_remote_error(executor):
    with executor() as ex, pytest.raises(mu.RemoteError) as info:
        ex.call_async(funcs.unpicklable, 4).result(timeout=60)
    err = info.value
    assert err.type_name == "tests.pymap.funcs.UnpicklableError" and err.message == "no pickle for 4"
    assert "in unpicklable" in err.traceback and "in unpicklable" in err.__cause__.tb


def test_exit_memory_and_timeout_are_reported_for_their_item_only(executor):
    with executor(memory=200, timeout=3) as ex:
        futures = ex.map(funcs.misbehave, range(6))
        assert [futures[i].result(timeout=60) for i in (0, 4, 5)] == [0, 40, 50]
        errors = [futures[i].exception(timeout=60) for i in (1, 2, 3)]
    assert isinstance(errors[0], mu.CallError) and errors[0].kind == "exit"
    assert "exited with status 3" in str(errors[0]) and "item 1" in str(errors[0])
    assert isinstance(errors[1], mu.CallMemoryError) and "over its limit of 200 MiB" in str(errors[1])
    assert isinstance(errors[2], mu.CallTimeoutError) and "timeout of 3 s" in str(errors[2])


def test_a_worker_killed_mid_call_with_retries_1_still_yields_every_result_exactly_once(executor, s3, bucket):
    marker = f"marks-{uuid.uuid4().hex[:8]}"
    items = [(marker, s3.endpoint, bucket, x) for x in range(12)]
    with executor(retries=1) as ex:
        futures = ex.map(funcs.kill_my_worker_once, items)
        assert futures.results(timeout=120) == [x * 100 for x in range(12)]
        calls = ex._engine.driver.scheduler.calls
        lost = [c for c in calls.values() if c.failures]
        # item 5 and whatever else was on its worker failed once and succeeded on the retry
        assert calls[5] in lost and all(c.attempts == 2 and c.failures == 1 for c in lost)
        assert all(c.attempts == 1 for c in calls.values() if not c.failures)
    assert ex._engine.failed is None, repr(ex._engine.failed)
    assert ex.result.relaunched == 1  # the killed worker was replaced


def test_large_arguments_and_results_go_through_the_bucket_and_are_removed(executor, s3, bucket):
    with executor(inline_limit=64 * 1024) as ex:
        big = ex.map(funcs.blob, [1 << 20, 100]).results()
        assert big == [funcs.blob(1 << 20), funcs.blob(100)]
        assert ex.map(funcs.length, [b"x" * (300 << 10)], star=False).results() == [300 << 10]
    assert s3.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_an_executor_whose_last_result_came_through_the_bucket_shuts_down(executor):
    """Its shutdown waits until no outcome is pending; the fetch of that last result used to
    count as pending for ever."""
    import threading

    ex = executor(workers=1, inline_limit=1024)
    assert ex.map(funcs.blob, [4096]).results(timeout=60) == [funcs.blob(4096)]
    stopping = threading.Thread(target=ex.shutdown, daemon=True)
    stopping.start()
    stopping.join(120)  # a bound for a hang, not a measure: it takes well under a second
    assert not stopping.is_alive()


def test_a_project_module_imported_only_inside_the_call_ships_with_the_function(executor):
    with executor() as ex:
        assert ex.map(funcs.uses_helper, [1]).results() == ["1!"]
        assert ex.map(funcs.mu_is_importable, [2]).results() == ["mu:2"]


def test_a_missing_package_names_itself_and_how_to_add_it(executor):
    with executor() as ex, pytest.raises(ModuleNotFoundError) as info:
        ex.call_async(funcs.needs_missing_package, 1).result(timeout=60)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "mu_surely_not_installed_pkg" in notes and "-c requirements=" in notes


def test_a_function_whose_module_the_workers_lack_fails_each_call_with_how_to_add_it(executor, tmp_path):
    installed = tmp_path / "site-packages"  # stands for a package installed here but not on workers
    installed.mkdir()
    (installed / "only_here_pkg.py").write_text("def double(x):\n    return 2 * x\n")
    sys.path.insert(0, str(installed))
    try:
        import only_here_pkg

        with executor() as ex:
            futures = ex.map(only_here_pkg.double, [1, 2])
            errors = [f.exception(timeout=60) for f in futures]
    finally:
        sys.path.remove(str(installed))
        sys.modules.pop("only_here_pkg", None)
    assert all(isinstance(e, mu.FunctionLoadError) for e in errors)
    assert "only_here_pkg" in str(errors[0]) and "requirements" in str(errors[0])


def test_a_version_mismatch_is_refused_before_anything_launches():
    ex = mu.Executor(2, python="3.12")
    with pytest.raises(mu.VersionMismatchError) as info:
        ex.map(lambda x: x, [1])
    text = str(info.value)
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert "Python 3.12" in text and f"Python {here}" in text and "it is a lambda" in text
    assert ex._engine is None  # no server, no worker
    ex.shutdown()


def test_a_worker_reporting_another_python_is_refused_and_the_calls_say_why(executor):
    # The function goes by reference (allowed across versions); the workers then report this
    # interpreter's version, not the 3.12 the calls were prepared for.
    with executor(python="3.12", connect_timeout=20) as ex:
        err = ex.call_async(funcs.square, 3).exception(timeout=60)
    assert isinstance(err, mu.CallError) and err.kind == "worker"
    assert "runs Python 3." in str(err) and "prepared for Python 3.12" in str(err)


def test_stopping_after_the_job_ended_by_itself_leaves_nothing_unawaited(executor):
    """Every worker refused, the job ends before the with-block does: the stop that follows
    finds its loop winding down and must not hand it a coroutine it will never run."""
    import gc
    import time
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with executor(python="3.12", connect_timeout=20) as ex:
            assert ex.call_async(funcs.square, 3).exception(timeout=60) is not None
            engine = ex._engine
            for _ in range(200):  # the job's own end, not our stop, is what this test is about
                if engine.timing is not None:  # written as the job ends
                    break
                time.sleep(0.05)
            assert engine.timing is not None
        gc.collect()
    unawaited = [str(w.message) for w in caught if "never awaited" in str(w.message)]
    assert not unawaited, unawaited


def test_a_cancelled_future_does_not_run_and_the_rest_finish(executor):
    with executor(workers=1, window=1) as ex:
        futures = ex.map(funcs.misbehave, [3, 4, 5], timeout=30)
        assert futures[1].cancel()
        assert futures[0].cancel() or True  # running: stopped on its worker
        assert futures[2].result(timeout=60) == 50


def test_mu_map_alone_stops_its_workers_when_done():
    futures = mu.map(funcs.square, [1, 2, 3], workers=1)
    assert futures.results(timeout=60) == [1, 4, 9]


def test_the_readme_example_runs_in_one_command_and_prints_what_it_says(tmp_path):
    """The "Python functions" example: a script on stdin, its function defined in __main__. The
    script ends right after its results: its workers' logs do not outlive it."""
    import re
    import subprocess

    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python functions") :]
    command = re.search(r"```sh\n(.*?)\n```", section, re.S).group(1)
    script = re.search(r"<<'PY'\n(.*?)\nPY", command, re.S).group(1)
    promised = re.search(r"prints `(.*?)`", section).group(1)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-"], input=script, capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == promised
    assert list(tmp_path.iterdir()) == []


LEAKY_SCRIPT = """
import sys
import mu
from tests.pymap import funcs

endpoint, bucket, marker = sys.argv[1:]
job = f"leaks-{marker}"
options = dict(bucket=bucket, s3_endpoint=endpoint, inline_limit=1024, retries=1, job_id=job)
with mu.Executor(2, **options) as ex:
    slow = ex.map(funcs.misbehave, [0, 3], timeout=2)
    killed = ex.map(funcs.kill_my_worker_once, [(marker, endpoint, bucket, x) for x in range(8)])
    big = ex.map(funcs.blob, [4096])
    stray = ex.call_async(funcs.leave_in_bucket, endpoint, bucket, f"mu-pymap/{job}/00000099.1.result")
    print(type(slow[1].exception(timeout=60)).__name__, killed.results(timeout=120)[5],
          len(big.results(timeout=60)[0]), stray.result(timeout=60) != "")
print(mu.map(funcs.square, [3], workers=1).results(timeout=60))
"""


def test_a_script_whose_call_times_out_and_whose_worker_is_killed_leaves_nothing_behind(s3, bucket, tmp_path):
    """No process, nothing in $TMPDIR (a failed call's worker logs are kept only when one
    says more than its closing summary), and nothing under the job's prefix in the bucket:
    not the arguments and results that went through it, nor a result no reply ever named."""
    import subprocess
    import time

    from tests.conftest import ROOT
    from tests.resilience.chaos import processes_with_env

    marker = uuid.uuid4().hex[:12]
    env = {**os.environ, "TMPDIR": str(tmp_path), "MU_TEST_MARK": marker}
    out = subprocess.run(
        [sys.executable, "-", s3.endpoint, bucket, marker],
        input=LEAKY_SCRIPT,
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["CallTimeoutError", "500", "4096", "True", "[9]"]
    left = processes_with_env("MU_TEST_MARK", marker)
    for _ in range(50):  # the workers end with the script; give the kernel a moment
        if not left:
            break
        time.sleep(0.1)
        left = processes_with_env("MU_TEST_MARK", marker)
    assert left == []
    assert list(tmp_path.iterdir()) == []
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [f"{marker}/5"]  # kill_my_worker_once's own marker, nothing of mu's


def test_as_completed_is_the_standard_librarys():
    assert mu.as_completed is cf.as_completed and mu.wait is cf.wait
