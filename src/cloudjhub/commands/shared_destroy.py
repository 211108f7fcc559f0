"""What `destroy` does with the shared folder: with `--delete-shared-storage` its mount
targets, file system, group and the workers' IAM role and instance profile go (the
groups before the workers' and manager's groups, which its rules name); without, the
file system and its files stay, and so do the workers' role and profile (they exist
only for it, and its policy names the role: a role made again would be another
principal), and only the group rules are dropped, so the cluster's groups can go (a
re-launch adds the rules again and puts the policy again)."""

from __future__ import annotations

from dataclasses import dataclass

import click

from ..aws.admin import AdminEc2
from ..aws.client import CloudError
from ..aws.shared_storage import SharedStorage, shared_group_name
from ..aws.worker_role import WorkersRole
from ..launch.deletes import Failure
from ..launch.shared_storage import delete_shared_storage, delete_workers_role
from ..tags import Group, group_name, workers_role_name

WAIT_TIMEOUT = 900.0
POLL_SECONDS = 5.0


@dataclass
class SharedTeardown:
    storage: SharedStorage | None
    fs_id: str | None
    mount_targets: int
    delete: bool
    region: str | None = None
    endpoint: str | None = None

    @classmethod
    def find(
        cls, ec2: AdminEc2, region: str | None, endpoint: str | None, delete: bool
    ) -> SharedTeardown:
        try:
            storage = SharedStorage.connect(ec2, region, endpoint, WAIT_TIMEOUT, POLL_SECONDS)
            fs = storage.file_system()
            targets = len(storage.mount_targets(fs["FileSystemId"])) if fs else 0
        except CloudError as exc:  # an endpoint without EFS, or one not ours
            click.echo(f"shared folder not checked: {exc}", err=True)
            return cls(None, None, 0, delete)
        return cls(storage, fs["FileSystemId"] if fs else None, targets, delete, region, endpoint)

    def plan_lines(self) -> list[str]:
        if self.fs_id is None or not self.delete:
            return []
        return [
            f"shared folder: EFS file system {self.fs_id} with its files, "
            f"{self.mount_targets} mount target(s), security group "
            f"{shared_group_name(self.cluster)}, IAM role and instance profile "
            f"{workers_role_name(self.cluster)}"
        ]

    @property
    def cluster(self) -> str:
        return self.storage.cluster if self.storage else ""

    def kept_lines(self) -> list[str]:
        if self.fs_id is None or self.delete:
            return []
        return [
            f"kept: shared folder EFS file system {self.fs_id} and its files, and the "
            f"workers' IAM role {workers_role_name(self.cluster)} its policy names "
            "(--delete-shared-storage deletes them)"
        ]

    def before_groups(self) -> list[Failure]:
        if self.storage is None or self.fs_id is None:
            return []
        if self.delete:
            failures = delete_shared_storage(self.storage, self.fs_id)
            role = WorkersRole.connect(self.cluster, self.region, self.endpoint)
            return failures + delete_workers_role(role)
        ec2 = self.storage.ec2
        names = [group_name(ec2.cluster, g) for g in (Group.WORKER, Group.MANAGER)]
        ours = [g["GroupId"] for g in ec2.security_groups_named(names)]
        try:
            self.storage.release_groups(ours)
        except CloudError as exc:
            return [Failure(shared_group_name(ec2.cluster), str(exc))]
        return []
