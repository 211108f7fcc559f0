"""``cloudjhub-worker``: start, stop and inspect a user's Jupyter server on an instance.

The hub runs this command over SSH on the user's EC2 instance. It also runs in the local
emulator, where an "instance" is a directory (the instance root) and everything runs as
the invoking user. This module must stay self-contained (stdlib + click only) because it
is installed on instances without the rest of cloudjhub.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn

import click

from . import watchdog

USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
VOLUME_ID_RE = re.compile(r"^vol-[0-9A-Za-z]{1,64}$")
JUPYTER_CONFIG_DIR = Path(__file__).resolve().parent / "jupyter_config"
# Accounts below this uid belong to the system; users get their own above it.
FIRST_USER_UID = 1000
RESERVED_USERS = frozenset({"root", "ubuntu", "admin", "ec2-user", "debian", "nobody"})
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NITRO_EBS_PREFIX = "nvme-Amazon_Elastic_Block_Store_"
DEFAULT_START_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 10.0
DEVICE_WAIT_SECONDS = 60.0
POLL_SECONDS = 0.1
FAILURE_TAIL_LINES = 40
# The per-spawn secrets in a start request's env; everything else describes the server.
TOKEN_VARS = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")
# How the watchdog receives the server's token: inherited, never on disk or argv.
WATCH_TOKEN_VAR = "CLOUDJHUB_WATCH_TOKEN"  # noqa: S105 - a variable name
PREFIX_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
TAIL_BLOCK = 8192

EXIT_FAILURE = 1
EXIT_BAD_REQUEST = 2
EXIT_SERVER_EXITED = 3
EXIT_SERVER_TIMEOUT = 4


class AgentError(Exception):
    """A failure reported as a message on stderr and a specific exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def bad_request(message: str) -> NoReturn:
    """Reject the request; the hub maps exit status 2 to a configuration error."""
    raise AgentError(message, EXIT_BAD_REQUEST)


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Where the agent keeps homes, logs and state under an instance root."""

    root: Path
    volumes_dir: Path

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Layout:
        """Read the root from the environment so the emulator can point it at a directory."""
        env = os.environ if environ is None else environ
        root = Path(os.path.abspath(env.get("CLOUDJHUB_WORKER_ROOT") or "/"))
        volumes = env.get("CLOUDJHUB_VOLUMES_DIR") or str(root.parent / "volumes")
        return cls(root=root, volumes_dir=Path(os.path.abspath(volumes)))

    @property
    def emulated(self) -> bool:
        """Any root other than / means a local emulated instance: no accounts, no mounts."""
        return self.root != Path("/")

    @property
    def run_dir(self) -> Path:
        return self.root / "run" / "cloudjhub"

    @property
    def log_dir(self) -> Path:
        return self.root / "var" / "log" / "cloudjhub"

    def state_file(self, user: str) -> Path:
        return self.run_dir / f"{user}.json"

    def watch_log_file(self, user: str) -> Path:
        return self.log_dir / f"{user}.watch.log"

    @property
    def shutdown_request(self) -> Path:
        """Emulated machines cannot run `shutdown`; the emulator acts on this file."""
        return self.root / "run" / "shutdown"

    def log_file(self, user: str) -> Path:
        return self.log_dir / f"{user}.log"

    def emulated_home(self, user: str) -> Path:
        return self.root / "home" / user


# --------------------------------------------------------------------------- request


@dataclass(frozen=True)
class HomeVolume:
    """The EBS volume holding the user's home, as attached by the hub."""

    volume_id: str
    device: str | None


@dataclass(frozen=True)
class StartRequest:
    """A validated ``start`` request."""

    user: str
    ip: str
    port: int
    env: dict[str, str]
    cmd: list[str]
    home_volume: HomeVolume | None
    timeout: float
    # Self-stop after idle_timeout + self_stop_grace seconds; idle_timeout 0 disables it.
    idle_timeout: int = 0
    self_stop_grace: int = 0
    # Keep a still-running server (the instance was hibernated) instead of replacing it.
    resume: bool = False


