#!/usr/bin/env python3
"""The CDK app: `npx cdk synth|deploy|destroy` (see README)."""

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.mu_stack import MuStack

app = cdk.App()
# Environment-agnostic: deploys to the account and region of the caller's credentials, and
# synthesizes offline (availability zones resolve at deploy time through Fn::GetAZs).
MuStack(
    app,
    app.node.try_get_context("stack_name") or "MuStack",
    description="mu: parallel jobs on AWS Lambda workers driven by a Fargate coordinator over mutual TLS",
)
cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
app.synth()
