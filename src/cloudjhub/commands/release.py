"""`cloudjhub release CLUSTER DIR [--to NAME]`: hand a folder out to every user.

With shared storage (server_config SHARED_FILE_SYSTEM_ID) the folder is copied into
the shared folder, /srv/shared/NAME, which every worker mounts: students read it at
once, and its files are stored once, not once per student (`shared_release.py`).
Without, a release is kept on the manager, in the hub's releases folder
(`c.InstanceSpawner.releases_dir`, beside the usage log); each user's next start copies
it into ~/NAME without overwriting any file of theirs. Run it where the hub runs (the
manager, or the demo's machine with --releases-dir STATE_DIR/releases).
"""

from __future__ import annotations

from pathlib import Path

import click

from ..config import ConfigError, load_server_config, server_config_path
from ..releases import RELEASES_DIR, SourceError, publish, release_name, source_files
from ..shared_release import SharedReleaseError, copy_release, shared_root
from .cloud_options import cluster_argument
from .errors import BadInput, CommandError
from .options import env_option

MANAGER_CONFIG = Path("/etc/cloudjhub/server_config.json")


def _name(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return release_name(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a release name (letters, digits, '.', '_', '-'; "
            "at most 64, starting with a letter or digit)",
            param=param,
        ) from None


@click.command("release")
@cluster_argument
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.option(
    "--to", "name", callback=_name, help="Folder name in each home [default: DIR's name]."
)
@click.option("--dry-run", is_flag=True, help="Say what would be released, change nothing.")
@env_option(
    "--releases-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=RELEASES_DIR,
    show_default=True,
    help="The hub's releases folder (c.InstanceSpawner.releases_dir).",
)
@env_option(
    "--server-config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The cluster's server_config.json [default: $CLOUDJHUB_SERVER_CONFIG, else "
    "./server_config.json, else the manager's /etc/cloudjhub/server_config.json]; with "
    "SHARED_FILE_SYSTEM_ID the release goes to the shared folder.",
)
@env_option(
    "--shared-folder",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the shared folder is mounted here [default: /srv/shared; the demo's: "
    "STATE_DIR/efs/<file system id>].",
)
def release(
    cluster: str,
    folder: Path,
    name: str | None,
    dry_run: bool,
    releases_dir: Path,
    server_config: Path | None,
    shared_folder: Path | None,
) -> None:
    """Copy DIR into the shared folder (/srv/shared/NAME) or, without shared storage,
    into every user's home (~/NAME) at their next start, never overwriting."""
    if not folder.is_dir():
        raise BadInput(f"DIR {str(folder)!r}: no such folder")
    if name is None:
        try:
            name = release_name(folder.resolve().name)
        except ValueError:
            raise BadInput(
                f"DIR {str(folder)!r}: its name is not a release name; pass --to NAME"
            ) from None
    try:
        files = source_files(folder)
    except SourceError as exc:
        raise BadInput(f"DIR: {exc}") from None
    except OSError as exc:
        raise BadInput(f"DIR {str(folder)!r}: cannot read it: {exc.strerror}") from None
    config_file = server_config_path(server_config)
    if server_config is None and not config_file.exists() and MANAGER_CONFIG.exists():
        config_file = MANAGER_CONFIG  # on the manager, as the hub has it
    shared = None
    if config_file.exists():
        try:
            config = load_server_config(config_file)
        except ConfigError as exc:
            raise BadInput(str(exc)) from None
        if config.SHARED_FILE_SYSTEM_ID:
            if name == (config.SHARED_COURSE or config.CLUSTER_NAME):
                raise BadInput(
                    f"NAME {name!r} is the course folder (SHARED_COURSE, else the cluster's "
                    "name), which holds the students' dropboxes; pass --to another name"
                )
            shared = shared_root(config, config_file, shared_folder)
    if shared is not None:
        where = f"the shared folder, {shared / name} (every user of cluster {cluster} sees it now)"
        if dry_run:
            click.echo(f"would release {len(files)} path(s) from {folder} to {where}")
            return
        try:
            copy_release(folder, files, shared, name)
        except SharedReleaseError as exc:
            raise CommandError(str(exc)) from None
        click.echo(f"released {len(files)} path(s) to {where}")
        return
    where = f"~/{name} of every user of cluster {cluster} at their next start"
    if dry_run:
        click.echo(f"would release {len(files)} path(s) from {folder} to {where}")
        for rel in files:
            click.echo(f"  {rel}")
        return
    try:
        made = publish(folder, name, releases_dir)
    except OSError as exc:
        raise CommandError(f"cannot write the release into {releases_dir}: {exc}") from None
    click.echo(f"released {len(files)} path(s) as {made.tarball} to {where}")
