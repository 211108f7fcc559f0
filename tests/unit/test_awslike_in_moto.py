"""--like-aws's changes inside the embedded moto follow its time scale."""

from __future__ import annotations

from cloudjhub.local import shared_dirs
from cloudjhub.local.awslike import efs_creating, in_moto
from cloudjhub.local.awslike.settings import Behaviour
from cloudjhub.local.motoserver import LocalEc2


def test_the_demo_installs_efs_delays_and_the_dlm_role_age_at_its_time_scale() -> None:
    moto = LocalEc2()  # not started: only its DLM stand-in is needed
    assert moto.dlm.young_role_seconds == 0
    in_moto.install(moto, Behaviour(time_scale=0.5))
    try:
        assert moto.dlm.young_role_seconds == 4.0
        assert efs_creating._seconds == {"FileSystem": 5.0, "MountTarget": 30.0}
    finally:
        in_moto.uninstall()
    assert efs_creating._seconds == {}


def test_the_demos_efs_waits_outlast_like_aws_at_its_slowest_usual_scale() -> None:
    """At --time-scale 1 a mount target is `creating` for a minute: the demo's own
    shared-folder setup must wait longer than that (and says it waits)."""
    at_aws_pace = Behaviour(time_scale=1.0)
    assert 2 * at_aws_pace.efs_mount_target < shared_dirs.EFS_TIMEOUT
