"""Amazon Data Lifecycle Manager, played by the local cloud: moto has no DLM.

Two halves, so the product code calls only DLM's own API:

- `DlmApi`, a WSGI app serving DLM's REST calls (create, get, list, update and
  delete a lifecycle policy) from memory, for requests signed by credentials the
  local cloud accepts; the moto server hands it every request signed for `dlm`.
- `DlmEngine`, what AWS runs behind it: reads the policies through that same API
  and, at a clock it is given, takes the snapshots each schedule's cron says are
  due and keeps `RetainRule.Count` per volume, deleting the oldest.

What it models, from the DLM User Guide: TargetTags select volumes holding ANY of
them; CopyTags copies the volume's tags to its snapshots; snapshots carry
`aws:dlm:lifecycle-policy-id` and `aws:dlm:lifecycle-schedule-name`; a count
rule keeps the newest N snapshots of each volume that the schedule made.
"""

from __future__ import annotations

import json
import secrets
import shutil
import threading
from collections.abc import Callable, Container, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ..aws.client import call
from ..backup_schedule import times_after

POLICY_TAG = "aws:dlm:lifecycle-policy-id"
SCHEDULE_TAG = "aws:dlm:lifecycle-schedule-name"
RUN_PATH = "/_cloudjhub/dlm/run"


def _signer(environ: dict[str, Any]) -> str:
    auth = str(environ.get("HTTP_AUTHORIZATION", ""))
    return auth.partition("Credential=")[2].partition("/")[0]


def is_dlm_request(environ: dict[str, Any]) -> bool:
    """Signed for the `dlm` service (SigV4 credential scope .../region/dlm/aws4_request)."""
    scope = str(environ.get("HTTP_AUTHORIZATION", "")).partition("Credential=")[2]
    return scope.split(",")[0].split("/")[3:4] == ["dlm"]


