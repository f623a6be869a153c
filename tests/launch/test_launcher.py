"""The aws backend against local HTTPS endpoints that accept Lambda Invoke requests."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import urllib.request
import zipfile
from collections import Counter

import pytest

from coordinator.core.tls import make_job_keys
from coordinator.launch import LaunchError
from coordinator.launch.aws_lambda import LambdaLauncher
from coordinator.launch.capacity import RegionCapacity, shares, shortfalls
from tests.fake_lambda import CREDS, FakeLambda


@pytest.fixture(scope="module")
def endpoint_keys():
    return make_job_keys(hosts=("127.0.0.1",))


@pytest.fixture(scope="module")
def bundle(endpoint_keys, tmp_path_factory):
    """The fake endpoint's CA as a file, as AWS_CA_BUNDLE and botocore's verify= take it."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_text(endpoint_keys.ca_cert)
    return str(path)


def events(n):
    return [{"worker": i, "coordinator": "127.0.0.1:1", "job": "j"} for i in range(n)]


def launcher(fake, bundle, **kw):
    opts = {"max_inflight": 16, "deadline": 30, "backoff_base": 0.01, "backoff_cap": 0.1, **kw}
    return LambdaLauncher(
        kw.pop("functions", ["mu-a", "mu-b"]), kw.pop("regions", ["us-east-1", "eu-west-1"]),
        endpoint_url=fake.url, credentials=CREDS, ca_bundle=bundle,
        **{k: v for k, v in opts.items() if k not in ("functions", "regions")},
    )  # fmt: skip


def test_every_worker_invoked_once_round_robin_with_throttles_retried(endpoint_keys, bundle):
    def script(function, worker, attempt):
        if worker % 5 == 0 and attempt <= 2:
            return 429
        if worker % 7 == 0 and attempt == 1:
            return 500
        return 202

    async def scenario():
        async with FakeLambda(endpoint_keys, script) as fake:
            la = launcher(fake, bundle)
            await la.launch(events(40))
            await la.close()
            return fake, la

    fake, la = asyncio.run(scenario())
    assert fake.bad_signatures == 0
    assert sorted(s.event["worker"] for s in fake.seen) == list(range(40))  # each exactly once
    assert Counter((s.function, s.region) for s in fake.seen) == {
        (f, r): 10 for f in ("mu-a", "mu-b") for r in ("us-east-1", "eu-west-1")
    }
    assert la.launched == 40 and la.failures() == {}
    assert la.retried == 8 * 2 + 6 - 2  # workers 0,5,...,35 twice; 7,14,21,28 (not 0, 35) once
    assert "40 invoked" in la.report()


def test_missing_function_fails_with_a_clear_message(endpoint_keys, bundle):
    def script(function, worker, attempt):
        return 404 if function == "mu-b" else 202

    async def scenario():
        async with FakeLambda(endpoint_keys, script) as fake:
            la = launcher(fake, bundle, regions=["us-east-1"])
            await la.launch(events(4))
            await la.close()
            return la

    la = asyncio.run(scenario())
    assert la.launched == 2 and sorted(la.failures()) == [1, 3]
    why = la.failures()[1]
    assert "function 'mu-b' in us-east-1: HTTP 404 ResourceNotFoundException" in why
    assert "check --function and --regions" in why
    # Four invocations, two refused: at most two workers can connect, fewer once they have.
    assert la.may_connect(arrived=0, live=0) == 2 and la.may_connect(arrived=2, live=1) == 0


def test_throttling_past_the_deadline_fails(endpoint_keys, bundle):
    async def scenario():
        async with FakeLambda(endpoint_keys, lambda f, w, a: 429) as fake:
            la = launcher(fake, bundle, deadline=0.3)
            await la.launch(events(2))
            await la.close()
            return la

    la = asyncio.run(scenario())
    assert la.launched == 0 and len(la.failures()) == 2
    assert "when --launch-deadline passed: HTTP 429 TooManyRequestsException" in la.failures()[0]


def test_bad_configuration_is_refused():
    with pytest.raises(LaunchError, match="--function"):
        LambdaLauncher([], ["us-east-1"], credentials=CREDS)
    with pytest.raises(LaunchError, match="bad Lambda endpoint"):
        LambdaLauncher(["f"], ["us-east-1"], endpoint_url="ftp://x", credentials=CREDS)
    with pytest.raises(
        LaunchError, match=r"setting up Lambda in 'us east': .*doesn't match a supported format"
    ):
        LambdaLauncher(["f"], ["us east"], credentials=CREDS)


