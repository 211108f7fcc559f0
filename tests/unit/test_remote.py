"""SSH: host keys from the console and known_hosts, and real runs against OpenSSH sshd."""

from __future__ import annotations

import getpass
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from cloudjhub import remote
from cloudjhub.local import sshd
from cloudjhub.local.ports import free_port

SSHD_IP = "127.0.0.77"


def keygen(path: Path, kind: str = "ed25519") -> tuple[Path, str]:
    """(private key file, 'type base64' public key) from ssh-keygen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", str(path)], check=True
    )
    kind_, data = path.with_suffix(".pub").read_text().split()[:2]
    return path, f"{kind_} {data}"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A few real public keys, as 'type base64'."""
    base = tmp_path_factory.mktemp("keys")
    return {kind: keygen(base / f"k_{kind}", kind)[1] for kind in ("ed25519", "ecdsa", "rsa")}


# ---- console host keys ---------------------------------------------------------------


def console_text(keys: dict[str, str]) -> str:
    ed, ecdsa, rsa = keys["ed25519"], keys["ecdsa"], keys["rsa"]
    return "\r\n".join(
        [
            "[    0.000000] Linux version 6.8.0-1012-aws (buildd@lcy02-amd64-014)",
            "[    2.511423] EXT4-fs (nvme0n1p1): mounted filesystem with ordered data mode.",
            "[   11.083344] cloud-init[512]: Cloud-init v. 24.1.3 running 'init' at Mon, 01 Jul 2024",
            "[   11.102201] cloud-init[512]: ci-info: ++++++Net device info++++++",
            "<14>Jul  1 10:00:05 cloud-init: #############################################################",
            "<14>Jul  1 10:00:05 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----",
            "<14>Jul  1 10:00:05 cloud-init: 256 SHA256:Zm9vYmFyYmF6 root@ip-10-0-1-23 (ECDSA)",
            "<14>Jul  1 10:00:05 cloud-init: 256 SHA256:YmF6cXV1eA root@ip-10-0-1-23 (ED25519)",
            "<14>Jul  1 10:00:05 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----",
            "<14>Jul  1 10:00:05 cloud-init: #############################################################",
            "-----BEGIN SSH HOST KEY KEYS-----",
            f"{ecdsa} root@ip-10-0-1-23",
            "[   12.000001] random: crng init done",
            "ssh-ed25519 not-base64!!! root@ip-10-0-1-23",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 root@ip-10-0-1-23",
            f"ssh-rsa {ed.split()[1]} mislabelled",
            "ssh-ed25519",
            "",
            f"  {ed} root@ip-10-0-1-23  ",
            f"{rsa}",
            "-----END SSH HOST KEY KEYS-----",
            "[   12.421000] cloud-init[601]: Cloud-init v. 24.1.3 finished at Mon, 01 Jul 2024."
            " Datasource DataSourceEc2Local.  Up 12.40 seconds",
            f"ssh-ed25519 {'A' * 68} after-the-block",
            f"{ed.split()[0]} {keys['ecdsa'].split()[1]} also-after",
            "",
        ]
    )


def test_parse_console_host_keys_reads_the_block_and_skips_garbage(keys: dict[str, str]) -> None:
    assert remote.parse_console_host_keys(console_text(keys)) == [
        keys["ecdsa"],
        keys["ed25519"],
        keys["rsa"],
    ]


def test_parse_console_host_keys_without_a_block_finds_nothing(keys: dict[str, str]) -> None:
    # Keys outside the markers are not trusted, even if well formed.
    text = f"boot\n{keys['ed25519']} root@host\nlogin:\n"
    assert remote.parse_console_host_keys(text) == []
    assert remote.parse_console_host_keys("") == []


def test_parse_console_host_keys_uses_the_latest_block(keys: dict[str, str]) -> None:
    """After a reboot the console holds two blocks; the later one is current."""
    first = f"{remote.CONSOLE_BEGIN}\n{keys['rsa']}\n{remote.CONSOLE_END}\n"
    second = f"{remote.CONSOLE_BEGIN}\n{keys['ed25519']}\n{remote.CONSOLE_END}\n"
    assert remote.parse_console_host_keys(first + "reboot\n" + second) == [keys["ed25519"]]


# ---- known_hosts -----------------------------------------------------------------------


def test_read_known_hosts_with_ports(tmp_path: Path, keys: dict[str, str]) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(
        "\n".join(
            [
                "# managed by cloudjhub",
                f"[10.0.1.5]:2222 {keys['ed25519']}",
                f"[10.0.1.5]:2222 {keys['ecdsa']}",
                f"10.0.1.5 {keys['rsa']}",
                f"[10.0.1.6]:2222 {keys['rsa']}",
                "",
            ]
        )
    )
    assert sorted(remote.read_known_hosts(path, "10.0.1.5", 2222)) == sorted(
        [keys["ed25519"], keys["ecdsa"]]
    )
    assert remote.read_known_hosts(path, "10.0.1.5", 22) == [keys["rsa"]]
    assert remote.read_known_hosts(path, "10.0.1.6", 2222) == [keys["rsa"]]
    assert remote.read_known_hosts(path, "10.0.1.6", 22) == []
    assert remote.read_known_hosts(path, "10.0.1.7", 2222) == []


