"""Checks before anything is created: every failure is one line naming the input."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from .. import hibernation
from ..aws.admin import AdminEc2, instance_profile_exists
from ..config import worker_subnets
from . import base_images
from .cluster import PREINSTALLED_TAG
from .options import LaunchOptions

# Workers whose RAM is under this are refused with HIBERNATE: the hibernation agent
# needs room to write RAM out, and a nano size leaves none beside a Jupyter server.
MIN_HIBERNATE_MIB = 1024


def _key_file_problem(opts: LaunchOptions, path: Path, flag: str = "--key-file") -> str | None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"{flag} {path}: cannot read it ({exc.strerror})"
    if not os.access(path, os.R_OK):
        return f"{flag} {path}: not readable by this user"
    if stat.S_IMODE(mode) & 0o077:
        return f"{flag} {path}: mode is {stat.S_IMODE(mode):04o}; it must be 0600 (chmod 600)"
    return None


def preflight(ec2: AdminEc2, opts: LaunchOptions) -> list[str]:
    """Problems found, or [] if the launch can go ahead."""
    problems: list[str] = []
    more = worker_subnets(opts.private_subnet, opts.instance.SUBNET_IDS)[1:]
    subnets = ec2.subnets([opts.private_subnet, opts.public_subnet, *more])
    for flag, subnet_id in (
        ("PRIVATE_SUBNET", opts.private_subnet),
        ("PUBLIC_SUBNET", opts.public_subnet),
        *(("SUBNET_IDS", s) for s in more),
    ):
        if subnet_id not in subnets:
            problems.append(f"{flag} {subnet_id}: no such subnet in region {opts.region}")
    private_vpc = subnets.get(opts.private_subnet, {}).get("VpcId")
    for subnet_id in more:
        if subnet_id in subnets and private_vpc and subnets[subnet_id]["VpcId"] != private_vpc:
            problems.append(
                f"SUBNET_IDS {subnet_id}: not in PRIVATE_SUBNET {opts.private_subnet}'s VPC"
            )
    if opts.private_subnet == opts.public_subnet:
        problems.append(
            f"PUBLIC_SUBNET {opts.public_subnet}: the same subnet as PRIVATE_SUBNET; "
            "workers belong in a private subnet, the manager in a public one"
        )
    elif opts.private_subnet in subnets and opts.public_subnet in subnets:
        vpcs = {subnets[s]["VpcId"] for s in (opts.private_subnet, opts.public_subnet)}
        if len(vpcs) != 1:
            problems.append(
                f"PRIVATE_SUBNET {opts.private_subnet} and PUBLIC_SUBNET {opts.public_subnet} "
                f"are in different VPCs ({', '.join(sorted(vpcs))})"
            )
    if opts.public_subnet in subnets and opts.private_subnet != opts.public_subnet:
        public = subnets[opts.public_subnet]
        if not ec2.routes_to_internet(public["VpcId"], opts.public_subnet):
            problems.append(
                f"PUBLIC_SUBNET {opts.public_subnet}: its route table sends no 0.0.0.0/0 "
                "traffic to an internet gateway"
            )
    images = [("BASE_AMI", opts.base_ami)]
    if opts.instance.CUSTOM_WORKER_AMI:
        images.append(("--custom-worker-ami", opts.instance.CUSTOM_WORKER_AMI))
    found: dict[str, dict[str, Any]] = {}
    for flag, image_id in images:
        image = ec2.image(image_id)
        if image is None:
            problems.append(f"{flag} {image_id}: no such image in region {opts.region}")
        elif image.get("State") != "available":
            problems.append(f"{flag} {image_id}: image is {image.get('State')}, not available")
        else:
            found[flag] = image
    if ec2.key_pair(opts.key_name) is None:
        problems.append(f"--key-name {opts.key_name}: no such EC2 key pair in region {opts.region}")
    key_problem = _key_file_problem(opts, opts.key_file)
    if key_problem:
        problems.append(key_problem)
    if opts.ssl_key is not None and (
        tls_problem := _key_file_problem(opts, opts.ssl_key, "--ssl-key")
    ):
        problems.append(tls_problem)
    if opts.ssl_cert is not None and not opts.ssl_cert.is_file():
        problems.append(f"--ssl-cert {opts.ssl_cert}: no such file")
    if opts.instance_profile and not instance_profile_exists(
        opts.instance_profile, opts.region, opts.endpoint_url
    ):
        problems.append(f"--instance-profile {opts.instance_profile}: no such IAM instance profile")
    types: dict[str, dict[str, Any]] = {}
    for flag, kind in (
        ("--manager-instance-type", opts.instance.MANAGER_INSTANCE_TYPE),
        ("--worker-instance-type", opts.instance.WORKER_INSTANCE_TYPE),
    ):
        info = ec2.instance_type(kind)
        if info is None:
            problems.append(f"{flag} {kind}: not an instance type offered in {opts.region}")
        else:
            types[flag] = info
    problems += _image_problems(opts, found, types)
    if not opts.admin_cidr:
        problems.append(
            "--admin-cidr: required, so that this machine may reach the builder and the "
            "manager over SSH (e.g. --admin-cidr 203.0.113.7/32)"
        )
    if opts.known_hosts is not None and not opts.known_hosts.is_file():
        problems.append(f"--known-hosts {opts.known_hosts}: no such file")
    return problems


def _image_problems(
    opts: LaunchOptions, images: dict[str, dict[str, Any]], types: dict[str, dict[str, Any]]
) -> list[str]:
    """What would fail later on the images found: an OS the install scripts do not
    know, an architecture an instance type cannot run, a worker disk smaller than the
    image's snapshot, an image or a type that cannot hibernate."""
    custom = "--custom-worker-ami" if opts.instance.CUSTOM_WORKER_AMI else None
    worker_flag = custom or "BASE_AMI"  # a built worker image is the base image's disk
    problems = _platform(opts, images.get("BASE_AMI"))
    for flag, type_flag in (
        ("BASE_AMI", "--manager-instance-type"),
        (worker_flag, "--worker-instance-type"),
    ):
        problems += _architecture(flag, images.get(flag), type_flag, types.get(type_flag))
    worker = images.get(worker_flag)
    if custom and worker:
        problems += _snapshot_size(opts, worker)
    if opts.instance.HIBERNATE:
        if worker is not None and (why := base_images.hibernation_problem(worker)):
            problems.append(f"{worker_flag} {worker['ImageId']}: cannot hibernate: {why}")
        info = types.get("--worker-instance-type", {})
        memory = info.get("MemoryInfo", {}).get("SizeInMiB")
        if memory is not None and memory < MIN_HIBERNATE_MIB:
            problems.append(
                f"--worker-instance-type {opts.instance.WORKER_INSTANCE_TYPE}: {memory} MiB "
                f"of RAM; with HIBERNATE workers need at least {MIN_HIBERNATE_MIB} MiB"
            )
    return problems


