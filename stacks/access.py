"""What a user needs to run jobs: one managed policy holding exactly the calls ``mu submit`` makes.

Attach it to a user, group or role (the stack's ``SubmitPolicy`` output names it); nothing
else is needed to start, follow and read jobs of this stack.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from .coordinator import Coordinator
from .nag import acknowledge_wildcards


class SubmitPolicy(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, coordinator: Coordinator) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        task_definition = coordinator.task_definition
        execution_role = task_definition.obtain_execution_role()
        cluster = coordinator.cluster
        stack_arn = stack.format_arn(
            service="cloudformation", resource="stack", resource_name=f"{stack.stack_name}/*"
        )
        revisions = stack.format_arn(
            service="ecs", resource="task-definition", resource_name=f"{task_definition.family}:*"
        )
        tasks = stack.format_arn(service="ecs", resource="task", resource_name=f"{cluster.cluster_name}/*")
        streams = stack.format_arn(
            service="logs", resource="log-group", arn_format=ArnFormat.COLON_RESOURCE_NAME,
            resource_name=f"{coordinator.log_group.log_group_name}:log-stream:*",
        )  # fmt: skip
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            description=f"mu submit for stack {stack.stack_name}: read outputs, start and follow tasks",
            statements=[
                # The outputs: cluster, task definition, subnets, functions, regions.
                iam.PolicyStatement(
                    actions=["cloudformation:DescribeStacks"],
                    resources=[stack_arn],
                ),
                # Any revision of this task definition, and only in this cluster.
                iam.PolicyStatement(
                    actions=["ecs:RunTask"],
                    resources=[revisions],
                    conditions={"ArnEquals": {"ecs:cluster": cluster.cluster_arn}},
                ),
                iam.PolicyStatement(
                    actions=["ecs:DescribeTasks"],
                    resources=[tasks],
                ),
                # RunTask hands the two roles to ECS, and to nothing else.
                iam.PolicyStatement(
                    actions=["iam:PassRole"],
                    resources=[coordinator.task_role.role_arn, execution_role.role_arn],
                    conditions={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
                ),
                # --wait follows the coordinator's log stream.
                iam.PolicyStatement(
                    actions=["logs:GetLogEvents"],
                    resources=[streams],
                ),
            ],
        )
        acknowledge_wildcards(
            self.policy,
            "Each wildcard stands for a name AWS makes at run time inside one resource of this stack: the "
            "stack id, the task definition revision, the task id, the log stream name.",
            stack_arn,
            revisions,
            tasks,
            streams,
        )
