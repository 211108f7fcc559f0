"""The spawner's side of the shared course folder: what the start request says about
/srv/shared (the file system, the course, the dropbox) and whether this user is staff
(a hub admin, or a member of a staff group: the admins group and the TA group)."""

from __future__ import annotations

from typing import Any

from traitlets import Bool, List, Unicode

from .hub.signin_settings import ADMINS_GROUP
from .spawner_options import InstanceSpawnerOptions, from_config
from .worker.protocol import SharedFolder


class SharedFolderMixin(InstanceSpawnerOptions):
    shared_file_system_id = Unicode(
        help="The EFS file system every worker mounts at /srv/shared; empty for none "
        "(server_config SHARED_FILE_SYSTEM_ID, made by `launch --shared-storage efs`)."
    ).tag(config=True)
    shared_course = Unicode(
        help="The course's folder in /srv/shared (server_config SHARED_COURSE)."
    ).tag(config=True)
    shared_dropbox = Bool(
        help="Give each student a writable /srv/shared/<course>/dropbox/<user> "
        "(server_config SHARED_DROPBOX)."
    ).tag(config=True)
    shared_worker_instance_profile = Unicode(
        help="The IAM instance profile workers launch with when there is a shared "
        "folder: its role may only mount the file system, whose policy admits no one "
        "else (server_config SHARED_WORKER_INSTANCE_PROFILE, made by `launch "
        "--shared-storage efs`). Not passed without shared_file_system_id."
    ).tag(config=True)
    staff_groups = List(
        Unicode(),
        [ADMINS_GROUP],
        help="Groups whose members may write /srv/shared (hub admins always may); the "
        "TA group is added when there is one.",
    ).tag(config=True)

    _default_shared_file_system_id = from_config("shared_file_system_id", "SHARED_FILE_SYSTEM_ID")
    _default_shared_course = from_config("shared_course", "SHARED_COURSE")
    _default_shared_dropbox = from_config("shared_dropbox", "SHARED_DROPBOX")
    _default_shared_worker_instance_profile = from_config(
        "shared_worker_instance_profile", "SHARED_WORKER_INSTANCE_PROFILE"
    )

    def worker_instance_profile(self) -> str:
        """What RunInstances passes as IamInstanceProfile: only with a shared folder."""
        return self.shared_worker_instance_profile if self.shared_file_system_id else ""

    def is_staff(self, user: Any) -> bool:
        groups = {getattr(g, "name", g) for g in getattr(user, "groups", None) or []}
        return bool(getattr(user, "admin", False)) or bool(groups & set(self.staff_groups))

    def shared_folder(self, user: Any) -> SharedFolder | None:
        """The start request's `shared` (checked by the protocol), or None."""
        if not self.shared_file_system_id:
            return None
        return SharedFolder(
            file_system_id=self.shared_file_system_id,
            region=self.region,
            course=self.shared_course or self.cluster_name,
            staff=self.is_staff(user),
            dropbox=self.shared_dropbox,
        )
