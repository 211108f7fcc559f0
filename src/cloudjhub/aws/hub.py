"""What the hub may do in EC2: read the cluster, launch, start and stop workers, and
attach home volumes. It deletes only what belonged to a user JupyterHub deleted
(their workers and, if configured, their home volumes), and tags an existing
resource only to bind it to its user's id, to mark a deleted user's, or to claim
a warm-pool worker, and it sets or drops the one-off pool window on its manager
(`cloudjhub prewarm`): as the hub's IAM policy allows."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import ClientError

from ..cloud_config import WORKER_CLOUD_CONFIG
from ..ec2_limits import MAX_FILTER_VALUES
from ..tags import (
    BACKUP_TAG,
    DELETED_TAG,
    NAME_TAG,
    POOL_CLAIMING,
    POOL_READY,
    POOL_RETIRING,
    POOL_TAG,
    PREWARM_TAG,
    SERVER_TAG,
    USER_ID_TAG,
    USER_TAG,
    Role,
    backup_target,
    belongs_to,
    filter_value,
    has_tags,
    is_server,
    needs_binding,
    pool_tags,
    resource_name,
    selector,
    tag_dict,
    tag_filters,
    tag_list,
    tags_for,
)
from .client import CloudError, Ec2Client, Instance, NotOurs, chunks, user_message
from .pacing import Pacer


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker launch needs, from server_config.json or traits."""

    image_id: str
    instance_type: str
    subnet_id: str
    security_group_ids: tuple[str, ...]
    key_name: str
    ebs_size: int
    hibernate: bool = False
    # "spot": a one-time spot request that AWS ends (terminates) when it reclaims it.
    market: str = "on-demand"
    # Added to the worker and its volumes (EXTRA_TAGS, a profile's extra_tags), filled in.
    extra_tags: tuple[tuple[str, str], ...] = ()
    # With shared storage only: the workers' profile, whose role may only mount it.
    instance_profile: str = ""


def launch_token(
    cluster: str, user: str, previous: str | None, user_id: str = "", server: str = ""
) -> str:
    """ClientToken that makes a retried RunInstances return the same instance.

    The previous instance id is part of it so that replacing a terminated
    instance is a new request, not a replay of the old one; the user's id, so
    that a new user with a deleted user's name does not replay that user's launch;
    a named server's name, so that each server of a user gets its own instance.
    """
    raw = f"{cluster}\0{user}\0{previous or ''}".encode()
    if user_id:
        raw += f"\0{user_id}".encode()
    if server:
        raw += f"\0server={server}".encode()
    return "cjh-" + hashlib.sha256(raw).hexdigest()[:60]


# A tag value's longest (256 characters, "Tag restrictions", EC2 User Guide): a longer
# filter value matches no tag, and EC2 may refuse it (see user_lookups).
MAX_FILTER_VALUE = 256
_NO_RETRY = "cloudjhub-no-retry-without-capacity"


def _no_retry_without_capacity(response: Any = None, operation: Any = None, **_: Any) -> None:
    """End a RunInstances that AWS has no capacity for at once.

    InsufficientInstanceCapacity is an HTTP 500, which botocore retries for tens of
    seconds; AWS's advice is another zone or type, which the spawner tries next
    (`worker_instance_type_fallbacks`, SUBNET_IDS). Raising from botocore's retry
    check ends the call with the error as its ClientError."""
    if response is None or operation is None:
        return
    parsed = response[1]
    if (parsed.get("Error") or {}).get("Code") == "InsufficientInstanceCapacity":
        raise ClientError(parsed, operation.name)


