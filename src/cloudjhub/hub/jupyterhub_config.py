"""The hub's configuration, loaded by JupyterHub with `-f` (or from a stub that
`load_subconfig`s it): it applies the settings file at `$CLOUDJHUB_HUB_SETTINGS`
(default `/etc/cloudjhub/hub.json`). It is not meant to be imported.
"""

from cloudjhub.hub.apply import apply
from cloudjhub.hub.settings import load_settings

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - the config loader provides it
apply(c, load_settings())
