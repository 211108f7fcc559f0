"""Checks before anything is created: every failure is one line naming the input."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..aws.admin import AdminEc2, instance_profile_exists
from .options import LaunchOptions


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
    subnets = ec2.subnets([opts.private_subnet, opts.public_subnet])
    for flag, subnet_id in (
        ("PRIVATE_SUBNET", opts.private_subnet),
        ("PUBLIC_SUBNET", opts.public_subnet),
    ):
        if subnet_id not in subnets:
            problems.append(f"{flag} {subnet_id}: no such subnet in region {opts.region}")
    if opts.private_subnet == opts.public_subnet:
        problems.append(
            f"PUBLIC_SUBNET {opts.public_subnet}: the same subnet as PRIVATE_SUBNET; "
            "workers belong in a private subnet, the manager in a public one"
        )
    elif len(subnets) == 2:
        vpcs = {s["VpcId"] for s in subnets.values()}
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
    for flag, image_id in images:
        image = ec2.image(image_id)
        if image is None:
            problems.append(f"{flag} {image_id}: no such image in region {opts.region}")
        elif image.get("State") != "available":
            problems.append(f"{flag} {image_id}: image is {image.get('State')}, not available")
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
    for flag, kind in (
        ("--manager-instance-type", opts.instance.MANAGER_INSTANCE_TYPE),
        ("--worker-instance-type", opts.instance.WORKER_INSTANCE_TYPE),
    ):
        if not ec2.instance_type_exists(kind):
            problems.append(f"{flag} {kind}: not an instance type offered in {opts.region}")
    if not opts.admin_cidr:
        problems.append(
            "--admin-cidr: required, so that this machine may reach the builder and the "
            "manager over SSH (e.g. --admin-cidr 203.0.113.7/32)"
        )
    if opts.known_hosts is not None and not opts.known_hosts.is_file():
        problems.append(f"--known-hosts {opts.known_hosts}: no such file")
    return problems
