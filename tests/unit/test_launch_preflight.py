"""`cloudjhub launch` preflight on the images and types it is given, against moto.

What would fail only later on AWS (an OS the install scripts cannot handle, a worker
disk smaller than its image, a worker that cannot hibernate) is refused up front:
one line naming the input and what is allowed, exit status 2, nothing created.
"""

from __future__ import annotations

import pytest

from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.launch.base_images import SUPPORTED
from cloudjhub.launch.cluster import PREINSTALLED_TAG
from tests.unit.conftest import REGION
from tests.unit.test_launch_cli import UBUNTU_2404, args, image_like, inventory, lines, run

__all__ = ["args"]  # the fixture, shared with the launch CLI tests

# moto's built-in images, as DescribeImages shows them.
UBUNTU_1404 = "ami-1e749f67"
WINDOWS = "ami-03cf127a"
AMAZON_LINUX_2 = "ami-04681a1dbd79675a5"
RHEL = "ami-bb9a6bc2"
ARM64 = "ami-0e9271c829888680e"  # Amazon Linux 2022, arm64
PARAVIRTUAL = "ami-8104a4f8"

SUPPORTED_NAMES = [
    UBUNTU_2404,
    (
        "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240207.1",
        "Canonical, Ubuntu, 22.04 LTS, amd64 jammy image build on 2024-02-07",
    ),
    ("debian-12-amd64-20240201-1644", "Debian 12 (20240201-1644)"),
    (
        "al2023-ami-2023.3.20240108.0-kernel-6.1-x86_64",
        "Amazon Linux 2023 AMI 2023.3.20240108.0 x86_64 HVM kernel-6.1",
    ),
]

LOGINS = ["ubuntu", "ubuntu", "admin", "ec2-user"]  # cloud-init's default user on each


def refused(argv: list[str], ec2: LocalCloudEc2) -> list[str]:
    """Run a launch that preflight must refuse; its error lines."""
    before = inventory(ec2)
    result = run(*argv, "--yes")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert inventory(ec2) == before
    assert lines(result)[-1] == "nothing was created"
    return [line for line in lines(result)[:-1]]


def with_base(args: list[str], ami: str) -> list[str]:
    return [args[0], args[1], ami, *args[3:]]


@pytest.mark.parametrize("ami", [UBUNTU_1404, WINDOWS, AMAZON_LINUX_2, RHEL])
def test_an_unsupported_base_image_is_refused_naming_it(
    args: list[str], ec2: LocalCloudEc2, ami: str
) -> None:
    [line] = refused(with_base(args, ami), ec2)
    name = ec2.image(ami)["Name"]  # type: ignore[index]
    assert line.startswith(f"error: BASE_AMI {ami}: {name!r}")
    assert line.endswith(f"the OS install scripts support {SUPPORTED}")


@pytest.mark.parametrize(
    ("name", "description", "login"),
    [(*names, login) for names, login in zip(SUPPORTED_NAMES, LOGINS, strict=True)],
)
def test_supported_base_images_pass(
    args: list[str], ec2: LocalCloudEc2, worker_ami: str, name: str, description: str, login: str
) -> None:
    base = image_like(ec2, worker_ami, name, description)
    users = ["--server-username", login, "--worker-username", login]
    result = run(*with_base(args, base), *users, "--dry-run")
    assert result.exit_code == 0, result.output


def test_a_base_image_with_cloudjhub_preinstalled_needs_no_install_scripts(
    args: list[str], ec2: LocalCloudEc2
) -> None:
    ec2.tag_resource(UBUNTU_1404, {PREINSTALLED_TAG: "/opt/cloudjhub/venv/bin"})
    result = run(*with_base(args, UBUNTU_1404), "--dry-run")
    assert result.exit_code == 0, result.output


def test_an_image_of_another_architecture_than_the_types_is_refused(
    args: list[str], ec2: LocalCloudEc2
) -> None:
    arm = image_like(ec2, ARM64, "al2023-ami-2023.3.20240108.0-kernel-6.1-arm64", "")
    users = ["--server-username", "ec2-user", "--worker-username", "ec2-user"]
    problems = refused([*with_base(args, arm), *users], ec2)
    assert problems == [
        f"error: --manager-instance-type t3.small: runs x86_64 only, but BASE_AMI {arm} is arm64",
        f"error: --worker-instance-type t3.medium: runs x86_64 only, but BASE_AMI {arm} is arm64",
    ]


