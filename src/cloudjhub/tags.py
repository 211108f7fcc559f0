"""What marks an AWS resource as ours, and the names we give resources.

Tags are the source of truth for which instance belongs to whom, so every
lookup and every guard builds its filters here.
"""

from __future__ import annotations

import re
from enum import StrEnum

CLUSTER_TAG = "cloudjhub:cluster"
ROLE_TAG = "cloudjhub:role"
USER_TAG = "cloudjhub:user"
# A JupyterHub named server's own worker and home volume; the default server has none.
SERVER_TAG = "cloudjhub:server"
# JupyterHub's id of the user (with when it was made): a name can be reused
# after its user is deleted, the id tag tells the two users apart.
USER_ID_TAG = "cloudjhub:user-id"
# On a home volume kept after its user was deleted (delete_forever): never handed out.
DELETED_TAG = "cloudjhub:user-deleted"
NAME_TAG = "Name"
# Which volumes the cluster's backup policy snapshots (the one tag DLM targets; its
# TargetTags are OR-ed, so one tag must say both the cluster and the kind of volume).
BACKUP_TAG = "cloudjhub:backup"
# On a home volume: a restore the admin asked for, done at the user's next start
# ("<snapshot id> volume" or "<snapshot id> folder"); on the volume a restore replaced:
# when, so it is never handed out again and the admin can delete it.
RESTORE_TAG = "cloudjhub:restore"
REPLACED_TAG = "cloudjhub:replaced"
# On a volume made from a backup for `restore --as-folder`: the folder's name.
RESTORED_FOLDER_TAG = "cloudjhub:restored-folder"
# On a worker: the user's home usage as the agent last reported it ("<used> <size>" bytes).
HOME_USAGE_TAG = "cloudjhub:home-usage"
# A warm-pool worker: launched unassigned ("ready", no USER_TAG); a claim tags it with
# its user and "claiming", then removes this tag (see warm_pool.py).
POOL_TAG = "cloudjhub:pool"
# On a worker image built with --gpu-image (NVIDIA driver and CUDA runtime): "true".
GPU_TAG = "cloudjhub:gpu"
POOL_READY = "ready"
POOL_CLAIMING = "claiming"
# Chosen by the keeper to go (the pool shrinks, or it is of an old kind): no longer
# claimable, and terminated on the keeper's next round if still nobody's.
POOL_RETIRING = "retiring"
# On the cluster's manager: a one-off warm-pool window (`cloudjhub prewarm`), as
# `size=N,state=S,until=<ISO UTC>` (pool_schedule.OneOff); the keeper reads it each round.
PREWARM_TAG = "cloudjhub:prewarm"

_CLUSTER_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
# A server name goes into tags, EC2 filters and the Name tag: letters, digits and
# the punctuation AWS allows in tag values everywhere (no '/', a URL separator in the hub).
_SERVER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:=+@-]{0,99}$")


class Role(StrEnum):
    MANAGER = "manager"
    WORKER = "worker"
    BUILDER = "builder"
    HOME = "home"
    IMAGE = "image"
    # The shared course folder: its EFS file system and security group.
    SHARED = "shared"


def validate_cluster_name(name: str) -> str:
    """Cluster names end up in group, instance and image names, so keep them plain."""
    if not _CLUSTER_RE.fullmatch(name):
        raise ValueError(
            f"cluster name {name!r} must be 1-40 characters of lowercase letters, "
            "digits and '-', starting with a letter or digit"
        )
    return name


def validate_server_name(name: str) -> str:
    """A JupyterHub server name, untrusted: plain enough for a tag, a filter and a name."""
    if name and not _SERVER_RE.fullmatch(name):
        raise ValueError(
            f"server name {name!r} must be 1-100 characters of letters, digits and "
            "'._:=+@-', starting with a letter or digit"
        )
    return name


def server_of(tags: dict[str, str]) -> str:
    """The named server a resource is for; "" for the default server (no tag)."""
    return tags.get(SERVER_TAG, "")


def tags_for(
    cluster: str,
    role: Role,
    user: str | None = None,
    name: str | None = None,
    user_id: str | None = None,
    server: str = "",
) -> dict[str, str]:
    tags = {CLUSTER_TAG: cluster, ROLE_TAG: role.value}
    if user is not None:
        tags[USER_TAG] = user
    if user_id is not None:
        tags[USER_ID_TAG] = user_id
    if server:
        tags[SERVER_TAG] = server
    tags[NAME_TAG] = name or resource_name(cluster, role, user, server)
    return tags


