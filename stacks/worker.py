"""The worker Lambda: ``copies`` identical functions with fixed names sharing one role, code, log group."""

from __future__ import annotations

from aws_cdk import AssetHashType, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .bundling import HANDLER_PACKAGE, binaries_folder, bundling_options, check_binaries
from .nag import acknowledge, acknowledge_wildcards
from .packages import Packages
from .settings import Settings
from .storage import grant_job_data

HANDLER = "lambda_worker.handler.lambda_handler"
ARCHITECTURES = {"x86_64": lambda_.Architecture.X86_64, "arm64": lambda_.Architecture.ARM_64}


class Worker(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, bucket: s3.IBucket, settings: Settings
    ) -> None:
        super().__init__(scope, construct_id)
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
        binaries = binaries_folder(settings.binaries, settings.arch)
        if Stack.of(self).bundling_required:  # not for cdk destroy, which needs no binaries
            # Checked here, not only in the bundling callback, so a bad binary stops synth with
            # one clear line instead of a JavaScript stack trace.
            check_binaries(binaries, settings.arch)
        code = lambda_.Code.from_asset(
            str(HANDLER_PACKAGE),
            asset_hash_type=AssetHashType.OUTPUT,
            bundling=bundling_options(settings.arch, binaries),
        )
        names = settings.function_names()
        runtime = lambda_.Runtime(f"python{settings.python}", lambda_.RuntimeFamily.PYTHON)
        self.packages = None
        if settings.requirements is not None:  # mu.map's third-party packages, as a layer
            self.packages = Packages(
                self, "Packages", requirements=settings.requirements, runtime=runtime, python=settings.python,
                arch=settings.arch, architecture=ARCHITECTURES[settings.arch],
            )  # fmt: skip
        self.functions = [
            lambda_.Function(
                self,
                f"Function{i}",
                function_name=name,
                runtime=runtime,  # the deploying Python's unless -c python=X.Y (mu.map's pickles need it)
                architecture=ARCHITECTURES[settings.arch],  # what the bundled binaries are built for
                handler=HANDLER,
                code=code,
                role=self.role,
                memory_size=settings.memory,
                timeout=Duration.seconds(settings.timeout),
                ephemeral_storage_size=Size.mebibytes(settings.ephemeral),
                reserved_concurrent_executions=settings.reserved,
                log_group=self.log_group,
                layers=[self.packages.layer] if self.packages is not None else None,
                environment={"MU_BIN_DIR": "/var/task/bin"},
                description=f"mu worker (copy {i + 1} of {settings.copies})",
            )
            for i, name in enumerate(names)
        ]
        for fn in self.functions:
            # Lambda's defaults would retry a failed worker twice and hold a throttled invocation
            # for up to 6 hours: it would start long after the coordinator gave up on it (and
            # replaced it with --retries), then idle at full memory. An invocation older than
            # the coordinator's connect timeout is useless, so Lambda drops it instead.
            fn.configure_async_invoke(
                retry_attempts=0, max_event_age=Duration.seconds(settings.connect_timeout)
            )
        self._order_after_policy()
        self._acknowledge(bucket, settings.python)

    def _order_after_policy(self) -> None:
        """CDK makes each function DependsOn the role, which its Role: GetAtt already implies
        (cfn-lint W3005); only the policy, which nothing else orders, needs stating."""
        policy = self.role.node.find_child("DefaultPolicy").node.default_child
        for fn in self.functions:
            cfn = fn.node.default_child
            cfn.add_override("DependsOn", [Stack.of(self).get_logical_id(policy)])  # type: ignore[union-attr, arg-type]

    def _acknowledge(self, bucket: s3.IBucket, python: str) -> None:
        acknowledge_wildcards(
            self.role,
            "Workers read and write objects whose keys each job chooses at run time; the grant covers "
            "the objects of the one job bucket only.",
            bucket.arn_for_objects("*"),
        )
        for fn in self.functions:
            acknowledge(
                fn,
                "AwsSolutions-L1",
                f"The worker runs on Python {python}, the runtime chosen with -c python (by default "
                "the deploying Python's, so mu.map's functions pickle for it); the handler is tested on 3.11 "
                "and later.",
            )
