"""The one stack users deploy: storage, worker functions and the coordinator service."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Fn, Stack
from constructs import Construct

from .coordinator import Coordinator
from .nag import acknowledge
from .storage import Storage
from .worker import Worker

# Settings a user may change with `-c key=value` (or cdk.json), with their defaults.
DEFAULTS: dict[str, int] = {
    "memory": 3008,
    "timeout": 900,
    "ephemeral": 2048,
    "copies": 1,
    "port": 13579,
    "scratch_days": 7,
}

OUTPUT_KEYS = (
    "Bucket",
    "FunctionNames",
    "Cluster",
    "TaskDefinition",
    "ContainerName",
    "Subnets",
    "SecurityGroup",
    "LogGroup",
    "RunTaskCommand",
)


def setting(scope: Construct, name: str) -> int:
    raw: Any = scope.node.try_get_context(name)
    if raw is None:
        return DEFAULTS[name]
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ValueError(
            f"context '{name}' must be a whole number, got {raw!r} (e.g. -c {name}=...)"
        ) from None


class MuStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        storage = Storage(self, "Storage", scratch_days=setting(self, "scratch_days"))
        worker = Worker(
            self,
            "Worker",
            bucket=storage.bucket,
            memory_mb=setting(self, "memory"),
            timeout_s=setting(self, "timeout"),
            ephemeral_mb=setting(self, "ephemeral"),
            copies=setting(self, "copies"),
        )
        coordinator = Coordinator(
            self, "Coordinator", bucket=storage.bucket, functions=worker.functions, port=setting(self, "port")
        )
        self._outputs(storage, worker, coordinator)
        self._acknowledge_cdk_internals()
        self._drop_redundant_dependencies()

    def _outputs(self, storage: Storage, worker: Worker, coordinator: Coordinator) -> None:
        subnets = Fn.join(",", [s.subnet_id for s in coordinator.vpc.public_subnets])
        values = {
            "Bucket": storage.bucket.bucket_name,
            "FunctionNames": Fn.join(",", [f.function_name for f in worker.functions]),
            "Cluster": coordinator.cluster.cluster_name,
            "TaskDefinition": coordinator.task_definition.task_definition_arn,
            "ContainerName": coordinator.container.container_name,
            "Subnets": subnets,
            "SecurityGroup": coordinator.security_group.security_group_id,
            "LogGroup": coordinator.log_group.log_group_name,
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
                '","--backend","aws"]}]}\'',
            ],
        )
        for key in OUTPUT_KEYS:
            CfnOutput(self, key, value=values[key])

    def _drop_redundant_dependencies(self) -> None:
        """CDK's auto-delete provider states DependsOn its role next to a GetAtt (cfn-lint W3005)."""
        provider = self.node.try_find_child("Custom::S3AutoDeleteObjectsCustomResourceProvider")
        if provider is not None:
            handler, role = provider.node.find_child("Handler"), provider.node.find_child("Role")
            handler.remove_dependency(role)  # type: ignore[attr-defined]

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