def pool_tags(cluster: str) -> dict[str, str]:
    """The tags of an unassigned warm-pool worker: a worker with no user."""
    return {**tags_for(cluster, Role.WORKER, name=f"{cluster}-worker-pool"), POOL_TAG: POOL_READY}


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tag_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


def filter_value(text: str) -> str:
    """`text` as a literal EC2 filter value.

    In EC2 filter values `*` and `?` are wildcards and a backslash escapes the next
    character (DescribeInstances, "Filter.N.Value"), so a user named `*` would
    otherwise match everyone."""
    return re.sub(r"([\\*?])", r"\\\1", text)


def tag_filters(tags: dict[str, str]) -> list[dict[str, object]]:
    """EC2 Filters selecting resources that carry each of these tags (escaped)."""
    return [{"Name": f"tag:{k}", "Values": [filter_value(v)]} for k, v in tags.items()]


def selector(
    cluster: str, role: Role | None = None, user: str | None = None, server: str = ""
) -> dict[str, str]:
    """The tags that mark resources of one cluster (and role, and user, and named
    server; the default server has no tag to select by: see `is_server`)."""
    out = {CLUSTER_TAG: cluster}
    if role is not None:
        out[ROLE_TAG] = role.value
    if user is not None:
        out[USER_TAG] = user
    if server:
        out[SERVER_TAG] = server
    return out


def is_server(tags: dict[str, str], server: str | None) -> bool:
    """Whether a resource is for this server ("" the default; None any server)."""
    return server is None or server_of(tags) == server


def filters(
    cluster: str, role: Role | None = None, user: str | None = None
) -> list[dict[str, object]]:
    """EC2 Filters selecting resources of one cluster (and role, and user)."""
    return tag_filters(selector(cluster, role, user))


def has_tags(tags: dict[str, str], wanted: dict[str, str]) -> bool:
    """The exact check after a filtered lookup: EC2 filters match patterns, not values."""
    return all(tags.get(k) == v for k, v in wanted.items())


def backup_target(cluster: str, home_volumes: bool) -> str:
    """The BACKUP_TAG value of the volumes a cluster backs up: its home volumes, or
    its workers' root volumes when it has none."""
    return f"{cluster}/{'home' if home_volumes else 'root'}"


def belongs_to(tags: dict[str, str]) -> bool:
    """Whether a resource found by its user name may go to the user of that name: not
    when it was kept from a deleted user, replaced by a restore or is a restored folder. An id tag naming another id, without that
    mark, means the hub lost its database (JupyterHub then gives the same person a new
    id): still theirs, and re-bound to the new id (`needs_binding`)."""
    return not {DELETED_TAG, REPLACED_TAG, RESTORED_FOLDER_TAG} & tags.keys()


def needs_binding(tags: dict[str, str], user_id: str) -> bool:
    """A user's resource whose id tag is missing (made before ids were tagged) or names
    the id the user had before the hub lost its database."""
    return tags.get(USER_ID_TAG) != user_id


def resource_name(cluster: str, role: Role, user: str | None = None, server: str = "") -> str:
    return (
        f"{cluster}-{role.value}" + (f"-{user}" if user else "") + (f"-{server}" if server else "")
    )


class Group(StrEnum):
    """A cluster's security groups, named as the original system named them."""

    MANAGER = "manager"
    MANAGER2 = "manager2"
    WORKER = "worker"


def group_name(cluster: str, group: Group) -> str:
    return f"{cluster}-{group.value}"


def workers_key_name(cluster: str) -> str:
    """The key pair workers launch with; its private half never leaves the manager."""
    return f"{cluster}-workers"


def workers_role_name(cluster: str) -> str:
    """The workers' IAM role and instance profile (only with shared storage): what
    the shared folder's EFS file system lets mount it (launch/iam_shared.py)."""
    return f"{cluster}-workers"


def image_name(cluster: str, stamp: str) -> str:
    """A worker image's name; `stamp` (the build time) keeps rebuilt images apart."""
    return f"{cluster}-worker-{stamp}"
