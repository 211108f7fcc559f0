"""moto's EC2 server on loopback, in this process, as strict as moto allows.

Real instances print their SSH host keys to the EC2 console (cloud-init);
moto prints a fixed sample. The fleet emulator plays cloud-init, so this
module lets it set each instance's console text, served by GetConsoleOutput.
"""

from __future__ import annotations

import logging
import os
import threading

from . import filters
from .ports import free_port

VALIDATION_FLAGS = {
    "MOTO_ENABLE_AMI_VALIDATION": "true",
    "MOTO_ENABLE_KEYPAIR_VALIDATION": "true",
    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
}

# Placeholder credentials: moto accepts any, and boto3 insists on some.
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


class LocalEc2:
    """A moto server thread; `url` is its endpoint."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._server: object | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        os.environ.update(VALIDATION_FLAGS)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        _patch_console_output()
        _patch_instance_start()
        _patch_stop_instances()
        filters.install()
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        server.start()
        self._server = server
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None
