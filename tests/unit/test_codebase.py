"""The house rules, checked: lint, formatting, shell scripts and layering."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "src" / "cloudjhub"
RUFF = Path(sys.executable).with_name("ruff")


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative ones resolved in the package)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
    return out


def _ours(path: Path) -> set[str]:
    return {m.split(".")[1] for m in _imports(path) if m.startswith("cloudjhub.") and m.count(".")}


def test_ruff_check_and_format() -> None:
    for args in (
        ["check", "src", "tests", "benchmarks", "launch_cluster"],
        ["format", "--check", "src", "tests", "launch_cluster"],
    ):
        done = subprocess.run([str(RUFF), *args], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_no_type_errors_in_src() -> None:
    """The package ships py.typed, so its types are checked (config: pyproject.toml)."""
    mypy = Path(sys.executable).with_name("mypy")
    done = subprocess.run([str(mypy)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed; scripts/bootstrap installs it")
    scripts = [ROOT / "scripts" / "bootstrap", ROOT / "scripts" / "test", ROOT / ".ci" / "run"]
    scripts += PKG.rglob("*.sh")
    done = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("hibernation.py", set()),
        ("config.py", {"hibernation", "pool_schedule"}),
        ("pool_schedule.py", set()),
        ("keys.py", set()),
        ("waiting.py", set()),
        ("install_paths.py", set()),
        ("cloud_config.py", set()),
        ("tags.py", set()),
        ("executor.py", set()),
        ("metrics.py", set()),
        ("usage.py", {"config"}),  # error_line: one wording for every pydantic error
        ("host_keys.py", {"config"}),  # likewise
        ("profiles.py", {"config"}),  # likewise; the hub's config checks profiles with it
        ("aws/caller.py", set()),
        ("aws/client.py", {"tags", "metrics", "aws"}),  # aws: caller.py, the floor above
        ("aws/hub.py", {"tags", "aws", "cloud_config", "ec2_limits"}),  # AWS's published limits
        ("aws/admin.py", {"tags", "aws"}),
        ("aws/local.py", {"tags", "aws"}),
        ("aws/pool_listing.py", {"tags", "aws"}),
        ("remote.py", {"tags", "config"}),
        ("fleet.py", {"aws", "executor", "tags", "config", "metrics"}),
        ("ec2_limits.py", set()),
        ("aws/pacing.py", {"ec2_limits"}),
        ("ec2_queue.py", {"aws", "executor"}),
        ("warm_pool.py", {"aws", "tags"}),
        ("worker/mountinfo.py", set()),
        ("pool_batch.py", {"aws", "tags", "warm_pool"}),
        ("pool_giveback.py", {"aws", "executor", "tags"}),
        (
            "pool_claims.py",
            {"aws", "executor", "fleet", "warm_pool", "ec2_queue", "pool_batch", "pool_giveback"},
        ),
        ("ssh_target.py", {"remote", "aws", "executor", "host_keys", "spawner_options"}),
        # The log tail connects as the unmount does, through ssh_target, not its mixin.
        (
            "spawner_logs.py",
            {"remote", "aws", "executor", "kept_logs", "spawner_options", "ssh_target", "worker"},
        ),
    ],
)
def test_lower_floors_never_import_upper_ones(module: str, allowed: set[str]) -> None:
    assert _ours(PKG / module) <= allowed


def test_hub_config_imports_only_config_and_itself() -> None:
    """What the hub's config loads at hub start: never the launcher, the local cloud,
    the commands, or the reaper (whose metrics would join the hub's). `profiles`
    (the profile_list model, itself importing only `config`) checks profiles at start,
    and `profile_types` with `aws` their instance types against the region, as
    `fallback_types` does worker_instance_type_fallbacks."""
    allowed = {"hub", "config", "profiles", "profile_types", "fallback_types", "aws"}
    for path in (PKG / "hub").rglob("*.py"):
        assert _ours(path) <= allowed, path


def test_worker_imports_nothing_hub_side() -> None:
    for path in (PKG / "worker").rglob("*.py"):
        assert _ours(path) <= {"worker"}, path


def test_the_hub_side_shares_only_the_worker_protocol() -> None:
    """The contract lives in worker/protocol.py; the rest of worker/ is the instance's,
    but for mountinfo (imports nothing of ours), which the local cloud reads too, and
    the agent's records of its pids and where they are, which only the local cloud
    (playing the machine, as the agent's `pids` would) reads."""
    modules = {"cloudjhub.worker.protocol", "cloudjhub.worker.mountinfo"}
    machines = {"cloudjhub.worker.recorded_pids", "cloudjhub.worker.paths"}
    for path in PKG.rglob("*.py"):
        if (PKG / "worker") in path.parents:
            continue
        local = (PKG / "local") in path.parents
        for mod in _imports(path):
            if mod.startswith("cloudjhub.worker"):
                allowed = modules | machines if local else modules
                ok = mod == "cloudjhub.worker" or mod in allowed
                assert ok or mod.rpartition(".")[0] in allowed, (path, mod)


def test_one_door_per_outside_system() -> None:
    for path in PKG.rglob("*.py"):
        mods = _imports(path)
        if any(m == "boto3" or m.startswith(("boto3.", "botocore")) for m in mods):
            assert path.parent.name == "aws", f"{path} talks to boto3"
        if any(m == "paramiko" or m.startswith("paramiko.") for m in mods):
            assert path.name == "remote.py", f"{path} talks to paramiko"


def test_each_local_cloud_in_tests_and_benchmarks_has_its_own_loopback_range() -> None:
    """System test files run side by side (pytest -n), so two local clouds on one /16
    would hand out each other's addresses."""
    owners: dict[str, set[str]] = {}
    for path in [*(ROOT / "tests" / "system").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        for cidr in re.findall(r"\"(127\.\d+\.0\.0/16)\"", path.read_text()):
            owners.setdefault(cidr, set()).add(path.name)
    assert len(owners) >= 10, owners
    shared = {cidr: files for cidr, files in owners.items() if len(files) > 1}
    assert not shared, shared


def test_tests_depend_on_src_not_on_the_benchmark() -> None:
    """What a test and the benchmark both need lives in src/ (review L9); only the
    benchmark's own test reads its pure parts."""
    for path in (ROOT / "tests").rglob("*.py"):
        if path.name == "test_storm_figures.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "benchmarks" for n in names), path
