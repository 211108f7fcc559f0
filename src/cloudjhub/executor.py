"""One thread pool for every blocking call (boto3, paramiko) made from the hub.

The event loop serves every user; a blocking call on it would stall them all.
A dedicated pool keeps a slow SSH handshake from starving the loop's default
executor, which JupyterHub itself uses.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="cloudjhub")


async def blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_POOL, functools.partial(fn, *args, **kwargs))
