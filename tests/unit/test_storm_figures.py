"""benchmarks/storm.py's pure parts, so the benchmark cannot rot unnoticed."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

from benchmarks.storm_figures import (
    ReadyLog,
    bucket_bound,
    by_caller,
    callers_line,
    histogram_quantile,
    percentile,
    side_by_side,
    summary,
)


def test_bound_percentiles_histogram_and_table() -> None:
    # 300 starts fit in StartInstances' resource bucket (1000, 2/s): only pending counts;
    # 300 calls of one instance each drain its request bucket (5, 2/s) first.
    assert bucket_bound(300, 1000, 2, 30) == 30
    assert bucket_bound(300, 5, 2, 30) == 177.5
    assert bucket_bound(1100, 1000, 2, 3) == 53
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 95) == 4.0
    assert math.isnan(percentile([], 50))
    # Cumulative counts by upper bound, as Prometheus reports them.
    lag = {0.05: 98.0, 0.1: 99.0, 0.25: 100.0, math.inf: 100.0}
    assert histogram_quantile(lag, 0.5) == 0.05
    assert histogram_quantile(lag, 0.99) == 0.1
    assert math.isnan(histogram_quantile({0.05: 0.0}, 0.5))
    figures = summary({"a": 10.0, "b": 20.0}, ["c"], 40.0, 32.0)
    assert figures["failures"] == 1
    assert figures["makespan_over_bound"] == 1.25
    assert (figures["p50_s"], figures["p95_s"]) == (10.0, 20.0)
    table = side_by_side(
        {"naive": {"failures": 1, "ec2_calls": {"RunInstances": 3}}, "ours": {"failures": 0}},
        ["failures", "ec2_calls"],
    )
    assert table.splitlines() == [
        "           naive           ours",
        "failures   1               0",
        "ec2_calls  RunInstances=3",
    ]


def test_ready_times_come_from_the_hubs_log_as_they_are_written(tmp_path: Path) -> None:
    """The storm reads readiness from the hub's log, not by listing every user through
    the REST API each second (which held the hub's event loop)."""
    log = tmp_path / "jupyterhub.log"
    stamp = "[I 2026-11-30 12:07:52.275 JupyterHub base:1192]"
    log.write_text(f"{stamp} User student001 took 9.5 seconds to start\n")
    ready = ReadyLog(log)  # what the log held before the storm is not this storm's
    with log.open("a") as f:
        f.write(f"{stamp} User student002 took 129.598 seconds to start\n")
        f.write("[W 2026-11-30 12:07:52.300 JupyterHub users:216] User student003 took\n")
        f.write(stamp.replace("52.275", "53.500") + " User student004 took 1.0 sec")
    when = datetime(2026, 11, 30, 12, 7, 52, 275000).timestamp()
    assert ready.new() == {"student002": when}
    with log.open("a") as f:
        f.write("onds to start\n")  # the rest of a line written in two parts
    assert ready.new() == {"student004": when + 1.225}
    assert ready.new() == {}


def test_calls_by_caller_between_two_reads_of_the_layer() -> None:
    before = {
        "hub": {"DescribeInstances": 4, "RunInstances": 1},
        "reaper": {"DescribeInstances": 2},
    }
    after = {
        "hub": {"DescribeInstances": 9, "RunInstances": 1},
        "reaper": {"DescribeInstances": 2},
        "pool-keeper": {"StartInstances": 1},
    }
    moved = by_caller(before, after)
    assert moved == {"hub": {"DescribeInstances": 5}, "pool-keeper": {"StartInstances": 1}}
    assert callers_line(moved) == "hub: DescribeInstances=5; pool-keeper: StartInstances=1"
    assert callers_line({}) == "-"
