"""benchmarks/storm.py's pure parts, so the benchmark cannot rot unnoticed."""

from __future__ import annotations

import math

from benchmarks.storm_figures import (
    bucket_bound,
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
