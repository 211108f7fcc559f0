"""The one way a command takes a value from the environment: CLOUDJHUB_<OPTION>.

`--key-name` can come from CLOUDJHUB_KEY_NAME, the argument `cluster` from
CLOUDJHUB_CLUSTER; the name is derived, never hand-written, so it cannot drift
from the option, and --help shows it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

ENV_PREFIX = "CLOUDJHUB_"


def env_name(option: str) -> str:
    """CLOUDJHUB_<OPTION>: "--key-name" and "key_name" give CLOUDJHUB_KEY_NAME."""
    return ENV_PREFIX + option.split("/")[0].lstrip("-").replace("-", "_").upper()


def env_option(*decls: str, also: Sequence[str] = (), **kwargs: Any) -> Callable[[F], F]:
    """click.option that falls back to CLOUDJHUB_<OPTION>, then to the variables in `also`."""
    names = [env_name(decls[0]), *also]
    return click.option(*decls, envvar=names if also else names[0], show_envvar=True, **kwargs)


def env_argument(name: str, **kwargs: Any) -> Callable[[F], F]:
    """click.argument that falls back to CLOUDJHUB_<NAME>."""
    return click.argument(name, envvar=env_name(name), **kwargs)
