"""The worker Lambda: ``copies`` identical functions sharing one role, code asset and log group."""

from __future__ import annotations

from aws_cdk import AssetHashType, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .bundling import HANDLER_PACKAGE, bundling_options
from .nag import acknowledge
from .storage import grant_job_data

HANDLER = "lambda_worker.handler.lambda_handler"


class Worker(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        memory_mb: int = 3008,
        timeout_s: int = 900,
        ephemeral_mb: int = 2048,
        copies: int = 1,
    ) -> None:
        super().__init__(scope, construct_id)
        if copies < 1:
            raise ValueError(f"context 'copies' must be at least 1, got {copies}")
        self.log_group = logs.LogGroup(
            self, "Logs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="mu workers: write their logs, read and write the job bucket",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        grant_job_data(bucket, self.role, ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"])
        code = lambda_.Code.from_asset(
            str(HANDLER_PACKAGE), asset_hash_type=AssetHashType.OUTPUT, bundling=bundling_options()
        )
        self.functions = [
            lambda_.Function(
                self,
                f"Function{i}",
                runtime=lambda_.Runtime.PYTHON_3_12,
                architecture=lambda_.Architecture.X86_64,  # the static binaries are built for x86-64
                handler=HANDLER,
                code=code,
                role=self.role,
                memory_size=memory_mb,
                timeout=Duration.seconds(timeout_s),
                ephemeral_storage_size=Size.mebibytes(ephemeral_mb),
                log_group=self.log_group,
                environment={"MU_BIN_DIR": "/var/task/bin"},
                description=f"mu worker (copy {i + 1} of {copies})",
            )
            for i in range(copies)
        ]
        # CDK makes each function DependsOn the role, which its Role: GetAtt already implies
        # (cfn-lint W3005); only the policy, which nothing else orders, needs stating.
        policy = self.role.node.find_child("DefaultPolicy").node.default_child
        for fn in self.functions:
            cfn = fn.node.default_child
            cfn.add_override("DependsOn", [Stack.of(self).get_logical_id(policy)])  # type: ignore[union-attr, arg-type]
        bucket_id = Stack.of(self).get_logical_id(bucket.node.default_child)  # type: ignore[arg-type]
        acknowledge(
            self.role,
            "AwsSolutions-IAM5",
            "Workers read and write objects whose keys each job chooses at run time; the grant covers "
            "the objects of the one job bucket only.",
            f"Resource::<{bucket_id}.Arn>/*",
        )
        for fn in self.functions:
            acknowledge(
                fn,
                "AwsSolutions-L1",
                "The worker runs on Python 3.12 by design; the handler uses the standard library and "
                "boto3 only and is tested on 3.11 and later.",
            )
