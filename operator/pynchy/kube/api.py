"""A small REST layer over the official client: one code path for every kind the operator touches.

Calls are blocking (urllib3) and run in a thread pool sized for the reconcile workers, so
handlers stay async without a second HTTP stack.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import kubernetes
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from pynchy.errors import NotFoundError, PynchyError, TemporaryError
from pynchy.kube import official

FIELD_MANAGER = "pynchy-operator"


@dataclass(frozen=True)
class ResourceType:
    prefix: str  # "/api/v1" or "/apis/<group>/<version>"
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return self.prefix.removeprefix("/api/").removeprefix("/apis/")


EVENTS_V1 = "Event.events.k8s.io"
RESOURCES: dict[str, ResourceType] = {
    "ServiceAccount": ResourceType("/api/v1", "serviceaccounts"),
    "PersistentVolumeClaim": ResourceType("/api/v1", "persistentvolumeclaims"),
    "ConfigMap": ResourceType("/api/v1", "configmaps"),
    "Secret": ResourceType("/api/v1", "secrets"),
    "Pod": ResourceType("/api/v1", "pods"),
    "Event": ResourceType("/api/v1", "events"),
    # The same kind in events.k8s.io (series, reportingController): keyed Kind.group, see resource_key.
    EVENTS_V1: ResourceType("/apis/events.k8s.io/v1", "events"),
    "NetworkPolicy": ResourceType("/apis/networking.k8s.io/v1", "networkpolicies"),
    "Role": ResourceType("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ResourceType("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "StorageClass": ResourceType("/apis/storage.k8s.io/v1", "storageclasses", namespaced=False),
    "RuntimeClass": ResourceType("/apis/node.k8s.io/v1", "runtimeclasses", namespaced=False),
    "Group": ResourceType("/apis/pynchy.dev/v1alpha1", "groups"),
    "Workspace": ResourceType("/apis/pynchy.dev/v1alpha1", "workspaces"),
    "ScheduledTask": ResourceType("/apis/pynchy.dev/v1alpha1", "scheduledtasks"),
    "AgentRun": ResourceType("/apis/pynchy.dev/v1alpha1", "agentruns"),
}


def resource_key(obj: dict[str, Any]) -> str:
    """The RESOURCES key of an object: its kind, or Kind.group where another group has the kind too."""
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    qualified = f"{obj['kind']}.{group}"
    return qualified if group and qualified in RESOURCES else str(obj["kind"])


class KubeError(PynchyError):
    """A failed API call, with the server's status code (0: no connection), reason and message.

    Raised through `kube_error`, so its class says what to do: `TemporaryKubeError` is worth
    retrying, `KubeNotFoundError` is a 404; any other status is a plain KubeError (a refusal:
    400, 403, 422, ...).
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def gone(self) -> bool:
        """The object or its namespace is going away: stop working on it, do not retry."""
        return self.status == 404 or (self.status == 403 and "being terminated" in self.message)


class TemporaryKubeError(KubeError, TemporaryError):
    """No connection (status 0), a timeout, a conflict, throttling or a server error: retry, after
    `retry_after` seconds when the server said (Retry-After, or the Status' retryAfterSeconds)."""

    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(status, reason, message)
        self.retry_after = retry_after


class KubeNotFoundError(KubeError, NotFoundError):
    """404: the object (or its kind, or its namespace) does not exist."""


TEMPORARY_STATUSES = frozenset({0, 408, 409, 429})  # and every 5xx


def kube_error(status: int, reason: str, message: str, retry_after: float | None = None) -> KubeError:
    """The KubeError of the class that fits `status`."""
    if status == 404:
        return KubeNotFoundError(status, reason, message)
    if status in TEMPORARY_STATUSES or status >= 500:
        return TemporaryKubeError(status, reason, message, retry_after)
    return KubeError(status, reason, message)


def retry_after_seconds(header: str | None, body: Any = None) -> float | None:
    """The delay the server asks for: a Retry-After header in seconds, else a Status body's
    details.retryAfterSeconds; None when neither says (or says nothing usable)."""
    candidates: list[Any] = [header]
    if isinstance(body, dict) and isinstance(body.get("details"), dict):
        candidates.append(body["details"].get("retryAfterSeconds"))
    for value in candidates:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def error_from_exception(exc: ApiException) -> KubeError:
    """The KubeError for a response the API server answered with an error status."""
    message = exc.reason or ""
    reason = exc.reason or ""
    body: Any = None
    if exc.body:
        try:
            body = json.loads(exc.body)
            message = body.get("message", message)
            reason = body.get("reason", reason)
        except (ValueError, AttributeError):
            message = str(exc.body)[:500]
    header = exc.headers.get("Retry-After") if exc.headers else None
    return kube_error(int(exc.status or 0), str(reason), str(message), retry_after_seconds(header, body))


def load_client() -> ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    try:
        official.load_incluster_config()
    except kubernetes.config.ConfigException:
        # The client reads $KUBECONFIG once at import; read it now so a later setting counts.
        official.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    return ApiClient()


class KubeApi:
    def __init__(self, client: ApiClient, threads: int = 8) -> None:
        self.client = client
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kubeapi")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        official.close_client(self.client)

    @staticmethod
    def path(kind: str, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        rt = RESOURCES[kind]
        path = rt.prefix
        if rt.namespaced and namespace:
            path += f"/namespaces/{quote(namespace)}"
        path += f"/{rt.plural}"
        if name:
            path += f"/{quote(name)}"
        if sub:
            path += f"/{sub}"
        return path

    def _request(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        url = self.client.configuration.host + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json", "Content-Type": content_type}
        self.client.update_params_for_auth(headers, None, ["BearerToken"], path, method, body)
        try:
            # The REST layer serialises dict bodies itself (JSON is valid YAML for apply patches).
            resp = self.client.call_api(method, url, header_params=headers, body=body)
            official.read_response(resp)
        except ApiException as exc:
            raise error_from_exception(exc) from None
        except Exception as exc:  # urllib3 connection errors and the like
            raise kube_error(0, type(exc).__name__, str(exc)) from None
        if resp.status >= 400:
            raise error_from_exception(ApiException(http_resp=resp))
        return json.loads(resp.data) if resp.data else None

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: self._request(method, path, **kwargs))

    async def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A request the server answers with an object (the resource itself, or a list)."""
        obj: dict[str, Any] = await self.request(method, path, **kwargs)
        return obj

    # -- verbs ---------------------------------------------------------------------------

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return await self._object("GET", self.path(kind, namespace, name))
        except KubeNotFoundError:
            return None

    async def list(
        self, kind: str, namespace: str | None, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        result = await self.request("GET", self.path(kind, namespace), query=query)
        return list(result.get("items", []))

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of a whole desired object (create or update in one request)."""
        kind = obj["kind"]
        meta = obj["metadata"]
        return await self._object(
            "PATCH",
            self.path(kind, meta.get("namespace"), meta["name"]),
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=obj,
            content_type="application/apply-patch+yaml",
        )

    async def delete(self, kind: str, namespace: str | None, name: str, uid: str | None = None) -> None:
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", self.path(kind, namespace, name), body=body)
        except KubeError as exc:
            if exc.status not in (404, 409):
                raise

    async def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return await self._object(
            "PATCH",
            self.path(kind, namespace, name, "status"),
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    async def patch(self, kind: str, namespace: str | None, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the object itself (`kind` is a RESOURCES key)."""
        return await self._object(
            "PATCH", self.path(kind, namespace, name), body=patch, content_type="application/merge-patch+json"
        )

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return await self._object("POST", self.path(resource_key(obj), meta.get("namespace")), body=obj)
