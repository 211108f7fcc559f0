"""The cloud-config every worker boots with: its login user gets no sudo and no lxd.

cloud-init gives an image's default user (the one the EC2 key pair logs in as,
which the manager's worker key reaches) passwordless sudo for everything and, on
Ubuntu, the `lxd` group, which is as good as root. On a worker that user may run
`cloudjhub-worker` through the image's own sudoers rule and nothing else, so:
`sudo: null` (no rule from cloud-init; `false` is deprecated since cloud-init
22.2) and an empty group list. cloud-init merges config sources key by key, the
earlier (user data, then cloud.cfg.d) winning ("Merging cloud-config"), so these
two keys override the distribution's and the rest of its default user stays.

The hub sends it as user data with every worker it launches (so a custom worker
image gets it too), and `install-worker.sh` writes it into the image it builds
(`python -m cloudjhub.cloud_config`). Imports nothing of ours.
"""

from __future__ import annotations

WORKER_CLOUD_CONFIG = """\
#cloud-config
# cloudjhub: the login user may run cloudjhub-worker (its own sudoers rule), nothing else
system_info:
  default_user:
    sudo: null
    groups: []
"""

if __name__ == "__main__":
    print(WORKER_CLOUD_CONFIG, end="")
