"""moto's EC2 server on loopback, in this process, as strict as moto allows.

Real instances print their SSH host keys to the EC2 console (cloud-init);
moto prints a fixed sample. The fleet emulator plays cloud-init, so this
module lets it set each instance's console text, served by GetConsoleOutput.

The endpoint requires credentials, as AWS does: any local user can reach a
loopback port. moto checks SigV4 signatures and IAM policies once its
INITIAL_NO_AUTH_ACTION_COUNT is reached (0 here); the credentials are keys of
IAM users made in moto's own backend, with secrets from `secrets`, new for
every server: one for the demo (and whoever it exports them to) and one that
emulated instances with an instance profile get, as IMDS would hand them out.
moto's control API (/moto-api/: reset, seed, turning authentication off) is
refused. Key pairs created or imported with these credentials are recorded, so
the fleet emulator trusts only those (`trusts_key`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable
from typing import Any

from . import filters
from .dlm import RUN_PATH, DlmApi, DlmEngine, is_dlm_request
from .ports import free_port

VALIDATION_FLAGS = {
    "MOTO_ENABLE_AMI_VALIDATION": "true",
    "MOTO_ENABLE_KEYPAIR_VALIDATION": "true",
    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
}

LOAD_MANAGED_POLICIES = "MOTO_IAM_LOAD_MANAGED_POLICIES"

# Placeholder credentials for an outside endpoint (--aws-endpoint), which may accept
# any; our own server makes real ones (LocalEc2.credentials).
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local-demo",
    "AWS_SECRET_ACCESS_KEY": "local-demo",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# What the emulator hands an instance that has an instance profile.
LOCAL_CREDENTIALS_FOR_ROLE = {
    "AWS_ACCESS_KEY_ID": "local-instance-role",
    "AWS_SECRET_ACCESS_KEY": "local-instance-role",
}

_consoles: dict[str, str] = {}
_lock = threading.Lock()
_patched = False


_boots: dict[str, int] = {}


def boot_count(instance_id: str) -> int:
    """How many times EC2 has started this instance. moto's stop and start are
    instant, so the emulator could miss a stop-start between two looks; a
    changed count tells it the machine went down in between."""
    with _lock:
        return _boots.get(instance_id, 0)


def _patch_instance_start() -> None:
    from moto.ec2.models.instances import Instance

    original = Instance.start
    if getattr(original, "_cloudjhub", False):
        return

    def start(self: Instance) -> object:
        with _lock:
            _boots[self.id] = _boots.get(self.id, 0) + 1
        return original(self)

    start._cloudjhub = True  # type: ignore[attr-defined]
    Instance.start = start  # type: ignore[method-assign,assignment]


def set_console_output(instance_id: str, text: str) -> None:
    with _lock:
        _consoles[instance_id] = text


def _patch_bodiless_signatures() -> None:
    """moto checks the SigV4 signature of a GET or DELETE (EFS's DescribeFileSystems,
    DeleteFileSystem) as if its query or headers were its body, so every one fails
    with SignatureDoesNotMatch. SigV4 signs a request without a body with the hash of
    the empty payload (AWS Signature Version 4, "Create a canonical request"); the
    local cloud checks it so, and the signature stays checked."""
    from moto.iam.access_control import IAMRequestBase

    original = IAMRequestBase._create_aws_request
    if getattr(original, "_cloudjhub", False):
        return

    def create(self: IAMRequestBase) -> Any:
        request = original(self)
        if self._method in ("GET", "HEAD", "DELETE") and not self._body:
            request.data = b""
        return request

    create._cloudjhub = True  # type: ignore[attr-defined]
    IAMRequestBase._create_aws_request = create  # type: ignore[method-assign]


def _patch_console_output() -> None:
    global _patched
    if _patched:
        return
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.ec2.responses import general
    from moto.ec2.utils import Base64EncodedString

    def get_console_output(self: general.General) -> ActionResult:
        instance = self.ec2_backend.get_instance(self._get_param("InstanceId"))
        with _lock:
            text = _consoles.get(instance.id, general.SAMPLE_CONSOLE_OUTPUT)
        return ActionResult(
            {
                "InstanceId": instance.id,
                "Timestamp": utcnow(),
                "Output": Base64EncodedString.from_raw_string(text),
            }
        )

    general.General.get_console_output = get_console_output  # type: ignore[method-assign]
    _patched = True


_hibernated: dict[str, bool] = {}


def stopped_with_hibernate(instance_id: str) -> bool:
    """Whether the last StopInstances of this instance asked for hibernation.

    moto accepts and ignores the Hibernate flag; the emulator asks here to decide
    between ending an instance's processes and suspending them.
    """
    with _lock:
        return _hibernated.get(instance_id, False)


def _patch_stop_instances() -> None:
    from moto.ec2.responses.instances import InstanceResponse

    original = InstanceResponse.stop_instances
    if getattr(original, "_cloudjhub", False):
        return

    def stop_instances(self: InstanceResponse) -> object:
        hibernate = self._get_bool_param("Hibernate", False)
        with _lock:
            for instance_id in self._get_param("InstanceIds", []):
                _hibernated[instance_id] = hibernate
        return original(self)

    stop_instances._cloudjhub = True  # type: ignore[attr-defined]
    InstanceResponse.stop_instances = stop_instances  # type: ignore[method-assign,assignment]


# RunInstances requests being answered. moto lists a launch's instances, `running`,
# before it has tagged them and given them their instance profile (that comes after,
# in the request's handler): a reader in this process must not take them as made.
_launches = [0]
_launch_lock = threading.Lock()


def launch_in_flight() -> bool:
    with _launch_lock:
        return _launches[0] > 0


def patch_run_instances() -> None:
    """RunInstances launches MaxCount, as AWS does when it has the capacity ("AWS
    launches the largest possible number of instances above MinCount", EC2 API
    RunInstances); moto launches MinCount. A like-AWS capacity fault still fails the
    whole call, as AWS does below MinCount."""
    from moto.ec2.responses.instances import InstanceResponse

    original = InstanceResponse.run_instances
    if getattr(original, "_cloudjhub", False):
        return

    def run_instances(self: InstanceResponse) -> object:
        read = self._get_param

        def param(name: str, if_none: Any = None) -> Any:
            if name == "MinCount":
                return read("MaxCount", None) or read("MinCount", if_none)
            return read(name, if_none)

        self._get_param = param  # type: ignore[method-assign,assignment]
        with _launch_lock:
            _launches[0] += 1
        try:
            return original(self)
        finally:
            del self._get_param
            with _launch_lock:
                _launches[0] -= 1

    run_instances._cloudjhub = True  # type: ignore[attr-defined]
    InstanceResponse.run_instances = run_instances  # type: ignore[method-assign,assignment]


ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
# Key pair name -> public key material, as created or imported with our credentials.
_trusted_keys: dict[str, str] = {}
_issued_key_ids: set[str] = set()


def trusts_key(name: str, public_key: str) -> bool:
    """Whether this key pair was made through the endpoint with credentials it issued,
    and still has the public key it was made with."""
    with _lock:
        recorded = _trusted_keys.get(name)
    return recorded is not None and recorded.split()[:2] == public_key.split()[:2]


def _signer(headers: Any) -> str:
    auth = str(headers.get("Authorization", ""))
    return auth.partition("Credential=")[2].partition("/")[0]


def _patch_key_pairs() -> None:
    from moto.ec2.responses.key_pairs import KeyPairs

    if getattr(KeyPairs.import_key_pair, "_cloudjhub", False):
        return

    def recording(original: Callable[[KeyPairs], Any]) -> Callable[[KeyPairs], Any]:
        def handler(self: KeyPairs) -> Any:
            result = original(self)
            name = self._get_param("KeyName")
            if _signer(self.headers) in _issued_key_ids:
                pair = self.ec2_backend.describe_key_pairs([name])[0]
                with _lock:
                    _trusted_keys[name] = pair.public_key
            return result

        handler._cloudjhub = True  # type: ignore[attr-defined]
        return handler

    KeyPairs.import_key_pair = recording(KeyPairs.import_key_pair)  # type: ignore[method-assign,assignment]
    KeyPairs.create_key_pair = recording(KeyPairs.create_key_pair)  # type: ignore[method-assign,assignment]


def _issue_credentials(user_name: str) -> dict[str, str]:
    """A key of a new IAM user in moto's backend that may do anything; its secret from
    `secrets` (moto's own generator is not meant for secrets and can be seeded)."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends

    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam.create_user("us-east-1", user_name)
    iam.put_user_policy(user_name, "local-cloud", ALLOW_ALL)
    key = iam.create_access_key(user_name)
    key.secret_access_key = secrets.token_urlsafe(30)
    with _lock:
        _issued_key_ids.add(key.access_key_id)
    return {"AWS_ACCESS_KEY_ID": key.access_key_id, "AWS_SECRET_ACCESS_KEY": key.secret_access_key}


def _refuse_control_api(
    app: Callable[..., Iterable[bytes]], dlm: DlmApi
) -> Callable[..., Iterable[bytes]]:
    """moto's /moto-api/ resets state and can turn authentication off: not for anyone.
    Requests signed for DLM, which moto lacks, go to the local cloud's own (local/dlm.py)."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if str(environ.get("PATH_INFO", "")).startswith("/moto-api"):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"moto's control API is disabled in the local cloud\n"]
        if is_dlm_request(environ) or environ.get("PATH_INFO") == RUN_PATH:
            return dlm(environ, start_response)
        return app(environ, start_response)

    return guarded


class LocalEc2:
    """A moto server thread; `url` is its endpoint, `credentials` what it accepts."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._server: object | None = None
        self.credentials: dict[str, str] = {}
        self.role_credentials: dict[str, str] = {}
        self._no_auth_count: float | None = None
        self.dlm = DlmApi(_issued_key_ids)
        self.dlm_engine: DlmEngine | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        os.environ.update(VALIDATION_FLAGS)
        # Every AWS account has AWS's managed policies; moto loads them only when asked.
        # The launcher attaches one to DLM's default role (aws/dlm_role.py).
        os.environ[LOAD_MANAGED_POLICIES] = "true"
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        _patch_console_output()
        _patch_bodiless_signatures()
        _patch_instance_start()
        _patch_stop_instances()
        _patch_key_pairs()
        patch_run_instances()
        filters.install()
        from moto import settings
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        self.credentials = _issue_credentials(f"local-demo-{secrets.token_hex(4)}")
        self.role_credentials = _issue_credentials(f"local-instance-role-{secrets.token_hex(4)}")
        self._no_auth_count = settings.INITIAL_NO_AUTH_ACTION_COUNT
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        host, port, dlm_api = self.host, self.port, self.dlm

        class Server(ThreadedMotoServer):
            def _server_entry(self) -> None:
                app = _refuse_control_api(DomainDispatcherApplication(create_backend_app), dlm_api)
                self._server = make_server(
                    host, port, app, True, request_handler=MotoRequestHandler
                )
                self._server_ready_event.set()
                self._server.serve_forever()

        server = Server(ip_address=host, port=port, verbose=False)
        server.start()
        self._server = server
        self._start_dlm_engine()
        return self.url

    def _start_dlm_engine(self) -> None:
        """DLM's engine, run through the API at the time a caller gives (the demo's
        clock, or a test's: POST RUN_PATH with {"now": ISO time}, signed by the
        X-Cloudjhub-Key header carrying the demo's secret key)."""
        from ..aws.client import boto_client

        env = {
            "aws_access_key_id": self.credentials["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": self.credentials["AWS_SECRET_ACCESS_KEY"],
        }
        clients = [boto_client(s, "us-east-1", self.url, **env) for s in ("dlm", "ec2")]
        self.dlm_engine = DlmEngine(*clients)
        self.dlm.run = self.dlm_engine.run
        self.dlm.run_key = self.credentials["AWS_SECRET_ACCESS_KEY"]

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None
        if self._no_auth_count is not None:
            from moto import settings

            settings.INITIAL_NO_AUTH_ACTION_COUNT = self._no_auth_count
            self._no_auth_count = None


# StateReason.Code AWS gives a spot instance it took back (EC2 API reference,
# StateReason: "Server.SpotInstanceTermination: The instance was terminated because
# the number of Spot requests with a maximum price equal to or higher than the Spot
# price exceeded available capacity or because of an increase in the Spot price").
SPOT_TERMINATION = "Server.SpotInstanceTermination"


def interrupt_spot(instance_id: str, region: str) -> None:
    """Reclaim a running spot instance as AWS does (EC2 User Guide, "Spot Instance
    interruptions": a one-time request's instance is terminated; volumes not marked
    DeleteOnTermination survive it). moto has no such event. The two-minute notice
    AWS first posts in the instance metadata is not played. ValueError if there is
    no such running spot instance in this process's moto."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.exceptions import InvalidInstanceIdError
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    try:
        instance = backend.get_instance(instance_id)
    except InvalidInstanceIdError:
        raise ValueError(f"no instance {instance_id} in {region}") from None
    if instance.lifecycle != "spot" or instance.state != "running":
        raise ValueError(f"{instance_id} is not a running spot instance")
    backend.terminate_instances([instance_id])
    instance.state_reason = type(instance.state_reason)(
        f"{SPOT_TERMINATION}: Spot instance termination", SPOT_TERMINATION
    )
    instance._reason = "Server.SpotInstanceTermination"
