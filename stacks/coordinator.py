"""The coordinator service: a public-subnet VPC without NAT, an ECS cluster and a Fargate task."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .nag import acknowledge
from .storage import grant_job_data

ROOT = Path(__file__).resolve().parent.parent
CONTAINER_NAME = "coordinator"
DEFAULT_PORT = 13579


class Coordinator(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        functions: Sequence[lambda_.IFunction],
        port: int = DEFAULT_PORT,
        cpu: int = 1024,
        memory_mb: int = 2048,
    ) -> None:
        super().__init__(scope, construct_id)
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
            description="mu coordinator: invoke the worker functions, use the job bucket, find its address",
        )
        self.task_role.add_to_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"], resources=[f.function_arn for f in functions]
            )
        )
        grant_job_data(bucket, self.task_role, ["s3:GetObject", "s3:PutObject"])
        # AWS requires "*" here: ec2:DescribeNetworkInterfaces supports no resource-level
        # permissions. The coordinator uses it to learn its task's public IP.
        self.task_role.add_to_policy(
            iam.PolicyStatement(actions=["ec2:DescribeNetworkInterfaces"], resources=["*"])
        )
        self.task_definition = ecs.FargateTaskDefinition(
            self, "Task", cpu=cpu, memory_limit_mib=memory_mb, task_role=self.task_role
        )
        self.container = self.task_definition.add_container(
            CONTAINER_NAME,
            image=ecs.ContainerImage.from_asset(str(ROOT), file="Dockerfile"),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="mu", log_group=self.log_group),
            port_mappings=[ecs.PortMapping(container_port=port), ecs.PortMapping(container_port=port + 1)],
            environment={
                "MU_FUNCTION": ",".join(f.function_name for f in functions),
                "MU_BUCKET": bucket.bucket_name,
                "MU_PORT": str(port),
            },
            command=["--help"],
        )
        self._acknowledge(bucket)

    def _acknowledge(self, bucket: s3.IBucket) -> None:
        bucket_id = Stack.of(self).get_logical_id(bucket.node.default_child)  # type: ignore[arg-type]
        acknowledge(
            self.task_role,
            "AwsSolutions-IAM5",
            "ec2:DescribeNetworkInterfaces has no resource-level permissions, so AWS requires '*'.",
            "Resource::*",
        )
        acknowledge(
            self.task_role,
            "AwsSolutions-IAM5",
            "Jobs choose object keys at run time; the grant covers the objects of the one job bucket only.",
            f"Resource::<{bucket_id}.Arn>/*",
        )
        acknowledge(
            self.task_definition,
            "AwsSolutions-ECS2",
            "The environment holds resource names (functions, bucket, port), no secrets.",
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
