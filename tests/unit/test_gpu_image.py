"""`launch --gpu-image`: the worker image with the NVIDIA driver and CUDA runtime.

The local cloud cannot run NVIDIA's driver, so what is shown here is each edge:
the install scripts' GPU steps run by bash against stand-in package tools (only
when asked, with NVIDIA's key checked by fingerprint), the launch through its CLI
(the builder is told CLOUDJHUB_GPU=1, the image gets its GPU tag, server_config
says GPU_IMAGE), and the hub's start accepting a GPU profile on such a cluster.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from traitlets import TraitError
from traitlets.config import Config

from cloudjhub.aws.client import CloudError
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.hub.apply import apply
from cloudjhub.launch import cluster as cluster_module
from cloudjhub.launch.cluster import Launch
from cloudjhub.launch.provision import SCRIPTS, Node
from cloudjhub.local.demo import hub_settings as demo_settings
from cloudjhub.local.demo_secrets import make_passwords
from tests.unit.test_install_scripts import OS_RELEASE, bash, calls
from tests.unit.test_launch_cli import args, run  # noqa: F401 - args is a fixture
from tests.unit.test_spawner_traits import SERVER_CONFIG

GPU_TAG = "cloudjhub:gpu"  # the contract: the issue names it
NVIDIA = "EB693B3035CD5710E231E123A4B469963BF863CC"
GPU_PROFILE = [
    {
        "display_name": "GPU",
        "slug": "gpu",
        "spawner_override": {"worker_instance_type": "g4dn.xlarge"},
    }
]


def gpu_tools(tmp_path: Path, fingerprint: str) -> dict[str, str]:
    """curl and gpg stand-ins (after bash() made the package tools): curl writes a
    key file, gpg shows it with `fingerprint` and dearmors it. Returns the env
    that points the apt sources and keyrings into tmp_path."""
    bin_dir = tmp_path / "bin"
    log = tmp_path / "calls.log"
    (bin_dir / "curl").write_text(
        f'#!/bin/bash\necho "curl $*" >>"{log}"\n'
        'while [ $# -gt 0 ]; do [ "$1" = -o ] && echo KEY >"$2"; shift; done\n'
    )
    (bin_dir / "gpg").write_text(
        f'#!/bin/bash\necho "gpg $*" >>"{log}"\n'
        'case " $* " in\n'
        f'  *" --show-keys "*) printf "pub:-:4096:1:A4B469963BF863CC:::::::scSC::::::23::0:\\n'
        f"fpr:::::::::{fingerprint}:\\nuid:-::::::::cudatools:\\nsub:-:4096:1:X::::::e:\\n"
        'fpr:::::::::SUBKEYFINGERPRINT:\\n" ;;\n'
        '  *" --dearmor "*) while [ $# -gt 0 ]; do [ "$1" = -o ] && echo GPG >"$2"; '
        "shift; done ;;\n"
        "esac\n"
    )
    for tool in ("curl", "gpg"):
        (bin_dir / tool).chmod(0o755)
    (tmp_path / "sources").mkdir(exist_ok=True)
    (tmp_path / "keyrings").mkdir(exist_ok=True)
    return {
        "CLOUDJHUB_APT_SOURCES": str(tmp_path / "sources"),
        "CLOUDJHUB_KEYRINGS": str(tmp_path / "keyrings"),
    }


def exports(env: dict[str, str]) -> str:
    return "".join(f"export {k}={v}\n" for k, v in env.items())


@pytest.mark.parametrize(
    ("platform", "repo"),
    [("ubuntu-22.04", "ubuntu2204"), ("ubuntu-24.04", "ubuntu2404"), ("debian-12", "debian12")],
)
def test_the_gpu_steps_trust_nvidias_key_for_its_repository_only(
    tmp_path: Path, platform: str, repo: str
) -> None:
    bash(tmp_path, OS_RELEASE[platform], "true")  # makes the package-tool stand-ins
    env = gpu_tools(tmp_path, NVIDIA)
    done = bash(tmp_path, OS_RELEASE[platform], exports(env) + "os_install_gpu")
    assert done.returncode == 0, done.stderr
    url = f"https://developer.download.nvidia.com/compute/cuda/repos/{repo}/x86_64/"
    made = calls(tmp_path)
    assert "curl -fsSL --proto =https --tlsv1.2 -o" in " ".join(made)
    assert any(c.startswith("curl ") and c.endswith(f"{url}3bf863cc.pub") for c in made)
    keyring = tmp_path / "keyrings" / "cloudjhub-cuda.gpg"
    assert keyring.read_text() == "GPG\n"
    listed = (tmp_path / "sources" / "cloudjhub-cuda.list").read_text()
    assert listed == f"deb [signed-by={keyring}] {url} /\n"
    installs = [c for c in made if c.startswith("apt-get") and " install " in c]
    assert installs[0].endswith("--no-install-recommends curl gnupg")
    assert installs[-1].split()[-2:] == ["cuda-drivers", "cuda-runtime-12-6"]
    assert "linux-headers-" in installs[-1]
    # the repository is added only after the key checks out, and installs come after it
    assert made.index(installs[-1]) > max(i for i, c in enumerate(made) if c.startswith("gpg"))


def test_a_key_with_another_fingerprint_is_not_trusted(tmp_path: Path) -> None:
    bash(tmp_path, OS_RELEASE["ubuntu-24.04"], "true")
    env = gpu_tools(tmp_path, "0" * 40)
    done = bash(tmp_path, OS_RELEASE["ubuntu-24.04"], exports(env) + "os_install_gpu")
    assert done.returncode != 0
    assert f"not {NVIDIA}: not trusting it" in done.stderr
    assert not any("cuda-drivers" in c for c in calls(tmp_path))
    assert list((tmp_path / "sources").iterdir()) == []
    assert list((tmp_path / "keyrings").iterdir()) == []


def test_amazon_linux_has_no_gpu_image_and_says_so_before_installing(tmp_path: Path) -> None:
    done = bash(tmp_path, OS_RELEASE["amzn-2023"], "os_install_gpu")
    assert done.returncode == 2
    assert "--gpu-image needs an Ubuntu 22.04 or 24.04 or Debian 12 base image" in done.stderr
    assert calls(tmp_path) == []


@pytest.mark.parametrize("gpu", ["0", "1"])
def test_install_worker_takes_the_gpu_steps_only_when_asked(tmp_path: Path, gpu: str) -> None:
    """install-worker.sh as sent, up to its virtualenv (a python3 stand-in stops it)."""
    bash(tmp_path, OS_RELEASE["ubuntu-24.04"], "true")
    env = gpu_tools(tmp_path, NVIDIA)
    (tmp_path / "bin" / "python3").write_text(
        f'#!/bin/sh\necho "python3 $*" >>"{tmp_path}/calls.log"\nexit 7\n'
    )
    (tmp_path / "bin" / "python3").chmod(0o755)
    env |= {
        "CLOUDJHUB_GPU": gpu,
        "CLOUDJHUB_PACKAGE": "cloudjhub",
        "CLOUDJHUB_LOGIN_USER": "ubuntu",
        "CLOUDJHUB_PREFIX": str(tmp_path / "opt"),
    }
    body = (SCRIPTS / "install-worker.sh").read_text()
    done = bash(tmp_path, OS_RELEASE["ubuntu-24.04"], exports(env) + body)
    assert done.returncode == 7, done.stderr
    made = calls(tmp_path)
    assert made[-1].startswith("python3 -m venv")
    assert any("cuda-drivers" in c for c in made) is (gpu == "1")
    assert any(c.startswith("curl ") for c in made) is (gpu == "1")


# ---- the launch, through its CLI ----------------------------------------------------


class Stop(Exception):
    pass


@pytest.mark.parametrize("gpu", [True, False])
def test_launch_gpu_image_builds_tags_and_records_a_gpu_image(
    args: list[str],  # noqa: F811 - the fixture
    ec2: LocalCloudEc2,
    monkeypatch: pytest.MonkeyPatch,
    gpu: bool,
) -> None:
    """The builder's install script is told CLOUDJHUB_GPU; the image it makes carries
    GPU_TAG; the server_config the hub gets says GPU_IMAGE. The launch stops (and
    rolls back) where it would set up the manager over SSH."""
    envs: list[dict[str, str]] = []
    seen: dict[str, Any] = {}

    def setup_manager(self: Launch, manager: Any, image_id: str, groups: Any) -> str:
        image = ec2.image(image_id) or {}
        seen["tags"] = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
        seen["config"] = self._server_config(manager, image_id, groups)
        raise CloudError("stopping before the manager")

    monkeypatch.setattr(Node, "wait_for_ssh", lambda _self: None)
    monkeypatch.setattr(
        cluster_module, "install_os_packages", lambda _node, _script, env: envs.append(env)
    )
    monkeypatch.setattr(Launch, "setup_manager", setup_manager)

    result = run(*args, "--yes", "--gpu-image" if gpu else "--no-gpu-image")

    assert result.exit_code == 1 and "stopping before the manager" in result.output, result.output
    [env] = envs
    assert env["CLOUDJHUB_GPU"] == ("1" if gpu else "0")
    assert (seen["tags"].get(GPU_TAG) == "true") is gpu
    assert seen["config"].GPU_IMAGE is gpu


def test_gpu_image_refuses_a_reused_image_built_without_it(
    args: list[str],  # noqa: F811 - the fixture
    ec2: LocalCloudEc2,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cluster_module, "find_worker_image", lambda _ec2: args[2])
    monkeypatch.setattr(Launch, "manager", lambda *_: pytest.fail("went on past the image"))
    result = run(*args, "--yes", "--gpu-image")
    assert result.exit_code == 1
    assert f"the cluster's worker image {args[2]} was built without the NVIDIA driver" in (
        result.output
    )


# ---- the hub's start ---------------------------------------------------------------


@pytest.mark.parametrize("gpu_image", [False, True])
def test_the_hub_start_takes_a_gpu_profile_on_a_gpu_image_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws: None, gpu_image: bool
) -> None:
    monkeypatch.setenv("CLOUDJHUB_PROXY_COMMAND", sys.executable)
    make_passwords(tmp_path)
    here = {**SERVER_CONFIG, "AWS_ENDPOINT_URL": None, "REGION": "us-east-1"}  # moto's
    (tmp_path / "server_config.json").write_text(
        json.dumps({**here, "HIBERNATE": False, "GPU_IMAGE": gpu_image})
    )
    settings = demo_settings(tmp_path, 8123, 45001, 45002, 60, 45003, {"profile_list": GPU_PROFILE})
    config = Config()
    if gpu_image:
        apply(config, settings, {})
        assert config.InstanceSpawner.profile_list == GPU_PROFILE
        return
    with pytest.raises(TraitError, match=r"g4dn.xlarge has GPUs; .* or launch with --gpu-image"):
        apply(config, settings, {})
