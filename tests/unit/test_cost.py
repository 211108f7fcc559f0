"""The cost math, the usage log and `cloudjhub cost`, against hand-computed figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudjhub.cli import main
from cloudjhub.cost import (
    CostError,
    Prices,
    intervals,
    load_prices,
    monthly_estimate,
    usage_report,
)
from cloudjhub.usage import UsageEvent, append_event, read_events

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
H = 3600.0

PRICES = {
    "_comment": "test table",
    "region": "test-1",
    "hours_per_month": 730,
    "instance_hourly": {"t3.medium": 0.04, "m5.large": 0.10, "t3.small": 0.02},
    "gp3_gb_month": 0.08,
    "snapshot_gb_month": 0.05,
}


def ev(t: float, event: str, user: str, iid: str, kind: str = "", **kw: str) -> UsageEvent:
    return UsageEvent(t=t, event=event, user=user, instance_id=iid, instance_type=kind, **kw)  # type: ignore[arg-type]


# alice: 2 h, then 3 h (a repeated start in between changes nothing); bob: started
# at 1 h and still running at 24 h (23 h); carol: a stop with no start (ignored).
EVENTS = [
    ev(T0, "start", "alice", "i-a", "t3.medium", reason="launch"),
    ev(T0 + 1 * H, "start", "bob", "i-b", "m5.large", reason="launch"),
    ev(T0 + 2 * H, "stop", "alice", "i-a", "t3.medium", reason="idle"),
    ev(T0 + 5 * H, "stop", "carol", "i-c", "t3.medium", reason="reaper"),
    ev(T0 + 10 * H, "start", "alice", "i-a", "t3.medium", reason="resume"),
    ev(T0 + 11 * H, "start", "alice", "i-a", "t3.medium", reason="running"),
    ev(T0 + 13 * H, "stop", "alice", "i-a", "t3.medium", reason="request"),
]


@pytest.fixture
def prices() -> Prices:
    return Prices.model_validate({**PRICES, "source": "test"})


def test_shipped_prices_load_and_say_where_they_come_from() -> None:
    table = load_prices()
    assert table.region == "us-east-1"
    assert "aws.amazon.com" in table.comment and "20" in table.comment
    for kind in ("t3.medium", "t3a.large", "m5.xlarge", "c5.large", "r5.2xlarge"):
        assert table.hourly(kind) > 0
    assert table.hourly("t3.large") == pytest.approx(2 * table.hourly("t3.medium"))


def test_monthly_estimate_is_manager_plus_users_times_compute_and_storage(prices: Prices) -> None:
    e = monthly_estimate(prices, 10, 50, "t3.medium", "t3.small", 20)
    assert e.manager == pytest.approx(0.02 * 730)  # 14.60
    assert e.per_user_compute == pytest.approx(0.04 * 50)  # 2.00
    assert e.per_user_storage == pytest.approx(20 * (0.08 + 0.05))  # 2.60
    assert e.total == pytest.approx(14.6 + 10 * (2.0 + 2.6))  # 60.60
    assert e.always_on_total == pytest.approx(14.6 + 10 * (0.04 * 730 + 2.6))  # 332.60


def test_intervals_pair_starts_and_stops(prices: Prices) -> None:
    spans, warnings = intervals(EVENTS, until=T0 + 24 * H)
    got = [(s.user, (s.start - T0) / H, (s.end - T0) / H, s.still_running) for s in spans]
    assert got == [
        ("alice", 0, 2, False),
        ("bob", 1, 24, True),
        ("alice", 10, 13, False),
    ]
    assert len(warnings) == 1 and "i-c" in warnings[0] and "no start" in warnings[0]


def test_usage_report_counts_hours_and_compares_with_always_on(prices: Prices) -> None:
    report = usage_report(EVENTS, prices, until=T0 + 24 * H)
    assert report.period_hours == pytest.approx(24)
    by_user = {u.user: u for u in report.users}
    assert set(by_user) == {"alice", "bob"}
    assert by_user["alice"].instance_hours == pytest.approx(5)
    assert by_user["alice"].cost == pytest.approx(5 * 0.04)  # 0.20
    assert by_user["alice"].always_on_cost == pytest.approx(24 * 0.04)  # 0.96
    assert by_user["bob"].instance_hours == pytest.approx(23)
    assert by_user["bob"].cost == pytest.approx(23 * 0.10)  # 2.30
    assert by_user["bob"].still_running and not by_user["alice"].still_running
    assert report.instance_hours == pytest.approx(28)
    assert report.cost == pytest.approx(2.50)
    assert report.always_on_cost == pytest.approx(3.36)


def test_since_clips_intervals_to_the_period(prices: Prices) -> None:
    report = usage_report(EVENTS, prices, until=T0 + 24 * H, since=T0 + 12 * H)
    assert report.period_hours == pytest.approx(12)
    by_user = {u.user: u for u in report.users}
    assert by_user["alice"].instance_hours == pytest.approx(1)  # 12 h -> 13 h only
    assert by_user["alice"].always_on_cost == pytest.approx(12 * 0.04)
    assert by_user["bob"].instance_hours == pytest.approx(12)
    assert report.cost == pytest.approx(0.04 + 1.20)


def test_an_unknown_instance_type_names_itself_and_the_table(prices: Prices) -> None:
    with pytest.raises(CostError, match=r"test: no price for instance type 'p5.48xlarge'"):
        usage_report([ev(T0, "start", "x", "i-x", "p5.48xlarge")], prices, until=T0 + H)


def test_a_bad_price_file_names_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "prices.json"
    bad.write_text(json.dumps({**PRICES, "gp3_gb_month": -1}))
    with pytest.raises(CostError, match=rf"{bad}: field gp3_gb_month: .*greater than or equal"):
        load_prices(bad)
    bad.write_text("{not json")
    with pytest.raises(CostError, match=rf"{bad}: not valid JSON"):
        load_prices(bad)


def test_a_price_file_with_an_unknown_key_says_so_as_the_config_files_do(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "prices.json"
    bad.write_text(json.dumps({**PRICES, "gp3_gb_mnoth": 0.08}))
    with pytest.raises(CostError, match=rf"^{bad}: field gp3_gb_mnoth: unknown key$"):
        load_prices(bad)


def test_usage_log_round_trip_and_bad_lines_are_named(tmp_path: Path) -> None:
    log = tmp_path / "sub" / "usage.jsonl"
    append_event(log, EVENTS[1])
    append_event(log, EVENTS[0])
    with log.open("a") as fh:
        fh.write('{"t": "soon", "event": "start"}\n\n')
    events, warnings = read_events(log)
    assert events == [EVENTS[0], EVENTS[1]]  # sorted by time
    assert warnings == [
        f"{log}: line 3: t: Input should be a valid number, unable to parse string as a number; skipped"
    ]


# --------------------------------------------------------------------------- the command


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A price table and a usage log; no server_config.json or instance_config.json around."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLOUDJHUB_SERVER_CONFIG", raising=False)
    table = tmp_path / "prices.json"
    table.write_text(json.dumps(PRICES))
    log = tmp_path / "usage.jsonl"
    for event in EVENTS:
        append_event(log, event.model_copy(update={"cluster": "c1"}))
    append_event(log, ev(T0, "start", "eve", "i-e", "t3.medium", cluster="other"))
    return table, log


UNTIL = "2023-11-15 22:13:20"  # T0 + 24 h


def test_cost_json_reports_usage_and_estimate(files: tuple[Path, Path]) -> None:
    table, log = files
    args = ["cost", "c1", "--usage-log", str(log), "--prices", str(table), "--until", UNTIL]
    result = CliRunner().invoke(main, [*args, "--json", "--hours-per-user", "50"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    usage = out["usage"]
    assert [u["user"] for u in usage["users"]] == ["alice", "bob"]  # not eve: other cluster
    assert usage["instance_hours"] == pytest.approx(28)
    assert usage["cost"] == pytest.approx(2.50)
    assert usage["always_on_cost"] == pytest.approx(3.36)
    est = out["estimate"]
    # Users default to those in the log; types and storage to the built-in defaults.
    assert (est["users"], est["instance_type"], est["manager_type"]) == (2, "t3.medium", "t3.small")
    assert est["total"] == pytest.approx(0.02 * 730 + 2 * (0.04 * 50 + 8 * 0.13))
    assert any("i-c" in w for w in out["warnings"])


def test_cost_table_and_options(files: tuple[Path, Path]) -> None:
    table, log = files
    args = ["cost", "c1", "--usage-log", str(log), "--prices", str(table), "--until", UNTIL]
    more = ["--users", "10", "--hours-per-user", "50", "--storage-gb", "20"]
    result = CliRunner().invoke(main, [*args, *more, "--since", "2023-11-15 10:13:20"])
    assert result.exit_code == 0, result.output
    assert "total for 10 users" in result.output
    assert "60.60" in result.output and "332.60" in result.output
    assert "(12.0 h)" in result.output
    assert "saved vs always on: $0.44 (26%)" in result.output  # 1.68 always on, 1.24 used
    assert "* still running" in result.output


def test_cost_without_a_log_estimates_only_and_bad_input_is_named(
    files: tuple[Path, Path],
) -> None:
    table, _ = files
    runner = CliRunner()
    result = runner.invoke(
        main, ["cost", "c1", "--usage-log", "nope.jsonl", "--prices", str(table)]
    )
    assert result.exit_code == 0, result.output
    assert "total for 25 users (assumed" in result.output
    assert "no usage log" in result.output
    result = runner.invoke(
        main, ["cost", "c1", "--prices", str(table), "--instance-type", "z9.huge"]
    )
    assert result.exit_code != 0
    assert "no price for instance type 'z9.huge'" in result.output
    result = runner.invoke(main, ["cost", "c1", "--since", "yesterday"])
    assert result.exit_code != 0 and "--since" in result.output


def test_cost_rejects_a_bad_cluster_name(files: tuple[Path, Path]) -> None:
    table, log = files
    for bad in ("C1", "c1_x", "", "c 1", "a" * 41):
        result = CliRunner().invoke(
            main, ["cost", bad, "--usage-log", str(log), "--prices", str(table)]
        )
        assert result.exit_code == 2, (bad, result.output)
        assert "Invalid value for 'CLUSTER'" in result.output
        assert f"cluster name {bad!r}" in result.output
        assert "Monthly estimate" not in result.output


def test_cost_groups_actual_use_by_any_tag(files: tuple[Path, Path]) -> None:
    table, log = files
    for event in EVENTS:
        course = "intro" if event.user == "alice" else "ml"
        tagged = event.model_copy(update={"cluster": "c1", "tags": {"course": course}})
        append_event(log, tagged.model_copy(update={"instance_id": event.instance_id + "x"}))
    args = ["cost", "c1", "--usage-log", str(log), "--prices", str(table), "--until", UNTIL]
    result = CliRunner().invoke(main, [*args, "--json", "--group-by", "course"])
    assert result.exit_code == 0, result.output
    groups = {u["user"]: u["instance_hours"] for u in json.loads(result.output)["usage"]["users"]}
    by_user = CliRunner().invoke(main, [*args, "--json"])
    users = {u["user"]: u["instance_hours"] for u in json.loads(by_user.output)["usage"]["users"]}
    # The untagged copies of the events, then the tagged ones, split by course.
    assert groups == {
        "(untagged)": pytest.approx(users["alice"] / 2 + users["bob"] / 2),
        "intro": pytest.approx(users["alice"] / 2),
        "ml": pytest.approx(users["bob"] / 2),
    }
    table_out = CliRunner().invoke(main, [*args, "--group-by", "course"]).output
    assert "  course " in table_out and "intro" in table_out, table_out


def test_cost_is_per_user_and_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """alice's default server 2 h on t3.medium, her named server "gpu" 3 h on m5.large:
    two rows, and one user for the estimate."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLOUDJHUB_SERVER_CONFIG", raising=False)
    table, log = tmp_path / "prices.json", tmp_path / "usage.jsonl"
    table.write_text(json.dumps(PRICES))
    for event in (
        ev(T0, "start", "alice", "i-a", "t3.medium", cluster="c1"),
        ev(T0 + 2 * H, "stop", "alice", "i-a", "t3.medium", cluster="c1"),
        ev(T0, "start", "alice", "i-g", "m5.large", cluster="c1", server="gpu"),
        ev(T0 + 3 * H, "stop", "alice", "i-g", "m5.large", cluster="c1", server="gpu"),
    ):
        append_event(log, event)
    args = ["cost", "c1", "--usage-log", str(log), "--prices", str(table), "--until", UNTIL]

    data = json.loads(CliRunner().invoke(main, [*args, "--json"]).output)
    text = CliRunner().invoke(main, args).output

    rows = {(u["user"], u["server"]): u for u in data["usage"]["users"]}
    assert set(rows) == {("alice", ""), ("alice", "gpu")}
    assert rows[("alice", "")]["cost"] == pytest.approx(2 * 0.04)
    assert rows[("alice", "gpu")]["cost"] == pytest.approx(3 * 0.10)
    assert data["estimate"]["users"] == 1
    assert any(line.split()[:2] == ["alice/gpu", "m5.large"] for line in text.splitlines())
