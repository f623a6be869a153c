#!/usr/bin/env python3
"""The CDK app: `npx cdk synth|deploy|destroy` (see README); settings come from `-c key=value`."""

import sys

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.bundling import BundlingError
from stacks.mu_stack import build
from stacks.settings import Settings, SettingsError

app = cdk.App()
try:
    build(app, Settings.from_context(app.node))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    app.synth()
except (SettingsError, BundlingError) as exc:
    sys.exit(f"mu: {exc}")