class HubEc2(Ec2Client):
    """The hub's door: every action is on this cluster's workers and their volumes."""

    def __init__(self, cluster: str, client: Any) -> None:
        super().__init__(cluster, client)
        self._root_devices: dict[str, str] = {}
        self._hypervisors: dict[str, str] = {}
        client.meta.events.register_first(
            "needs-retry.ec2.RunInstances", _no_retry_without_capacity, unique_id=_NO_RETRY
        )

    # ---- reads -------------------------------------------------------------

    def describe_cluster(self, role: Role | None = None) -> list[Instance]:
        """All instances of this cluster (of one role), in every state."""
        return self._tagged_instances(selector(self.cluster, role))

    def describe_workers(self, user: str | None = None) -> list[Instance]:
        return self._tagged_instances(selector(self.cluster, Role.WORKER, user))

    def pool_workers(self, value: str | None = None) -> list[Instance]:
        """The workers with the pool tag (of this value, if given), in every state: all
        the keeper and a claim look at, not every user's worker. DescribeInstances'
        `tag-key` filter matches a tag's key whatever its value (EC2 API Reference)."""
        wanted = selector(self.cluster, Role.WORKER)
        if value is not None:
            return self._tagged_instances({**wanted, POOL_TAG: value})
        keyed = [*tag_filters(wanted), {"Name": "tag-key", "Values": [POOL_TAG]}]
        found = self._instances(Filters=keyed, MaxResults=1000)
        return [i for i in found if has_tags(i.tags, wanted) and POOL_TAG in i.tags]

    def user_workers(self, user: str, server: str | None = None) -> list[Instance]:
        """The workers of the user of this name (of one server: "" the default, None
        all), but never a deleted user's (see tags.belongs_to): a name reused after
        its user was deleted gets nothing of theirs."""
        found = self._tagged_instances(selector(self.cluster, Role.WORKER, user, server or ""))
        return [i for i in found if belongs_to(i.tags) and is_server(i.tags, server)]

    def user_lookups(self, users: list[str]) -> list[list[str]]:
        """`users` in groups that each fit one `users_workers` call: EC2 refuses a call
        of more than 200 filter values in all (`ec2_limits.MAX_FILTER_VALUES`). A name
        whose filter value is longer than a tag value may be goes alone, so that if
        EC2 refuses it, it fails no one else."""
        per_call = MAX_FILTER_VALUES - len(tag_filters(selector(self.cluster, Role.WORKER)))
        fits = [u for u in dict.fromkeys(users) if len(filter_value(u)) <= MAX_FILTER_VALUE]
        alone = [[u] for u in dict.fromkeys(users) if len(filter_value(u)) > MAX_FILTER_VALUE]
        return [*chunks(fits, per_call), *alone]

    def users_workers(self, users: list[str]) -> dict[str, list[Instance]]:
        """`user_workers(name, None)` of each of a group of users (`user_lookups`), in
        one DescribeInstances: the lookups of a storm of logins. Names go through
        `filter_value` (EC2 filter values are patterns) and are checked exactly after."""
        wanted = selector(self.cluster, Role.WORKER)
        out: dict[str, list[Instance]] = {user: [] for user in users}
        names = {"Name": f"tag:{USER_TAG}", "Values": [filter_value(u) for u in out]}
        for i in self._instances(Filters=[*tag_filters(wanted), names], MaxResults=1000):
            user = i.tags.get(USER_TAG)
            if user in out and has_tags(i.tags, wanted) and belongs_to(i.tags):
                out[user].append(i)
        return out

    def hypervisor(self, instance_type: str) -> str:
        """'nitro' or 'xen', from DescribeInstanceTypes, asked once per type."""
        if instance_type not in self._hypervisors:
            found = self._call("describe_instance_types", InstanceTypes=[instance_type])
            types = found.get("InstanceTypes", [])
            self._hypervisors[instance_type] = str(types[0].get("Hypervisor", "")) if types else ""
        return self._hypervisors[instance_type]

    def unknown_instance_types(self, instance_types: list[str]) -> list[str]:
        """Of these types, those DescribeInstanceTypes does not know in this region."""
        unknown = []
        for kind in instance_types:
            try:
                reply = self._call("describe_instance_types", InstanceTypes=[kind])
            except CloudError as exc:
                if not exc.code.startswith("InvalidInstanceType"):
                    raise
                reply = {}
            if not reply.get("InstanceTypes"):
                unknown.append(kind)
        return unknown

    def instance_type_info(self, instance_type: str) -> dict[str, Any] | None:
        """DescribeInstanceTypes of one type; None if the region has no such type."""
        try:
            found = self._call("describe_instance_types", InstanceTypes=[instance_type])
        except CloudError as exc:
            if exc.code == "InvalidInstanceType":
                return None
            raise
        types = found.get("InstanceTypes", [])
        return dict(types[0]) if types else None

    def console_output(self, instance_id: str, instance_type: str) -> str:
        """The instance's console, where cloud-init prints its SSH host keys.

        On Nitro types the buffered output (the default) is only posted around state
        transitions, often minutes after boot; `Latest=True`, which only Nitro types
        support, returns what the console shows now (EC2 GetConsoleOutput, "Latest").
        """
        latest = {"Latest": True} if self.hypervisor(instance_type) == "nitro" else {}
        reply = self._call("get_console_output", InstanceId=instance_id, **latest)
        return reply.get("Output") or ""

    def root_device_name(self, image_id: str) -> str:
        if image_id not in self._root_devices:
            context = {"image": image_id}
            images = self._call("describe_images", context, ImageIds=[image_id]).get("Images", [])
            if not images:
                code = "InvalidAMIID.NotFound"
                raise CloudError(user_message(code, context) or code, code)
            image = images[0]
            if image.get("State") != "available":
                code = "InvalidAMIID.Unavailable"
                raise CloudError(user_message(code, context) or code, code)
            self._root_devices[image_id] = image.get("RootDeviceName") or "/dev/xvda"
        return self._root_devices[image_id]

    # ---- workers -----------------------------------------------------------

    def launch_worker(
        self,
        user: str,
        spec: WorkerSpec,
        client_token: str,
        user_id: str | None = None,
        paid: Pacer | None = None,
        server: str = "",
    ) -> Instance:
        """Run one tagged worker: IMDSv2 only, no instance profile but the shared
        folder's (spec.instance_profile), stop on shutdown,
        its login user without sudo (WORKER_CLOUD_CONFIG)."""
        tags = tags_for(self.cluster, Role.WORKER, user, user_id=user_id, server=server)
        # Ours last: an extra tag never replaces what marks a worker as ours.
        return self._run_workers({**dict(spec.extra_tags), **tags}, spec, 1, client_token, paid)[0]

    def launch_for_users(
        self,
        users: list[tuple[str, str, str, dict[str, str]]],
        spec: WorkerSpec,
        client_token: str,
        paid: Pacer | None = None,
    ) -> list[Instance]:
        """One RunInstances for several users' first logins, then each instance tagged
        to one of them; the instances in the order of `users` (name, id, named server,
        the extra tags of theirs that `spec` does not carry for all).

        They are launched marked as a claim in progress with no user (neither a pool
        member nor anyone's), then each is tagged to its user and unmarked as a warm-pool
        claim is (`tag_claim`, `finish_claim`, without their guard: we just made them),
        so a restart between the two steps is finished by the user's next spawn.
        """
        tags = {
            **dict(spec.extra_tags),
            **tags_for(self.cluster, Role.WORKER, name=f"{self.cluster}-worker-launching"),
            POOL_TAG: POOL_CLAIMING,
        }
        launched = self._run_workers(tags, spec, len(users), client_token, paid)
        if len(launched) != len(users):
            raise CloudError(
                f"EC2 RunInstances launched {len(launched)} workers for {len(users)} users",
                "LaunchCountMismatch",
            )
        # AmiLaunchIndex orders a launch's instances the same way on every replay.
        launched.sort(key=lambda i: (i.launch_index, i.id))
        # A launch's reply may not list its volumes yet; a describe does.
        seen = {i.id: i for i in self.describe([i.id for i in launched])}
        out = []
        for (user, user_id, server, extra), instance in zip(users, launched, strict=True):
            instance = seen.get(instance.id, instance)
            mine = {
                **extra,
                USER_TAG: user,
                USER_ID_TAG: user_id,
                **({SERVER_TAG: server} if server else {}),
                NAME_TAG: resource_name(self.cluster, Role.WORKER, user, server),
            }
            resources = [instance.id, *instance.volumes]
            self._call("create_tags", Resources=resources, Tags=tag_list(mine))
            self._call("delete_tags", Resources=resources, Tags=[{"Key": POOL_TAG}])
            tags_now = {k: v for k, v in {**instance.tags, **mine}.items() if k != POOL_TAG}
            out.append(replace(instance, tags=tags_now))
        return out

    def launch_pool_workers(
        self, spec: WorkerSpec, count: int, client_token: str
    ) -> list[Instance]:
        """Run up to `count` unassigned warm-pool workers in one call: as many as AWS has
        capacity for (MinCount 1), where MinCount=MaxCount would fail the whole call."""
        return self._run_workers(pool_tags(self.cluster), spec, count, client_token, least=1)

    def _run_workers(
        self,
        tag_map: dict[str, str],
        spec: WorkerSpec,
        count: int,
        client_token: str,
        paid: Pacer | None = None,
        least: int | None = None,
    ) -> list[Instance]:
        """`count` workers, or (`least`) as many as AWS can launch but at least that many."""
        tags = tag_list(tag_map)
        root = self.root_device_name(spec.image_id)
        ebs: dict[str, Any] = {
            "VolumeSize": spec.ebs_size,
            "VolumeType": "gp3",
            "DeleteOnTermination": True,
        }
        if spec.hibernate:
            # Only when true: EBS never removes encryption (EC2 API, EbsBlockDevice
            # "Encrypted"), so `false` fails on an image with an encrypted snapshot;
            # left out, the account's encryption-by-default setting applies.
            ebs["Encrypted"] = True
        params: dict[str, Any] = {
            "ImageId": spec.image_id,
            "InstanceType": spec.instance_type,
            # All or nothing unless `least` (the local cloud launches MaxCount, as AWS
            # does when it has the capacity).
            "MinCount": count if least is None else min(least, count),
            "MaxCount": count,
            "SubnetId": spec.subnet_id,
            "SecurityGroupIds": list(spec.security_group_ids),
            "KeyName": spec.key_name,
            "BlockDeviceMappings": [{"DeviceName": root, "Ebs": ebs}],
            "UserData": WORKER_CLOUD_CONFIG,
            "MetadataOptions": {
                "HttpTokens": "required",
                "HttpEndpoint": "enabled",
                "HttpPutResponseHopLimit": 1,
            },
            "InstanceInitiatedShutdownBehavior": "stop",
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags + self._backup_tag(home=False)},
            ],
            "ClientToken": client_token,
        }
        if spec.hibernate:
            params["HibernationOptions"] = {"Configured": True}
        if spec.instance_profile:
            params["IamInstanceProfile"] = {"Name": spec.instance_profile}
        if spec.market == "spot":
            # One-time and terminated on interruption: AWS stops only instances of
            # persistent requests, whose request outlives the instance (EC2 User Guide,
            # "Spot Instance interruptions"); the home volume keeps the user's files.
            params["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "one-time",
                    "InstanceInterruptionBehavior": "terminate",
                },
            }
            # The request is tagged like its worker: the IAM policy requires it (iam_spot.py).
            params["TagSpecifications"].append(
                {"ResourceType": "spot-instances-request", "Tags": tags}
            )
        context = {"instance_type": spec.instance_type, "image": spec.image_id}
        with paid.prepaid() if paid else contextlib.nullcontext():
            reply = self._call("run_instances", context, **params)
        return [Instance.from_api(i) for i in reply["Instances"]]

    def tag_claim(self, instance: Instance, user: str, user_id: str, server: str = "") -> None:
        """Mark a pool worker (and its volumes) as `user`'s (named `server`'s), claim
        still in progress.

        One CreateTags call, so no one sees the user without the claim mark."""
        self.tag_read_claim(self.guard([instance.id], [Role.WORKER])[0], user, user_id, server)

    def tag_read_claim(self, read: Instance, user: str, user_id: str, server: str = "") -> None:
        """`tag_claim` of a worker the caller has just read back (a batch of claims
        reads all its members in one call): that read is the guard's."""
        self.refuse_unless_ours("instance", [read.id], {read.id: read.tags}, [Role.WORKER])
        tags = {
            USER_TAG: user,
            USER_ID_TAG: user_id,
            NAME_TAG: resource_name(self.cluster, Role.WORKER, user, server),
            POOL_TAG: POOL_CLAIMING,
        }
        if server:
            tags[SERVER_TAG] = server
        self._call("create_tags", Resources=[read.id, *read.volumes], Tags=tag_list(tags))

    def finish_claim(self, instance: Instance) -> None:
        """Drop the pool mark: from now on the worker is like any launched for its user."""
        self.guard([instance.id], [Role.WORKER])
        self._call(
            "delete_tags", Resources=[instance.id, *instance.volumes], Tags=[{"Key": POOL_TAG}]
        )

    def finish_read_claims(self, read: list[Instance]) -> None:
        """`finish_claim` of many workers just read back (a batch of claims): one
        DeleteTags, the tag being the same on all."""
        ids = [i.id for i in read]
        self.refuse_unless_ours("instance", ids, {i.id: i.tags for i in read}, [Role.WORKER])
        resources = list(dict.fromkeys(r for i in read for r in (i.id, *i.volumes)))
        # DeleteTags takes up to 1000 resource ids (EC2 API Reference, DeleteTags).
        for chunk in chunks(resources, 1000):
            self._call("delete_tags", Resources=chunk, Tags=[{"Key": POOL_TAG}])

    def release_claim(self, instance: Instance, user: str, user_id: str, server: str = "") -> None:
        """Undo `tag_claim` of a claim that failed: the pool mark back to ready, then
        the user's tags off, each only where it still has the value the claim wrote
        (DeleteTags with a value deletes only a match), so nobody else's tag goes."""
        self.guard([instance.id], [Role.WORKER])
        resources = [instance.id, *instance.volumes]
        name = {NAME_TAG: f"{self.cluster}-worker-pool"}
        self._call(
            "create_tags", Resources=resources, Tags=tag_list({POOL_TAG: POOL_READY, **name})
        )
        mine = {USER_TAG: user, USER_ID_TAG: user_id, **({SERVER_TAG: server} if server else {})}
        self._call("delete_tags", Resources=resources, Tags=tag_list(mine))

    def mark_retiring(self, instance_ids: list[str]) -> None:
        """Take pool workers out of the pool (no claim picks them) before they go."""
        if instance_ids:
            self.guard(instance_ids, [Role.WORKER])
            self._call(
                "create_tags", Resources=instance_ids, Tags=tag_list({POOL_TAG: POOL_RETIRING})
            )

    def unmark_retiring(self, instance_ids: list[str]) -> None:
        """Drop a retiring mark that landed on a claimed worker (only where it is still
        `retiring`: a claim's own mark is left)."""
        if instance_ids:
            self.guard(instance_ids, [Role.WORKER])
            self._call(
                "delete_tags",
                Resources=instance_ids,
                Tags=[{"Key": POOL_TAG, "Value": POOL_RETIRING}],
            )

    def start(self, instance_id: str, roles: tuple[Role, ...] = (Role.WORKER,)) -> None:
        self.guard([instance_id], roles)
        self._call("start_instances", InstanceIds=[instance_id])

    def stop(self, instance_id: str, hibernate: bool = False) -> None:
        self.guard([instance_id], [Role.WORKER])
        self._call("stop_instances", InstanceIds=[instance_id], Hibernate=hibernate)

    def start_workers(self, instance_ids: list[str], paid: Pacer | None = None) -> None:
        """One StartInstances for many workers (guarded together); `paid`: the call's
        tokens were reserved on that pacer already."""
        self.guard(instance_ids, [Role.WORKER])
        with paid.prepaid() if paid else contextlib.nullcontext():
            self._call("start_instances", InstanceIds=instance_ids)

    def stop_workers(
        self, instance_ids: list[str], hibernate: bool, paid: Pacer | None = None
    ) -> None:
        """One StopInstances for many workers, all hibernated or all not."""
        self.guard(instance_ids, [Role.WORKER])
        with paid.prepaid() if paid else contextlib.nullcontext():
            self._call("stop_instances", InstanceIds=instance_ids, Hibernate=hibernate)

    def set_instance_type(self, instance_id: str, instance_type: str) -> None:
        """Change a stopped worker's type (its disks and id stay): a user picked a
        profile of another type. The IAM policy allows only the profiles' types."""
        self.guard([instance_id], [Role.WORKER])
        context = {"instance_type": instance_type}
        self._call(
            "modify_instance_attribute",
            context,
            InstanceId=instance_id,
            InstanceType={"Value": instance_type},
        )

    def terminate_workers(self, instance_ids: list[str]) -> None:
        """Terminate workers of a user JupyterHub deleted (guarded: workers only)."""
        if not instance_ids:
            return
        self.guard(instance_ids, [Role.WORKER])
        self._call("terminate_instances", InstanceIds=instance_ids)

    def adopt(self, resource_id: str, tags: dict[str, str], user_id: str) -> None:
        """Bind a user's resource to their current id (it had none, or the one they had
        before the hub lost its database); the policy allows that one tag, and only on
        resources not kept from a deleted user."""
        if needs_binding(tags, user_id):
            tag = tag_list({USER_ID_TAG: user_id})
            self._call("create_tags", Resources=[resource_id], Tags=tag)

    def rename_server(self, resource_ids: list[str], user: str, role: Role, server: str) -> None:
        """Retag a named server's workers (with their root volumes) or home volumes after
        JupyterHub renamed it (guarded: this cluster's, of that role, with a server tag)."""
        if not resource_ids:
            return
        if role is Role.WORKER:
            instances = self.guard(resource_ids, [Role.WORKER])
            found = [i.tags for i in instances]
            extra = [v for i in instances for v in i.volumes]
        else:
            volumes = self._tagged(
                "describe_volumes", "Volumes", selector(self.cluster, role), VolumeIds=resource_ids
            )
            found, extra = [tag_dict(v.get("Tags")) for v in volumes], []
        if len(found) != len(resource_ids) or not all(SERVER_TAG in t for t in found):
            raise NotOurs(f"refusing to rename {', '.join(resource_ids)}: not a named server's")
        tags = {SERVER_TAG: server, NAME_TAG: resource_name(self.cluster, role, user, server)}
        self._call("create_tags", Resources=[*resource_ids, *extra], Tags=tag_list(tags))

    def mark_deleted(self, resource_ids: list[str], user_id: str, when: str) -> None:
        """A deleted user's workers (before they are terminated) and kept home volumes:
        bound to their id and marked, so no later user of the same name gets them."""
        if resource_ids:
            tags = tag_list({USER_ID_TAG: user_id, DELETED_TAG: when})
            self._call("create_tags", Resources=resource_ids, Tags=tags)

    # ---- home volumes ------------------------------------------------------

    def home_volumes(
        self, user: str, include_deleted: bool = False, server: str | None = None
    ) -> list[dict[str, Any]]:
        """The user's home volumes (of one server: "" the default, None all), oldest
        first; those kept from a deleted user of the same name only with `include_deleted`."""
        wanted = selector(self.cluster, Role.HOME, user, server or "")
        volumes = self._tagged("describe_volumes", "Volumes", wanted)
        volumes = [v for v in volumes if is_server(tag_dict(v.get("Tags")), server)]
        if not include_deleted:
            volumes = [v for v in volumes if belongs_to(tag_dict(v.get("Tags")))]
        return sorted(volumes, key=lambda v: (str(v.get("CreateTime", "")), v["VolumeId"]))

    def subnet_zones(self, subnet_ids: list[str]) -> dict[str, str]:
        """Each subnet's availability zone (a home volume attaches only in its own)."""
        if not subnet_ids:
            return {}
        reply = self._call("describe_subnets", SubnetIds=subnet_ids)
        return {s["SubnetId"]: s["AvailabilityZone"] for s in reply.get("Subnets", [])}

    def find_home_volume(self, user: str, server: str = "") -> dict[str, Any] | None:
        volumes = self.home_volumes(user, server=server)
        return volumes[0] if volumes else None

    def delete_home_volume(self, volume_id: str) -> None:
        """Delete a deleted user's home volume (guarded: this cluster's home volumes)."""
        found = self._tagged(
            "describe_volumes", "Volumes", selector(self.cluster, Role.HOME), VolumeIds=[volume_id]
        )
        if not found:
            raise NotOurs(f"refusing to delete {volume_id}: not a home volume of this cluster")
        self._call("delete_volume", VolumeId=volume_id)

    def create_home_volume(
        self,
        user: str,
        size: int,
        zone: str,
        user_id: str | None = None,
        extra_tags: dict[str, str] | None = None,
        server: str = "",
    ) -> str:
        ours = tags_for(self.cluster, Role.HOME, user, user_id=user_id, server=server)
        tags = tag_list({**(extra_tags or {}), **ours}) + self._backup_tag(home=True)
        reply = self._call(
            "create_volume",
            AvailabilityZone=zone,
            Size=size,
            VolumeType="gp3",
            Encrypted=True,
            TagSpecifications=[{"ResourceType": "volume", "Tags": tags}],
        )
        return str(reply["VolumeId"])

    def _backup_tag(self, home: bool) -> list[dict[str, str]]:
        """What a backup policy targets (aws/backups.py): home volumes, or root volumes
        in a cluster without them; tagged whether or not a policy exists yet."""
        return tag_list({BACKUP_TAG: backup_target(self.cluster, home)})

    def attach_volume(self, volume_id: str, instance_id: str, device: str) -> None:
        """Attach a home volume to one of this cluster's workers.

        A volume attached after launch has DeleteOnTermination false (AttachVolume's
        own default), so it outlives its worker without ModifyInstanceAttribute,
        which the hub's IAM role does not have.
        """
        self.guard([instance_id], [Role.WORKER])
        self._call("attach_volume", VolumeId=volume_id, InstanceId=instance_id, Device=device)

    # ---- the one-off pool window on the manager (`cloudjhub prewarm`) ----------

    def managers(self) -> list[Instance]:
        """The cluster's live manager instances (one, unless a relaunch overlaps)."""
        return [i for i in self.describe_cluster(Role.MANAGER) if i.live]

    def prewarm_tags(self) -> list[str]:
        """The one-off window's tag values on the cluster's live managers."""
        return [m.tags[PREWARM_TAG] for m in self.managers() if PREWARM_TAG in m.tags]

    def set_prewarm(self, manager_id: str, value: str | None) -> None:
        """Write the one-off window on a manager, or drop it (None); that one key only."""
        self.guard([manager_id], [Role.MANAGER])
        if value is None:
            self._call("delete_tags", Resources=[manager_id], Tags=[{"Key": PREWARM_TAG}])
        else:
            tags = tag_list({PREWARM_TAG: value})
            self._call("create_tags", Resources=[manager_id], Tags=tags)
