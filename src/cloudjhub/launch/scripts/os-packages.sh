#!/usr/bin/env bash
# What the install scripts need of the OS, on each base image the launcher supports
# (launch/base_images.py): Ubuntu 22.04 and 24.04 and Debian 12 with apt, Amazon
# Linux 2023 with dnf. The launcher sends this file ahead of install-worker.sh or
# install-manager.sh, as one script.

# Seconds apt waits for the dpkg lock, which unattended-upgrades may hold on a
# fresh instance.
CLOUDJHUB_LOCK_TIMEOUT=${CLOUDJHUB_LOCK_TIMEOUT:-600}

# "ubuntu-22.04", "ubuntu-24.04", "debian-12" or "amzn-2023", from os-release.
os_platform() {
  local found
  # shellcheck source=/dev/null
  found=$(. "${CLOUDJHUB_OS_RELEASE:-/etc/os-release}" && echo "${ID:-}-${VERSION_ID:-}")
  case $found in
    ubuntu-22.04 | ubuntu-24.04 | debian-12 | amzn-2023) echo "$found" ;;
    *)
      echo "cloudjhub: unsupported OS '$found': the install scripts support" \
        "Ubuntu 22.04 or 24.04, Debian 12, or Amazon Linux 2023" >&2
      return 2
      ;;
  esac
}

# The Python (3.11 or newer, as cloudjhub needs) that makes the virtualenv.
os_python() {
  local platform
  platform=$(os_platform) || return
  case $platform in
    ubuntu-22.04 | amzn-2023) echo python3.11 ;;
    *) echo python3 ;;
  esac
}

# The packages behind one of the names the install scripts ask for.
os_packages() {
  case $1:$2 in
    ubuntu-22.04:python) echo python3.11 python3.11-venv ;;
    amzn-*:python) echo python3.11 python3.11-pip ;;
    *:python) echo python3 python3-venv python3-pip ;;
    amzn-*:node) echo nodejs nodejs-npm ;;
    *:node) echo nodejs npm ;;
    amzn-*:ssh-client) echo openssh-clients ;;
    *:ssh-client) echo openssh-client ;;
    debian-*:hibernation-agent)
      echo "cloudjhub: Debian 12 has no ec2-hibinit-agent package; with HIBERNATE use" \
        "an Ubuntu or Amazon Linux 2023 base image" >&2
      return 2
      ;;
    *:hibernation-agent) echo ec2-hibinit-agent ;;
    # The shared folder (EFS): the mount helper with TLS where the OS packages it,
    # else the NFSv4.1 client (the agent mounts plain nfs4 then).
    amzn-*:nfs-client) echo amazon-efs-utils ;;
    *:nfs-client) echo nfs-common ;;
    *) echo "$2" ;; # the same name everywhere (sudo, ca-certificates, ...)
  esac
}

# cloud-init installs packages on first boot and holds the package locks meanwhile.
wait_for_cloud_init() {
  command -v cloud-init >/dev/null 2>&1 || return 0
  local status=0
  cloud-init status --wait >/dev/null || status=$?
  # 2 is "done, with recoverable errors" (cloud-init 23.4 and later): usable.
  if [ "$status" -ne 0 ] && [ "$status" -ne 2 ]; then
    echo "cloudjhub: warning: cloud-init status --wait exited $status; going on" >&2
  fi
}

# os_install NAME...: install what each name means on this OS, once cloud-init is done.
os_install() {
  local platform name names packages=() more=()
  platform=$(os_platform) || return
  for name in "$@"; do
    names=$(os_packages "$platform" "$name") || return
    read -r -a more <<<"$names"
    packages+=("${more[@]}")
  done
  wait_for_cloud_init
  case $platform in
    amzn-*) dnf install -y -q "${packages[@]}" ;; # dnf waits for the rpm lock itself
    *)
      export DEBIAN_FRONTEND=noninteractive
      apt-get -o DPkg::Lock::Timeout="$CLOUDJHUB_LOCK_TIMEOUT" update -q
      apt-get -o DPkg::Lock::Timeout="$CLOUDJHUB_LOCK_TIMEOUT" install -y -q \
        --no-install-recommends "${packages[@]}"
      ;;
  esac
}

# The newest configurable-http-proxy whose `engines` accepts node MAJOR: 5.2 and
# later need node 20, 5.0-5.1 node 18, 4.x node 10 (Ubuntu 22.04 has node 12,
# Ubuntu 24.04, Debian 12 and Amazon Linux 2023 node 18). 5.3.0 is package.json's.
chp_version() {
  if [ "$1" -ge 20 ]; then
    echo 5.3.0
  elif [ "$1" -ge 18 ]; then
    echo 5.1.0
  else
    echo 4.6.3
  fi
}
