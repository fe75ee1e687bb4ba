"""Reusable pyinfra deploys that turn a host into a single-node k3s running Pynchy.

The top-level deploy files (deploys/install.py, deploys/uninstall.py) only call these. Each module
has one job: prereqs (OS packages, kernel modules, sysctls), k3s (pinned install, config,
kubeconfig), images (build on the host, import into containerd), pynchy (manifests, Secrets),
uninstall. Settings are host data with the defaults in defaults.py (override them in group_data/).
"""
