"""The one door to an instance over SSH (paramiko).

Host keys are never trusted blindly: the caller passes the keys it pinned
from a source it can justify (the instance's console output, or a
known_hosts file), and any other key is refused.
"""

from __future__ import annotations

import base64
import shlex
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import paramiko

CONSOLE_BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
CONSOLE_END = "-----END SSH HOST KEY KEYS-----"
# What is kept of each of a command's stdout and stderr.
OUTPUT_CAP = 64 * 1024
READ_CHUNK = 32 * 1024


class RemoteError(Exception):
    """An SSH operation failed; the message is fit to show a user."""


class HostKeyError(RemoteError):
    """The instance presented a host key we did not pin."""


class Unreachable(RemoteError):
    """Nothing answered SSH at the instance's address."""


@dataclass(frozen=True)
class CommandResult:
    status: int
    stdout: str
    stderr: str


def parse_console_host_keys(console: str) -> list[str]:
    """Host public keys that cloud-init printed to the EC2 console, as 'type base64' lines."""
    keys: list[str] = []
    inside = False
    for raw in console.splitlines():
        line = raw.strip()
        if line == CONSOLE_BEGIN:
            inside, keys = True, []
        elif line == CONSOLE_END:
            inside = False
        elif inside and line:
            parts = line.split()
            if len(parts) >= 2 and _valid_key(parts[0], parts[1]):
                keys.append(f"{parts[0]} {parts[1]}")
    return keys


def read_known_hosts(path: str | Path, host: str, port: int) -> list[str]:
    """Keys for host:port in an OpenSSH known_hosts file (hashed entries included);
    none while the file does not exist yet."""
    if not Path(path).is_file():
        return []
    known = paramiko.HostKeys(str(path))
    name = host if port == 22 else f"[{host}]:{port}"
    entry = known.lookup(name)
    if entry is None:
        return []
    return [f"{kind} {key.get_base64()}" for kind, key in entry.items()]


def _valid_key(kind: str, data: str) -> bool:
    try:
        paramiko.PKey.from_type_string(kind, base64.b64decode(data, validate=True))
    except Exception:
        return False
    return True


