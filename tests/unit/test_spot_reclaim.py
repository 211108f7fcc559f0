"""The local cloud reclaims a spot instance as AWS does, through the like-aws control
endpoint (`PUT /_cloudjhub/awslike {"interrupt_spot": ID}`): terminated, StateReason
Server.SpotInstanceTermination, a volume not deleted on termination kept; an on-demand
instance, or one that is not there, is refused with a 400."""

from __future__ import annotations

import requests

from cloudjhub.aws.hub import HubEc2
from cloudjhub.local.awslike.proxy import CONTROL_PATH
from tests.unit.test_awslike_proxy import Setup, _run, _wait, setup  # noqa: F401 - fixture

SPOT = {
    "InstanceMarketOptions": {"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}}
}


def test_a_spot_instance_is_reclaimed_and_its_kept_volume_survives(
    setup: Setup,  # noqa: F811 - the fixture
) -> None:
    control = setup.proxy.url + CONTROL_PATH
    spot = _run(setup, **SPOT)["InstanceId"]
    on_demand = _run(setup)["InstanceId"]
    _wait(setup, spot, "running")
    _wait(setup, on_demand, "running")
    zone = setup.ec2.describe_instances(InstanceIds=[spot])["Reservations"][0]["Instances"][0][
        "Placement"
    ]["AvailabilityZone"]
    home = setup.ec2.create_volume(Size=1, AvailabilityZone=zone)["VolumeId"]
    setup.ec2.attach_volume(VolumeId=home, InstanceId=spot, Device="/dev/sdf")

    refused = requests.put(control, json={"interrupt_spot": on_demand}, timeout=10)
    assert refused.status_code == 400 and b"not a running spot instance" in refused.content
    missing = requests.put(control, json={"interrupt_spot": "i-0123456789abcdef0"}, timeout=10)
    assert missing.status_code == 400
    done = requests.put(control, json={"interrupt_spot": spot}, timeout=10)
    assert done.status_code == 200, done.text

    [instance] = HubEc2("none", setup.ec2).describe([spot])
    assert instance.gone and instance.state_reason == "Server.SpotInstanceTermination"
    [volume] = setup.ec2.describe_volumes(VolumeIds=[home])["Volumes"]
    assert volume["State"] == "available"  # the home volume outlives the instance
    assert HubEc2("none", setup.ec2).describe([on_demand])[0].state == "running"