def test_read_known_hosts_hashed_entries(tmp_path: Path, keys: dict[str, str]) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"[10.0.1.5]:2222 {keys['ed25519']}\n10.0.1.9 {keys['rsa']}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True, capture_output=True)
    assert "10.0.1.5" not in path.read_text()
    assert remote.read_known_hosts(path, "10.0.1.5", 2222) == [keys["ed25519"]]
    assert remote.read_known_hosts(path, "10.0.1.9", 22) == [keys["rsa"]]
    assert remote.read_known_hosts(path, "10.0.1.9", 2222) == []


# ---- a real sshd ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    ip: str
    port: int
    host_key: str  # 'type base64'
    client_key: Path
    user: str
    root: Path


def stop_sshd(proc: subprocess.Popen[bytes]) -> None:
    # Children first (while they are still below sshd), then sshd itself.
    sshd.end_pids(sshd.with_descendants([proc.pid]))
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("instance")
    host_pub = sshd.ensure_host_key(root / "etc" / "ssh")
    client_key, client_pub = keygen(tmp_path_factory.mktemp("client") / "id_ed25519")
    port = free_port(SSHD_IP)
    proc = sshd.start_sshd(root, SSHD_IP, port, client_pub, env={"CLOUDJHUB_TEST": "1"})
    try:
        deadline = time.monotonic() + 10
        while not remote.tcp_open(SSHD_IP, port, timeout=0.5):
            log = root / "var" / "log" / "sshd.log"
            assert proc.poll() is None, f"sshd exited: {log.read_text() if log.exists() else ''}"
            assert time.monotonic() < deadline, "sshd did not start listening"
            time.sleep(0.05)
        kind, data = host_pub.split()[:2]
        yield Server(SSHD_IP, port, f"{kind} {data}", client_key, getpass.getuser(), root)
    finally:
        stop_sshd(proc)


def run(server: Server, argv: list[str], **kwargs: object) -> remote.CommandResult:
    options: dict[str, object] = {"host_keys": [server.host_key], "connect_timeout": 5.0}
    options.update(kwargs)
    return remote.run(
        server.ip,
        server.port,
        server.user,
        str(server.client_key),
        argv=argv,
        **options,  # type: ignore[arg-type]
    )


def run_true_at(server: Server, port: int) -> remote.CommandResult:
    """`true` on the server's address at another port (where a test plays the peer)."""
    return remote.run(
        server.ip,
        port,
        server.user,
        str(server.client_key),
        host_keys=[server.host_key],
        argv=["true"],
        connect_timeout=5.0,
    )


def test_tcp_open(server: Server) -> None:
    assert remote.tcp_open(server.ip, server.port)
    assert not remote.tcp_open(server.ip, free_port(server.ip), timeout=1)


def test_run_feeds_stdin_and_returns_stdout(server: Server) -> None:
    result = run(server, ["cat"], stdin=b"secret")
    assert result.stdout == "secret"
    assert result.status == 0
    assert result.stderr == ""


def test_run_reports_status_stderr_and_environment(server: Server) -> None:
    result = run(server, ["sh", "-c", 'echo "$CLOUDJHUB_TEST"; echo oops >&2; exit 3'])
    assert result.status == 3
    assert result.stdout == "1\n"
    assert result.stderr == "oops\n"


