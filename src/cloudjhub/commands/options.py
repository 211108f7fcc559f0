"""The one way a command takes a value from the environment: CLOUDJHUB_<OPTION>.

`--key-name` can come from CLOUDJHUB_KEY_NAME, the argument `cluster` from
CLOUDJHUB_CLUSTER; the name is derived, never hand-written, so it cannot drift
from the option, and --help shows it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
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


class Number(click.FloatRange):
    """A finite number within bounds: click's FloatRange lets nan (and, without a
    bound, inf) through, and either would turn a report or a timer into nonsense."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number", param, ctx)
        return number


def looks_secret(value: str) -> bool:
    """A value that is a key's contents rather than a path to it (pasted by mistake,
    or `$(cat key)`): never to be echoed back."""
    return "\n" in value or "-----BEGIN" in value or "PRIVATE KEY" in value or len(value) > 1024


class ExistingFile(click.Path):
    """A file that must exist; a missing one is named, unless the value looks like
    a secret, which is never echoed."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = os.fsdecode(value)
        if looks_secret(text):
            self.fail(
                "expected the path of a file, got what looks like a key (not shown)", param, ctx
            )
        if not Path(text).is_file():
            self.fail(f"no such file: {text}", param, ctx)
        return super().convert(value, param, ctx)