def test_a_custom_image_larger_than_the_worker_disk_is_refused(
    args: list[str], ec2: LocalCloudEc2, worker_ami: str
) -> None:
    custom = image_like(ec2, worker_ami, "my-workers", "")  # moto's snapshots are 15 GiB
    [line] = refused([*args, "--custom-worker-ami", custom], ec2)
    assert line == (
        f"error: --custom-worker-ami {custom}: its root snapshot is 15 GiB, more than the "
        "workers' 8 GiB root volume (WORKER_EBS_SIZE 8); use --worker-ebs-size 15 or more"
    )
    fits = run(*args, "--custom-worker-ami", custom, "--worker-ebs-size", "15", "--dry-run")
    assert fits.exit_code == 0, fits.output
    # A hibernating worker's root volume also holds its RAM (4 GiB for a t3.medium).
    hibernating = [*args, "--custom-worker-ami", custom, "--hibernate"]
    [line] = refused([*hibernating, "--worker-ebs-size", "10"], ec2)
    assert "15 GiB, more than the workers' 14 GiB root volume (WORKER_EBS_SIZE 10)" in line
    assert run(*hibernating, "--worker-ebs-size", "11", "--dry-run").exit_code == 0


def test_hibernate_refuses_a_paravirtual_image_and_a_type_under_1_gib(
    args: list[str], ec2: LocalCloudEc2
) -> None:
    pv = image_like(ec2, PARAVIRTUAL, "my-pv-workers", "")
    [image_line] = refused(
        [*args, "--hibernate", "--custom-worker-ami", pv, "--worker-ebs-size", "20"], ec2
    )
    assert image_line == (
        f"error: --custom-worker-ami {pv}: cannot hibernate: a paravirtual image; "
        "hibernation needs an HVM image"
    )
    [type_line] = refused([*args, "--hibernate", "--worker-instance-type", "t3.nano"], ec2)
    assert type_line == (
        "error: --worker-instance-type t3.nano: 512 MiB of RAM; "
        "with HIBERNATE workers need at least 1024 MiB"
    )
    # Without HIBERNATE the same image and type are fine.
    plain = run(*args, "--worker-instance-type", "t3.nano", "--custom-worker-ami", pv,
                "--worker-ebs-size", "20", "--dry-run")  # fmt: skip
    assert plain.exit_code == 0, plain.output


def test_hibernate_refuses_building_on_debian_which_has_no_hibernation_agent(
    args: list[str], ec2: LocalCloudEc2, worker_ami: str
) -> None:
    debian = image_like(ec2, worker_ami, *SUPPORTED_NAMES[2])
    users = ["--server-username", "admin", "--worker-username", "admin"]
    [line] = refused([*with_base(args, debian), *users, "--hibernate"], ec2)
    assert line == (
        f"error: BASE_AMI {debian}: Debian 12 has no ec2-hibinit-agent package, which a "
        "worker image needs with HIBERNATE; use Ubuntu 22.04 or Ubuntu 24.04 or "
        "Amazon Linux 2023"
    )
    ubuntu = image_like(ec2, worker_ami, *UBUNTU_2404)
    assert run(*with_base(args, ubuntu), "--hibernate", "--dry-run").exit_code == 0


def test_the_login_users_must_be_the_base_images_own(
    args: list[str], ec2: LocalCloudEc2, worker_ami: str
) -> None:
    al2023 = image_like(ec2, worker_ami, *SUPPORTED_NAMES[3])
    problems = refused(with_base(args, al2023), ec2)  # the defaults are Ubuntu's "ubuntu"
    assert problems == [
        f"error: --server-username ubuntu: BASE_AMI {al2023} is Amazon Linux 2023, "
        "whose login user is ec2-user",
        f"error: --worker-username ubuntu: BASE_AMI {al2023} is Amazon Linux 2023, "
        "whose login user is ec2-user",
    ]
    users = ["--server-username", "ec2-user", "--worker-username", "ec2-user"]
    assert run(*with_base(args, al2023), *users, "--dry-run").exit_code == 0


def test_more_private_subnets_must_exist_in_the_same_vpc(
    args: list[str], ec2: LocalCloudEc2
) -> None:
    other_vpc = ec2.ensure_vpc("10.43.0.0/16", {"Name": "elsewhere"})
    elsewhere = ec2.ensure_subnet(other_vpc, "10.43.1.0/24", {"Name": "elsewhere"})
    said = refused([*args, "--private-subnets", f"subnet-0000dead,{elsewhere}"], ec2)
    assert f"error: SUBNET_IDS subnet-0000dead: no such subnet in region {REGION}" in said
    assert f"error: SUBNET_IDS {elsewhere}: not in PRIVATE_SUBNET {args[3]}'s VPC" in said
