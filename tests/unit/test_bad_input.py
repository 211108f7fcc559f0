"""Bad input to every `cloudjhub` command: one line naming it, exit 2, nothing made.

Each row of CASES is something a person can get wrong on a command line: a
config file that is deeply nested, not UTF-8 or holds a number of thousands of
digits; a file that is not there; a key pasted where its path belongs; a
number that is not finite; a region AWS does not have; an endpoint nobody
listens on. Each runs through the real CLI (click's CliRunner on
`cloudjhub.cli.main`, exceptions not caught, so a traceback fails the row)
against moto in-process, and must end with exit status 2, exactly one line of
output that names the input, nothing secret echoed, no AWS call other than a
read, no file written or changed, no process left, and within a few seconds
(a refused connection is not retried for a minute).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.client
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from cloudjhub.cli import main
from cloudjhub.local.ports import free_port
from tests.helpers import self_signed_pair

DEEP = b"[" * 100_000 + b"]" * 100_000
NOT_UTF8 = b'{"REGION": "us-east-1", "SERVER_OWNER": "\xff\xfe"}'
HUGE_INT = b'{"WORKER_EBS_SIZE": 1' + b"0" * 5000 + b"}"
HUGE_FLOAT = b'{"WORKER_EBS_SIZE": 1e400}'
KEY_MATERIAL = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAsEcReT\n"
SERVER_CONFIG = (
    '{"CLUSTER_NAME": "alpha", "REGION": "%s", "WORKER_AMI": "ami-12345678", '
    '"SUBNET_ID": "subnet-12345678", "WORKER_SECURITY_GROUPS": ["sg-1"], "KEY_NAME": "k"%s}'
)


def tls_pair() -> tuple[bytes, bytes]:
    return self_signed_pair("hub.test")


CERT, CERT_KEY = tls_pair()
_, OTHER_KEY = tls_pair()
DER_KEY = serialization.load_pem_private_key(CERT_KEY, None).private_bytes(
    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)


def server_config(region: str = "us-east-1", endpoint: str = "") -> bytes:
    extra = f', "AWS_ENDPOINT_URL": "{endpoint}"' if endpoint else ""
    return (SERVER_CONFIG % (region, extra)).encode()


@dataclass(frozen=True)
class Case:
    """A command line, what it is given, and what its one line must say.

    `{port}` anywhere (argv, files, env) stands for a loopback port nobody listens on."""

    id: str
    argv: tuple[str, ...]
    says: tuple[str, ...]
    files: dict[str, bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    stdin: bytes | None = None
    never: tuple[str, ...] = ()  # what must not be echoed


UNREACHABLE = "http://127.0.0.1:{port}"
KEY = {"admin.pem": b"not really a key\n"}
LAUNCH = (
    "launch",
    "alpha",
    "ami-12345678",
    "subnet-11111111",
    "subnet-22222222",
    "--key-name",
    "admin",
    "--key-file",
    "admin.pem",
    "--allow-http",  # the table is about other inputs; plain HTTP has its own test
    "--yes",
)
REAP_ENV = {
    "JUPYTERHUB_API_URL": "http://127.0.0.1:{port}/hub/api",
    "JUPYTERHUB_API_TOKEN": "reaper-token",
}
SETUP = ("setup-manager", "--root", "root", "--no-start")


def config_cases(
    prefix: str,
    argv: tuple[str, ...],
    name: str,
    files: dict[str, bytes] | None = None,
    env: dict[str, str] | None = None,
) -> list[Case]:
    """The three JSON files of issue 8 (and a float too large) at `name`."""
    rows = [
        ("deep", DEEP, "nested too deeply"),
        ("not-utf8", NOT_UTF8, "not UTF-8"),
        ("huge-int", HUGE_INT, "number too long"),
        ("huge-float", HUGE_FLOAT, "too large"),
    ]
    return [
        Case(f"{prefix}-{kind}", argv, (name, why), {**(files or {}), name: content}, env or {})
        for kind, content, why in rows
    ]


def unreachable_cases(
    command: str, *argv: str, files: dict[str, bytes] | None = None
) -> list[Case]:
    """An endpoint nobody listens on, as the option and as each variable."""
    files = files or {}
    says = ("127.0.0.1:{port}", "Could not connect")
    return [
        Case(
            f"{command}-unreachable", (command, *argv, "--aws-endpoint", UNREACHABLE), says, files
        ),
        Case(
            f"{command}-unreachable-env",
            (command, *argv),
            says,
            files,
            {"CLOUDJHUB_AWS_ENDPOINT": UNREACHABLE},
        ),
        Case(
            f"{command}-unreachable-boto-env",
            (command, *argv),
            says,
            files,
            {"AWS_ENDPOINT_URL": UNREACHABLE},
        ),
        Case(
            f"{command}-unknown-region",
            (command, *argv, "--region", "xx-nowhere-9"),
            ("'xx-nowhere-9'", "us-east-1"),
            files,
        ),
        Case(
            f"{command}-unknown-region-env",
            (command, *argv),
            ("'xx-nowhere-9'", "us-east-1"),
            files,
            {"AWS_DEFAULT_REGION": "xx-nowhere-9"},
        ),
        Case(
            f"{command}-endpoint-not-a-url",
            (command, *argv, "--aws-endpoint", "not a url"),
            ("not a url",),
            files,
        ),
    ]


CASES: list[Case] = [
    # ---- launch: its config file, its files, the cloud it is pointed at
    *config_cases(
        "launch-instance-config", (*LAUNCH, "--instance-config", "ic.json"), "ic.json", files=KEY
    ),
    Case(
        "launch-instance-config-missing",
        (*LAUNCH, "--instance-config", "nope.json"),
        ("--instance-config", "nope.json"),
        KEY,
    ),
    Case("launch-key-file-missing", LAUNCH, ("--key-file", "admin.pem")),
    Case(
        "launch-profiles-field",
        (*LAUNCH, "--profiles", "p.json"),
        ("--profiles", "p.json", "profile 'a' (#1)", "spawner_override.worker_ami"),
        {
            **KEY,
            "p.json": b'[{"display_name": "A", "slug": "a", "spawner_override": {"worker_ami": "x"}}]',
        },
    ),
    Case(
        "launch-known-hosts-missing", (*LAUNCH, "--known-hosts", "kh"), ("--known-hosts", "kh"), KEY
    ),
    Case(
        "launch-ssl-cert-missing",
        (*LAUNCH, "--ssl-cert", "hub.crt", "--ssl-key", "admin.pem"),
        ("--ssl-cert", "hub.crt"),
        KEY,
    ),
    Case(
        "launch-ssl-key-pasted",
        (*LAUNCH, "--ssl-cert", "admin.pem", "--ssl-key", KEY_MATERIAL),
        ("--ssl-key", "not shown"),
        KEY,
        never=("sEcReT", "BEGIN"),
    ),
    *[
        Case(
            f"launch-ssl-key-{kind}",
            (*LAUNCH, "--ssl-cert", "hub.crt", "--ssl-key", "hub.key"),
            ("--ssl-key hub.key", "PEM private key"),
            {**KEY, "hub.crt": CERT, "hub.key": key},
            never=("sEcReT", "BEGIN"),
        )
        for kind, key in (
            ("of-another-cert", OTHER_KEY),
            ("der", DER_KEY),
            ("not-a-key", b"sEcReT: this is not a key\n"),
            ("a-certificate", CERT),
        )
    ],
    Case(  # the right pair passes, and the launch goes on to the endpoint
        "launch-ssl-pair-good-then-unreachable",
        (*LAUNCH, "--ssl-cert", "hub.crt", "--ssl-key", "hub.key", "--aws-endpoint", UNREACHABLE),
        ("127.0.0.1:{port}", "Could not connect"),
        {**KEY, "hub.crt": CERT, "hub.key": CERT_KEY},
    ),
    Case(
        "launch-ssl-key-pasted-env",
        LAUNCH,
        ("--ssl-key", "not shown"),
        KEY,
        {"CLOUDJHUB_SSL_CERT": "admin.pem", "CLOUDJHUB_SSL_KEY": KEY_MATERIAL},
        never=("sEcReT", "BEGIN"),
    ),
    Case("launch-timeout-nan", (*LAUNCH, "--timeout", "nan"), ("--timeout", "finite"), KEY),
    Case(
        "launch-backup-schedule-minutely",
        (*LAUNCH, "--backup-schedule", "* * * * *"),
        ("--backup-schedule", "once an hour"),
        KEY,
    ),
    Case(
        "launch-backup-schedule-not-cron",
        (*LAUNCH, "--backup-schedule", "daily"),
        ("--backup-schedule", "five fields"),
        KEY,
    ),
    Case("launch-backup-retain-0", (*LAUNCH, "--backup-retain", "0"), ("--backup-retain 0",), KEY),
    Case(
        "launch-shared-storage-unknown",
        (*LAUNCH, "--shared-storage", "nfs"),
        ("--shared-storage 'nfs'", "efs"),
        KEY,
    ),
    Case("launch-dropbox-alone", (*LAUNCH, "--dropbox"), ("--dropbox", "--shared-storage"), KEY),
    Case(
        "launch-course-escapes",
        (*LAUNCH, "--shared-storage", "efs", "--course", "../etc"),
        ("--course '../etc'", "course name"),
        KEY,
    ),
    Case(
        "demo-dropbox-alone",
        ("demo", "--state-dir", "state", "--dropbox"),
        ("--dropbox", "--shared-storage"),
    ),
    Case(
        "demo-course-bad",
        ("demo", "--state-dir", "state", "--shared-storage", "--course", "a/b"),
        ("--course 'a/b'",),
    ),
    Case(
        "demo-backup-schedule",
        ("demo", "--state-dir", "state", "--backup-schedule", "0 3 1 * 1"),
        ("--backup-schedule", "not both"),
    ),
    *unreachable_cases(*LAUNCH, files=KEY),
    # ---- the lifecycle commands
    *unreachable_cases("status", "alpha"),
    *unreachable_cases("destroy", "alpha", "--yes"),
    *unreachable_cases("terminate-workers", "alpha", "--yes"),
    # ---- reap: its server_config.json says where EC2 is
    *config_cases(
        "reap-server-config",
        ("reap", "--once", "--server-config", "sc.json"),
        "sc.json",
        env=REAP_ENV,
    ),
    Case(
        "reap-server-config-missing",
        ("reap", "--once", "--server-config", "sc.json"),
        ("--server-config", "sc.json"),
        env=REAP_ENV,
    ),
    Case(
        "reap-once-ec2-down",
        ("reap", "--once", "--server-config", "sc.json"),
        ("127.0.0.1:{port}", "sc.json"),
        {"sc.json": server_config(endpoint=UNREACHABLE)},
        REAP_ENV,
    ),
    Case(
        "reap-once-ec2-down-env",
        ("reap", "--once"),
        ("127.0.0.1:{port}", "sc.json"),
        {"sc.json": server_config(endpoint=UNREACHABLE)},
        {**REAP_ENV, "CLOUDJHUB_SERVER_CONFIG": "sc.json"},
    ),
    Case(
        "reap-unknown-region",
        ("reap", "--once", "--server-config", "sc.json"),
        ("'xx-nowhere-9'", "sc.json"),
        {"sc.json": server_config(region="xx-nowhere-9")},
        REAP_ENV,
    ),
    Case(
        "reap-interval-nan",
        ("reap", "--once", "--interval", "nan"),
        ("--interval", "finite"),
        env=REAP_ENV,
    ),
    Case(
        "reap-grace-inf", ("reap", "--once", "--grace", "inf"), ("--grace", "finite"), env=REAP_ENV
    ),
    # ---- cost: instance_config.json here, server_config.json where the variable says, --prices
    *config_cases("cost-instance-config", ("cost", "alpha"), "instance_config.json"),
    *config_cases(
        "cost-server-config",
        ("cost", "alpha"),
        "sc.json",
        env={"CLOUDJHUB_SERVER_CONFIG": "sc.json"},
    ),
    *config_cases("cost-prices", ("cost", "alpha", "--prices", "p.json"), "p.json"),
    Case("cost-prices-missing", ("cost", "alpha", "--prices", "p.json"), ("--prices", "p.json")),
    Case(
        "cost-hours-nan", ("cost", "alpha", "--hours-per-user", "nan"), ("--hours-per-user", "nan")
    ),
    Case(
        "cost-hours-inf", ("cost", "alpha", "--hours-per-user", "inf"), ("--hours-per-user", "inf")
    ),
    Case(
        "cost-hours-negative",
        ("cost", "alpha", "--hours-per-user", "-1"),
        ("--hours-per-user", "-1"),
    ),
    Case("cost-storage-inf", ("cost", "alpha", "--storage-gb", "inf"), ("--storage-gb", "inf")),
    # ---- setup-manager: its request comes on stdin
    Case("setup-deep", SETUP, ("stdin", "nested too deeply"), stdin=DEEP),
    Case("setup-not-utf8", SETUP, ("stdin", "not UTF-8"), stdin=b'{"bind_ip": "\xff"}'),
    Case(
        "setup-huge-int",
        SETUP,
        ("stdin", "number too long"),
        stdin=b'{"public_port": 1' + b"0" * 5000 + b"}",
    ),
    Case(
        "setup-bad-server-config",
        SETUP,
        ("server_config", "REGION"),
        stdin=b'{"server_config": {}, "bind_ip": "10.0.0.1", "worker_command": ["w"]}',
    ),
    Case(
        "setup-tls-key-mistyped",
        SETUP,
        ("tls.key", "string"),
        stdin=b'{"server_config": {}, "bind_ip": "10.0.0.1", "worker_command": ["w"], '
        b'"tls": {"cert": "c", "key": ["-----BEGIN PRIVATE KEY----- sEcReT"]}}',
        never=("sEcReT",),
    ),
    # ---- iam-policy: no AWS call, but its region goes into ARNs
    Case("iam-policy-empty-region", ("iam-policy", "alpha", "--region", ""), ("--region", "''")),
    Case(
        "iam-policy-unknown-region",
        ("iam-policy", "alpha", "--region", "xx-nowhere-9"),
        ("--region", "'xx-nowhere-9'", "us-east-1"),
    ),
    *config_cases(
        "iam-policy-instance-config",
        ("iam-policy", "alpha", "--instance-config", "ic.json"),
        "ic.json",
    ),
    Case(
        "iam-policy-instance-config-missing",
        ("iam-policy", "alpha", "--instance-config", "ic.json"),
        ("--instance-config", "ic.json"),
    ),
    # ---- demo: nothing may start before its endpoint answers; settings it does not know
    Case(
        "demo-unreachable",
        ("demo", "--state-dir", "state", "--aws-endpoint", UNREACHABLE),
        ("127.0.0.1:{port}",),
    ),
    Case(
        "demo-unknown-fault",
        ("demo", "--state-dir", "state", "--like-aws", "--fault", "Bogus"),
        ("Bogus", "InsufficientInstanceCapacity"),
    ),
    Case(
        "demo-fault-rate",
        ("demo", "--state-dir", "state", "--like-aws", "--fault", "DependencyViolation:2"),
        ("DependencyViolation",),
    ),
    Case(
        "demo-time-scale-word",
        ("demo", "--state-dir", "state", "--like-aws", "--time-scale", "fast"),
        ("fast",),
    ),
    Case(
        "demo-time-scale-nan",
        ("demo", "--state-dir", "state", "--like-aws", "--time-scale", "nan"),
        ("nan",),
    ),
    Case(
        "demo-time-scale-negative",
        ("demo", "--state-dir", "state", "--like-aws", "--time-scale", "-1"),
        ("-1",),
    ),
    Case(
        "demo-profiles-field",
        ("demo", "--state-dir", "state", "--profiles", "p.yaml"),
        ("p.yaml", "profile 'big' (#1)", "spawner_override.market"),
        files={
            "p.yaml": b"- display_name: Big\n  slug: big\n  spawner_override:\n    market: cheap\n"
        },
    ),
    Case(
        "demo-profiles-not-yaml",
        ("demo", "--state-dir", "state", "--profiles", "p.yaml"),
        ("p.yaml", "not YAML (line 2)"),
        files={"p.yaml": b"- [unclosed\n"},
    ),
    Case(
        "demo-profiles-python-object",
        ("demo", "--state-dir", "state", "--profiles", "p.yaml"),
        ("p.yaml", "not YAML"),
        files={"p.yaml": b"- !!python/object/apply:os.system ['true']\n"},
    ),
    Case(
        "demo-profiles-json",
        ("demo", "--state-dir", "state", "--profiles", "p.json"),
        ("p.json", "field display_name"),
        files={"p.json": b'[{"slug": "a"}]'},
    ),
    Case(
        "demo-fault-without-like-aws",
        ("demo", "--state-dir", "state", "--fault", "Bogus"),
        ("--like-aws",),
    ),
    Case(
        "demo-hub-config-not-json",
        ("demo", "--state-dir", "state", "--hub-config", "extra.json"),
        ("--hub-config", "extra.json", "JSON"),
        {"extra.json": b"c.JupyterHub.concurrent_spawn_limit = 300\n"},
    ),
    Case(
        "demo-hub-config-not-by-class",
        ("demo", "--state-dir", "state", "--hub-config", "extra.json"),
        ("--hub-config", "extra.json", "concurrent_spawn_limit"),
        {"extra.json": b'{"concurrent_spawn_limit": 300}'},
    ),
    Case(
        "demo-named-servers-negative",
        ("demo", "--state-dir", "state", "--named-servers", "-1"),
        ("--named-servers", "-1"),
    ),
    Case(
        "demo-home-volume-size-word",
        ("demo", "--state-dir", "state", "--home-volume-size", "big"),
        ("--home-volume-size", "big"),
    ),
]


class AwsCalls(list[str]):
    """Every AWS operation any client made, whatever door it went through."""

    def writes(self) -> list[str]:
        return [c for c in self if not c.startswith(("Describe", "Get", "List"))]


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> AwsCalls:
    calls = AwsCalls()
    inner = botocore.client.BaseClient._make_api_call

    def record(self: Any, operation_name: str, api_params: Any) -> Any:
        calls.append(operation_name)
        return inner(self, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", record)
    return calls


def files_under(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def children() -> set[int]:
    mine = str(os.getpid())
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == mine:
            found.add(int(stat.parent.name))
    return found


@pytest.fixture
def here(aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty folder to run in, with no CLOUDJHUB_ variable from outside."""
    for name in list(os.environ):
        if name.startswith("CLOUDJHUB_") or name.startswith("JUPYTERHUB_"):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work


