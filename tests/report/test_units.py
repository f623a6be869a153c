"""Human state names, the cost arithmetic and price overrides, percentiles."""

from __future__ import annotations

import json

import pytest

from coordinator.core.machine import CommandListState, ErrorState, TerminalState
from coordinator.report.analysis import percentile
from coordinator.report.cost import (
    DEFAULT_PRICES,
    CostInputs,
    PriceError,
    dollars,
    estimate,
    lambda_billed_seconds,
    load_prices,
    per_worker_minute,
)
from coordinator.report.names import clean, human_name, in_words, name_from_label
from coordinator.report.timing import ServerBooks, document, worker_billed_seconds


class Step(CommandListState):
    commandlist = [("OK:HELLO", "quit:")]


class WithStrExtra(Step):
    def str_extra(self) -> str:
        return "((retrieving a PNG) (#3))"  # mu's CommandListState form


class WithExtra(Step):
    """Not this line."""

    extra = "(configuring the worker)"


class WithDoc(Step):
    """Encoding the chunk.

    Details."""


class Bare(Step):
    pass


class Broken(Step):
    """Shown when str_extra raises."""

    def str_extra(self) -> str:
        raise RuntimeError("bug")


def test_human_name_fallbacks():
    for named in (WithStrExtra(None), WithStrExtra):  # an object is named by the core's describe()
        assert human_name(named) in ("retrieving a PNG", "WithStrExtra")
    assert human_name(WithStrExtra(None)) == "retrieving a PNG"
    assert human_name(WithExtra(None)) == human_name(WithExtra) == "configuring the worker"
    assert human_name(WithDoc(None)) == human_name(WithDoc) == "Encoding the chunk"
    assert human_name(Bare(None)) == human_name(Bare) == "Bare"
    assert human_name(Broken(None)) == "Shown when str_extra raises"
    assert human_name(ErrorState) == human_name(ErrorState(None, "boom")) == "error"
    assert human_name(TerminalState) == "terminal state"


def test_states_in_error_messages_read_as_class_name_and_step():
    class Upload(CommandListState):
        extra = "(converting and uploading)"
        commandlist = [(None, "run:"), ("OK:RETVAL(0)", "upload:"), ("OK:UPLOAD(", "quit:")]

    state = Upload(None)
    state.cmdNum = 1  # waiting for run:'s reply, as a failed conversion is
    assert in_words(state) == "Upload (converting and uploading, step 2 of 3)"
    assert in_words(WithDoc(None)) == "WithDoc (Encoding the chunk, step 1 of 1)"
    assert in_words(Bare(None)) == "Bare (step 1 of 1)"
    assert in_words(TerminalState(None)) == "TerminalState (terminal state)"
    assert "((" not in in_words(WithStrExtra(None)) and "#" not in in_words(WithStrExtra(None))


def test_a_failed_reply_names_the_state_without_mus_brackets():
    from coordinator.core.machine import Machine

    class Upload(CommandListState):
        extra = "(converting and uploading)"
        commandlist = [("OK:HELLO", "run:"), ("OK:RETVAL(0)", "upload:"), ("OK:UPLOAD(", "quit:")]

    machine = Machine(Upload, 0)
    machine.receive(b"OK:HELLO")
    machine.receive(b"OK:RETVAL(1):OUTPUT(bad frame)")
    assert machine.error == (
        "OK:RETVAL(1):OUTPUT(bad frame) (in Upload (converting and uploading, step 2 of 3), "
        "which expected 'OK:RETVAL(0)')"
    )


def test_names_from_timing_log_labels():
    assert name_from_label("3:((retrieving a PNG) (#2))") == "retrieving a PNG"  # mu's str(state)
    assert name_from_label("PNG2Y4MConfigState (configuring the worker)") == "configuring the worker"
    assert name_from_label("FinalState") == "FinalState"
    assert name_from_label("ErrorState in X: worker replied FAIL(no such key)") == "error"
    assert name_from_label("MapFetchState Fetch the chunk's objects (#3)") == "Fetch the chunk's objects"
    assert clean("(a (b) c)") == "a (b) c" and clean("(a) (b)") == "(a) (b)"


def test_cost_arithmetic():
    inputs = CostInputs(
        invocations=1000,
        lambda_seconds=60_000,
        lambda_memory_mb=2048,
        coordinator_seconds=3600,
        s3_get=10_000,
        s3_put=1000,
        s3_list=1,
    )
    cost = estimate(inputs)
    by = {line.what: line.dollars for line in cost.lines}
    assert by["Lambda compute"] == pytest.approx(2 * 60_000 * DEFAULT_PRICES["lambda_gb_second"])
    assert by["Lambda requests"] == pytest.approx(1000 * 0.20 / 1e6)
    assert by["coordinator task"] == pytest.approx(0.04048 + 2 * 0.004445 + 0.005)
    assert by["S3 requests"] == pytest.approx(10_000 * 0.0004 / 1000 + 1001 * 0.005 / 1000)
    assert cost.total == pytest.approx(sum(by.values()))
    assert "2-" not in cost.one_line() and "list prices of" in cost.one_line()
    assert [dollars(x) for x in (0, 0.000123, 0.0123, 1.5, 1234.5)] == [
        "$0",
        "$0.000123",
        "$0.0123",
        "$1.50",
        "$1,234.50",
    ]


