#!/usr/bin/env bash
# OS-level provisioning of the worker image, run as root on the builder
# instance: system packages, a virtualenv with cloudjhub (which brings
# jupyterhub-singleuser and cloudjhub-worker), JupyterLab and nbgitpuller, and
# a sudo rule that lets the SSH login user run cloudjhub-worker and nothing else;
# with CLOUDJHUB_GPU=1 (--gpu-image) also the NVIDIA driver and CUDA runtime.
set -euo pipefail

: "${CLOUDJHUB_PACKAGE:?pip requirement or path of the cloudjhub wheel to install}"
: "${CLOUDJHUB_LOGIN_USER:?SSH login user of the image}"
prefix=${CLOUDJHUB_PREFIX:-/opt/cloudjhub}

if ! [[ $CLOUDJHUB_LOGIN_USER =~ ^[a-z_][a-z0-9_-]{0,31}$ ]]; then
  # The wheel was copied here only for this run.
case $CLOUDJHUB_PACKAGE in /tmp/cloudjhub-*.whl) rm -f -- "$CLOUDJHUB_PACKAGE" ;; esac
echo "install-worker: invalid login user: $CLOUDJHUB_LOGIN_USER" >&2
  exit 2
fi

# os-packages.sh (sent ahead of this script) knows each supported OS's names.
packages=(python sudo ca-certificates e2fsprogs util-linux git) # git: nbgitpuller runs it
packages+=(nfs-client) # the shared folder, /srv/shared (launch --shared-storage efs)
packages+=(iptables) # the agent keeps students' own NFS clients off EFS (nfs_guard.py)
if [ "${CLOUDJHUB_HIBERNATE:-0}" = 1 ]; then
  packages+=(hibernation-agent) # writes RAM to swap on hibernation (ec2-hibinit-agent)
fi
if [ "${CLOUDJHUB_GPU:-0}" = 1 ]; then
  cuda_repo_name "$(os_platform)" >/dev/null # an OS NVIDIA has no repository for stops here
fi
python=$(os_python)
os_install "${packages[@]}"
if [ "${CLOUDJHUB_GPU:-0}" = 1 ]; then
  os_install_gpu # the NVIDIA driver and CUDA runtime (--gpu-image)
fi

"$python" -m venv "$prefix/venv"
"$prefix/venv/bin/pip" install -q --upgrade pip
"$prefix/venv/bin/pip" install -q "$CLOUDJHUB_PACKAGE" jupyterlab nbgitpuller ipykernel

rule="$CLOUDJHUB_LOGIN_USER ALL=(root) NOPASSWD: $prefix/venv/bin/cloudjhub-worker"
tmp=$(mktemp)
printf '%s\n' "$rule" >"$tmp"
visudo -cqf "$tmp"
install -m 0440 "$tmp" /etc/sudoers.d/cloudjhub
rm -f "$tmp"

"$prefix/venv/bin/cloudjhub-worker" --help >/dev/null

# The rule above must be the login user's only privilege: cloud-init gives the
# default user passwordless sudo for everything (and on Ubuntu the lxd group),
# which would make the manager's worker key root on every worker. Take that away,
# for this boot and every instance made from the image (the hub sends the same
# cloud-config as user data: cloudjhub.cloud_config).
rm -f /etc/sudoers.d/90-cloud-init-users
if [ -d /etc/cloud/cloud.cfg.d ]; then
  "$prefix/venv/bin/python" -m cloudjhub.cloud_config >/etc/cloud/cloud.cfg.d/99-cloudjhub.cfg
fi
if getent group lxd >/dev/null; then
  gpasswd -d "$CLOUDJHUB_LOGIN_USER" lxd >/dev/null 2>&1 || true
fi

# Nothing of this builder may reach the image: its SSH host keys and the
# admin's authorized key (cloud-init makes fresh host keys and installs the
# workers' key pair on each new instance).
rm -f /etc/ssh/ssh_host_*
if [ -f "/home/$CLOUDJHUB_LOGIN_USER/.ssh/authorized_keys" ]; then
  : >"/home/$CLOUDJHUB_LOGIN_USER/.ssh/authorized_keys"
fi
if command -v cloud-init >/dev/null 2>&1; then
  cloud-init clean --logs
fi
# The wheel was copied here only for this run.
case $CLOUDJHUB_PACKAGE in /tmp/cloudjhub-*.whl) rm -f -- "$CLOUDJHUB_PACKAGE" ;; esac
echo "install-worker: done"
