"""mu submit and address discovery against moto's server mode (CloudFormation, ECS, EC2, Logs)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from coordinator.aws.discover import DiscoveryError, task_public_address
from coordinator.aws.submit import SubmitError, follow, stack_outputs


@pytest.fixture(scope="module")
def deployed(s3):
    """What `cdk deploy` would leave behind, made directly in moto, plus the stack outputs."""
    ec2, ecs, cfn, logs = (s3.client(n) for n in ("ec2", "ecs", "cloudformation", "logs"))
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})  # as the CDK VPC has
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)
    ]
    group = ec2.create_security_group(GroupName=f"mu-{uuid.uuid4().hex[:6]}", Description="mu", VpcId=vpc)[
        "GroupId"
    ]
    cluster = f"mu-cluster-{uuid.uuid4().hex[:6]}"
    ecs.create_cluster(clusterName=cluster)
    task_def = ecs.register_task_definition(
        family="mu-coordinator", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="1024",
        memory="2048",
        containerDefinitions=[{"name": "coordinator", "image": "mu", "cpu": 1024, "memory": 2048}],
    )["taskDefinition"]["taskDefinitionArn"]  # fmt: skip
    log_group = f"/mu/{cluster}"
    logs.create_log_group(logGroupName=log_group)
    outputs = {
        "Bucket": "mu-data-bucket", "FunctionNames": "MuStack-worker-0,MuStack-worker-1",
        "Regions": "us-east-1,us-west-2", "Cluster": cluster,
        "TaskDefinition": task_def, "ContainerName": "coordinator", "Subnets": ",".join(subnets),
        "SecurityGroup": group, "LogGroup": log_group, "RunTaskCommand": "aws ecs run-task ...",
        "SubmitPolicy": "arn:aws:iam::123456789012:policy/mu-submit",
    }  # fmt: skip
    stack = f"MuStack{uuid.uuid4().hex[:6]}"
    template = {
        "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {k: {"Value": v} for k, v in outputs.items()},
    }
    cfn.create_stack(StackName=stack, TemplateBody=json.dumps(template))
    return {"stack": stack, "outputs": outputs, "subnets": subnets, "group": group}


def mu(s3, *args, env=None):
    """``mu`` against moto; ``env`` entries set (or with None, remove) variables."""
    full = {**os.environ, "AWS_ENDPOINT_URL": s3.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return subprocess.run(
        [sys.executable, "-m", "coordinator", *args], capture_output=True, text=True, env=full, timeout=120
    )


def started_job(proc):
    """The job id mu submit announces on stderr."""
    return re.search(r"mu submit: job (\S+) started", proc.stderr).group(1)


def test_submit_starts_the_coordinator_task(s3, deployed):
    proc = mu(s3, "submit", "png2y4m", "-n", "3", "-f", "6", "--stack", deployed["stack"])
    assert proc.returncode == 0, proc.stderr
    task_arn = proc.stdout.strip()
    job = started_job(proc)
    assert re.fullmatch(r"png2y4m-[0-9a-f]{12}", job)
    out = deployed["outputs"]
    task = s3.client("ecs").describe_tasks(cluster=out["Cluster"], tasks=[task_arn])["tasks"][0]
    assert task["clusterArn"].endswith(f"cluster/{out['Cluster']}")
    assert task["taskDefinitionArn"] == out["TaskDefinition"]
    assert task["launchType"] == "FARGATE"
    log = f"s3://mu-data-bucket/mu-logs/{job}/timing.json"
    assert task["overrides"]["containerOverrides"] == [
        {
            "name": "coordinator",
            "command": [
                "run", "png2y4m", "-n", "3", "-f", "6",
                "--bucket", "mu-data-bucket",
                "--function", "MuStack-worker-0,MuStack-worker-1",
                "--regions", "us-east-1,us-west-2",
                "--job-id", job,
                "--timing-s3", log,
                "--backend", "aws", "--host", "0.0.0.0",
            ],
        }
    ]  # fmt: skip
    assert f"its timing log will be {log}" in proc.stderr
    details = {d["name"]: d["value"] for d in task["attachments"][0]["details"]}
    assert details["subnetId"] in deployed["subnets"]
    eni = s3.client("ec2").describe_network_interfaces(NetworkInterfaceIds=[details["networkInterfaceId"]])
    assert [g["GroupId"] for g in eni["NetworkInterfaces"][0]["Groups"]] == [deployed["group"]]


def test_options_the_user_gives_are_kept(s3, deployed):
    proc = mu(s3, "submit", "png2y4m", "--stack", deployed["stack"], "-b", "mine", "--function=f1",
              "--regions", "eu-west-1", "--job-id", "named-job",
              "--timing-s3", "s3://logs/x.json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = deployed["outputs"]
    task = s3.client("ecs").describe_tasks(cluster=out["Cluster"], tasks=[proc.stdout.strip()])["tasks"][0]
    assert task["overrides"]["containerOverrides"][0]["command"] == [
        "run", "png2y4m", "-b", "mine", "--function=f1", "--regions", "eu-west-1", "--job-id", "named-job",
        "--timing-s3", "s3://logs/x.json", "--backend", "aws", "--host", "0.0.0.0",
    ]  # fmt: skip
    assert started_job(proc) == "named-job"


def test_submit_map_runs_mu_map_in_the_task(s3, deployed):
    """map is a command of its own, not a job of mu run: the task runs 'mu map ...', and the
    stack's bucket is not added (map names its buckets in --input and --output)."""
    proc = mu(s3, "submit", "map", "--input", "s3://mu-data-bucket/in/", "--output",
              "s3://mu-data-bucket/out/", "--command", "wc -c ##INFILE## > ##OUTFILE##", "--chunk", "2",
              "--stack", deployed["stack"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job = started_job(proc)
    assert re.fullmatch(r"map-[0-9a-f]{12}", job)
    out = deployed["outputs"]
    task = s3.client("ecs").describe_tasks(cluster=out["Cluster"], tasks=[proc.stdout.strip()])["tasks"][0]
    assert task["overrides"]["containerOverrides"][0]["command"] == [
        "map", "--input", "s3://mu-data-bucket/in/", "--output", "s3://mu-data-bucket/out/",
        "--command", "wc -c ##INFILE## > ##OUTFILE##", "--chunk", "2",
        "--function", "MuStack-worker-0,MuStack-worker-1", "--regions", "us-east-1,us-west-2",
        "--job-id", job, "--timing-s3", f"s3://mu-data-bucket/mu-logs/{job}/timing.json",
        "--backend", "aws", "--host", "0.0.0.0",
    ]  # fmt: skip


def test_submit_map_checks_maps_options_before_any_aws_call(s3, deployed, tmp_path):
    ecs = s3.client("ecs")
    before = len(ecs.list_tasks(cluster=deployed["outputs"]["Cluster"])["taskArns"])
    dead = {**no_aws(tmp_path), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    good = ["--input", "s3://bkt/in/", "--output", "s3://bkt/out/", "--command", "true"]
    for args, message in [
        (["--input", "b/in/", *good[2:]], "mu map: error: --input must look like s3://BUCKET/PREFIX/, got"),
        (good[:4], "mu map: error: the following arguments are required: --command"),
        ([*good, "--chunk", "0"], "mu map: error: --chunk must be at least 1, got 0"),
        ([*good, "--no-such-option"], "unrecognized arguments: --no-such-option"),
    ]:
        proc = mu(s3, "submit", "map", *args, "--stack", deployed["stack"], env=dead)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("usage: mu ") and message in proc.stderr
    assert len(ecs.list_tasks(cluster=deployed["outputs"]["Cluster"])["taskArns"]) == before


def test_submit_refuses_code_the_tasks_image_does_not_hold(s3, deployed, tmp_path):
    ecs = s3.client("ecs")
    before = len(ecs.list_tasks(cluster=deployed["outputs"]["Cluster"])["taskArns"])
    dead = {**no_aws(tmp_path), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    proc = mu(s3, "submit", "pymap", "tasks:square", "--items", "items.jsonl", env=dead)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(
        "mu submit: cannot submit pymap: the coordinator task runs the stack's image, which holds neither "
        "your module (tasks:square) nor your --items file"
    )
    assert "Run 'mu pymap tasks:square --items FILE ...' yourself on a machine whose address" in proc.stderr
    assert "--backend aws --function FUNCTION --advertise ITS_ADDRESS" in proc.stderr
    job_file = tmp_path / "myjob.py"
    job_file.write_text("def main():\n    pass\n")
    proc = mu(s3, "submit", str(job_file), env=dead)
    assert proc.returncode == 2
    refusal = f"mu submit: cannot submit the job file {job_file}: the coordinator task runs the stack's image"
    assert proc.stderr.startswith(refusal)
    assert len(ecs.list_tasks(cluster=deployed["outputs"]["Cluster"])["taskArns"]) == before


def no_aws(tmp_path):
    """An environment with no AWS configuration at all: no region, no credentials, no profile."""
    env = {k: None for k in os.environ if k.startswith("AWS_")}
    return env | {
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def test_bad_job_options_fail_before_any_aws_call(s3, deployed, tmp_path):
    ecs = s3.client("ecs")
    before = len(ecs.list_tasks(cluster=deployed["outputs"]["Cluster"])["taskArns"])
    # No region, no credentials, and every endpoint dead: only a local check can answer.
    dead = {**no_aws(tmp_path), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    proc = mu(s3, "submit", "png2y4m", "-n", "0", "--stack", deployed["stack"], env=dead)
    assert proc.returncode == 2 and "--workers must be at least 1" in proc.stderr
    proc = mu(s3, "submit", "png2y4m", "-n", "5000", "--stack", deployed["stack"], env=dead)
    assert proc.returncode == 2 and "more than --max-workers 1000" in proc.stderr
    proc = mu(s3, "submit", "png2y4m", "--timing-s3", "s3://bucket-only/", env=dead)
    assert proc.returncode == 2 and "--timing-s3 must look like s3://BUCKET/KEY" in proc.stderr
    assert len(ecs.list_tasks(cluster=deployed["outputs"]["Cluster"])["taskArns"]) == before


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("region", "mu submit: no AWS region: pass --region, set AWS_DEFAULT_REGION, or give your"),
        ("credentials", "mu submit: no AWS credentials found (environment, profile, SSO, container or"),
    ],
)
def test_no_region_or_no_credentials_is_one_line_and_exit_2(s3, deployed, tmp_path, drop, message):
    env = no_aws(tmp_path) | {"AWS_ENDPOINT_URL": s3.endpoint}
    if drop == "credentials":
        env |= {"AWS_DEFAULT_REGION": "us-east-1"}
    else:
        env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = mu(s3, "submit", "png2y4m", "--stack", deployed["stack"], env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(message)


def test_region_and_credentials_from_a_named_profile(s3, deployed, tmp_path):
    config, credentials = tmp_path / "config", tmp_path / "credentials"
    config.write_text("[profile mu-user]\nregion = us-east-1\n")
    credentials.write_text("[mu-user]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    env = no_aws(tmp_path) | {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_CONFIG_FILE": str(config),
                              "AWS_SHARED_CREDENTIALS_FILE": str(credentials)}  # fmt: skip
    proc = mu(s3, "submit", "png2y4m", "--stack", deployed["stack"], "--profile", "mu-user", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("arn:aws:ecs:us-east-1:")
    proc = mu(s3, "submit", "png2y4m", "--stack", deployed["stack"], "--profile", "nobody", env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "mu submit: The config profile (nobody) could not be found: check --profile or AWS_PROFILE "
        "('aws configure list-profiles' lists them)"
    )


def test_missing_stack_is_a_clear_error(s3):
    proc = mu(s3, "submit", "png2y4m", "--stack", "NoSuchStack")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "mu submit: no stack 'NoSuchStack' in us-east-1: deploy it with 'make deploy', or name it with "
        "--stack and its region with --region"
    )
    proc = mu(s3, "submit", "png2y4m", "--stack", "NoSuchStack", "--region", "eu-west-1")
    assert proc.returncode == 2 and "no stack 'NoSuchStack' in eu-west-1" in proc.stderr


def test_stack_without_mu_outputs_is_refused(s3):
    cfn = s3.client("cloudformation")
    body = {
        "Resources": {"H": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {"Bucket": {"Value": "b"}},
    }
    cfn.create_stack(StackName="NotMu", TemplateBody=json.dumps(body))
    with pytest.raises(SubmitError, match="lacks outputs Cluster") as caught:
        stack_outputs(cfn, "NotMu")
    assert caught.value.status == 2


def test_wait_follows_the_log_and_returns_the_exit_status(s3, deployed):
    out = deployed["outputs"]
    ecs, logs = s3.client("ecs"), s3.client("logs")
    task_arn = mu(s3, "submit", "png2y4m", "--stack", deployed["stack"]).stdout.strip()
    stream = f"mu/coordinator/{task_arn.rsplit('/', 1)[-1]}"
    logs.create_log_stream(logGroupName=out["LogGroup"], logStreamName=stream)
    logs.put_log_events(
        logGroupName=out["LogGroup"], logStreamName=stream,
        logEvents=[{"timestamp": int(time.time() * 1000) + i, "message": f"line {i}"} for i in range(3)],
    )  # fmt: skip
    ecs.stop_task(cluster=out["Cluster"], task=task_arn, reason="test")
    lines: list[str] = []
    code = follow(ecs, logs, out, task_arn, emit=lines.append, poll=0.1, timeout=30)
    assert lines == ["line 0", "line 1", "line 2"]
    assert code == 0


class _Metadata(BaseHTTPRequestHandler):
    task: dict = {}

    def do_GET(self):
        body = json.dumps(self.task).encode() if self.path == "/v4/abc/task" else b"{}"
        self.send_response(200 if self.path == "/v4/abc/task" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def metadata_endpoint():
    server = HTTPServer(("127.0.0.1", 0), _Metadata)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v4/abc"
    server.shutdown()


def test_address_discovery_by_the_tasks_mac_in_its_own_vpc(s3, metadata_endpoint):
    """Two VPCs use the same CIDR, so the same private IP exists twice: the MAC from task
    metadata and the stack's VPC pick the task's own interface."""
    ec2 = s3.client("ec2")
    enis = {}
    for name in ("other", "ours"):
        vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.1.0/24")["Subnet"]["SubnetId"]
        eni = ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress="10.30.1.57")["NetworkInterface"]
        eip = ec2.allocate_address(Domain="vpc")
        ec2.associate_address(AllocationId=eip["AllocationId"], NetworkInterfaceId=eni["NetworkInterfaceId"])
        enis[name] = (vpc, subnet, eni["MacAddress"], eip["PublicIp"])
    vpc, subnet, mac, public = enis["ours"]
    _Metadata.task = {"Containers": [{"Name": "coordinator", "Networks": [
        {"NetworkMode": "awsvpc", "IPv4Addresses": ["10.30.1.57"], "MACAddress": mac}]}]}  # fmt: skip
    assert task_public_address(metadata_endpoint, ec2, vpc_id=vpc) == public
    other_vpc = enis["other"][0]
    with pytest.raises(
        DiscoveryError, match=rf"no network interface with 10.30.1.57 \(MAC {mac}\) in {other_vpc}"
    ):
        task_public_address(metadata_endpoint, ec2, vpc_id=other_vpc)

    no_public = ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress="10.30.1.58")[
        "NetworkInterface"
    ]
    _Metadata.task = {"Containers": [{"Networks": [
        {"IPv4Addresses": ["10.30.1.58"], "MACAddress": no_public["MacAddress"]}]}]}  # fmt: skip
    with pytest.raises(DiscoveryError, match=r"has no public IP.*assignPublicIp=ENABLED"):
        task_public_address(metadata_endpoint, ec2, vpc_id=vpc)


def test_discovery_failure_from_aws_is_one_line(metadata_endpoint, tmp_path):
    import boto3

    _Metadata.task = {"Containers": [{"Networks": [{"IPv4Addresses": ["10.30.1.57"]}]}]}
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                       aws_access_key_id="a", aws_secret_access_key="b")  # fmt: skip
    with pytest.raises(DiscoveryError, match=r"finding the task's network interface: Could not connect"):
        task_public_address(metadata_endpoint, ec2, vpc_id="vpc-1")


def test_discovery_outside_ecs_asks_for_advertise(monkeypatch):
    monkeypatch.delenv("ECS_CONTAINER_METADATA_URI_V4", raising=False)
    with pytest.raises(DiscoveryError, match="--advertise"):
        task_public_address()
    with pytest.raises(DiscoveryError, match="cannot read task metadata"):
        task_public_address("http://127.0.0.1:9/v4/none")
