"""The stacks users deploy: storage, worker functions and the coordinator service in the home
region, and worker functions alone in every further region of ``-c regions=``."""

from __future__ import annotations

from typing import Any

from aws_cdk import App, Aws, CfnOutput, Environment, Fn, Stack
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .access import SubmitPolicy
from .coordinator import Coordinator
from .nag import acknowledge
from .settings import Settings
from .storage import Storage, bucket_name
from .worker import Worker

OUTPUT_KEYS = (
    "Bucket",
    "FunctionNames",
    "Regions",
    "Cluster",
    "TaskDefinition",
    "ContainerName",
    "Subnets",
    "SecurityGroup",
    "LogGroup",
    "SubmitPolicy",
    "RunTaskCommand",
)
DESCRIPTION = "mu: parallel jobs on AWS Lambda workers driven by a Fargate coordinator over mutual TLS"


def build(app: App, settings: Settings) -> list[Stack]:
    """The home stack, then one worker stack per further region (``MuStack-us-west-2``, ...)."""
    if not settings.regions:
        # Environment-agnostic: deploys to the account and region of the caller's credentials,
        # and synthesizes offline (availability zones resolve at deploy time through Fn::GetAZs).
        return [MuStack(app, settings.stack_name, settings=settings, description=DESCRIPTION)]
    home = MuStack(
        app, settings.stack_name, settings=settings, description=DESCRIPTION,
        env=Environment(region=settings.home_region),
    )  # fmt: skip
    others: list[Stack] = [
        WorkerStack(
            app,
            f"{settings.stack_name}-{region}",
            settings=settings,
            env=Environment(region=region),
            description=f"{DESCRIPTION} (worker functions in {region})",
        )
        for region in settings.regions[1:]
    ]
    return [home, *others]


class MuStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        regions = list(settings.regions) or [Aws.REGION]
        storage = Storage(self, "Storage", name=bucket_name(settings.stack_name, regions[0]))
        Worker(self, "Worker", bucket=storage.bucket, settings=settings)
        coordinator = Coordinator(
            self, "Coordinator", bucket=storage.bucket, settings=settings, regions=regions
        )
        submit = SubmitPolicy(self, "Submit", coordinator=coordinator)
        self._outputs(storage, settings, coordinator, submit, regions)
        self._acknowledge_cdk_internals()
        self._drop_redundant_dependencies()

    def _outputs(
        self, storage: Storage, settings: Settings, coordinator: Coordinator, submit: SubmitPolicy,
        regions: list[str],
    ) -> None:  # fmt: skip
        subnets = Fn.join(",", [s.subnet_id for s in coordinator.vpc.public_subnets])
        functions = ",".join(settings.function_names())
        region_list = Fn.join(",", regions)
        values = {
            "Bucket": storage.bucket.bucket_name,
            "FunctionNames": functions,
            "Regions": region_list,
            "Cluster": coordinator.cluster.cluster_name,
            "TaskDefinition": coordinator.task_definition.task_definition_arn,
            "ContainerName": coordinator.container.container_name,
            "Subnets": subnets,
            "SecurityGroup": coordinator.security_group.security_group_id,
            "LogGroup": coordinator.log_group.log_group_name,
            "SubmitPolicy": submit.policy.managed_policy_arn,
        }
        network = Fn.join(
            "",
            [
                "awsvpcConfiguration={subnets=[",
                subnets,
                "],securityGroups=[",
                coordinator.security_group.security_group_id,
                "],assignPublicIp=ENABLED}",
            ],
        )
        values["RunTaskCommand"] = Fn.join(
            "",
            [
                "aws ecs run-task --launch-type FARGATE --cluster ",
                coordinator.cluster.cluster_name,
                " --task-definition ",
                coordinator.task_definition.task_definition_arn,
                " --network-configuration '",
                network,
                '\' --overrides \'{"containerOverrides":[{"name":"',
                coordinator.container.container_name,
                '","command":["run","png2y4m","-n","10","-b","',
                storage.bucket.bucket_name,
                '","--backend","aws","--function","',
                functions,
                '","--regions","',
                region_list,
                "\"]}]}'",
            ],
        )
        for key in OUTPUT_KEYS:
            CfnOutput(self, key, value=values[key])

    def _drop_redundant_dependencies(self) -> None:
        """CDK's auto-delete provider states DependsOn its role next to a GetAtt (cfn-lint W3005)."""
        provider = self.node.try_find_child("Custom::S3AutoDeleteObjectsCustomResourceProvider")
        if provider is not None:
            handler, role = provider.node.find_child("Handler"), provider.node.find_child("Role")
            handler.remove_resource_dependency(role)  # type: ignore[attr-defined]

    def _acknowledge_cdk_internals(self) -> None:
        """Resources CDK itself adds (the bucket auto-delete provider) get their reasons here."""
        acknowledge(
            self,
            "AwsSolutions-IAM4",
            "CDK's auto-delete-objects provider (run only by cdk destroy) uses AWSLambdaBasicExecutionRole.",
            "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        )
        acknowledge(
            self, "AwsSolutions-L1", "CDK chooses the runtime of its own auto-delete-objects provider."
        )


class WorkerStack(Stack):
    """Worker functions in one more region, with the home stack's names, using its bucket."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        assert settings.home_region is not None
        bucket = s3.Bucket.from_bucket_name(
            self, "Data", bucket_name(settings.stack_name, settings.home_region)
        )
        Worker(self, "Worker", bucket=bucket, settings=settings)
        CfnOutput(self, "FunctionNames", value=",".join(settings.function_names()))
