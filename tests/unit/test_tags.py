"""Tags, filters, cluster names and POSIX account names."""

from __future__ import annotations

import re

import pytest

from cloudjhub.tags import (
    CLUSTER_TAG,
    NAME_TAG,
    ROLE_TAG,
    USER_TAG,
    Group,
    Role,
    filter_value,
    filters,
    group_name,
    has_tags,
    image_name,
    resource_name,
    tag_dict,
    tag_list,
    tags_for,
    validate_cluster_name,
    workers_key_name,
)
from cloudjhub.worker.protocol import USER_RE as POSIX_USER_RE
from cloudjhub.worker.protocol import posix_username

POSIX = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def is_posix(name: str) -> bool:
    # fullmatch: `$` alone would also accept a trailing newline.
    return POSIX.fullmatch(name) is not None


# ---- tags ------------------------------------------------------------------------


def test_tag_keys() -> None:
    assert CLUSTER_TAG == "cloudjhub:cluster"
    assert ROLE_TAG == "cloudjhub:role"
    assert USER_TAG == "cloudjhub:user"
    assert NAME_TAG == "Name"


def test_tags_for_worker_has_cluster_role_user_and_name() -> None:
    assert tags_for("alpha", Role.WORKER, "bob") == {
        "cloudjhub:cluster": "alpha",
        "cloudjhub:role": "worker",
        "cloudjhub:user": "bob",
        "Name": "alpha-worker-bob",
    }


def test_tags_for_without_user_has_no_user_tag() -> None:
    tags = tags_for("alpha", Role.MANAGER)
    assert tags == {
        "cloudjhub:cluster": "alpha",
        "cloudjhub:role": "manager",
        "Name": "alpha-manager",
    }
    assert USER_TAG not in tags


def test_tags_for_explicit_name_wins() -> None:
    tags = tags_for("alpha", Role.WORKER, name="alpha-worker")
    assert tags[NAME_TAG] == "alpha-worker"
    assert tags[ROLE_TAG] == "worker"


def test_tag_list_and_tag_dict_round_trip() -> None:
    tags = tags_for("alpha", Role.HOME, "carol")
    as_list = tag_list(tags)
    assert {"Key": "cloudjhub:role", "Value": "home"} in as_list
    assert len(as_list) == 4
    assert tag_dict(as_list) == tags
    assert tag_dict(None) == {}
    assert tag_dict([]) == {}


def test_resource_name() -> None:
    assert resource_name("alpha", Role.BUILDER) == "alpha-builder"
    assert resource_name("alpha", Role.WORKER, "dave") == "alpha-worker-dave"


def test_names_of_the_clusters_groups_key_pair_and_images() -> None:
    """The original system's names: launch, plan and destroy all find them here."""
    assert [group_name("alpha", g) for g in Group] == [
        "alpha-manager",
        "alpha-manager2",
        "alpha-worker",
    ]
    assert workers_key_name("alpha") == "alpha-workers"
    assert image_name("alpha", "20240102-030405") == "alpha-worker-20240102-030405"


# ---- filters -----------------------------------------------------------------------


def test_filters_cluster_only() -> None:
    assert filters("alpha") == [{"Name": "tag:cloudjhub:cluster", "Values": ["alpha"]}]


def test_filters_cluster_role_and_user() -> None:
    assert filters("alpha", Role.WORKER, "bob") == [
        {"Name": "tag:cloudjhub:cluster", "Values": ["alpha"]},
        {"Name": "tag:cloudjhub:role", "Values": ["worker"]},
        {"Name": "tag:cloudjhub:user", "Values": ["bob"]},
    ]


def test_filters_user_without_role() -> None:
    assert filters("alpha", user="bob") == [
        {"Name": "tag:cloudjhub:cluster", "Values": ["alpha"]},
        {"Name": "tag:cloudjhub:user", "Values": ["bob"]},
    ]


# ---- cluster names -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "alpha", "team-7", "0day", "x" * 40, "a-b-c"])
def test_validate_cluster_name_accepts(name: str) -> None:
    assert validate_cluster_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Alpha",
        "-alpha",
        "alpha_1",
        "alpha.beta",
        "alpha beta",
        "x" * 41,
        "alpha\n",
        "alpha/..",
        "älpha",
    ],
)
def test_validate_cluster_name_rejects(name: str) -> None:
    with pytest.raises(ValueError, match="cluster name"):
        validate_cluster_name(name)


# ---- POSIX account names --------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "bob_smith", "_svc", "carol-2", "d", "x" * 32])
def test_posix_username_keeps_safe_names(name: str) -> None:
    assert posix_username(name) == name


@pytest.mark.parametrize(
    "hub_name",
    [
        "alice@example.com",
        "Alice@Example.com",
        "bob.smith@uni.edu",
        "1stuser",
        "Bob",
        "josé",
        "user name",
        "@@@",
        "",
        "-",
        "alice\n",
        "x" * 33,
        "very.long.name.of.someone@a-very-long-domain.example.org",
        "root;rm -rf /",
        "../../etc/passwd",
    ],
)
def test_posix_username_maps_unsafe_names_to_valid_ones(hub_name: str) -> None:
    mapped = posix_username(hub_name)
    assert is_posix(mapped), mapped
    assert mapped != hub_name
    assert posix_username(hub_name) == mapped  # stable


def test_email_names_keep_a_readable_prefix() -> None:
    assert posix_username("alice@example.com").startswith("alice-example-com-")


def test_names_differing_only_in_case_or_punctuation_get_distinct_accounts() -> None:
    variants = [
        "alice@example.com",
        "Alice@example.com",
        "alice@example.org",
        "alice.example.com",
        "alice_example.com",
        "alice-example@com",
        "alice+1@example.com",
        "alice+2@example.com",
        "alice",
        "alice\n",
    ]
    mapped = [posix_username(v) for v in variants]
    assert len(set(mapped)) == len(variants), dict(zip(variants, mapped, strict=True))


def test_small_sample_of_hub_names_never_collides() -> None:
    names: set[str] = set()
    for i in range(300):
        names.update(
            {
                f"user{i}",
                f"User{i}",
                f"user{i}@example.com",
                f"user.{i}@example.com",
                f"user{i}@Example.com",
                f"{i}user",
                f"user {i}",
                f"Ünïcode-{i}",
            }
        )
    mapped = {n: posix_username(n) for n in names}
    assert all(is_posix(m) for m in mapped.values())
    assert len(set(mapped.values())) == len(names)


@pytest.mark.parametrize("name", ["root", "ubuntu", "admin", "ec2-user", "nobody"])
def test_accounts_images_already_have_are_never_handed_out(name: str) -> None:
    mapped = posix_username(name)
    assert mapped != name
    assert mapped.startswith(name + "-")
    assert POSIX_USER_RE.fullmatch(mapped)


def test_filter_values_escape_wildcards_and_backslashes() -> None:
    assert filter_value("alice") == "alice"
    assert filter_value("*") == "\\*"
    assert filter_value("?lice@example.com") == "\\?lice@example.com"
    assert filter_value("a\\b*") == "a\\\\b\\*"
    assert filters("alpha", Role.WORKER, "al*ce")[2] == {
        "Name": "tag:cloudjhub:user",
        "Values": ["al\\*ce"],
    }


def test_has_tags_compares_values_exactly() -> None:
    wanted = {"cloudjhub:user": "alice*"}
    assert has_tags({"cloudjhub:user": "alice*", "x": "y"}, wanted)
    assert not has_tags({"cloudjhub:user": "alice"}, wanted)
    assert not has_tags({}, wanted)
