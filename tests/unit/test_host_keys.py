"""The host-key store: pins by instance id, never replaced, written atomically and
privately, safe under concurrent pins, pruned of instances that are gone."""

from __future__ import annotations

import json
import stat
import threading
import time
from pathlib import Path

import pytest

from cloudjhub.config import ConfigError
from cloudjhub.host_keys import UNLISTED_GRACE, HostKeyStore, valid_keys

A, B, C = "i-0123456789abcdef0", "i-0fedcba9876543210", "i-00000000000000abc"
KEY_A = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAaaaa"]
KEY_B = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbbbb", "ecdsa-sha2-nistp256 AAAAE2VjZHNh"]


def test_nothing_is_read_or_written_until_needed(tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "state" / "host_keys.json")
    assert not (tmp_path / "state").exists()
    assert store.keys_for(A) == []
    assert not (tmp_path / "state").exists()


def test_a_pin_is_kept_per_instance_id_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "host_keys.json"
    assert HostKeyStore(path).pin(A, KEY_A) == KEY_A
    # Another store object (a restarted hub) reads the same pin.
    assert HostKeyStore(path).keys_for(A) == KEY_A
    assert HostKeyStore(path).keys_for(B) == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    assert set(json.loads(path.read_text())["instances"]) == {A}


def test_a_pin_is_never_replaced(tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "host_keys.json")
    store.pin(A, KEY_A)
    assert store.pin(A, KEY_B) == KEY_A
    assert store.keys_for(A) == KEY_A


def test_the_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half way leaves the old file whole."""
    path = tmp_path / "host_keys.json"
    store = HostKeyStore(path)
    store.pin(A, KEY_A)
    before = path.read_text()

    def broken(self: Path, target: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        store.pin(B, KEY_B)
    assert path.read_text() == before
    assert list(tmp_path.iterdir()) == [path]


def test_concurrent_pins_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "host_keys.json"
    ids = [f"i-{n:017x}" for n in range(40)]
    barrier = threading.Barrier(len(ids))

    def pin(instance_id: str) -> None:
        barrier.wait()
        HostKeyStore(path).pin(instance_id, KEY_A)  # a store object per spawn, one lock

    threads = [threading.Thread(target=pin, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(json.loads(path.read_text())["instances"]) == set(ids)


def test_pins_of_gone_instances_are_dropped_on_write(tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "host_keys.json")
    store.pin(A, KEY_A)
    store.pin(B, KEY_B)
    store.pin(C, KEY_A, gone=[A])
    assert store.keys_for(A) == []
    assert store.keys_for(B) == KEY_B
    assert store.keys_for(C) == KEY_A


def test_unlisted_pins_are_dropped_only_after_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing can lag a launch: a fresh pin survives not being listed; an old one
    (its instance terminated and forgotten by EC2) does not."""
    store = HostKeyStore(tmp_path / "host_keys.json")
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now - UNLISTED_GRACE - 1)
    store.pin(A, KEY_A)
    monkeypatch.setattr(time, "time", lambda: now)
    store.pin(B, KEY_B)
    store.pin(C, KEY_A, listed={C})
    assert store.keys_for(A) == []
    assert store.keys_for(B) == KEY_B
    assert store.keys_for(C) == KEY_A


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "not valid JSON"),
        (b'{"instances": {}}\xff'.decode("latin-1"), "not UTF-8"),
        ('{"instances": {"10.0.0.5": {"keys": ["ssh-ed25519 AAAA"]}}}', "10.0.0.5"),
        ('{"instances": {"i-0123456789abcdef0": {"keys": ["ssh-ed25519 $(reboot)"]}}}', "keys"),
    ],
    ids=["json", "not-utf8", "ip-not-id", "bad-key"],
)
def test_a_damaged_file_is_refused_naming_it(tmp_path: Path, content: str, says: str) -> None:
    """Never read as 'no pins': that would re-learn keys a pin exists to check."""
    path = tmp_path / "host_keys.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ConfigError, match=str(path)) as failure:
        HostKeyStore(path).keys_for(A)
    assert says in str(failure.value)
    with pytest.raises(ConfigError):
        HostKeyStore(path).pin(A, KEY_A)
    assert path.read_bytes() == content.encode("latin-1")


def test_valid_keys_checks_the_shape_of_other_records() -> None:
    assert valid_keys(KEY_B) == KEY_B
    assert valid_keys([]) is None
    assert valid_keys(["ssh-ed25519"]) is None
    assert valid_keys(["ssh-ed25519 AAAA\nevil"]) is None