def _platform(opts: LaunchOptions, base: dict[str, Any] | None) -> list[str]:
    """The install scripts run on the base image, unless it has cloudjhub already."""
    if base is None or PREINSTALLED_TAG in {t["Key"] for t in base.get("Tags", [])}:
        return []
    platform = base_images.platform(base)
    if platform is None:
        return [
            f"BASE_AMI {opts.base_ami}: {base_images.describe(base)} is not a supported base "
            f"image; the OS install scripts support {base_images.SUPPORTED}"
        ]
    building = not opts.instance.CUSTOM_WORKER_AMI
    if opts.instance.HIBERNATE and building and platform not in base_images.HIBERNATING:
        return [
            f"BASE_AMI {opts.base_ami}: {platform} has no ec2-hibinit-agent package, which "
            f"a worker image needs with HIBERNATE; use {' or '.join(base_images.HIBERNATING)}"
        ]
    if opts.shared is not None and platform not in base_images.EFS_UTILS:
        # The manager runs the base image too, and mounts the folder for `release`.
        return [
            f"BASE_AMI {opts.base_ami}: {platform} has no amazon-efs-utils package, whose "
            "mount helper is the only client the shared folder's EFS admits (TLS and IAM) "
            f"with --shared-storage; use {' or '.join(base_images.EFS_UTILS)}"
        ]
    login = base_images.LOGIN_USERS[platform]
    users = [("--server-username", opts.instance.SERVER_USERNAME)]
    if building:
        users.append(("--worker-username", opts.instance.WORKER_USERNAME))
    return [
        f"{flag} {user}: BASE_AMI {opts.base_ami} is {platform}, whose login user is {login}"
        for flag, user in users
        if user != login
    ]


def _architecture(
    flag: str, image: dict[str, Any] | None, type_flag: str, info: dict[str, Any] | None
) -> list[str]:
    if image is None or info is None:
        return []
    arch = image.get("Architecture")
    can = info.get("ProcessorInfo", {}).get("SupportedArchitectures") or []
    if not arch or not can or arch in can:
        return []
    return [
        f"{type_flag} {info['InstanceType']}: runs {'/'.join(can)} only, "
        f"but {flag} {image['ImageId']} is {arch}"
    ]


def _snapshot_size(opts: LaunchOptions, image: dict[str, Any]) -> list[str]:
    """RunInstances fails on AWS if a root volume is smaller than its image's snapshot."""
    snapshot = base_images.root_snapshot_gib(image)
    kind, size = opts.instance.WORKER_INSTANCE_TYPE, opts.instance.WORKER_EBS_SIZE
    hibernating = opts.instance.HIBERNATE and hibernation.ram_gib(kind) is not None
    root = hibernation.root_volume_gib(kind, size) if hibernating else size
    if snapshot is None or snapshot <= root:
        return []
    return [
        f"--custom-worker-ami {image['ImageId']}: its root snapshot is {snapshot} GiB, "
        f"more than the workers' {root} GiB root volume (WORKER_EBS_SIZE {size}); "
        f"use --worker-ebs-size {size + snapshot - root} or more"
    ]
