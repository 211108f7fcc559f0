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
    # The shared folder (EFS): its mount helper, the only client that mounts with IAM
    # (tls,iam), which the file system's policy requires. Only Amazon Linux packages
    # it; elsewhere the NFSv4.1 client alone, and the agent refuses to mount without
    # the helper (use an Amazon Linux 2023 base image with --shared-storage).
    amzn-*:nfs-client) echo amazon-efs-utils ;;
    *:nfs-client) echo nfs-common ;;
    # The agent's guard against students' own NFS clients (worker/nfs_guard.py).
    amzn-*:iptables) echo iptables-nft ;;
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

# --gpu-image: the NVIDIA driver and the CUDA runtime, from NVIDIA's CUDA apt
# repository (docs.nvidia.com/cuda/cuda-installation-guide-linux, "Network Repo").
# Its signing key (3bf863cc.pub) is trusted only if its fingerprint is the one
# NVIDIA publishes (github.com/NVIDIA/cuda-repo-management), and only for that
# repository (signed-by); nothing downloaded is run. The driver is built by DKMS
# against the running kernel, hence its headers.
CLOUDJHUB_CUDA_KEY_FINGERPRINT=EB693B3035CD5710E231E123A4B469963BF863CC
CLOUDJHUB_CUDA_RUNTIME=${CLOUDJHUB_CUDA_RUNTIME:-cuda-runtime-12-6}
CLOUDJHUB_APT_SOURCES=${CLOUDJHUB_APT_SOURCES:-/etc/apt/sources.list.d}
CLOUDJHUB_KEYRINGS=${CLOUDJHUB_KEYRINGS:-/usr/share/keyrings}

# NVIDIA's name for this OS's repository.
cuda_repo_name() {
  case $1 in
    ubuntu-22.04) echo ubuntu2204 ;;
    ubuntu-24.04) echo ubuntu2404 ;;
    debian-12) echo debian12 ;;
    *)
      echo "cloudjhub: --gpu-image needs an Ubuntu 22.04 or 24.04 or Debian 12 base image" \
        "(NVIDIA's CUDA apt repository); $1 is not one" >&2
      return 2
      ;;
  esac
}

os_install_gpu() {
  local platform repo url key fingerprints
  platform=$(os_platform) || return
  repo=$(cuda_repo_name "$platform") || return
  os_install curl gnupg || return
  url="https://developer.download.nvidia.com/compute/cuda/repos/$repo/x86_64/"
  key=$(mktemp)
  curl -fsSL --proto '=https' --tlsv1.2 -o "$key" "${url}3bf863cc.pub" || {
    rm -f "$key"
    return 1
  }
  # The primary keys in the file: exactly NVIDIA's one, or nothing is trusted.
  fingerprints=$(gpg --batch --with-colons --show-keys "$key" |
    awk -F: '$1 == "pub" { want = 1; next } want && $1 == "fpr" { print $10; want = 0 }')
  if [ "$fingerprints" != "$CLOUDJHUB_CUDA_KEY_FINGERPRINT" ]; then
    echo "cloudjhub: NVIDIA's CUDA repository key has fingerprint(s) '$fingerprints'," \
      "not $CLOUDJHUB_CUDA_KEY_FINGERPRINT: not trusting it" >&2
    rm -f "$key"
    return 1
  fi
  gpg --batch --yes --dearmor -o "$CLOUDJHUB_KEYRINGS/cloudjhub-cuda.gpg" "$key"
  rm -f "$key"
  echo "deb [signed-by=$CLOUDJHUB_KEYRINGS/cloudjhub-cuda.gpg] $url /" \
    >"$CLOUDJHUB_APT_SOURCES/cloudjhub-cuda.list"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout="$CLOUDJHUB_LOCK_TIMEOUT" update -q
  apt-get -o DPkg::Lock::Timeout="$CLOUDJHUB_LOCK_TIMEOUT" install -y -q \
    "linux-headers-$(uname -r)" cuda-drivers "$CLOUDJHUB_CUDA_RUNTIME"
}
