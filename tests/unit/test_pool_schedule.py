"""Warm-pool schedules evaluated at injected times: a window's start and end, its time
zone (DST included), overlapping windows, the one-off window's tag, and bad settings
refused with one line naming the setting and the value."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from traitlets import TraitError
from traitlets.config import Config

from cloudjhub.config import ConfigError, InstanceConfig, load_server_config
from cloudjhub.hub import CONFIG_FILE
from cloudjhub.hub.apply import apply
from cloudjhub.hub.settings import SETTINGS_ENV, write_settings
from cloudjhub.pool_schedule import OneOff, PoolPlan, PoolTarget, PoolWindow, parse_windows
from cloudjhub.spawner import InstanceSpawner
from tests.unit.test_warm_pool_settings import settings

BERLIN = ZoneInfo("Europe/Berlin")
BASE = PoolTarget(2, "stopped")
EXAM = {"cron": "50 8 * * MON,WED", "duration": 5400, "size": 120, "state": "running"}


def at(*parts: int, zone: Any = UTC) -> float:
    return datetime(*parts, tzinfo=zone).timestamp()  # type: ignore[misc]


def plan(*windows: dict[str, Any], zone: str = "UTC", base: PoolTarget = BASE) -> PoolPlan:
    return PoolPlan(base, parse_windows(list(windows)), ZoneInfo(zone))


# ---- when a window is open ----------------------------------------------------------


def test_a_window_opens_at_its_cron_time_and_closes_after_its_duration() -> None:
    exam = plan(EXAM)
    # Monday 2026-11-30 and Wednesday 2026-12-02; not Tuesday.
    assert exam(at(2026, 11, 30, 8, 49, 59)) == BASE
    assert exam(at(2026, 11, 30, 8, 50)) == PoolTarget(120, "running")
    assert exam(at(2026, 11, 30, 10, 19, 59)) == PoolTarget(120, "running")
    assert exam(at(2026, 11, 30, 10, 20)) == BASE
    assert exam(at(2026, 12, 1, 9, 0)) == BASE
    assert exam(at(2026, 12, 2, 9, 0)) == PoolTarget(120, "running")


def test_a_window_without_a_state_keeps_the_pools_state() -> None:
    window = {"cron": "0 9 * * *", "duration": 60, "size": 5}
    assert plan(window)(at(2026, 11, 30, 9, 0, 30)) == PoolTarget(5, "stopped")
    running = plan(window, base=PoolTarget(0, "running"))
    assert running(at(2026, 11, 30, 9, 0, 30)) == PoolTarget(5, "running")


def test_windows_are_read_in_the_time_zone_winter_and_summer() -> None:
    exam = plan(EXAM, zone="Europe/Berlin")
    # 08:50 in Berlin is 07:50 UTC in winter (CET) and 06:50 UTC in summer (CEST).
    assert exam(at(2026, 11, 30, 7, 50)) == PoolTarget(120, "running")
    assert exam(at(2026, 11, 30, 8, 50)) == PoolTarget(120, "running")  # still open
    assert exam(at(2026, 11, 30, 9, 20)) == BASE  # 10:20 Berlin: closed
    assert exam(at(2026, 6, 1, 6, 49, 59)) == BASE
    assert exam(at(2026, 6, 1, 6, 50)) == PoolTarget(120, "running")
    assert exam(at(2026, 6, 1, 8, 50, zone=BERLIN)) == PoolTarget(120, "running")


def test_a_window_across_a_dst_change_lasts_its_real_duration() -> None:
    """Berlin skips 02:00-03:00 on 2026-03-29: a 01:30 window of two hours closes at
    02:30 UTC (04:30 local), not at 03:30 local; a window at the skipped 02:30 opens
    at 03:00, as Debian's cron runs it."""
    night = plan({"cron": "30 1 * * *", "duration": 7200, "size": 9}, zone="Europe/Berlin")
    assert night(at(2026, 3, 29, 0, 30)) == PoolTarget(9, "stopped")  # 01:30 CET
    assert night(at(2026, 3, 29, 2, 29, 59)) == PoolTarget(9, "stopped")
    assert night(at(2026, 3, 29, 2, 30)) == BASE  # 04:30 CEST
    skipped = plan({"cron": "30 2 * * *", "duration": 600, "size": 4}, zone="Europe/Berlin")
    assert skipped(at(2026, 3, 29, 0, 59, 59)) == BASE
    assert skipped(at(2026, 3, 29, 1, 0)) == PoolTarget(4, "stopped")  # 03:00 CEST


