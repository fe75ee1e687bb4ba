"""pyinfra inventory: the hosts Pynchy is deployed to.

Hosts come from PYNCHY_HOSTS (comma-separated SSH targets, for example
"pi@assistant.lan,root@10.1.2.3"); without it the deploy targets this machine (@local, run as
root). Settings for every host live in group_data/all.py.

    pyinfra inventory.py deploys/install.py
"""

import os


def _host(target: str) -> str | tuple[str, dict[str, object]]:
    """ "user@host" -> ("host", {"ssh_user": "user", "_sudo": True}) unless the user is root."""
    if target.startswith("@") or "@" not in target:
        return target
    user, _, name = target.rpartition("@")
    data: dict[str, object] = {"ssh_user": user}
    if user != "root":
        data["_sudo"] = True  # the deploys write system files and run k3s commands
    return (name, data)


_hosts = [h.strip() for h in os.environ.get("PYNCHY_HOSTS", "").split(",") if h.strip()]

pynchy_nodes = [_host(h) for h in _hosts] or ["@local"]
