"""Remove Pynchy (and with --data pynchy_uninstall_k3s=true, k3s) from every host of the inventory:

    pyinfra inventory.py deploys/uninstall.py

This deletes the namespaces pynchy and pynchy-system: every Group, Workspace and their volumes.
"""

from deploys.pynchy_infra.uninstall import uninstall

uninstall()
