"""Accounts and homes: the emulated home volume, finding a real volume's device, and
the accounts the agent hands out (only its own, with no group but their own)."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cloudjhub.worker.accounts import System, ensure_account
from cloudjhub.worker.home_device import device_candidates, wait_for_device
from cloudjhub.worker.protocol import (
    USER_RE,
    AgentError,
    HomeVolume,
    ProtocolError,
    mapped_account,
    posix_username,
)
from tests.helpers import missing_here
from tests.unit.worker_harness import Worker


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    yield from Worker.running(tmp_path)


def test_home_volume_is_a_directory_in_volumes_dir(worker: Worker) -> None:
    req = worker.request(home_volume={"volume_id": "vol-0abc123", "device": "/dev/sdf"})
    result = worker.start(req)
    assert result.returncode == 0, result.stderr
    info = worker.track_info("alice")
    assert info is not None
    assert Path(info["cwd"]) == worker.volumes / "vol-0abc123"


def test_device_candidates() -> None:
    volume = HomeVolume(volume_id="vol-0abc", device="/dev/sdf")
    assert device_candidates(volume) == [
        Path("/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc"),
        Path("/dev/sdf"),
        Path("/dev/xvdf"),
    ]


def test_wait_for_device_gives_up(tmp_path: Path) -> None:
    clock = iter(range(100))
    with pytest.raises(AgentError, match="did not appear"):
        wait_for_device(
            [tmp_path / "missing"], timeout=3, sleep=lambda _s: None, clock=lambda: next(clock)
        )
    present = tmp_path / "dev"
    present.touch()
    assert wait_for_device([tmp_path / "missing", present], timeout=3) == present


# --------------------------------------------------------------------------- accounts


def passwd(name: str, uid: int, gid: int | None = None) -> pwd.struct_passwd:
    gid = uid if gid is None else gid
    return pwd.struct_passwd((name, "x", uid, gid, "", f"/home/{name}", "/bin/bash"))


@dataclass
class Accounts:
    """A fake passwd/group table that useradd and usermod (recorded) act on."""

    table: dict[str, pwd.struct_passwd] = field(default_factory=dict)
    extra_groups: dict[str, list[int]] = field(default_factory=dict)
    useradd_adds: list[int] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        name = argv[-1]
        if argv[0] == "useradd":
            uid = 1000 + len(self.table)
            self.table[name] = passwd(name, uid)
            self.extra_groups[name] = list(self.useradd_adds)
        elif argv[0] == "usermod" and argv[1:3] == ["-G", ""]:
            self.extra_groups[name] = []
        return subprocess.CompletedProcess(list(argv), 0, "", "")

    def system(self) -> System:
        return System(
            run=self.run,
            lookup=self.table.get,
            groups=lambda name, gid: [gid, *self.extra_groups.get(name, [])],
        )


@pytest.mark.parametrize(
    ("name", "uid"), [("lxd", 999), ("daemon", 1), ("ssm-user", 1001), ("alice", 1002)]
)
def test_an_account_the_agent_did_not_make_is_never_handed_out(
    tmp_path: Path, name: str, uid: int
) -> None:
    fake = Accounts(table={name: passwd(name, uid)})
    account = ensure_account(name, tmp_path, fake.system())
    assert account.pw_name == mapped_account(name) != name
    assert account.pw_uid >= 1000
    assert fake.calls[0][0] == "useradd" and fake.calls[0][-1] == mapped_account(name)
    assert (tmp_path / account.pw_name).read_text().strip() == str(account.pw_uid)
    # The next start on this instance finds the same account and creates nothing.
    fake.calls.clear()
    assert ensure_account(name, tmp_path, fake.system()) == account
    assert fake.calls == []


def test_the_agents_own_account_is_reused_and_a_recreated_one_is_not(tmp_path: Path) -> None:
    fake = Accounts()
    first = ensure_account("bob", tmp_path, fake.system())
    assert first.pw_name == "bob"
    assert ensure_account("bob", tmp_path, fake.system()) == first
    # Same name, another uid than the agent recorded: not the account it made.
    fake.table["bob"] = passwd("bob", 1500)
    assert ensure_account("bob", tmp_path, fake.system()).pw_name == mapped_account("bob")


def test_when_both_names_are_taken_the_request_is_refused(tmp_path: Path) -> None:
    fake = Accounts(table={"lxd": passwd("lxd", 999)})
    fake.table[mapped_account("lxd")] = passwd(mapped_account("lxd"), 1200)
    with pytest.raises(ProtocolError, match="not made by cloudjhub") as caught:
        ensure_account("lxd", tmp_path, fake.system())
    assert caught.value.exit_code == 2
    assert fake.calls == []


def test_a_new_account_has_its_own_group_only(tmp_path: Path) -> None:
    fake = Accounts(useradd_adds=[27, 4])  # an image whose useradd defaults add sudo, adm
    account = ensure_account("carol", tmp_path, fake.system())
    useradd = fake.calls[0]
    assert "--user-group" in useradd
    assert not {"-G", "--groups"} & set(useradd)
    assert fake.calls[1] == ["usermod", "-G", "", "carol"]
    assert fake.system().groups("carol", account.pw_gid) == [account.pw_gid]


def test_groups_that_cannot_be_removed_are_an_error(tmp_path: Path) -> None:
    fake = Accounts()
    stuck = System(run=fake.run, lookup=fake.table.get, groups=lambda _n, gid: [gid, 27])
    with pytest.raises(AgentError, match="groups beyond its own"):
        ensure_account("dave", tmp_path, stuck)


def test_mapped_names_are_stable_valid_and_never_another_users_name() -> None:
    hub_names = [f"user{i}" for i in range(200)] + ["lxd", "daemon", "ssm-user", "root"]
    hub_names += ["cjh-lxd", "cjh-daemon-1234abcd", "x" * 32, "alice@example.com"]
    hub_names += [mapped_account("lxd"), mapped_account("daemon")]  # as hub names
    own = {posix_username(h) for h in hub_names}
    mapped = {mapped_account(posix_username(h)) for h in hub_names}
    assert len(own) == len(mapped) == len(set(hub_names))
    assert not own & mapped
    assert all(USER_RE.fullmatch(n) for n in own | mapped)
    assert mapped_account("lxd") == mapped_account("lxd")


def test_a_real_account_is_marked_and_has_no_group_but_its_own(tmp_path: Path) -> None:
    """As root, with a unique name removed afterwards: useradd, the mark, id -G."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        missing_here("needs root and useradd")  # pragma: no cover
    name = "cjt" + secrets.token_hex(4)
    made = [name, mapped_account(name)]
    try:
        subprocess.run(["useradd", "--no-create-home", name], check=True, capture_output=True)
        account = ensure_account(name, tmp_path / "accounts")
        assert account.pw_name == mapped_account(name)  # the image's account is left alone
        assert "cloudjhub" in account.pw_gecos
        ids = subprocess.run(["id", "-G", account.pw_name], capture_output=True, text=True)
        assert ids.stdout.split() == [str(account.pw_gid)]
        assert Path(account.pw_dir).is_dir()
    finally:
        for user in made:
            subprocess.run(["userdel", "--remove", user], capture_output=True, check=False)
    assert all(_absent(user) for user in made)


def _absent(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return True
    return False