def test_arm64_workers_are_priced_as_arm64():
    inputs = CostInputs(invocations=1000, lambda_seconds=60_000, lambda_memory_mb=3008, lambda_arch="arm64")
    by = {line.what: line for line in estimate(inputs).lines}
    # 3008/1024 GB x 60 s x $0.0000133334 x 1,000 workers: $2.35, where x86-64 costs $2.94
    assert by["Lambda compute"].dollars == pytest.approx(2.35, abs=0.005)
    assert "arm64" in by["Lambda compute"].quantity
    x86 = estimate(CostInputs(invocations=1000, lambda_seconds=60_000, lambda_memory_mb=3008))
    assert x86.lines[0].dollars == pytest.approx(2.94, abs=0.005)
    assert per_worker_minute(3008, "arm64") == pytest.approx(0.00235, abs=0.000005)


def test_fargate_only_in_ecs_and_at_least_a_minute():
    rate = (
        DEFAULT_PRICES["fargate_vcpu_hour"]
        + 2 * DEFAULT_PRICES["fargate_gb_hour"]
        + DEFAULT_PRICES["public_ipv4_hour"]
    )
    task = {line.what: line for line in estimate(CostInputs(coordinator_seconds=20)).lines}[
        "coordinator task"
    ]
    assert task.dollars == pytest.approx(60 / 3600 * rate) and "1-minute minimum" in task.quantity
    task = estimate(CostInputs(coordinator_seconds=90)).lines[2]
    assert task.dollars == pytest.approx(90 / 3600 * rate) and "minimum" not in task.quantity
    task = estimate(CostInputs(coordinator_seconds=20, coordinator_on_fargate=False)).lines[2]
    assert task.dollars == 0 and "outside ECS" in task.quantity


def test_lambda_bills_each_worker_from_its_invocation_in_whole_milliseconds():
    assert lambda_billed_seconds(1.0, 1.5) == pytest.approx(0.5)
    assert lambda_billed_seconds(1.0, 1.0101) == pytest.approx(0.011)
    assert lambda_billed_seconds(2.0, 1.0) == 0
    launched = {"launch": {"worker": 0, "sent": 0.1, "accepted": 0.2}, "connected": 1.4, "ended": 3.0}
    assert worker_billed_seconds(launched, elapsed=9.0) == pytest.approx(2.8)  # accepted -> ended
    running = {**launched, "ended": None}
    assert worker_billed_seconds(running, elapsed=9.0) == pytest.approx(8.8)  # to the job's end
    unnamed = {"launch": None, "connected": 1.4, "ended": 3.0}
    assert worker_billed_seconds(unnamed, elapsed=9.0) == pytest.approx(1.6)  # no invocation to go by


def test_the_timing_log_counts_fargate_only_in_an_ecs_task(monkeypatch):
    def inputs(**meta):
        doc = document(job="j", workers=0, t0=0.0, records=[], launches={}, books=ServerBooks(),
                       failures={}, ok=True, relaunched=0, rejected=0, meta={"backend": "aws", **meta},
                       clock=lambda: 5.0)  # fmt: skip
        return doc["cost_inputs"]

    monkeypatch.delenv("ECS_CONTAINER_METADATA_URI_V4", raising=False)
    assert inputs()["coordinator_on_fargate"] is False
    monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", "http://169.254.170.2/v4/abc")
    assert inputs()["coordinator_on_fargate"] is True
    assert inputs(coordinator_on_fargate=False)["coordinator_on_fargate"] is False
    assert inputs(lambda_arch="arm64")["lambda_arch"] == "arm64"


def test_price_overrides(tmp_path, monkeypatch):
    f = tmp_path / "prices.json"
    f.write_text(json.dumps({"lambda_gb_second": 0.0000133334}))
    assert load_prices(f)["lambda_gb_second"] == 0.0000133334
    assert load_prices(f)["lambda_request"] == DEFAULT_PRICES["lambda_request"]
    monkeypatch.setenv("MU_PRICES", str(f))
    assert load_prices()["lambda_gb_second"] == 0.0000133334
    for bad, message in (
        ({"lambda_gb": 1}, "unknown price 'lambda_gb'"),
        ({"lambda_request": -1}, ">= 0"),
        ([], "JSON object"),
    ):
        f.write_text(json.dumps(bad))
        with pytest.raises(PriceError, match=message):
            load_prices(f)
    with pytest.raises(PriceError, match="cannot read"):
        load_prices(tmp_path / "missing.json")


def test_percentile_interpolates_like_numpy():
    import numpy as np

    values = [0.3, 1.0, 2.5, 2.6, 9.0, 4.0]
    for q in (0, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