def check_user(user: object) -> str:
    """User names become account names and file names, so keep them strictly POSIX-ish."""
    if not isinstance(user, str) or not USER_RE.match(user):
        bad_request(f"invalid user {user!r}: must match {USER_RE.pattern}")
    return user


def read_request(stream: IO[bytes]) -> dict[str, Any]:
    """Read exactly one JSON object, without needing EOF (the SSH client may keep stdin open)."""
    decoder = json.JSONDecoder()
    data = b""
    while True:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        data += chunk
        text = _decode_prefix(data)
        if text is not None and text.strip():
            try:
                obj, _ = decoder.raw_decode(text.lstrip())
            except json.JSONDecodeError:
                obj = None
            else:
                if not isinstance(obj, dict):
                    bad_request("request must be a JSON object")
                return obj
        if not chunk:
            bad_request("expected one JSON object on stdin" if not data.strip() else "bad JSON")


def _decode_prefix(data: bytes) -> str | None:
    """Decode what arrived so far, tolerating a multi-byte character split across reads."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3:
            return None
        bad_request("request is not valid UTF-8")


def parse_request(raw: dict[str, Any]) -> StartRequest:
    """Validate every field up front so a bad request never leaves half-started state."""
    user = check_user(raw.get("user"))
    ip = _parse_ip(raw.get("ip"))
    port = raw.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        bad_request(f"invalid port {port!r}: must be an integer 1..65535")
    return StartRequest(
        user=user,
        ip=ip,
        port=port,
        env=_parse_env(raw.get("env", {})),
        cmd=_parse_cmd(raw.get("cmd")),
        home_volume=_parse_home_volume(raw.get("home_volume")),
        timeout=_parse_timeout(raw.get("timeout")),
        idle_timeout=_parse_seconds("idle_timeout", raw.get("idle_timeout")),
        self_stop_grace=_parse_seconds("self_stop_grace", raw.get("self_stop_grace")),
        resume=_parse_flag("resume", raw.get("resume")),
    )


def _parse_ip(value: object) -> str:
    try:
        ipaddress.ip_address(value)  # type: ignore[arg-type]
    except ValueError:
        bad_request(f"invalid ip {value!r}: not an IP address")
    assert isinstance(value, str)
    return value


def _parse_env(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        bad_request("invalid env: must be an object of string to string")
    for key, val in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            bad_request(f"invalid env: bad variable name {key!r}")
        if not isinstance(val, str) or "\0" in val:
            # Never echo the value: env carries secrets such as the API token.
            bad_request(f"invalid env: value of {key} must be a string")
    return dict(value)


def _parse_cmd(value: object) -> list[str]:
    if not isinstance(value, list) or not value:
        bad_request("invalid cmd: must be a non-empty list of strings")
    if not all(isinstance(arg, str) and "\0" not in arg for arg in value) or not value[0]:
        bad_request("invalid cmd: must be a non-empty list of strings")
    return list(value)


def _parse_home_volume(value: object) -> HomeVolume | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        bad_request("invalid home_volume: must be null or an object")
    volume_id = value.get("volume_id")
    if not isinstance(volume_id, str) or not VOLUME_ID_RE.match(volume_id):
        bad_request(f"invalid home_volume.volume_id {volume_id!r}")
    device = value.get("device")
    if device is not None and (not isinstance(device, str) or not device.startswith("/dev/")):
        bad_request(f"invalid home_volume.device {device!r}: must be a /dev/ path")
    return HomeVolume(volume_id=volume_id, device=device)


def _parse_timeout(value: object) -> float:
    if value is None:
        return DEFAULT_START_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        bad_request(f"invalid timeout {value!r}: must be a positive number of seconds")
    return float(value)


def _parse_seconds(name: str, value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        bad_request(f"invalid {name} {value!r}: must be a whole number of seconds, 0 or more")
    return value


def _parse_flag(name: str, value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        bad_request(f"invalid {name} {value!r}: must be true or false")
    return value


def resolve_command(cmd: Sequence[str]) -> list[str]:
    """Prefer our own venv's scripts so the server matches the agent's installation."""
    name = cmd[0]
    if os.path.isabs(name):
        found = name if os.access(name, os.X_OK) and os.path.isfile(name) else None
    else:
        local = os.path.join(agent_bin_dir(), name)
        found = local if os.sep not in name and os.access(local, os.X_OK) else None
        found = found or shutil.which(name)
    if not found:
        bad_request(f"invalid cmd: command not found: {name}")
    return [found, *cmd[1:]]


def agent_bin_dir() -> str:
    """The agent's own bin dir (not symlink-resolved: that would leave the venv)."""
    return os.path.dirname(sys.executable)


