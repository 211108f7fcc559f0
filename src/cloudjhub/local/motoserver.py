"""moto's EC2 server on loopback, in this process, as strict as moto allows.

Real instances print their SSH host keys to the EC2 console (cloud-init);
moto prints a fixed sample. The fleet emulator plays cloud-init, so this
module lets it set each instance's console text, served by GetConsoleOutput.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

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

_consoles: dict[str, str] = {}
_lock = threading.Lock()
_patched = False


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


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalEc2:
    """A moto server thread; `url` is its endpoint."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or _free_port(host)
        self._server: object | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        os.environ.update(VALIDATION_FLAGS)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        _patch_console_output()
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        server.start()
        self._server = server
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None
