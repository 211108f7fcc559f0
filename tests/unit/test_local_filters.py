"""The local cloud matches EC2 filter values as AWS documents them, not as moto does."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cloudjhub.aws.client import Instance
from cloudjhub.aws.local import LocalCloudEc2
from cloudjhub.local.filters import matches
from cloudjhub.tags import filter_value


@pytest.mark.parametrize(
    ("value", "text", "expected"),
    [
        ("alice", "alice", True),
        ("alice", "alice2", False),
        ("a*", "alice", True),
        ("*", "", True),
        ("?lice", "alice", True),
        ("?lice", "lice", False),
        # AWS's own example: \*amazon\?\\ is the literal string *amazon?\ .
        ("\\*amazon\\?\\\\", "*amazon?\\", True),
        ("\\*amazon\\?\\\\", "xamazonx\\", False),
        # Brackets are not special on AWS (they are a character class in fnmatch).
        ("[ab]", "[ab]", True),
        ("[ab]", "a", False),
        ("a.b", "axb", False),
    ],
)
def test_filter_values_match_as_aws_documents(value: str, text: str, expected: bool) -> None:
    assert matches(text, value) is expected


@pytest.mark.parametrize("name", ["*", "alice*", "?lice", "[a]lice", "a\\lice", "al\\*ce"])
def test_an_escaped_name_matches_only_itself(name: str) -> None:
    assert matches(name, filter_value(name))
    assert not matches("alice", filter_value(name)) or name == "alice"


def test_moto_tag_filters_follow_aws_semantics(ec2: LocalCloudEc2) -> None:
    """Through the real API: tag filters with brackets or escapes (moto would read
    `[x]` as a character class and `\\` as two backslashes)."""
    for value in ("[x]", "a\\b"):
        ec2.client.create_volume(
            AvailabilityZone="us-east-1a",
            Size=1,
            TagSpecifications=[
                {"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": value}]}
            ],
        )
    for value in ("[x]", "a\\b"):
        flt = [{"Name": "tag:Name", "Values": [filter_value(value)]}]
        found = ec2.client.describe_volumes(Filters=flt)["Volumes"]
        assert [t["Value"] for v in found for t in v["Tags"]] == [value]
    flt = [{"Name": "tag:Name", "Values": ["x"]}]
    assert ec2.client.describe_volumes(Filters=flt)["Volumes"] == []


def test_a_tag_written_like_an_escaped_pattern_is_not_matched_as_written(
    ec2: LocalCloudEc2, make_worker: Callable[..., Instance]
) -> None:
    """AWS reads the filter value `a\\*` as the literal `a*`: an instance tagged with
    the text `a\\*` itself does not match it (moto also compared the text as written)."""
    plain, written = make_worker("a*"), make_worker("a\\*")
    flt = [{"Name": "tag:cloudjhub:user", "Values": ["a\\*"]}]
    found = ec2.client.describe_instances(Filters=flt)["Reservations"]
    assert [i["InstanceId"] for r in found for i in r["Instances"]] == [plain.id]
    assert written.id != plain.id