# --------------------------------------------------------------------------- state


def read_state(path: Path) -> dict[str, Any] | None:
    """A missing or corrupt state file both mean "nothing recorded"."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("pid"), int):
        return None
    return state


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write atomically so a concurrent ``status`` never sees a half-written file."""
    write_private(path, json.dumps(state))


def write_private(path: Path, text: str) -> None:
    """Atomically write a file only its owner (root on instances) can read."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def remove_state(path: Path, pid: int | None = None) -> None:
    """Remove the state file, but only if it still describes ``pid`` when one is given."""
    if pid is not None:
        current = read_state(path)
        if current is not None and current["pid"] != pid:
            return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def recorded_states(layout: Layout) -> Iterator[dict[str, Any]]:
    """Every readable state file under the root."""
    if not layout.run_dir.is_dir():
        return
    for path in sorted(layout.run_dir.glob("*.json")):
        state = read_state(path)
        if state is not None and USER_RE.match(path.stem):
            yield state


# --------------------------------------------------------------------------- processes


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) from /proc, or None if unavailable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def is_alive(pid: int, proc_start: int | None = None) -> bool:
    """True if ``pid`` is a live (non-zombie) process, and the same one we started.

    Our servers are reparented to init once the agent exits; a zombie that init has not
    reaped yet, or a pid reused by an unrelated process, must count as "not running".
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = proc_stat(pid)
    if stat is None:
        return not os.path.isdir("/proc")
    state, started = stat
    if state in ("Z", "X", "x"):
        return False
    return proc_start is None or started == proc_start


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a whole process group; it may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_dead(pid: int, proc_start: int | None, timeout: float) -> bool:
    """Poll until the process is gone (we are usually not its parent, so no waitpid)."""
    deadline = time.monotonic() + timeout
    while is_alive(pid, proc_start):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def terminate_group(pid: int, proc_start: int | None, timeout: float) -> None:
    """SIGTERM so Jupyter can shut kernels down, SIGKILL the group if it does not exit."""
    signal_group(pid, signal.SIGTERM)
    if not wait_dead(pid, proc_start, timeout):
        signal_group(pid, signal.SIGKILL)
        wait_dead(pid, proc_start, 5.0)
    # Sweep anything left in the group (the leader, started with a new session, is pgid).
    signal_group(pid, signal.SIGKILL)


def stop_server(layout: Layout, user: str, timeout: float) -> bool:
    """Stop the user's recorded server and its watchdog; return whether a server ran."""
    path = layout.state_file(user)
    state = read_state(path)
    if state is None:
        remove_state(path)
        return False
    stop_watchdog(state)
    pid, proc_start = state["pid"], state.get("proc_start")
    running = is_alive(pid, proc_start)
    if running:
        terminate_group(pid, proc_start, timeout)
    remove_state(path, pid)
    return running


def watchdog_pid(state: dict[str, Any]) -> int | None:
    """The recorded watchdog's pid, if it is still running."""
    dog = state.get("watchdog")
    if not isinstance(dog, dict) or not isinstance(dog.get("pid"), int):
        return None
    return dog["pid"] if is_alive(dog["pid"], dog.get("proc_start")) else None


def stop_watchdog(state: dict[str, Any]) -> None:
    pid = watchdog_pid(state)
    if pid is not None:
        terminate_group(pid, state["watchdog"].get("proc_start"), 5.0)


