"""Which cluster `pynchy status` reads, and with whose credentials: a kubeconfig (as kubectl finds
one) or, in a pod without one, the pod's service account."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kubernetes.client import ApiClient

from pynchy.errors import PynchyError
from pynchy.kube import official


class ConnectError(PynchyError):
    """No credentials to use, or they could not be loaded: the cluster cannot be read."""


@dataclass(frozen=True)
class Connection:
    """A client that tries each request once (a status command answers quickly or says why not)."""

    client: ApiClient
    server: str  # the API server's URL
    source: str  # where the credentials came from, for people: "kubeconfig ~/.kube/config (context x)"

    def close(self) -> None:
        official.close_client(self.client)


def _kubeconfig(explicit: Path | None, environ: dict[str, str], home: Path) -> str | None:
    """--kubeconfig, else $KUBECONFIG (a list, as kubectl merges it), else ~/.kube/config if it exists."""
    if explicit is not None:
        return str(explicit)
    if environ.get("KUBECONFIG"):
        return environ["KUBECONFIG"]
    default = home / ".kube" / "config"
    return str(default) if default.exists() else None


def connect(
    kubeconfig: Path | None = None,
    context: str | None = None,
    *,
    environ: dict[str, str] | None = None,
    home: Path | None = None,
) -> Connection:
    """A client for the first of: --kubeconfig, $KUBECONFIG, ~/.kube/config, the pod's service account
    (when $KUBERNETES_SERVICE_HOST says this runs in a pod). Raises ConnectError saying why not."""
    env = dict(os.environ) if environ is None else environ
    path = _kubeconfig(kubeconfig, env, Path.home() if home is None else home)
    if path is None:
        if not env.get("KUBERNETES_SERVICE_HOST"):
            raise ConnectError("no kubeconfig (--kubeconfig, $KUBECONFIG or ~/.kube/config) and not running in a pod")
        if context is not None:
            raise ConnectError("--context needs a kubeconfig; in a pod the service account is used")
        try:
            client = official.new_incluster_client(retries=0)
        except Exception as exc:
            raise ConnectError(f"in-cluster credentials could not be loaded: {exc}") from None
        return Connection(client, client.configuration.host, "in-cluster service account")
    try:
        client = official.new_client_from_config(path, context=context, retries=0)
    except Exception as exc:  # the loader raises ConfigException, OSError, yaml errors, ...
        raise ConnectError(f"kubeconfig {path} could not be loaded: {exc}") from None
    where = f"kubeconfig {path}" + (f" (context {context})" if context else "")
    return Connection(client, client.configuration.host, where)
