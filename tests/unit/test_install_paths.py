"""The install prefix is named once: the scripts' default and what the code runs agree."""

from __future__ import annotations

import pytest

from cloudjhub.install_paths import INSTALL_BIN, INSTALL_PREFIX
from cloudjhub.launch.provision import SCRIPTS
from cloudjhub.spawner import InstanceSpawner


@pytest.mark.parametrize("script", ["install-manager.sh", "install-worker.sh"])
def test_install_scripts_default_to_the_install_prefix(script: str) -> None:
    text = (SCRIPTS / script).read_text()
    assert f"prefix=${{CLOUDJHUB_PREFIX:-{INSTALL_PREFIX}}}\n" in text
    script_bin = INSTALL_BIN.replace(INSTALL_PREFIX, "$prefix", 1)
    assert f'"{script_bin}/' in text  # the venv whose bin dir INSTALL_BIN names


def test_the_spawner_runs_the_installed_worker_by_default() -> None:
    default = InstanceSpawner.class_traits()["worker_command"].default()
    assert default == ["sudo", "-n", f"{INSTALL_BIN}/cloudjhub-worker"]