def test_overlapping_windows_the_largest_size_wins() -> None:
    both = plan(
        {"cron": "0 9 * * *", "duration": 3600, "size": 10, "state": "running"},
        {"cron": "30 9 * * *", "duration": 3600, "size": 30},
        {"cron": "45 9 * * *", "duration": 60, "size": 30, "state": "running"},
    )
    assert both(at(2026, 11, 30, 9, 10)) == PoolTarget(10, "running")
    assert both(at(2026, 11, 30, 9, 40)) == PoolTarget(30, "stopped")
    assert both(at(2026, 11, 30, 9, 45, 30)) == PoolTarget(30, "running")  # a tie: running
    assert both(at(2026, 11, 30, 10, 10)) == PoolTarget(30, "stopped")
    assert both(at(2026, 11, 30, 10, 30)) == BASE


def test_during_a_window_the_pool_has_its_size_even_below_the_base() -> None:
    nights = plan({"cron": "0 22 * * *", "duration": 36000, "size": 0})
    assert nights(at(2026, 11, 30, 23, 0)) == PoolTarget(0, "stopped")
    assert nights(at(2026, 11, 30, 12, 0)) == BASE


def test_a_one_off_window_counts_like_the_others_until_it_expires() -> None:
    until = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    value = OneOff(40, "running", until).tag_value()
    assert value == "size=40,state=running,until=2026-11-30T12:00:00Z"
    one_off = OneOff.from_tag(value)
    exam = PoolPlan(BASE, parse_windows([EXAM]), ZoneInfo("UTC"), lambda: one_off)
    assert exam(at(2026, 11, 30, 11, 59)) == PoolTarget(40, "running")
    assert exam(at(2026, 11, 30, 9, 0)) == PoolTarget(120, "running")  # the larger wins
    assert exam(at(2026, 11, 30, 12, 0)) == BASE  # expired


@pytest.mark.parametrize(
    "value",
    [
        "size=-1,state=running,until=2026-11-30T12:00:00Z",
        "size=1001,state=running,until=2026-11-30T12:00:00Z",
        "size=3,state=warm,until=2026-11-30T12:00:00Z",
        "size=3,state=running,until=tomorrow",
        "size=3,state=running,until=2026-11-30T12:00:00",
        "size=3,state=running",
        "size=3,state=running,until=2026-11-30T12:00:00Z,token=x",
    ],
)
def test_a_one_off_tag_we_did_not_write_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        OneOff.from_tag(value)


# ---- bad settings: one line naming the setting and the value ------------------------


BAD_SCHEDULES = [
    ([{**EXAM, "cron": "61 8 * * *"}], "window 1: cron: '61 8 * * *' is not a cron expression"),
    ([{**EXAM, "size": -1}], "window 1: size -1 is not allowed"),
    ([{**EXAM, "duration": 0}], "window 1: duration 0 is not allowed"),
    ([EXAM, {**EXAM, "state": "warm"}], "window 2: state 'warm' is not allowed"),
    ([{**EXAM, "size": "3"}], "window 1: size '3' is not allowed"),
    ([{**EXAM, "when": "9am"}], "window 1: unknown key 'when'"),
    ([{"cron": "0 9 * * *", "size": 3}], "window 1: duration is missing"),
    ({"cron": "0 9 * * *"}, "is not a list of windows"),
]


