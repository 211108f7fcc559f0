#!/usr/bin/env bash
# OS-level provisioning of the manager, run as root on it: system packages,
# node and configurable-http-proxy, a virtualenv with cloudjhub (which brings
# JupyterHub, jupyterhub-idle-culler and the authenticators: nativeauthenticator,
# the default, oauthenticator and ltiauthenticator), and the system user the hub
# runs as. cloudjhub's own setup (configs, keys, the hub's unit) is
# `cloudjhub setup-manager`, run afterwards.
set -euo pipefail

: "${CLOUDJHUB_PACKAGE:?pip requirement or path of the cloudjhub wheel to install}"
prefix=${CLOUDJHUB_PREFIX:-/opt/cloudjhub}

# os-packages.sh (sent ahead of this script) knows each supported OS's names.
python=$(os_python)
os_install python node ssh-client ca-certificates nfs-client # nfs-client: the shared folder

# A configurable-http-proxy release this OS's node runs (its `engines`), pinned.
node_major=$(node -p 'process.versions.node.split(".")[0]')
npm install -g --no-audit --no-fund "configurable-http-proxy@$(chp_version "$node_major")"
configurable-http-proxy --version
"$python" -m venv "$prefix/venv"
"$prefix/venv/bin/pip" install -q --upgrade pip
"$prefix/venv/bin/pip" install -q "$CLOUDJHUB_PACKAGE"

"$prefix/venv/bin/cloudjhub" --version
"$prefix/venv/bin/python" -c "import nativeauthenticator, oauthenticator, ltiauthenticator"

# The hub's user: no login shell, no password, its home is its state directory
# (which setup-manager hands to it, with the secrets it reads).
if ! id -u cloudjhub >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /var/lib/cloudjhub \
    --shell /usr/sbin/nologin --comment "cloudjhub JupyterHub" cloudjhub
fi
# The wheel was copied here only for this run.
case $CLOUDJHUB_PACKAGE in /tmp/cloudjhub-*.whl) rm -f -- "$CLOUDJHUB_PACKAGE" ;; esac
echo "install-manager: done"
