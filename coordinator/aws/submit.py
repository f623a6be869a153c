"""``mu submit``: run a job's coordinator as a Fargate task of the deployed stack.

It checks the job's options locally first (a typo fails here, before any AWS call or paid
task), then reads the stack's outputs (cluster, task definition, subnets, security group,
bucket, worker functions and their regions), starts the task with the job's command, prints
the task ARN, and with ``--wait`` follows the task's log stream and returns the coordinator's
exit status. Every AWS error is one line saying what to do; configuration errors exit 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from coordinator.aws.session import (
    USAGE,
    AwsError,
    credentials,
    explain,
    new_session,
    resolve_region,
    use_profile,
)
from coordinator.core.logsink import TIMING_PREFIX
from coordinator.core.runner import new_job_id
from coordinator.jobs import job_modules

DEFAULT_STACK = "MuStack"
LOG_PREFIX = "mu"  # the awslogs stream prefix in stacks/coordinator.py
REQUIRED_OUTPUTS = (
    "Cluster",
    "TaskDefinition",
    "ContainerName",
    "Subnets",
    "SecurityGroup",
    "Bucket",
    "FunctionNames",
    "Regions",
    "LogGroup",
)
DENIED_HINT = "attach the stack's SubmitPolicy output to your user or role (README: Permissions)"
# What stands in for the stack's names while the job's options are checked, before the stack is read.
PLACEHOLDERS = {"Bucket": "stack-bucket", "FunctionNames": "stack-functions", "Regions": "stack-regions"}


class SubmitError(AwsError):
    pass


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    try:
        described = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except Exception as exc:
        error = explain(exc, f"reading stack '{stack}'", DENIED_HINT)
        if error.code == "ValidationError" and "does not exist" in str(exc):
            region = cloudformation.meta.region_name
            raise SubmitError(
                f"no stack '{stack}' in {region}: deploy it with 'make deploy', or name it with --stack "
                "and its region with --region",
                USAGE,
            ) from exc
        raise error from exc
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described[0].get("Outputs", [])}
    missing = [k for k in REQUIRED_OUTPUTS if k not in outputs]
    if missing:
        raise SubmitError(
            f"stack '{stack}' lacks outputs {', '.join(missing)}; is it a mu stack of this version? "
            "redeploy it with 'make deploy'",
            USAGE,
        )
    return outputs


def _given(args: list[str], *names: str) -> str | None:
    """The value of option ``names`` in ``args`` (``--x V`` or ``--x=V``), or None."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    return None


def timing_url(outputs: dict[str, str], job_id: str) -> str:
    """The stack's bucket, under mu-logs/: the one place the coordinator's role may write."""
    return f"s3://{outputs['Bucket']}/{TIMING_PREFIX}{job_id}/timing.json"


def container_command(job: str, job_args: list[str], outputs: dict[str, str], job_id: str) -> list[str]:
    """What the container runs: ``mu run JOB ...`` (``mu map ...`` for ``map``) on the aws
    backend, listening on every interface.

    The stack's bucket (a job's ``--bucket``; map names its own with ``--input``), worker
    functions and regions, a job id and the timing log's place in S3 fill in whatever the user
    did not give.
    """
    command = ["map", *job_args] if job == "map" else ["run", job, *job_args]
    defaults: dict[tuple[str, ...], str] = {
        ("--function",): outputs["FunctionNames"],
        ("--regions",): outputs["Regions"],
        ("--job-id",): job_id,
        ("--timing-s3",): timing_url(outputs, job_id),
    }
    if job != "map":
        defaults = {("-b", "--bucket"): outputs["Bucket"], **defaults}
    for names, value in defaults.items():
        if _given(job_args, *names) is None:
            command += [names[-1], value]
    return [*command, "--backend", "aws", "--host", "0.0.0.0"]


