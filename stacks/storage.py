"""The job data bucket, in the home region: jobs read their inputs and write their outputs here."""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .nag import acknowledge


def bucket_name(stack_name: str, home_region: str) -> str:
    """Fixed, so worker stacks in other regions name the bucket without a cross-region reference.

    Account and region make it globally unique, as the CDK bootstrap bucket's name does.
    """
    return f"{stack_name.lower()}-data-{Aws.ACCOUNT_ID}-{home_region}"


def grant_job_data(bucket: s3.IBucket, role: iam.IRole, object_actions: list[str], keys: str = "*") -> None:
    """List the bucket and use the objects matching ``keys``.

    Each action is named: ``bucket.grant_read_write`` would add wildcard actions.
    """
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn])
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=object_actions, resources=[bucket.arn_for_objects(keys)])
    )


class Storage(Construct):
    """Private, encrypted, TLS-only; ``cdk destroy`` removes it with its objects."""

    def __init__(self, scope: Construct, construct_id: str, *, name: str) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Data",
            bucket_name=name,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=False,
            # Workers upload big outputs in parts; a worker killed mid-upload leaves parts that
            # are billed but invisible, wherever in the bucket it was writing.
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="abort-incomplete-multipart-uploads",
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            removal_policy=RemovalPolicy.DESTROY,
            auto_delete_objects=True,
        )
        acknowledge(
            self.bucket,
            "AwsSolutions-S1",
            "Job data is written by the job's own workers; server access logs would add a second bucket "
            "and a log object per request. Enable CloudTrail data events where an audit trail is required.",
        )
