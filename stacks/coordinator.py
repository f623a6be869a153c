"""The coordinator service: a public-subnet VPC without NAT, an ECS cluster and a Fargate task."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aws_cdk import ArnFormat, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from coordinator.core.logsink import TIMING_PREFIX

from .nag import acknowledge, acknowledge_wildcards
from .settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONTAINER_NAME = "coordinator"


def function_arns(scope: Construct, names: Sequence[str], regions: Sequence[str]) -> list[str]:
    """The worker functions by their fixed names in every region (no cross-region references)."""
    stack = Stack.of(scope)
    return [
        stack.format_arn(
            service="lambda",
            region=region,
            resource="function",
            resource_name=name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        for region in regions
        for name in names
    ]


class Coordinator(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        settings: Settings,
        regions: Sequence[str],
        cpu: int = 1024,
        memory_mb: int = 2048,
    ) -> None:
        super().__init__(scope, construct_id)
        port = settings.port
        self.port = port
        # Public subnets only: the task needs a public address that Lambda workers can dial,
        # and a NAT gateway would be the stack's largest fixed cost.
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24)
            ],
        )
        self.cluster = ecs.Cluster(self, "Cluster", vpc=self.vpc)
        self.security_group = ec2.SecurityGroup(
            self,
            "Port",
            vpc=self.vpc,
            description="mu coordinator: workers connect here over mutual TLS",
            allow_all_outbound=True,
        )
        # The coordinator port and, next to it, the relay port of jobs that pass data between
        # workers (mu run scan). Lambda workers have no fixed addresses; mutual TLS guards both.
        self.security_group.add_ingress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp_range(port, port + 1), "mu coordinator and relay (mutual TLS)"
        )
        self.log_group = logs.LogGroup(
            self, "Logs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY
        )
        self.task_role = iam.Role(
            self,
            "TaskRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="mu coordinator: invoke the worker functions, write timing logs, find its address",
        )
        functions = function_arns(self, settings.function_names(), regions)
        self._grant(bucket, functions)
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=cpu,
            memory_limit_mib=memory_mb,
            task_role=self.task_role,
            # Pinned, as the image below is: a task on another CPU than its image fails with
            # "exec format error", and CDK would otherwise build for the deploying machine.
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        self.container = self.task_definition.add_container(
            CONTAINER_NAME,
            image=ecs.ContainerImage.from_asset(
                str(ROOT), file="Dockerfile", platform=ecr_assets.Platform.LINUX_AMD64
            ),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="mu", log_group=self.log_group),
            port_mappings=[ecs.PortMapping(container_port=port), ecs.PortMapping(container_port=port + 1)],
            environment={
                "MU_PORT": str(port),
                # The coordinator waits for a worker as long as Lambda keeps its invocation queued.
                "MU_CONNECT_TIMEOUT": str(settings.connect_timeout),
                # Address discovery looks for the task's network interface in this VPC only.
                "MU_VPC_ID": self.vpc.vpc_id,
                # The cost estimate prices the worker functions as deployed (memory, x86-64 or arm64).
                "MU_WORKER_MEMORY": str(settings.memory),
                "MU_WORKER_ARCH": settings.arch,
            },
            command=["--help"],
        )
        self._acknowledge(bucket, functions)

    def _grant(self, bucket: s3.IBucket, functions: list[str]) -> None:
        """Exactly what ``mu run --backend aws`` does in the task, and nothing else."""
        role = self.task_role
        # Invocations are unqualified today; the qualified ARNs let a job pin a version or alias.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"], resources=[*functions, *(f"{f}:*" for f in functions)]
            )
        )
        # The pre-launch check: can the job get its workers at once?
        role.add_to_policy(
            iam.PolicyStatement(actions=["lambda:GetFunctionConcurrency"], resources=functions)
        )
        # GetAccountSettings and DescribeNetworkInterfaces take no resource-level permissions, so
        # AWS requires "*"; the request region is pinned where possible.
        role.add_to_policy(iam.PolicyStatement(actions=["lambda:GetAccountSettings"], resources=["*"]))
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["ec2:DescribeNetworkInterfaces"],
                resources=["*"],
                conditions={"StringEquals": {"aws:RequestedRegion": Stack.of(self).region}},
            )
        )
        # mu map lists its input prefix; every job writes its timing log under mu-logs/.
        role.add_to_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn]))
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"], resources=[bucket.arn_for_objects(f"{TIMING_PREFIX}*")]
            )
        )

    def _acknowledge(self, bucket: s3.IBucket, functions: list[str]) -> None:
        acknowledge_wildcards(
            self.task_role,
            "lambda:GetAccountSettings and ec2:DescribeNetworkInterfaces take no resource-level permissions, "
            "so AWS requires '*'.",
            "*",
        )
        acknowledge_wildcards(
            self.task_role,
            "Invoking a worker function by version or alias needs its qualified ARN, FUNCTION:QUALIFIER.",
            *(f"{f}:*" for f in functions),
        )
        acknowledge_wildcards(
            self.task_role,
            "Each job's timing log gets a key chosen at run time, under mu-logs/ only.",
            bucket.arn_for_objects(f"{TIMING_PREFIX}*"),
        )
        acknowledge(
            self.task_definition,
            "AwsSolutions-ECS2",
            "The environment holds the port, a timeout, the VPC id and the workers' memory and CPU, "
            "no secrets.",
        )
        acknowledge(
            self.task_definition,
            "AwsSolutions-IAM5",
            "CDK's execution role needs ecr:GetAuthorizationToken, which AWS grants only on '*'.",
            "Resource::*",
        )
        acknowledge(
            self.security_group,
            "AwsSolutions-EC23",
            "Lambda workers have no fixed addresses; every connection must present a client certificate "
            "signed by the job's own CA before it can send a byte of protocol.",
        )
        acknowledge(
            self.vpc,
            "AwsSolutions-VPC7",
            "The VPC carries one short-lived task whose only inbound traffic is mutual TLS; add flow logs "
            "where network auditing is required.",
        )
        acknowledge(
            self.cluster,
            "AwsSolutions-ECS4",
            "The cluster runs one task per job; the coordinator writes its own status and timing log, so "
            "Container Insights would only add cost.",
        )