def test_run_passes_shell_metacharacters_literally(server: Server, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = f"a; touch {marker}"
    result = run(server, ["echo", hostile])
    assert result.status == 0
    assert result.stdout == hostile + "\n"
    for arg in (
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"x && touch {marker}",
        f"'; touch {marker}; '",
    ):
        result = run(server, ["echo", arg])
        assert result.stdout == arg + "\n"
    assert not marker.exists()


def test_wrong_pinned_key_is_refused(server: Server, keys: dict[str, str]) -> None:
    with pytest.raises(remote.HostKeyError):
        run(server, ["true"], host_keys=[keys["ed25519"]])


def test_pinned_key_of_another_type_is_refused(server: Server, keys: dict[str, str]) -> None:
    with pytest.raises(remote.HostKeyError):
        run(server, ["true"], host_keys=[keys["ecdsa"]])


def test_no_pinned_key_is_refused(server: Server) -> None:
    with pytest.raises(remote.HostKeyError, match="no pinned host key"):
        run(server, ["true"], host_keys=[])


def test_pinned_key_among_others_is_accepted(server: Server, keys: dict[str, str]) -> None:
    result = run(server, ["echo", "ok"], host_keys=[keys["rsa"], server.host_key])
    assert result.stdout == "ok\n"


def test_closed_port_is_unreachable(server: Server) -> None:
    closed = free_port(server.ip)
    with pytest.raises(remote.Unreachable):
        run_true_at(server, closed)


@pytest.mark.parametrize("banner", [b"", b"SSH-2.0-OpenSSH_9.2\r\n"])
def test_a_peer_that_hangs_up_is_unreachable(server: Server, banner: bytes) -> None:
    """A machine going down drops connections mid-handshake: paramiko then raises
    EOFError or SSHException, and both must read as Unreachable (retried)."""
    listener = socket.socket()
    listener.bind((server.ip, 0))
    listener.listen()
    port = listener.getsockname()[1]

    def hang_up() -> None:
        conn, _ = listener.accept()
        if banner:
            conn.sendall(banner)
            conn.recv(4096)
        conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        with pytest.raises(remote.Unreachable):
            run_true_at(server, port)
    finally:
        thread.join(timeout=10)
        listener.close()


def test_a_peer_that_hangs_up_during_login_is_unreachable(server: Server) -> None:
    """An overloaded sshd (MaxStartups) or a machine going down can drop the connection
    after the key exchange, while we log in: paramiko says "Authentication failed:
    transport shut down or saw EOF". That is a connection that broke, not a refused
    login, so it must read as Unreachable (retried), not as a RemoteError (fatal)."""
    host_key = paramiko.Ed25519Key(filename=str(server.root / "etc/ssh/ssh_host_ed25519_key"))
    listener = socket.socket()
    listener.bind((server.ip, 0))
    listener.listen()
    port = listener.getsockname()[1]

    class DropAtLogin(paramiko.ServerInterface):
        def __init__(self, conn: socket.socket) -> None:
            self.conn = conn

        def get_allowed_auths(self, username: str) -> str:
            return "publickey"

        def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
            self.conn.shutdown(socket.SHUT_RDWR)
            return paramiko.AUTH_FAILED

    transports: list[paramiko.Transport] = []

    def serve() -> None:
        conn, _ = listener.accept()
        transport = paramiko.Transport(conn)
        transports.append(transport)
        transport.add_server_key(host_key)
        transport.start_server(server=DropAtLogin(conn))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(remote.Unreachable):
            run_true_at(server, port)
    finally:
        thread.join(timeout=10)
        for transport in transports:
            transport.close()
        listener.close()


def test_wrong_client_key_is_a_remote_error(server: Server, tmp_path: Path) -> None:
    stranger, _ = keygen(tmp_path / "stranger")
    with pytest.raises(remote.RemoteError) as exc:
        remote.run(
            server.ip,
            server.port,
            server.user,
            str(stranger),
            host_keys=[server.host_key],
            argv=["true"],
            connect_timeout=5.0,
        )
    assert not isinstance(exc.value, remote.HostKeyError | remote.Unreachable)


def test_large_stderr_does_not_stall_stdout(server: Server) -> None:
    """More stderr than one SSH window (2 MB) must not block reading stdout."""
    script = "head -c 3000000 /dev/zero | tr '\\0' e >&2; echo done"
    # A stall would surface as Unreachable at the 10 s read timeout, not as output.
    result = run(server, ["sh", "-c", script], timeout=10.0)
    assert result.stdout == "done\n"
    assert result.stderr.startswith("e" * remote.OUTPUT_CAP + "\n[cloudjhub: output cut at")


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_output_is_capped_per_stream(server: Server, stream: str) -> None:
    """An instance is not trusted to be brief: 8 MB of output keeps 64 KB in memory."""
    redirect = ">&2" if stream == "stderr" else ""
    script = f"head -c 8000000 /dev/zero | tr '\\0' x {redirect}; exit 4"
    result = run(server, ["sh", "-c", script], timeout=30.0)
    text = getattr(result, stream)
    assert text == "x" * remote.OUTPUT_CAP + ("\n[cloudjhub: output cut at 64 KB of 8000000 bytes]")
    assert result.status == 4


def test_a_command_that_never_stops_writing_ends_at_its_timeout(server: Server) -> None:
    """A trickle of output (a line every 0.2 s, never quiet long enough for a read
    to time out) must not keep the hub reading past the command's timeout."""
    script = "while true; do echo tick; echo tock >&2; sleep 0.2; done"
    with pytest.raises(remote.Unreachable, match="did not end before its timeout"):
        run(server, ["sh", "-c", script], timeout=2.0)


def test_stream_on_hands_output_over_as_it_comes_and_returns_the_status(server: Server) -> None:
    target = remote.Target(
        server.ip, server.port, server.user, str(server.client_key), (server.host_key,), 5.0
    )
    out: list[bytes] = []
    err: list[bytes] = []
    argv = ["sh", "-c", "echo one; sleep 0.2; echo two; echo oops >&2; exit 3"]
    assert remote.stream_on(target, argv, out.append, err.append) == 3
    assert b"".join(out) == b"one\ntwo\n" and len(out) == 2
    assert b"".join(err) == b"oops\n"
