"""What deleting a user does to their workers and home volumes (delete_forever's work),
and the id a user is known by."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

import pytest

from cloudjhub.aws.hub import WorkerSpec
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.tags import DELETED_TAG, USER_ID_TAG, tag_dict
from cloudjhub.user_identity import delete_user_resources, user_id_of


def test_a_user_made_later_with_a_reused_id_has_another_user_id() -> None:
    first = SimpleNamespace(id=7, created=datetime(2026, 1, 1, 9, 0, 0, 1))
    reused = SimpleNamespace(id=7, created=datetime(2026, 1, 2, 9, 0, 0, 2))
    assert user_id_of(first) != user_id_of(reused)
    assert user_id_of(first) == user_id_of(SimpleNamespace(id=7, created=first.created))
    assert user_id_of(SimpleNamespace(id=7)) == "7"


@pytest.mark.parametrize("delete_homes", [False, True])
async def test_deleting_a_user_terminates_their_workers_and_keeps_or_deletes_homes(
    ec2: LocalCloudEc2, spec: WorkerSpec, delete_homes: bool
) -> None:
    mine = ec2.launch_worker("bob", spec, "t-mine", user_id="1-a")
    home = ec2.create_home_volume("bob", 1, mine.availability_zone, user_id="1-a")
    legacy_home = ec2.create_home_volume("bob", 1, mine.availability_zone)
    # Kept from an earlier user of the same name, and someone else's: never touched.
    earlier_home = ec2.create_home_volume("bob", 1, mine.availability_zone, user_id="0-z")
    ec2.mark_deleted([earlier_home], "0-z", "2026-01-01T00:00:00Z")
    carol = ec2.launch_worker("carol", spec, "t-carol", user_id="2-a")
    said: list[str] = []

    await delete_user_resources(
        ec2, "bob", "1-a", delete_homes=delete_homes, poll=0.05, give_up_after=10, log=said.append
    )

    states = {i.id: i.state for i in ec2.describe([mine.id, carol.id])}
    assert states[mine.id] in ("shutting-down", "terminated")
    assert states[carol.id] == "running"
    assert DELETED_TAG in ec2.describe([mine.id])[0].tags  # marked before it went
    left = {
        v["VolumeId"]: tag_dict(v.get("Tags"))
        for v in ec2.home_volumes("bob", include_deleted=True)
    }
    assert left[earlier_home][USER_ID_TAG] == "0-z"
    assert left[earlier_home][DELETED_TAG] == "2026-01-01T00:00:00Z"
    if delete_homes:
        assert home not in left and legacy_home not in left
    else:
        # Kept, marked as the deleted user's (the legacy one bound to their id):
        # nobody who takes the name later gets them.
        assert left[home][USER_ID_TAG] == left[legacy_home][USER_ID_TAG] == "1-a"
        assert DELETED_TAG in left[home] and DELETED_TAG in left[legacy_home]
    assert ec2.find_home_volume("bob") is None
    assert any("terminating" in m for m in said)
