"""mu submit and address discovery against moto's server mode (CloudFormation, ECS, EC2, Logs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from coordinator.aws.discover import DiscoveryError, task_public_address
from coordinator.aws.submit import follow, stack_outputs


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
        "Bucket": "mu-data-bucket", "FunctionNames": "mu-worker-0", "Cluster": cluster,
        "TaskDefinition": task_def, "ContainerName": "coordinator", "Subnets": ",".join(subnets),
        "SecurityGroup": group, "LogGroup": log_group, "RunTaskCommand": "aws ecs run-task ...",
    }  # fmt: skip
    stack = f"MuStack{uuid.uuid4().hex[:6]}"
    template = {
        "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {k: {"Value": v} for k, v in outputs.items()},
    }
    cfn.create_stack(StackName=stack, TemplateBody=json.dumps(template))
    return {"stack": stack, "outputs": outputs, "subnets": subnets, "group": group}


def mu(s3, *args):
    env = {**os.environ, "AWS_ENDPOINT_URL": s3.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    return subprocess.run(
        [sys.executable, "-m", "coordinator", *args], capture_output=True, text=True, env=env
    )


def test_submit_starts_the_coordinator_task(s3, deployed):
    proc = mu(s3, "submit", "png2y4m", "-n", "3", "-f", "6", "--stack", deployed["stack"])
    assert proc.returncode == 0, proc.stderr
    task_arn = proc.stdout.strip()
    out = deployed["outputs"]
    task = s3.client("ecs").describe_tasks(cluster=out["Cluster"], tasks=[task_arn])["tasks"][0]
    assert task["clusterArn"].endswith(f"cluster/{out['Cluster']}")
    assert task["taskDefinitionArn"] == out["TaskDefinition"]
    assert task["launchType"] == "FARGATE"
    assert task["overrides"]["containerOverrides"] == [
        {
            "name": "coordinator",
            "command": [
                "run",
                "png2y4m",
                "-n",
                "3",
                "-f",
                "6",
                "--bucket",
                "mu-data-bucket",
                "--backend",
                "aws",
                "--host",
                "0.0.0.0",
            ],
        }
    ]
    details = {d["name"]: d["value"] for d in task["attachments"][0]["details"]}
    assert details["subnetId"] in deployed["subnets"]
    eni = s3.client("ec2").describe_network_interfaces(NetworkInterfaceIds=[details["networkInterfaceId"]])
    assert [g["GroupId"] for g in eni["NetworkInterfaces"][0]["Groups"]] == [deployed["group"]]


def test_bad_job_options_fail_before_any_task_starts(s3, deployed):
    ecs = s3.client("ecs")
    before = len(ecs.list_tasks(cluster=deployed["outputs"]["Cluster"])["taskArns"])
    proc = mu(s3, "submit", "png2y4m", "-n", "0", "--stack", deployed["stack"])
    assert proc.returncode == 2 and "--workers must be at least 1" in proc.stderr
    assert len(ecs.list_tasks(cluster=deployed["outputs"]["Cluster"])["taskArns"]) == before


def test_missing_stack_is_a_clear_error(s3):
    proc = mu(s3, "submit", "png2y4m", "--stack", "NoSuchStack")
    assert proc.returncode == 1
    assert "cannot read stack 'NoSuchStack'" in proc.stderr and "make deploy" in proc.stderr


def test_stack_without_mu_outputs_is_refused(s3):
    cfn = s3.client("cloudformation")
    body = {
        "Resources": {"H": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {"Bucket": {"Value": "b"}},
    }
    cfn.create_stack(StackName="NotMu", TemplateBody=json.dumps(body))
    with pytest.raises(Exception, match="lacks outputs Cluster"):
        stack_outputs(cfn, "NotMu")


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


def test_address_discovery_from_task_metadata_and_the_eni(s3, metadata_endpoint):
    ec2 = s3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.1.0/24")["Subnet"]["SubnetId"]
    eni = ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress="10.30.1.57")["NetworkInterface"]
    eip = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=eip["AllocationId"], NetworkInterfaceId=eni["NetworkInterfaceId"])
    _Metadata.task = {"Containers": [{"Name": "coordinator", "Networks": [
        {"NetworkMode": "awsvpc", "IPv4Addresses": ["10.30.1.57"]}]}]}  # fmt: skip
    assert task_public_address(metadata_endpoint, ec2) == eip["PublicIp"]

    ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress="10.30.1.58")
    _Metadata.task = {"Containers": [{"Networks": [{"IPv4Addresses": ["10.30.1.58"]}]}]}
    with pytest.raises(DiscoveryError, match=r"has no public IP.*assignPublicIp=ENABLED"):
        task_public_address(metadata_endpoint, ec2)


def test_discovery_outside_ecs_asks_for_advertise(monkeypatch):
    monkeypatch.delenv("ECS_CONTAINER_METADATA_URI_V4", raising=False)
    with pytest.raises(DiscoveryError, match="--advertise"):
        task_public_address()
    with pytest.raises(DiscoveryError, match="cannot read task metadata"):
        task_public_address("http://127.0.0.1:9/v4/none")
