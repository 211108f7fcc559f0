"""An admin's `validation_regex` runs on every unlisted value a user sends: a
pathological pattern (nested repeats) must not stall the hub's event loop. The
match is bounded in time; a value it cannot settle in time is refused (HTTP 400)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from tornado import web

from tests.unit.test_profiles import start_options
from tests.unit.test_spawner_traits import spawner as make_spawner
from tests.unit.test_unlisted_types import unlisted_profile

# Exponential backtracking on "a" * n + "!" with Python's re.
SLOW = [unlisted_profile("(a|aa)+", "t3.{value}")]


PICK = {"profile": "any", "kind--unlisted-choice": "a" * 60 + "!"}


def test_a_pathological_validation_regex_is_refused_in_time(tmp_path: Path) -> None:
    # In a process of its own: re holds the GIL while it backtracks, so a thread
    # could not be timed out, and the old code never returns.
    script = (
        "import json, sys\n"
        "from cloudjhub.profiles import ProfileError, parse, select\n"
        "try:\n"
        f"    select(parse({SLOW!r}), {PICK!r})\n"
        "except ProfileError as exc:\n"
        "    print(exc)\n"
    )
    began = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        pytest.fail("validation_regex still running after 20 s")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("option 'kind': the value could not be checked against")
    assert time.monotonic() - began < 10

    # Through the spawner, as JupyterHub calls it: an HTTP 400, soon.
    spawner = make_spawner(tmp_path, profile_list=SLOW, hibernate=False)
    began = time.monotonic()
    with pytest.raises(web.HTTPError) as refused:
        start_options(spawner, PICK)
    assert refused.value.status_code == 400 and time.monotonic() - began < 2
    # an ordinary value is still checked as before
    with pytest.raises(web.HTTPError, match="is not allowed"):
        start_options(spawner, {"profile": "any", "kind--unlisted-choice": "b"})
    start_options(spawner, {"profile": "any", "kind--unlisted-choice": "aaa"})
    assert spawner.worker_instance_type == "t3.aaa"
