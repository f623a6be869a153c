"""mu.map's packages layer and runtime settings: real pip against PyPI, the real synthesizer.

The layer is built for Python 3.12 while these tests run on another Python, so a wheel that
pip picked for this machine instead of Lambda's would show.
"""

from __future__ import annotations

import socket
import sys

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from stacks.bundling import BundlingError, pinned_version
from stacks.elf import read
from stacks.mu_stack import build
from stacks.packages import check_layer, install, tag_fits, wheel_tags
from stacks.settings import HERE, Settings, SettingsError

TARGET = "3.12" if HERE != "3.12" else "3.13"  # a Python other than the one running the tests
PACKAGE = "markupsafe==3.0.2"  # small, with compiled wheels for every CPython and both CPUs


def pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=5):
            return True
    except OSError:
        return False


needs_pypi = pytest.mark.skipif(not pypi_reachable(), reason="PyPI (pypi.org:443) is not reachable from here")


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    out = tmp_path_factory.mktemp("layer")
    requirements = out / "requirements.txt"
    requirements.write_text(f"{PACKAGE}\n")
    return install(requirements, TARGET, "x86_64", out / "build")


@needs_pypi
def test_the_layer_holds_only_manylinux_x86_64_wheels_for_the_target_python(layer):
    tags = wheel_tags(layer)
    assert list(tags) == ["MarkupSafe-3.0.2.dist-info"] or list(tags) == ["markupsafe-3.0.2.dist-info"]
    nodot = TARGET.replace(".", "")
    for dist_tags in tags.values():
        assert dist_tags and all(
            t.startswith(f"cp{nodot}-cp{nodot}-") and "manylinux" in t and t.endswith("_x86_64")
            for t in dist_tags
        ), dist_tags
    libraries = [p for p in layer.rglob("*.so") if p.is_file()]
    assert libraries and all(f"cpython-{nodot}-x86_64-linux-gnu" in p.name for p in libraries)
    assert all(read(p).machine == "x86_64" for p in libraries)
    assert check_layer(layer, TARGET, "x86_64") == []
    assert not list(layer.rglob("__pycache__"))


@needs_pypi
def test_the_same_layer_is_refused_for_another_cpu_or_python(layer):
    problems = check_layer(layer, TARGET, "arm64")
    assert any("built for cp" in p for p in problems) and any(
        "is not an arm64 Linux library" in p for p in problems
    )
    assert any("built for" in p for p in check_layer(layer, "3.11" if TARGET != "3.11" else "3.13", "x86_64"))


@needs_pypi
def test_a_package_without_a_wheel_for_lambda_stops_synth_with_pips_reason(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("mu-no-such-package-anywhere==0.0.1\n")
    with pytest.raises(BundlingError, match=r"(?s)pip says:.*no source builds"):
        install(requirements, TARGET, "x86_64", tmp_path / "build")


def test_wheel_tags_that_fit_lambda():
    assert tag_fits("cp312-cp312-manylinux_2_17_x86_64", "3.12", "x86_64")
    assert tag_fits("cp38-abi3-manylinux2014_x86_64", "3.12", "x86_64")
    assert tag_fits("py3-none-any", "3.12", "arm64")
    assert not tag_fits("cp311-cp311-manylinux_2_17_x86_64", "3.12", "x86_64")
    assert not tag_fits("cp312-cp312-manylinux_2_17_aarch64", "3.12", "x86_64")
    assert not tag_fits("cp312-cp312-macosx_11_0_arm64", "3.12", "arm64")


# -- settings and the stack ---------------------------------------------------------------------


def settings(**context):
    return Settings.from_context(cdk.App(context=context).node)


def test_the_workers_run_the_deploying_python_unless_told_otherwise():
    assert settings().python == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert settings(python="3.13").python == "3.13"
    assert settings(python="python3.12").python == "3.12"
    with pytest.raises(SettingsError, match=r"'python' must be one of 3.11, 3.12, 3.13, 3.14"):
        settings(python="3.9")


def test_a_requirements_file_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(SettingsError, match=r"'requirements' names .*which is not a file"):
        settings(requirements=str(tmp_path / "nope.txt"))


def test_cloudpickle_is_pinned_once_for_both_ends():
    import cloudpickle

    assert cloudpickle.__version__ == pinned_version("cloudpickle")


@needs_pypi
def test_the_stack_gives_the_workers_the_runtime_and_the_layer(tmp_path, png2y4m):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{PACKAGE}\n")
    app = cdk.App(outdir=str(tmp_path / "out"), context={"python": TARGET, "requirements": str(requirements)})
    (stack,) = build(app, Settings.from_context(app.node))
    template = Template.from_stack(stack)
    app.synth()
    template.has_resource_properties(
        "AWS::Lambda::LayerVersion",
        {"CompatibleRuntimes": [f"python{TARGET}"], "CompatibleArchitectures": ["x86_64"]},
    )
    (layer_id,) = template.find_resources("AWS::Lambda::LayerVersion")
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {"Runtime": f"python{TARGET}", "Layers": [{"Ref": layer_id}], "Handler": Match.any_value()},
    )