@pytest.mark.parametrize(("schedule", "why"), BAD_SCHEDULES)
def test_a_bad_schedule_stops_the_hub_naming_setting_and_value(
    tmp_path: Path, schedule: Any, why: str
) -> None:
    with pytest.raises(TraitError) as raised:
        apply(Config(), settings(tmp_path, warm_pool_schedule=schedule), {})
    line = str(raised.value)
    assert line.startswith("c.InstanceSpawner.warm_pool_schedule: ") and why in line
    assert "\n" not in line
    with pytest.raises(TraitError, match="warm_pool_schedule"):
        InstanceSpawner(warm_pool_schedule=schedule)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "", 5])
def test_an_unknown_time_zone_stops_the_hub(tmp_path: Path, zone: Any) -> None:
    with pytest.raises(TraitError, match=r"^c\.InstanceSpawner\.warm_pool_time_zone: .*zone"):
        apply(Config(), settings(tmp_path, warm_pool_time_zone=zone), {})


def test_schedule_and_time_zone_from_both_config_files(tmp_path: Path) -> None:
    config = {
        "CLUSTER_NAME": "alpha",
        "REGION": "us-east-1",
        "WORKER_AMI": "ami-0123abcd",
        "SUBNET_ID": "subnet-0123abcd",
        "WORKER_SECURITY_GROUPS": ["sg-1"],
        "KEY_NAME": "alpha-workers",
        "WARM_POOL_SCHEDULE": [EXAM],
        "WARM_POOL_TIME_ZONE": "Europe/Berlin",
    }
    path = tmp_path / "server_config.json"
    path.write_text(json.dumps(config))
    loaded = load_server_config(path)
    assert [PoolWindow(**EXAM)] == loaded.WARM_POOL_SCHEDULE
    assert loaded.WARM_POOL_TIME_ZONE == "Europe/Berlin"
    spawner = InstanceSpawner(server_config_file=str(path))
    assert spawner.warm_pool_schedule == [EXAM]
    assert spawner.warm_pool_time_zone == "Europe/Berlin"
    assert InstanceConfig.model_validate({"WARM_POOL_SCHEDULE": [EXAM]}).WARM_POOL_SCHEDULE
    path.write_text(json.dumps({**config, "WARM_POOL_SCHEDULE": [{**EXAM, "size": -5}]}))
    with pytest.raises(ConfigError, match="field WARM_POOL_SCHEDULE: window 1: size -5"):
        load_server_config(path)
    path.write_text(json.dumps({**config, "WARM_POOL_TIME_ZONE": "Europe/Atlantis"}))
    with pytest.raises(ConfigError, match="field WARM_POOL_TIME_ZONE: 'Europe/Atlantis'"):
        load_server_config(path)


def test_the_keeper_gets_the_schedule_and_time_zone(tmp_path: Path) -> None:
    c = Config()
    apply(c, settings(tmp_path, warm_pool_schedule=[EXAM], warm_pool_time_zone="Asia/Tokyo"), {})
    [keeper] = [s for s in c.JupyterHub.services if s["name"] == "cloudjhub-warm-pool"]
    command = keeper["command"]
    assert json.loads(command[command.index("--schedule") + 1]) == [EXAM]
    assert command[command.index("--time-zone") + 1] == "Asia/Tokyo"


def test_jupyterhub_refuses_a_bad_schedule_with_one_line(tmp_path: Path) -> None:
    bad = [{**EXAM, "cron": "50 25 * * *"}]
    path = write_settings(settings(tmp_path, warm_pool_schedule=bad), tmp_path / "hub.json")
    env = {
        "PATH": "/usr/bin:/bin",
        SETTINGS_ENV: str(path),
        "CLOUDJHUB_PROXY_COMMAND": sys.executable,
    }
    done = subprocess.run(
        [str(Path(sys.executable).with_name("jupyterhub")), "-f", str(CONFIG_FILE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    [said] = [ln for ln in done.stderr.splitlines() if "warm_pool_schedule" in ln]
    assert "c.InstanceSpawner.warm_pool_schedule: window 1: cron: '50 25 * * *'" in said
    assert not (tmp_path / "jupyterhub.sqlite").exists()
