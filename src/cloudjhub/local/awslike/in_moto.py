"""What --like-aws changes inside the embedded moto rather than through the proxy:
private IPs reused (`ipreuse`), EFS's `creating` states (`efs_creating`, EFS is not
EC2's Query API), and the DLM stand-in refusing a role IAM has not spread yet
(settings.IAM_PROPAGATION_SECONDS; local/dlm.py). With an outside --aws-endpoint
none of these is modelled."""

from __future__ import annotations

from ..motoserver import LocalEc2
from . import efs_creating, ipreuse
from .settings import Behaviour


def install(moto: LocalEc2, behaviour: Behaviour) -> None:
    ipreuse.install(behaviour.shutting_down)
    efs_creating.install(behaviour.efs_file_system, behaviour.efs_mount_target)
    moto.dlm.young_role_seconds = behaviour.iam_propagation


def uninstall() -> None:
    """Back to moto's behaviour (the DLM stand-in goes with its moto)."""
    ipreuse.uninstall()
    efs_creating.uninstall()
