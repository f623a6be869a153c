"""``mu submit``: run a job's coordinator as a Fargate task of the deployed stack.

It reads the stack's outputs (cluster, task definition, subnets, security group, bucket),
starts the task with the job's command, prints the task ARN, and with ``--wait`` follows the
task's log stream and returns the coordinator's exit status.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

DEFAULT_STACK = "MuStack"
LOG_PREFIX = "mu"  # the awslogs stream prefix in stacks/coordinator.py
REQUIRED_OUTPUTS = (
    "Cluster",
    "TaskDefinition",
    "ContainerName",
    "Subnets",
    "SecurityGroup",
    "Bucket",
    "LogGroup",
)


class SubmitError(RuntimeError):
    pass


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    try:
        described = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except Exception as exc:  # botocore's ClientError for a missing stack, endpoint errors, ...
        raise SubmitError(
            f"cannot read stack '{stack}': {exc}; deploy it with 'make deploy' or pass --stack"
        ) from exc
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described[0].get("Outputs", [])}
    missing = [k for k in REQUIRED_OUTPUTS if k not in outputs]
    if missing:
        raise SubmitError(
            f"stack '{stack}' lacks outputs {', '.join(missing)}; is it a mu stack? redeploy it"
        )
    return outputs


def container_command(job: str, job_args: list[str], outputs: dict[str, str]) -> list[str]:
    """What the container runs: ``mu run JOB ...`` on the aws backend, listening on every interface."""
    command = ["run", job, *job_args]
    if not any(a in ("-b", "--bucket") or a.startswith("--bucket=") for a in job_args):
        command += ["--bucket", outputs["Bucket"]]
    return [*command, "--backend", "aws", "--host", "0.0.0.0"]


def run_task(ecs: Any, outputs: dict[str, str], command: list[str]) -> str:
    response = ecs.run_task(
        cluster=outputs["Cluster"],
        taskDefinition=outputs["TaskDefinition"],
        launchType="FARGATE",
        count=1,
        startedBy="mu-submit",
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": [s for s in outputs["Subnets"].split(",") if s],
                "securityGroups": [outputs["SecurityGroup"]],
                "assignPublicIp": "ENABLED",
            }
        },
        overrides={"containerOverrides": [{"name": outputs["ContainerName"], "command": command}]},
    )
    if response.get("failures") or not response.get("tasks"):
        raise SubmitError(f"ECS did not start the task: {response.get('failures')}")
    return str(response["tasks"][0]["taskArn"])


def follow(
    ecs: Any,
    logs: Any,
    outputs: dict[str, str],
    task_arn: str,
    emit: Callable[[str], None] = print,
    poll: float = 3.0,
    timeout: float | None = None,
) -> int:
    """Print the task's log lines until it stops; return the coordinator container's exit code."""
    stream = f"{LOG_PREFIX}/{outputs['ContainerName']}/{task_arn.rsplit('/', 1)[-1]}"
    token: str | None = None
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        task = ecs.describe_tasks(cluster=outputs["Cluster"], tasks=[task_arn])["tasks"][0]
        token = _print_new_events(logs, outputs["LogGroup"], stream, token, emit)
        if task.get("lastStatus") == "STOPPED":
            token = _print_new_events(logs, outputs["LogGroup"], stream, token, emit)
            for container in task.get("containers", []):
                if (
                    container.get("name") == outputs["ContainerName"]
                    and container.get("exitCode") is not None
                ):
                    return int(container["exitCode"])
            emit(
                "mu submit: the task stopped without an exit code: "
                + str(task.get("stoppedReason") or "no reason given")
            )
            return 1
        if deadline is not None and time.monotonic() > deadline:
            raise SubmitError(f"task {task_arn} still {task.get('lastStatus')} after {timeout:g} s")
        time.sleep(poll)


def _print_new_events(
    logs: Any, group: str, stream: str, token: str | None, emit: Callable[[str], None]
) -> str | None:
    while True:
        kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            kwargs["nextToken"] = token
        try:
            page = logs.get_log_events(**kwargs)
        except Exception as exc:
            if "ResourceNotFoundException" in str(exc):  # the stream appears once the container starts
                return token
            raise
        for event in page.get("events", []):
            emit(event["message"].rstrip("\n"))
        if page.get("nextForwardToken") == token:
            return token
        token = page.get("nextForwardToken")
        if not page.get("events"):
            return token


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        prog="mu submit",
        description="Run a job's coordinator as a Fargate task of the deployed stack. "
        "Job options are those of 'mu run JOB'; --bucket defaults to the stack's bucket.",
    )
    p.add_argument("job", help="the job to run, e.g. png2y4m")
    p.add_argument("--stack", default=DEFAULT_STACK, help=f"the deployed stack's name ({DEFAULT_STACK})")
    p.add_argument("--wait", action="store_true", help="follow the task's log and return its exit status")
    return p.parse_known_args(argv)


def main(argv: list[str], validate: Callable[[list[str]], None]) -> int:
    """``validate`` checks ``run JOB ...`` locally, so a typo fails here, not in a paid task."""
    args, job_args = parse(argv)
    import boto3

    try:
        outputs = stack_outputs(boto3.client("cloudformation"), args.stack)
        command = container_command(args.job, job_args, outputs)
        validate(command)
        ecs = boto3.client("ecs")
        task_arn = run_task(ecs, outputs, command)
        print(task_arn, flush=True)
        if not args.wait:
            return 0
        return follow(ecs, boto3.client("logs"), outputs, task_arn)
    except SubmitError as exc:
        print(f"mu submit: {exc}", file=sys.stderr)
        return 1
