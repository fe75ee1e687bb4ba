"""Install or upgrade Pynchy on every host of the inventory:

    pyinfra inventory.py deploys/install.py

Settings: group_data/all.py (defaults in deploys/pynchy_infra/defaults.py). Secrets: environment
variables on this machine (docs/install.md). Upgrades: change the pins and run it again.
"""

from deploys.pynchy_infra.install import install

install()
