"""teardown.wait_for: progress while resources change state, and the deadline."""

from __future__ import annotations

from cloudjhub.launch import teardown


def test_wait_reports_progress_until_done_or_deadline() -> None:
    seen: list[str] = []
    states = iter(
        [
            {"i-1": "shutting-down", "i-2": "shutting-down"},
            {"i-1": "terminated", "i-2": "shutting-down"},
            {"i-1": "terminated", "i-2": "terminated"},
        ]
    )

    final = teardown.wait_for(
        "2 instance(s) to terminate", lambda: next(states), "terminated".__eq__, seen.append, 60, 0
    )
    stuck = teardown.wait_for(
        "1 volume", lambda: {"v": "in-use"}, "available".__eq__, seen.append, 0, 0
    )

    assert final == {"i-1": "terminated", "i-2": "terminated"}
    assert seen[0].startswith("waiting for 2 instance(s) to terminate: 2 shutting-down (")
    assert seen[1].startswith(
        "waiting for 2 instance(s) to terminate: 1 shutting-down, 1 terminated"
    )
    assert seen[2].startswith("2 instance(s) to terminate: done")
    assert stuck == {"v": "in-use"} and seen[3].startswith("waiting for 1 volume: 1 in-use")
