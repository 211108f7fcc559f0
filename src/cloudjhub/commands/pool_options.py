"""The warm pool's --size and --state, as `cloudjhub warm-pool` and `cloudjhub prewarm`
both take them (one declaration, one range, one list of states)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..pool_schedule import MAX_POOL_SIZE, POOL_STATES

F = TypeVar("F", bound=Callable[..., Any])


def pool_size_option(help: str) -> Callable[[F], F]:
    return click.option("--size", type=click.IntRange(0, MAX_POOL_SIZE), default=None, help=help)


def pool_state_option(help: str) -> Callable[[F], F]:
    return click.option(
        "--state",
        type=click.Choice(POOL_STATES),
        default=POOL_STATES[0],
        show_default=True,
        help=help,
    )