def tcp_open(host: str, port: int, timeout: float = 3.0) -> bool:
    """Whether something accepts TCP connections: a cheap liveness probe."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Target:
    """Where and as whom to connect, and the host keys we pinned for it."""

    host: str
    port: int
    username: str
    key_file: str
    host_keys: tuple[str, ...]
    connect_timeout: float = 10.0


def _connect(target: Target) -> paramiko.SSHClient:
    host, port = target.host, target.port
    if not target.host_keys:
        raise HostKeyError(f"no pinned host key for {host}; refusing to connect")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    name = host if port == 22 else f"[{host}]:{port}"
    for line in target.host_keys:
        kind, data = line.split()[:2]
        client.get_host_keys().add(
            name, kind, paramiko.PKey.from_type_string(kind, base64.b64decode(data))
        )
    try:
        client.connect(
            host,
            port=port,
            username=target.username,
            key_filename=target.key_file,
            look_for_keys=False,
            allow_agent=False,
            timeout=target.connect_timeout,
            banner_timeout=target.connect_timeout,
            auth_timeout=target.connect_timeout,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyError(
            f"SSH host key of {host} does not match the pinned key; refusing to connect"
        ) from exc
    except paramiko.AuthenticationException as exc:
        transport = client.get_transport()
        broken = transport is None or not transport.is_active()
        client.close()
        if broken:
            # The connection died while we logged in (a machine going down, an sshd
            # over its MaxStartups): that is not a refusal, and a retry may succeed.
            raise Unreachable(f"SSH to {host}:{port} broke during login: {exc}") from exc
        raise RemoteError(f"SSH login to {target.username}@{host} was refused: {exc}") from exc
    except paramiko.SSHException as exc:
        client.close()
        if "not found in known_hosts" in str(exc):
            raise HostKeyError(f"{host} offered a host key we did not pin; refusing") from exc
        raise Unreachable(f"SSH to {host}:{port} failed: {exc}") from exc
    except (OSError, EOFError) as exc:  # paramiko raises EOFError when the peer hangs up
        client.close()
        raise Unreachable(f"cannot reach {host}:{port} over SSH: {exc}") from exc
    return client


def run(
    host: str,
    port: int,
    username: str,
    key_file: str,
    host_keys: list[str],
    argv: list[str],
    stdin: bytes = b"",
    timeout: float = 120.0,
    connect_timeout: float = 10.0,
) -> CommandResult:
    """Run argv on the instance, feeding stdin over the channel (for secrets)."""
    target = Target(host, port, username, key_file, tuple(host_keys), connect_timeout)
    return run_on(target, argv, stdin, timeout)


def _drain(channel: paramiko.Channel, recv: Callable[[int], bytes], deadline: float) -> str:
    """Read one of a channel's streams to its end, keeping at most OUTPUT_CAP bytes.

    The instance is not trusted to be brief: what a user's own server writes can
    reach us (a failed spawn sends its log's tail), and a hub keeps many spawns'
    output in memory at once. Reading goes on past the cap, so the command is never
    stalled on a full SSH window, but only until the deadline: each read returns
    what has arrived, and waits no longer than the time that is left."""
    kept = bytearray()
    total = 0
    late = "the command's output did not end before its timeout"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(late)
        channel.settimeout(left)
        try:
            chunk = recv(READ_CHUNK)
        except TimeoutError as exc:  # socket.timeout: nothing came before the deadline
            raise TimeoutError(late) from exc
        if not chunk:
            break
        total += len(chunk)
        kept += chunk[: max(0, OUTPUT_CAP - len(kept))]
    text = kept.decode(errors="replace")
    if total > OUTPUT_CAP:
        text += f"\n[cloudjhub: output cut at {OUTPUT_CAP // 1024} KB of {total} bytes]"
    return text


def run_on(
    target: Target, argv: list[str], stdin: bytes = b"", timeout: float = 120.0
) -> CommandResult:
    """Run argv; each of stdout and stderr is kept up to OUTPUT_CAP bytes, and the
    whole run is bounded by `timeout`."""
    client = _connect(target)
    deadline = time.monotonic() + timeout
    # stderr is drained alongside stdout: unread stderr filling the SSH window
    # would stall stdout until the timeout.
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        chan_in, chan_out, _ = client.exec_command(shlex.join(argv), timeout=timeout)
        channel = chan_out.channel
        if stdin:
            chan_in.write(stdin)
        channel.shutdown_write()
        err_text = pool.submit(_drain, channel, channel.recv_stderr, deadline)
        try:
            out = _drain(channel, channel.recv, deadline)
            err = err_text.result()
        finally:
            if not err_text.done():  # stdout failed: end the stderr reader too
                channel.close()
        status = channel.recv_exit_status()
        if status == -1:
            raise Unreachable(f"SSH session to {target.host} closed without an exit status")
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise Unreachable(f"SSH session to {target.host} broke: {exc}") from exc
    finally:
        client.close()
        pool.shutdown(wait=True)
    return CommandResult(status, out, err)


def stream_on(
    target: Target, argv: list[str], write: Callable[[bytes], None], err: Callable[[bytes], None]
) -> int:
    """Run argv and hand its output to `write` (stderr to `err`) as it comes, until it
    exits; returns its status. For a command that runs until told (a log followed):
    its stdin stays open, and ends when we go (Ctrl-C here closes the connection)."""
    client = _connect(target)
    try:
        channel = client.get_transport().open_session()  # type: ignore[union-attr]
        channel.exec_command(shlex.join(argv))
        channel.settimeout(1.0)
        while True:
            while channel.recv_stderr_ready():
                err(channel.recv_stderr(READ_CHUNK))
            try:
                chunk = channel.recv(READ_CHUNK)
            except TimeoutError:
                continue
            if not chunk:
                break
            write(chunk)
        while channel.recv_stderr_ready():
            err(channel.recv_stderr(READ_CHUNK))
        return channel.recv_exit_status()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise Unreachable(f"SSH session to {target.host} broke: {exc}") from exc
    finally:
        client.close()


def put_file(target: Target, local: Path, remote_path: str, mode: int = 0o644) -> None:
    """Copy a file to the instance over SFTP."""
    client = _connect(target)
    try:
        with client.open_sftp() as sftp:
            sftp.put(str(local), remote_path)
            sftp.chmod(remote_path, mode)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise RemoteError(f"copying {local.name} to {target.host} failed: {exc}") from exc
    finally:
        client.close()