def refuse_local_code(job: str, job_args: list[str]) -> None:
    """The task runs the stack's image, which holds mu and its own jobs and nothing of the
    user's: a job file or mu pymap's module would not be found there. Refused (exit 2) with
    what to do instead, before any AWS call."""
    reachable = (
        "on a machine whose address Lambda workers can reach on the coordinator's port (e.g. an EC2 "
        "instance with a public IP and that port open), with --backend aws --function FUNCTION "
        "--advertise ITS_ADDRESS (the stack's FunctionNames output names the functions)"
    )
    if job == "pymap":
        module = next((a for a in job_args if not a.startswith("-")), "MODULE:FUNCTION")
        raise SubmitError(
            f"cannot submit pymap: the coordinator task runs the stack's image, which holds neither your "
            f"module ({module}) nor your --items file, and mu pymap needs both where the coordinator runs. "
            f"Run 'mu pymap {module} --items FILE ...' yourself {reachable}",
            USAGE,
        )
    if job.endswith(".py") or "/" in job:
        raise SubmitError(
            f"cannot submit the job file {job}: the coordinator task runs the stack's image, which holds "
            f"only mu's own jobs ({', '.join(job_modules())}, and map). Run 'mu run {job} ...' yourself "
            f"{reachable}",
            USAGE,
        )


def run_task(ecs: Any, outputs: dict[str, str], command: list[str]) -> str:
    try:
        response = _run_task(ecs, outputs, command)
    except Exception as exc:
        raise explain(exc, "starting the coordinator task", DENIED_HINT) from exc
    if response.get("failures") or not response.get("tasks"):
        raise SubmitError(f"ECS did not start the task: {response.get('failures')}")
    return str(response["tasks"][0]["taskArn"])


def _run_task(ecs: Any, outputs: dict[str, str], command: list[str]) -> Any:
    return ecs.run_task(
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
        description="Run a job's coordinator as a Fargate task of the deployed stack. Job options are "
        "those of 'mu run JOB' (of 'mu map' for map); the bucket, --function and --regions default to the "
        "stack's. Job files and pymap are refused: the task's image holds none of your code.",
        allow_abbrev=False,  # an abbreviation must never take a job option away from the job
    )
    p.add_argument("job", help=f"the job to run: {', '.join(job_modules())}, or map")
    p.add_argument("--stack", default=DEFAULT_STACK, help=f"the deployed stack's name ({DEFAULT_STACK})")
    p.add_argument(
        "--region", default=None, help="the stack's region (AWS_REGION, AWS_DEFAULT_REGION, the profile's)"
    )
    p.add_argument("--profile", default=None, help="AWS profile to use, as AWS_PROFILE")
    p.add_argument("--wait", action="store_true", help="follow the task's log and return its exit status")
    return p.parse_known_args(argv)


def main(argv: list[str], validate: Callable[[list[str]], None]) -> int:
    """``validate`` checks the container's command (``run JOB ...``, ``map ...``) as ``mu`` would
    and exits 2 on a usage error."""
    args, job_args = parse(argv)
    try:
        refuse_local_code(args.job, job_args)
    except SubmitError as exc:
        print(f"mu submit: {exc}", file=sys.stderr)
        return exc.status
    job_id = _given(job_args, "--job-id") or new_job_id(args.job)
    validate(container_command(args.job, job_args, PLACEHOLDERS, job_id))
    try:
        use_profile(args.profile)
        session = new_session()
        region = resolve_region(session, args.region)
        credentials(session)
        cloudformation = session.create_client("cloudformation", region_name=region)
        outputs = stack_outputs(cloudformation, args.stack)
        command = container_command(args.job, job_args, outputs, job_id)
        ecs = session.create_client("ecs", region_name=region)
        task_arn = run_task(ecs, outputs, command)
        print(task_arn, flush=True)
        log = _given(command, "--timing-s3")
        print(f"mu submit: job {job_id} started; its timing log will be {log}", file=sys.stderr, flush=True)
        if not args.wait:
            return 0
        try:
            return follow(ecs, session.create_client("logs", region_name=region), outputs, task_arn)
        except AwsError:
            raise
        except Exception as exc:
            raise explain(exc, f"following task {task_arn}", DENIED_HINT) from exc
    except AwsError as exc:
        print(f"mu submit: {exc}", file=sys.stderr)
        return exc.status