class DlmApi:
    """The policies, in memory, behind DLM's REST API."""

    def __init__(self, accepted_keys: Container[str] | None = None) -> None:
        self._accepted = accepted_keys
        self._lock = threading.Lock()
        self.policies: dict[str, dict[str, Any]] = {}
        # Set by the local cloud: runs the engine at a given time (POST RUN_PATH).
        self.run: Callable[[datetime], list[str]] | None = None
        self.run_key = ""
        # --like-aws: a role younger than this many seconds is refused, as AWS's DLM
        # refuses one IAM has not spread yet (aws/dlm_retry.py); `role_age` says how old.
        self.young_role_seconds = 0.0
        self.role_age: Callable[[str], float | None] = moto_role_age

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == RUN_PATH:
            given = str(environ.get("HTTP_X_CLOUDJHUB_KEY", ""))
            if not self.run_key or not secrets.compare_digest(given, self.run_key):
                return _reply(start_response, 403, {"message": "wrong X-Cloudjhub-Key"})
        elif self._accepted is not None and _signer(environ) not in self._accepted:
            return _reply(start_response, 403, {"message": "The security token is invalid"})
        method = environ["REQUEST_METHOD"]
        path = str(environ.get("PATH_INFO", "")).rstrip("/")
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(size) or b"{}") if size else {}
        query = parse_qs(str(environ.get("QUERY_STRING", "")))
        try:
            status, out = self._route(method, path, body, query)
        except KeyError as exc:
            status, out = 404, {"message": f"policy {exc.args[0]} not found"}
        return _reply(start_response, status, out)

    def _route(
        self, method: str, path: str, body: dict[str, Any], query: dict[str, list[str]]
    ) -> tuple[int, dict[str, Any]]:
        if path == RUN_PATH and method == "POST" and self.run is not None:
            return 200, {"SnapshotIds": self.run(datetime.fromisoformat(body["now"]))}
        if method in ("POST", "PATCH") and (refusal := self._young_role(body)):
            return 400, {"message": refusal}
        if path == "/policies" and method == "POST":
            return 200, {"PolicyId": self._create(body)}
        if path == "/policies" and method == "GET":
            return 200, {"Policies": self._list(query)}
        policy_id = path.removeprefix("/policies/")
        with self._lock:
            if method == "GET":
                return 200, {"Policy": self.policies[policy_id]}
            if method == "DELETE":
                del self.policies[policy_id]
                return 200, {}
            if method == "PATCH":
                policy = self.policies[policy_id]
                for key in ("ExecutionRoleArn", "State", "Description", "PolicyDetails"):
                    if key in body:
                        policy[key] = body[key]
                policy["DateModified"] = datetime.now(UTC).timestamp()
                return 200, {}
        return 400, {"message": f"unsupported {method} {path}"}

    def _young_role(self, body: dict[str, Any]) -> str | None:
        arn = body.get("ExecutionRoleArn")
        if not self.young_role_seconds or not isinstance(arn, str):
            return None
        age = self.role_age(arn)
        if age is None or age >= self.young_role_seconds:
            return None
        return f"Provided role {arn} cannot be assumed by principal 'dlm.amazonaws.com'."

    def _create(self, body: dict[str, Any]) -> str:
        policy_id = f"policy-{secrets.token_hex(9)}"
        now = datetime.now(UTC).timestamp()
        with self._lock:
            self.policies[policy_id] = {
                "PolicyId": policy_id,
                "Description": body.get("Description", ""),
                "State": body.get("State", "ENABLED"),
                "ExecutionRoleArn": body["ExecutionRoleArn"],
                "PolicyDetails": body["PolicyDetails"],
                "Tags": body.get("Tags", {}),
                "DateCreated": now,
                "DateModified": now,
            }
        return policy_id

    def _list(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        wanted = [t.split(",") for t in query.get("targetTags", [])]
        targets = {t for group in wanted for t in group}
        states = set(query.get("state", []))
        out = []
        with self._lock:
            for p in self.policies.values():
                tags = {
                    f"{t['Key']}={t['Value']}" for t in p["PolicyDetails"].get("TargetTags", [])
                }
                if (targets and not targets & tags) or (states and p["State"] not in states):
                    continue
                out.append({k: p[k] for k in ("PolicyId", "Description", "State", "Tags")})
        return out


def moto_role_age(arn: str) -> float | None:
    """Seconds since moto's IAM (in this process) made the role; None if it has none."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends

    try:
        role = iam_backends[DEFAULT_ACCOUNT_ID]["aws"].get_role_by_arn(arn)
    except Exception:  # moto's IAMNotFoundException, or a malformed ARN
        return None
    made = role.create_date
    if made.tzinfo is None:
        made = made.replace(tzinfo=UTC)
    return (datetime.now(UTC) - made).total_seconds()


def _reply(start_response: Callable[..., Any], status: int, body: dict[str, Any]) -> list[bytes]:
    reasons = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found"}
    data = json.dumps(body).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    if status >= 400:
        code = {403: "AccessDeniedException", 404: "ResourceNotFoundException"}.get(
            status, "InvalidRequestException"
        )
        headers.append(("x-amzn-ErrorType", code))
    start_response(f"{status} {reasons[status]}", headers)
    return [data]


class DlmEngine:
    """What AWS runs behind DLM: due snapshots taken, old ones pruned, at a given time."""

    def __init__(self, dlm: Any, ec2: Any, volumes_dir: Path | None = None) -> None:
        self.dlm = dlm
        self.ec2 = ec2
        # The fleet emulator's volumes (directories named by volume id): a snapshot
        # copies one to <volumes_dir>/../snapshots/<snapshot id>, which the agent reads
        # back into a volume made from it (worker/home_space.py).
        self.volumes_dir = volumes_dir
        self._last: dict[tuple[str, str], datetime] = {}
        self._lock = threading.Lock()

    def run(self, now: datetime) -> list[str]:
        """Every snapshot due by `now` since the last run (or the policy's creation)."""
        taken: list[str] = []
        with self._lock:
            for summary in call(self.dlm, "get_lifecycle_policies", State="ENABLED")["Policies"]:
                policy = call(self.dlm, "get_lifecycle_policy", PolicyId=summary["PolicyId"])
                taken += self._run_policy(policy["Policy"], now)
        return taken

    def _run_policy(self, policy: dict[str, Any], now: datetime) -> list[str]:
        details = policy["PolicyDetails"]
        created = policy["DateCreated"]
        if not isinstance(created, datetime):
            created = datetime.fromtimestamp(float(created), UTC)
        taken: list[str] = []
        for schedule in details.get("Schedules", []):
            key = (policy["PolicyId"], schedule["Name"])
            since = self._last.get(key, created)
            due = next(times_after(schedule["CreateRule"]["CronExpression"], since))
            if due > now:
                continue
            self._last[key] = now
            for volume in self._targets(details.get("TargetTags", [])):
                taken.append(self._snapshot(policy["PolicyId"], schedule, volume, due))
                self._prune(policy["PolicyId"], schedule, volume["VolumeId"])
        return taken

    def _targets(self, target_tags: list[dict[str, str]]) -> list[dict[str, Any]]:
        volumes: dict[str, dict[str, Any]] = {}
        for tag in target_tags:
            reply = call(
                self.ec2,
                "describe_volumes",
                Filters=[{"Name": f"tag:{tag['Key']}", "Values": [tag["Value"]]}],
            )
            for v in reply["Volumes"]:
                if v["State"] in {"available", "in-use"}:
                    volumes[v["VolumeId"]] = v
        return list(volumes.values())

    def _snapshot(
        self, policy_id: str, schedule: dict[str, Any], volume: dict[str, Any], due: datetime
    ) -> str:
        tags = [t for t in volume.get("Tags", []) if not t["Key"].startswith("aws:")]
        if not schedule.get("CopyTags"):
            tags = []
        tags += schedule.get("TagsToAdd", [])
        tags += [
            {"Key": POLICY_TAG, "Value": policy_id},
            {"Key": SCHEDULE_TAG, "Value": schedule["Name"]},
        ]
        reply = call(
            self.ec2,
            "create_snapshot",
            VolumeId=volume["VolumeId"],
            Description=f"Created for policy: {policy_id} schedule: {schedule['Name']} "
            f"({due.isoformat()})",
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags}],
        )
        snapshot_id = str(reply["SnapshotId"])
        if self.volumes_dir is not None:
            source = self.volumes_dir / volume["VolumeId"]
            if source.is_dir():
                target = self.volumes_dir.parent / "snapshots" / snapshot_id
                shutil.copytree(source, target, symlinks=True)
        return snapshot_id

    def _prune(self, policy_id: str, schedule: dict[str, Any], volume_id: str) -> None:
        keep = int(schedule.get("RetainRule", {}).get("Count", 0))
        if keep < 1:
            return
        reply = call(
            self.ec2,
            "describe_snapshots",
            OwnerIds=["self"],
            Filters=[
                {"Name": "volume-id", "Values": [volume_id]},
                {"Name": f"tag:{POLICY_TAG}", "Values": [policy_id]},
                {"Name": f"tag:{SCHEDULE_TAG}", "Values": [schedule["Name"]]},
            ],
        )
        # Oldest first by the time each was due (in its description): taken at an
        # injected clock, several can share a StartTime second.
        mine = sorted(reply["Snapshots"], key=lambda s: (_due(s), s["StartTime"]))
        for old in mine[: max(0, len(mine) - keep)]:
            call(self.ec2, "delete_snapshot", SnapshotId=old["SnapshotId"])


def _due(snapshot: dict[str, Any]) -> str:
    """The due time `_snapshot` wrote at the end of the description, as ISO text."""
    return str(snapshot.get("Description", "")).rpartition("(")[2].rstrip(")")
