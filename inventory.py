"""pyinfra inventory: the hosts Pynchy is deployed to.

Hosts come from PYNCHY_HOSTS (comma-separated SSH targets, for example
"pi@assistant.lan,root@10.1.2.3"); without it the deploy targets this machine.
Host-specific settings live in group_data/.
"""

import os

_hosts = [h.strip() for h in os.environ.get("PYNCHY_HOSTS", "").split(",") if h.strip()]

pynchy_nodes = _hosts or ["@local"]