def server_status(layout: Layout, user: str) -> dict[str, Any]:
    """The recorded server, with ``running`` checked against the live process table."""
    state = read_state(layout.state_file(user)) or {}
    pid = state.get("pid")
    running = isinstance(pid, int) and is_alive(pid, state.get("proc_start"))
    return {
        "running": running,
        "pid": pid,
        "ip": state.get("ip"),
        "port": state.get("port"),
        "started": state.get("started"),
    }


# --------------------------------------------------------------------------- logs


def tail_lines(path: Path, count: int, start: int = 0) -> list[str]:
    """Last ``count`` lines after byte offset ``start``, reading backwards (logs grow large)."""
    if count <= 0:
        return []
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return []
    with fh:
        pos = fh.seek(0, os.SEEK_END)
        data = b""
        while pos > start and data.count(b"\n") <= count:
            step = min(TAIL_BLOCK, pos - start)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
    return data.decode("utf-8", "replace").splitlines()[-count:]


def open_log(layout: Layout, user: str) -> IO[bytes]:
    """Open the user's log for appending; only root (or the emulator user) can read it."""
    layout.log_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(layout.log_file(user), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return os.fdopen(fd, "ab")


def log_header(request: StartRequest, argv: Sequence[str]) -> bytes:
    """One line marking each start, so a log shared by many runs can be read."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # argv only: secrets travel in the environment, which is never written anywhere.
    line = (
        f"=== {stamp} cloudjhub-worker: starting server for {request.user} "
        f"on {request.ip}:{request.port}: {' '.join(argv)} ==="
    )
    return line.encode("utf-8", "replace") + b"\n"


# --------------------------------------------------------------------------- homes


@dataclass(frozen=True)
class RunAs:
    """Where and as whom the server runs; uid None means "as the invoking user"."""

    home: Path
    uid: int | None = None
    gid: int | None = None


def prepare_home(layout: Layout, request: StartRequest) -> RunAs:
    """Make sure the user's home exists (and in real mode, the account and its volume)."""
    if layout.emulated:
        return RunAs(home=emulated_home(layout, request))
    account = ensure_account(request.user)
    home = Path(account.pw_dir)
    if request.home_volume is not None:
        mount_home_volume(request.home_volume, home, account.pw_uid, account.pw_gid)
    return RunAs(home=home, uid=account.pw_uid, gid=account.pw_gid)


def emulated_home(layout: Layout, request: StartRequest) -> Path:
    """An emulated EBS volume is a directory that outlives the instance root."""
    if request.home_volume is not None:
        home = layout.volumes_dir / request.home_volume.volume_id
    else:
        home = layout.emulated_home(request.user)
    home.mkdir(parents=True, exist_ok=True)
    return home


def run_checked(argv: Sequence[str], what: str) -> str:
    """Run a system tool; turn any failure into one readable error line."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
    except OSError as exc:
        raise AgentError(f"{what} failed: cannot run {argv[0]}: {exc.strerror}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no error output"])[-1]
        raise AgentError(f"{what} failed: {argv[0]} exited {proc.returncode}: {detail}")
    return proc.stdout


def ensure_account(user: str) -> pwd.struct_passwd:
    """Create the OS account on first use on this instance.

    An existing system account (root, the image's login user, daemons) is never
    handed to a hub user: a hub user called "root" must not get a root server."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        cmd = ["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", user]
        cmd[1:1] = ["--key", f"UID_MIN={FIRST_USER_UID}"]
        run_checked(cmd, f"creating account {user}")
        account = pwd.getpwnam(user)
    login_user = os.environ.get("SUDO_USER")  # the image's login user, who runs us
    if account.pw_uid < FIRST_USER_UID or user in RESERVED_USERS or user == login_user:
        bad_request(f"user {user!r} is a system account on this instance; pick another name")
    return account


def device_candidates(volume: HomeVolume) -> list[Path]:
    """Nitro instances expose EBS volumes as NVMe devices named by volume id."""
    candidates = [
        Path("/dev/disk/by-id") / f"{NITRO_EBS_PREFIX}{volume.volume_id.replace('-', '')}"
    ]
    if volume.device:
        candidates.append(Path(volume.device))
        if volume.device.startswith("/dev/sd"):
            candidates.append(Path("/dev/xvd" + volume.device[len("/dev/sd") :]))
    return candidates


def wait_for_device(
    candidates: Sequence[Path],
    timeout: float = DEVICE_WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Path:
    """The attachment completes asynchronously; wait for the kernel to show the device."""
    deadline = clock() + timeout
    while True:
        for path in candidates:
            if path.exists():
                return path
        if clock() >= deadline:
            names = ", ".join(str(p) for p in candidates)
            raise AgentError(f"home volume device did not appear within {timeout:g}s: {names}")
        sleep(1.0)


def has_filesystem(device: Path) -> bool:
    """blkid exits 2 only when it finds nothing (no filesystem, no partition table)."""
    proc = subprocess.run(
        ["blkid", str(device)], capture_output=True, stdin=subprocess.DEVNULL, check=False
    )
    if proc.returncode == 2:
        return False
    if proc.returncode != 0:
        raise AgentError(f"blkid {device} failed with status {proc.returncode}")
    return True


def mount_home_volume(volume: HomeVolume, home: Path, uid: int, gid: int) -> None:
    """Format a blank volume, mount it on the home and make it the user's."""
    device = wait_for_device(device_candidates(volume))
    if not has_filesystem(device):
        run_checked(["mkfs.ext4", "-q", str(device)], f"formatting {device}")
    home.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(home):
        run_checked(["mount", str(device), str(home)], f"mounting {device} on {home}")
    first_use = not any(entry.name != "lost+found" for entry in home.iterdir())
    if first_use and os.path.isdir("/etc/skel"):
        shutil.copytree("/etc/skel", home, symlinks=True, dirs_exist_ok=True)
    # uids can differ between instances, so re-own everything if the volume moved.
    if first_use or home.stat().st_uid != uid:
        chown_tree(home, uid, gid)
    home.chmod(0o700)


def chown_tree(top: Path, uid: int, gid: int) -> None:
    """Recursive chown that does not follow symlinks."""
    os.lchown(top, uid, gid)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


# --------------------------------------------------------------------------- start


def child_environment(request: StartRequest, home: Path) -> dict[str, str]:
    """A minimal environment: nothing from the SSH session leaks into the server."""
    env = {
        "PATH": f"{agent_bin_dir()}:{SYSTEM_PATH}",
        "HOME": str(home),
        "USER": request.user,
        "LOGNAME": request.user,
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
    }
    env.update(request.env)
    # Enable our jupyter_server extension (busy kernels count as activity)
    # without hiding any config path the image or the hub set.
    extra = [str(JUPYTER_CONFIG_DIR)]
    if env.get("JUPYTER_CONFIG_PATH"):
        extra.append(env["JUPYTER_CONFIG_PATH"])
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(extra)
    return env


def server_argv(layout: Layout, argv: list[str]) -> list[str]:
    """jupyter_server refuses to run as root unless told; only the emulator runs it so."""
    if layout.emulated and os.geteuid() == 0 and "--allow-root" not in argv:
        return [*argv, "--allow-root"]
    return argv


def port_open(ip: str, port: int, timeout: float) -> bool:
    """Whether something accepts TCP connections on ip:port."""
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def launch(
    layout: Layout, request: StartRequest, argv: list[str], run_as: RunAs
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the server detached from the SSH session; return it and its log offset."""
    identity: dict[str, Any] = {}
    if run_as.uid is not None:
        identity = {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}
    with open_log(layout, request.user) as log:
        log.write(log_header(request, argv))
        log.flush()
        offset = log.tell()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=run_as.home,
                env=child_environment(request, run_as.home),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **identity,
            )
        except OSError as exc:
            raise AgentError(f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
    return proc, offset


def wait_until_listening(proc: subprocess.Popen[bytes], ip: str, port: int, timeout: float) -> str:
    """Return "ready", "exited" or "timeout"."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            return "exited"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout"
        if port_open(ip, port, min(1.0, remaining)):
            return "exited" if proc.poll() is not None else "ready"
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def failure_message(headline: str, log: Path, offset: int) -> str:
    """The headline plus this run's last log lines, for the hub to show the user."""
    lines = tail_lines(log, FAILURE_TAIL_LINES, start=offset)
    return "\n".join([f"{headline}; last lines of its log:", *lines])


def start_server(layout: Layout, request: StartRequest) -> dict[str, Any]:
    """Start (or restart) the user's server and wait until it accepts connections."""
    argv = resolve_command(request.cmd)
    if request.resume:
        kept = resume_server(layout, request, argv)
        if kept is not None:
            return kept
    # Each spawn carries a fresh API token, so an old server is otherwise replaced.
    stop_server(layout, request.user, DEFAULT_STOP_TIMEOUT)
    run_as = prepare_home(layout, request)
    if port_open(request.ip, request.port, 1.0):
        raise AgentError(f"port {request.port} on {request.ip} is already in use")
    proc, offset = launch(layout, request, server_argv(layout, argv), run_as)
    state_path = layout.state_file(request.user)
    stat = proc_stat(proc.pid)
    state = {
        "pid": proc.pid,
        "ip": request.ip,
        "port": request.port,
        "started": int(time.time()),
        "proc_start": stat[1] if stat else None,
        "spec": server_spec(request, argv),
    }
    write_state(state_path, state)
    outcome = wait_until_listening(proc, request.ip, request.port, request.timeout)
    if outcome == "ready":
        restart_watchdog(layout, request, state, request.env.get("JUPYTERHUB_API_TOKEN"))
        return {"pid": proc.pid, "ip": request.ip, "port": request.port}
    signal_group(proc.pid, signal.SIGKILL)
    status = proc.wait()
    remove_state(state_path, proc.pid)
    log = layout.log_file(request.user)
    if outcome == "exited":
        headline = f"Jupyter exited with status {status}"
        raise AgentError(failure_message(headline, log, offset), EXIT_SERVER_EXITED)
    headline = f"Jupyter did not listen on {request.ip}:{request.port} within {request.timeout:g}s"
    raise AgentError(failure_message(headline, log, offset), EXIT_SERVER_TIMEOUT)


# --------------------------------------------------------------------------- resume


def server_spec(request: StartRequest, argv: Sequence[str]) -> str:
    """A digest of what makes the server what it is, leaving out the per-spawn token."""
    env = {k: v for k, v in request.env.items() if k not in TOKEN_VARS}
    volume = request.home_volume
    spec = {
        "argv": list(argv),
        "env": env,
        "ip": request.ip,
        "port": request.port,
        "home_volume": [volume.volume_id, volume.device] if volume else None,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def resume_server(
    layout: Layout, request: StartRequest, argv: Sequence[str]
) -> dict[str, Any] | None:
    """Keep a server that survived a hibernation, kernels and all; None: start afresh.

    A running jupyterhub-singleuser cannot take the new API token this spawn brings,
    so instead the hub adopts the token the server already has: JupyterHub kept it
    (the spawner says will_resume), and it checks that the token is this user's.
    The server is only kept if the request asks for exactly the same server.
    """
    path = layout.state_file(request.user)
    state = read_state(path)
    if state is None or not is_alive(state["pid"], state.get("proc_start")):
        return None
    # The token the server really runs with: its own environment is the truth.
    token = process_env(state["pid"], "JUPYTERHUB_API_TOKEN")
    if not token or state.get("spec") != server_spec(request, argv):
        return None
    if not port_open(request.ip, request.port, 5.0):
        return None
    state["resumed"] = int(time.time())
    restart_watchdog(layout, request, state, token)
    # The token goes back over the SSH channel it came in on; never printed elsewhere.
    return {
        "pid": state["pid"],
        "ip": request.ip,
        "port": request.port,
        "resumed": True,
        "api_token": token,
    }


def process_env(pid: int, name: str) -> str | None:
    """A variable of a process's initial environment (readable by its owner and root)."""
    try:
        data = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for item in data.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode("utf-8", "replace") or None
    return None


# --------------------------------------------------------------------------- self-stop


def watch_target(request: StartRequest) -> dict[str, Any] | None:
    """What the watchdog checks, or None when self-stop is off (idle_timeout 0)."""
    if request.idle_timeout <= 0:
        return None
    limit = request.idle_timeout + request.self_stop_grace
    host = f"[{request.ip}]" if ":" in request.ip else request.ip
    prefix = request.env.get("JUPYTERHUB_SERVICE_PREFIX") or "/"
    if not PREFIX_RE.match(prefix):
        prefix = "/"
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    hub = request.env.get("JUPYTERHUB_API_URL") or ""
    return {
        "status_url": f"http://{host}:{request.port}{prefix}api/status",
        "hub_url": hub if hub.startswith(("http://", "https://")) else None,
        "limit": limit,
        "interval": watchdog.check_interval(limit),
    }


def restart_watchdog(
    layout: Layout, request: StartRequest, state: dict[str, Any], token: str | None
) -> None:
    """(Re)start the server's self-stop watchdog and record it in the state file.

    The watchdog gets the server's token by inheritance, as the server does: nothing
    on disk or on a command line, and its /proc environ is readable only by root
    (its owner). It reads /api/status with it; without one it sees no activity.
    """
    stop_watchdog(state)
    path = layout.state_file(request.user)
    state["watch"] = watch_target(request)
    # None until the new pid is known: a watchdog that finds another pid here was replaced.
    state["watchdog"] = None
    write_state(path, state)
    if state["watch"] is None:
        return
    env = {
        "PATH": SYSTEM_PATH,
        "LANG": "C.UTF-8",
        "CLOUDJHUB_WORKER_ROOT": str(layout.root),
        "CLOUDJHUB_VOLUMES_DIR": str(layout.volumes_dir),
    }
    if token:
        env[WATCH_TOKEN_VAR] = token
    argv = [sys.executable, "-I", "-m", "cloudjhub.worker.agent", "watch", "--user", request.user]
    layout.log_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(layout.watch_log_file(request.user), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "ab") as log:
        try:
            proc = subprocess.Popen(
                argv,
                cwd="/",
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise AgentError(f"cannot start the self-stop watchdog: {exc}") from exc
    stat = proc_stat(proc.pid)
    state["watchdog"] = {"pid": proc.pid, "proc_start": stat[1] if stat else None}
    write_state(path, state)


def request_shutdown(layout: Layout, reason: str) -> bool:
    """Shut the machine down; EC2 then stops the instance (its shutdown behaviour)."""
    if layout.emulated:
        write_private(layout.shutdown_request, reason + "\n")
        return True
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"}
    try:
        done = subprocess.run(
            ["shutdown", "-h", "now"], env=env, stdin=subprocess.DEVNULL, check=False
        )
    except OSError as exc:
        watch_log(f"cannot run shutdown: {exc}")
        return False
    return done.returncode == 0


def watch_log(message: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"{stamp} {message}", flush=True)


def run_watchdog(layout: Layout, user: str) -> str:
    """The ``watch`` command: watch the user's recorded server until the machine stops."""
    path = layout.state_file(user)
    state = read_state(path)
    watch = state.get("watch") if state else None
    if not isinstance(watch, dict):
        return "nothing to watch"
    target = watchdog.Target(
        status_url=str(watch["status_url"]),
        hub_url=watch.get("hub_url"),
        limit=float(watch["limit"]),
        interval=float(watch["interval"]),
    )
    me = os.getpid()
    # Out of os.environ, so that nothing this process runs (shutdown) inherits it.
    token = os.environ.pop(WATCH_TOKEN_VAR, None)

    def read_since() -> float | None:
        current = read_state(path)
        mine = current.get("watchdog") if current else None
        if current is None or (isinstance(mine, dict) and mine.get("pid") != me):
            return None
        return float(max(current.get("started") or 0, current.get("resumed") or 0))

    probe = watchdog.Probe(
        read_token=lambda: token,
        read_since=read_since,
        shutdown=lambda reason: request_shutdown(layout, f"cloudjhub-worker: {reason}"),
        log=watch_log,
    )
    return watchdog.watch(target, probe)


# --------------------------------------------------------------------------- CLI


def emit(obj: object) -> None:
    """Machine-readable output: one JSON document per command."""
    click.echo(json.dumps(obj))


def _user_option(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """Reject bad names before they reach a file path."""
    if not USER_RE.match(value):
        raise click.BadParameter(f"{value!r} must match {USER_RE.pattern}")
    return value


user_option = click.option(
    "--user", required=True, callback=_user_option, help="JupyterHub user name."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Run a JupyterHub user's single-user server on this instance.

    Called by the cloudjhub hub over SSH. Set CLOUDJHUB_WORKER_ROOT to a directory to
    emulate an instance there (no accounts, no mounts, runs as the current user).
    """


@cli.command()
def start() -> None:
    """Start the user's server from a JSON request on stdin.

    The request holds user, ip, port, env, cmd, home_volume and timeout; secrets go in
    env and are never printed or logged. Prints {"pid", "ip", "port"} once the server
    accepts connections. Exit 2: bad request, 3: server exited, 4: timed out.

    Optional: idle_timeout and self_stop_grace (seconds) start a watchdog that shuts
    the machine down when the server is unused, or the hub gone, for their sum.
    resume=true keeps a server that survived a hibernation if it is the same server;
    the answer then adds "resumed": true and the "api_token" that server runs with.
    """
    layout = Layout.from_env()
    request = parse_request(read_request(sys.stdin.buffer))
    emit(start_server(layout, request))


@cli.command()
@user_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_STOP_TIMEOUT,
    show_default=True,
    help="Seconds to wait after SIGTERM before SIGKILL.",
)
def stop(user: str, timeout: float) -> None:
    """Stop the user's server.

    Sends SIGTERM to its process group, then SIGKILL after --timeout. Prints
    {"stopped": true|false}; false means nothing was running. Always exits 0.
    """
    emit({"stopped": stop_server(Layout.from_env(), user, timeout)})


@cli.command()
@user_option
def watch(user: str) -> None:
    """Watch the user's server and shut the machine down when it is unused.

    Started by `start` when the request sets idle_timeout. Stops the machine after
    idle_timeout + self_stop_grace seconds without activity on the server, or without
    an answer from the hub. Gets the server's token in its environment from `start`.
    """
    watch_log(f"watch ended: {run_watchdog(Layout.from_env(), user)}")


@cli.command()
@user_option
def status(user: str) -> None:
    """Show the user's server as JSON.

    Prints {"running", "pid", "ip", "port", "started"}; running is checked against the
    live process table, so a crashed server shows as not running.
    """
    emit(server_status(Layout.from_env(), user))


@cli.command()
@user_option
@click.option(
    "--lines",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Number of lines to print.",
)
def log(user: str, lines: int) -> None:
    """Print the last lines of the user's server log."""
    for line in tail_lines(Layout.from_env().log_file(user), lines):
        click.echo(line)


@cli.command()
def pids() -> None:
    """List running server and watchdog pids as JSON.

    Covers every user recorded under the root; the local emulator uses it to end (or,
    when hibernating, suspend) the servers of an instance it stops.
    """
    layout = Layout.from_env()
    alive = []
    for state in recorded_states(layout):
        if is_alive(state["pid"], state.get("proc_start")):
            alive.append(state["pid"])
        dog = watchdog_pid(state)
        if dog is not None:
            alive.append(dog)
    emit(sorted(alive))


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point: every error becomes one line on stderr and a meaningful exit status."""
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="cloudjhub-worker",
            standalone_mode=False,
        )
    except AgentError as exc:
        click.echo(f"cloudjhub-worker: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        click.echo(f"cloudjhub-worker: {exc.format_message()} (see --help)", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"cloudjhub-worker: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("cloudjhub-worker: aborted", err=True)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