def fill(text: str, port: int) -> str:
    return text.replace("{port}", str(port))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_made(
    case: Case, here: Path, aws_calls: AwsCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    for name, content in case.files.items():
        (here / name).write_bytes(content.replace(b"{port}", str(port).encode()))
        (here / name).chmod(0o600)
    for name, value in case.env.items():
        monkeypatch.setenv(name, fill(value, port))
    argv = [fill(a, port) for a in case.argv]
    files, processes = files_under(here), children()
    aws_calls.clear()

    began = time.monotonic()
    result = CliRunner().invoke(main, argv, input=case.stdin, catch_exceptions=False)
    took = time.monotonic() - began

    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for needed in case.says:
        assert fill(needed, port) in lines[0], lines[0]
    for secret in case.never:
        assert secret not in result.output
    assert aws_calls.writes() == []
    assert files_under(here) == files
    assert children() <= processes
    assert took < 5, f"{took:.1f}s"


def test_a_usage_log_line_that_is_not_utf8_is_skipped_with_a_warning(here: Path) -> None:
    """The hub writes the usage log, so a bad line in it is not the reader's input:
    `cost` skips it and says so (as for any line that is not an event)."""
    good = b'{"t": 1700000000, "event": "start", "user": "alice", "instance_id": "i-1"}\n'
    (here / "u.jsonl").write_bytes(good + b'{"user": "\xff"}\n')

    result = CliRunner().invoke(
        main, ["cost", "alpha", "--usage-log", "u.jsonl"], catch_exceptions=False
    )

    assert result.exit_code == 0, result.output
    assert "u.jsonl: line 2:" in result.output and "alice" in result.output
