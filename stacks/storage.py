"""The job data bucket."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .nag import acknowledge

SCRATCH_PREFIX = "scratch/"


def grant_job_data(bucket: s3.IBucket, role: iam.IRole, object_actions: list[str]) -> None:
    """List the bucket and use its objects, naming each action (``grant_read_write`` adds wildcards)."""
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn])
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=object_actions, resources=[bucket.arn_for_objects("*")])
    )


class Storage(Construct):
    """Private, encrypted, TLS-only; ``cdk destroy`` removes it with its objects."""

    def __init__(self, scope: Construct, construct_id: str, *, scratch_days: int = 7) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Data",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=False,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-scratch",
                    prefix=SCRATCH_PREFIX,
                    expiration=Duration.days(scratch_days),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            removal_policy=RemovalPolicy.DESTROY,
            auto_delete_objects=True,
        )
        acknowledge(
            self.bucket,
            "AwsSolutions-S1",
            "Job data is short-lived and written by the job's own workers; server access logs would add "
            "a second bucket and a log object per request. Enable CloudTrail data events where an audit "
            "trail is required.",
        )