def test_no_credentials_is_a_clear_error(monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    with pytest.raises(LaunchError, match="no AWS credentials found"):
        LambdaLauncher(["f"], ["us-east-1"])


def test_mu_run_aws_end_to_end_with_spares(endpoint_keys, s3, tmp_path):
    """mu run --backend aws: credentials from the environment, CA bundle and endpoint overrides;
    the fake Lambda starts each accepted event as a real worker; spares are sent home."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text(endpoint_keys.ca_cert)

    async def scenario():
        async with FakeLambda(endpoint_keys, run_workers=True) as fake:
            env = {
                **os.environ, "AWS_ACCESS_KEY_ID": CREDS.access_key,
                "AWS_SECRET_ACCESS_KEY": CREDS.secret_key,
                "AWS_SESSION_TOKEN": CREDS.token, "AWS_CA_BUNDLE": str(bundle),
            }  # fmt: skip
            bucket = "aws-e2e-bucket"
            s3.client().create_bucket(Bucket=bucket)
            from coordinator.local.demo import encode_png, frame_rgb, to_uint16

            for frame in (1, 2, 3, 4):
                s3.client().put_object(Bucket=bucket, Key=f"v-png16/{frame:08d}.png",
                                       Body=encode_png(to_uint16(frame_rgb(frame, 16, 8))))  # fmt: skip
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "coordinator", "run", "png2y4m", "-n", "2", "-f", "2", "-v", "v",
                "-b", bucket, "--backend", "aws", "--function", "mu-w1,mu-w2", "--regions", "us-east-1",
                "--lambda-endpoint", fake.url, "--advertise", "127.0.0.1", "--host", "127.0.0.1", "-t", "0",
                "--spares", "1", "--s3-endpoint", s3.endpoint, "--connect-timeout", "60",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            return proc.returncode, out.decode(), err.decode(), fake

    code, out, err, fake = asyncio.run(scenario())
    assert code == 0, err
    assert "all 2 workers finished" in out
    assert "launch: 3 invoked, 0 retried, 0 failed" in err
    assert "spare worker from" in err
    assert sorted(s.event["worker"] for s in fake.seen) == [0, 1, 2]
    assert {s.function for s in fake.seen} == {"mu-w1", "mu-w2"}
    # Before the first invocation: the account's and each function's concurrency, signed, in its region.
    assert sorted(fake.settings_reads) == [
        ("GetAccountSettings", "us-east-1"), ("GetFunctionConcurrency", "us-east-1"),
        ("GetFunctionConcurrency", "us-east-1"),
    ]  # fmt: skip
    assert "Lambda in us-east-1: 1000 of 1000 concurrent executions unreserved" in err
    event = fake.seen[0].event
    assert "BEGIN PRIVATE KEY" in event["tls"]["key"] and "server" not in json.dumps(event["tls"]).lower()


def test_invocations_accepted_by_motos_lambda(s3):
    """moto's server mode with a function created there answers 202 to the launcher."""
    iam, lam = s3.client("iam"), s3.client("lambda")
    role = iam.create_role(RoleName="mu-launch-test", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    config = json.dumps({"lambda": {"use_docker": False}}).encode()
    urllib.request.urlopen(
        urllib.request.Request(f"{s3.endpoint}/moto-api/config", data=config, method="POST")
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("handler.py", "def handler(event, context):\n    return event\n")
    lam.create_function(FunctionName="mu-worker-moto", Runtime="python3.12", Role=role,
                        Handler="handler.handler", Code={"ZipFile": buf.getvalue()})  # fmt: skip

    async def scenario():
        from botocore.credentials import Credentials

        la = LambdaLauncher(["mu-worker-moto"], ["us-east-1"], endpoint_url=s3.endpoint,
                            credentials=Credentials("testing", "testing"))  # fmt: skip
        await la.launch(events(5))
        await la.close()
        return la

    la = asyncio.run(scenario())
    assert la.launched == 5 and la.failures() == {}


# -- before launching: can Lambda run the whole job at once? -------------------------------


def test_worker_shares_follow_the_round_robin():
    targets = [("a", "r1"), ("b", "r1"), ("a", "r2")]
    assert shares(7, targets) == {("a", "r1"): 3, ("b", "r1"): 2, ("a", "r2"): 2}
    assert shares(2, targets) == {("a", "r1"): 1, ("b", "r1"): 1, ("a", "r2"): 0}


def test_shortfalls_pool_unreserved_functions_and_hold_reserved_ones_to_their_reservation():
    targets = [("a", "r1"), ("b", "r1"), ("a", "r2"), ("b", "r2")]
    regions = {
        "r1": RegionCapacity("r1", 1000, 150),
        "r2": RegionCapacity("r2", 1000, 1000, {"a": 40, "b": None}),
    }
    # 75 workers per target: r1's pool of 150 holds a and b, r2's a has 40 reserved; a reservation
    # of 75 each would fit r2: 1000 unreserved + 40 held, less the 100 Lambda keeps, is 940.
    assert shortfalls(300, targets, regions) == [
        "r2: a would run 75 workers but has 40 reserved",
        "r2: -c reserved=75 would hold them (at most 470 for each of the 2 worker function(s) there, as "
        "Lambda keeps 100 of the account's 1000 unreserved)",
    ]
    # r1's pool of 150 is short by one, and reserving cannot help: 150 - 100 is all there is to reserve.
    r1 = shortfalls(301, targets, regions)[:2]
    assert r1[0].startswith("r1: a and b would run 151 workers")
    assert r1[1] == (
        "r1: no reservation can hold them (at most 25 for each of the 2 worker function(s) there, as "
        "Lambda keeps 100 of the account's 1000 unreserved)"
    )
    assert shortfalls(160, targets, regions) == []
    regions["r2"].reserved["b"] = 0
    assert "b has reserved concurrency 0" in shortfalls(4, targets, regions)[0]


def check(fake, bundle, workers, **kw):
    """check_capacity runs botocore (blocking) against the fake, which serves this event loop."""
    la = launcher(fake, bundle, **kw)
    return asyncio.to_thread(la.check_capacity, workers)


def test_capacity_check_reads_every_region_and_function(endpoint_keys, bundle, capsys):
    async def scenario():
        async with FakeLambda(endpoint_keys, limits={"eu-west-1": (3000, 2500)},
                              reserved={("mu-a", "us-east-1"): 300}) as fake:  # fmt: skip
            await check(fake, bundle, 1000)
            return fake

    fake = asyncio.run(scenario())
    assert fake.bad_signatures == 0 and fake.seen == []  # reads only: nothing is invoked
    assert Counter(fake.settings_reads) == {
        ("GetAccountSettings", "us-east-1"): 1, ("GetAccountSettings", "eu-west-1"): 1,
        ("GetFunctionConcurrency", "us-east-1"): 2, ("GetFunctionConcurrency", "eu-west-1"): 2,
    }  # fmt: skip
    err = capsys.readouterr().err
    assert "Lambda in us-east-1: 1000 of 1000 concurrent executions unreserved; reserved: mu-a 300" in err
    assert "Lambda in eu-west-1: 2500 of 3000 concurrent executions unreserved" in err


def test_capacity_check_refuses_a_job_that_cannot_get_its_workers(endpoint_keys, bundle):
    async def scenario():
        async with FakeLambda(endpoint_keys, limits={"us-east-1": (1000, 100)},
                              reserved={("mu-a", "eu-west-1"): 50}) as fake:  # fmt: skip
            with pytest.raises(LaunchError) as caught:
                await check(fake, bundle, 400)
            return str(caught.value), fake

    message, fake = asyncio.run(scenario())
    assert message.startswith("this job needs 400 Lambda workers running at once, more than it can get.")
    assert (
        "us-east-1: mu-a and mu-b would run 200 workers in the account's unreserved concurrency of 100 "
        "(account limit 1000)" in message
    )
    assert "eu-west-1: mu-a would run 100 workers but has 50 reserved" in message
    assert "eu-west-1: -c reserved=100 would hold them" in message
    assert "us-east-1: no reservation can hold them (at most 0 for each" in message
    assert "L-B99A9384" in message and "-c regions=" in message and "\n" not in message
    # Copies of the function in one region share its pool: more of them is no way out.
    assert "-c copies" not in message and "share its pool" in message
    assert fake.seen == []


def test_capacity_check_stops_at_a_missing_function_and_warns_when_it_may_not_read(
    endpoint_keys, bundle, capsys
):
    async def scenario():
        async with FakeLambda(endpoint_keys, missing={("mu-b", "eu-west-1")}) as fake:
            with pytest.raises(
                LaunchError, match=r"no worker function 'mu-b' in eu-west-1: check --function"
            ):
                await check(fake, bundle, 10)
        async with FakeLambda(endpoint_keys, deny_settings=True) as fake:
            await check(fake, bundle, 10, regions=["us-east-1"])

    asyncio.run(scenario())
    err = capsys.readouterr().err
    assert "warning: reading Lambda concurrency in us-east-1: access denied: not allowed by test" in err
    assert "launching without knowing whether 10 workers fit" in err


def test_endpoints_come_from_botocores_resolution(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_LAMBDA", raising=False)
    la = LambdaLauncher(["f"], ["us-east-1", "cn-north-1", "us-gov-west-1"], credentials=CREDS)
    assert [t.endpoint.url for t in la.targets] == [
        "https://lambda.us-east-1.amazonaws.com",
        "https://lambda.cn-north-1.amazonaws.com.cn",
        "https://lambda.us-gov-west-1.amazonaws.com",
    ]
    monkeypatch.setenv("AWS_USE_FIPS_ENDPOINT", "true")
    assert LambdaLauncher(["f"], ["us-east-2"], credentials=CREDS).targets[0].endpoint.url == (
        "https://lambda-fips.us-east-2.amazonaws.com"
    )
    monkeypatch.delenv("AWS_USE_FIPS_ENDPOINT")
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", "https://127.0.0.1:8443")
    assert LambdaLauncher(["f"], ["us-east-1"], credentials=CREDS).targets[0].endpoint.url == (
        "https://127.0.0.1:8443"
    )


def mu(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "coordinator", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120, **kw)  # fmt: skip


def test_mu_run_aws_refuses_a_job_lambda_cannot_run_before_invoking_anything(endpoint_keys, bundle):
    async def scenario():
        async with FakeLambda(endpoint_keys, limits={"us-east-1": (1000, 100)}) as fake:
            proc = await asyncio.to_thread(
                mu, "run", "png2y4m", "-n", "150", "-b", "bkt", "--backend", "aws", "--function", "mu-w",
                "--lambda-endpoint", fake.url, "--advertise", "127.0.0.1", "-t", "0",
                env={"AWS_CA_BUNDLE": bundle, "AWS_ACCESS_KEY_ID": CREDS.access_key,
                     "AWS_SECRET_ACCESS_KEY": CREDS.secret_key, "AWS_SESSION_TOKEN": CREDS.token},
            )  # fmt: skip
            return proc, fake

    proc, fake = asyncio.run(scenario())
    assert proc.returncode == 2, proc.stderr
    assert "mu: this job needs 150 Lambda workers running at once" in proc.stderr
    assert "unreserved concurrency of 100" in proc.stderr
    assert fake.seen == [] and "Traceback" not in proc.stderr


def test_max_workers_guards_every_job(tmp_path):
    proc = mu("run", "png2y4m", "-n", "1001", "-b", "bkt")
    assert proc.returncode == 2
    assert "this job needs 1001 workers at once, more than --max-workers 1000" in proc.stderr
    proc = mu("run", "png2y4m", "-n", "90", "--spares", "20", "-b", "bkt", "--max-workers", "100")
    assert proc.returncode == 2 and "needs 110 workers at once, more than --max-workers 100" in proc.stderr


def test_max_workers_guards_mu_map(s3):
    client = s3.client()
    client.create_bucket(Bucket="map-guard")
    for i in range(12):
        client.put_object(Bucket="map-guard", Key=f"in/{i:03d}", Body=b"x")
    proc = mu("map", "--input", "s3://map-guard/in/", "--output", "s3://map-guard/out/", "--command", "true",
              "--s3-endpoint", s3.endpoint, "--max-workers", "5")  # fmt: skip
    assert proc.returncode == 2
    assert "this job needs 12 workers at once, more than --max-workers 5" in proc.stderr
    assert "--chunk" in proc.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AWS_DEFAULT_REGION": None, "AWS_REGION": None}, "mu: no AWS region: pass --region, set AWS_"),
        ({"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None},
         "mu: no AWS credentials found"),
        ({"AWS_PROFILE": "nobody"}, "mu: The config profile (nobody) could not be found: check --profile"),
    ],
)  # fmt: skip
def test_mu_run_aws_without_region_or_credentials_is_one_line_and_exit_2(tmp_path, env, message):
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
             "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
             "AWS_CONFIG_FILE": str(tmp_path / "none"),
             "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}  # fmt: skip
    for key, value in env.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    proc = subprocess.run(
        [sys.executable, "-m", "coordinator", "run", "png2y4m", "-b", "bkt", "--backend", "aws",
         "--function", "f", "--advertise", "127.0.0.1"],
        capture_output=True, text=True, env=base, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line
    assert proc.stderr.startswith(message)
