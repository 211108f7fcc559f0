"""JupyterHub's test single-user server (`jupyterhub.tests.mocksu`), without the imports
it never uses: the server of `benchmarks/storm.py --light`, hundreds per machine.

    python -m cloudjhub.local.light_server        (as c.InstanceSpawner.cmd)

mocksu's own handlers and `main()` run unchanged. Importing it pulls in
`jupyterhub.utils` (aiohttp) and `jupyterhub.tests.mockservice` (the hub's ORM:
sqlalchemy, alembic) for one helper and one handler: about 60 MB per process of
which tornado needs none. Those two modules are stood in for here:
`make_ssl_context` imports the real one when internal SSL is asked for, and
mockservice's `/env` (which echoes the server's environment, its API token
included) answers 404.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from tornado import web

UTILS = "jupyterhub.utils"
MOCKSERVICE = "jupyterhub.tests.mockservice"


def _make_ssl_context(*args: Any, **kwargs: Any) -> Any:
    """The real helper, imported only when internal SSL is on."""
    sys.modules.pop(UTILS, None)
    return importlib.import_module(UTILS).make_ssl_context(*args, **kwargs)


class _NoEnvHandler(web.RequestHandler):
    def get(self) -> None:
        raise web.HTTPError(404)


def stand_ins() -> dict[str, types.ModuleType]:
    utils = types.ModuleType(UTILS)
    utils.make_ssl_context = _make_ssl_context  # type: ignore[attr-defined]
    mockservice = types.ModuleType(MOCKSERVICE)
    mockservice.EnvHandler = _NoEnvHandler  # type: ignore[attr-defined]
    return {UTILS: utils, MOCKSERVICE: mockservice}


def main() -> None:
    for name, module in stand_ins().items():
        sys.modules.setdefault(name, module)
    mocksu = importlib.import_module("jupyterhub.tests.mocksu")
    mocksu.main()


if __name__ == "__main__":
    main()
