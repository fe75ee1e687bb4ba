"""The gateway's `GET /status`, fetched through the API server's service proxy (the Service's
`metrics` port: no port-forward, no route from this machine to the pod network needed) or from a URL
given by hand (after `kubectl port-forward`, or in tests)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import quote

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ValidationError

from pynchy.clusterstatus.contract import STATUS_PATH, GatewayHealth
from pynchy.kube import official

GATEWAY_NAMESPACE = "pynchy-system"
GATEWAY_SERVICE = "pynchy-gateway"
METRICS_PORT_NAME = "metrics"  # manifests/base/gateway/service.yaml
TIMEOUT = 5.0  # seconds


class GatewayProbe(BaseModel):
    via: str  # how it was asked, for people
    health: GatewayHealth | None  # None: not reached, or it did not answer with the status JSON
    error: str | None  # why not, in one line


def proxy_path(namespace: str, service: str = GATEWAY_SERVICE, port: str = METRICS_PORT_NAME) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/services/{quote(service)}:{quote(port)}/proxy{STATUS_PATH}"


def _parse(via: str, status: int, body: bytes) -> GatewayProbe:
    if status != 200:
        return GatewayProbe(via=via, health=None, error=f"HTTP {status}: {_message(body)}")
    try:
        return GatewayProbe(via=via, health=GatewayHealth.model_validate_json(body), error=None)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        return GatewayProbe(via=via, health=None, error=f"not the gateway's status JSON ({where}: {first['msg']})")


def _message(body: bytes) -> str:
    """A Kubernetes Status' message (what the service proxy answers with), else the body's start."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text.splitlines()[0][:300] if text else "(empty body)"
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])[:300]
    return text[:300]


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "reason", None)  # urllib's URLError wraps the socket error
    cause = inner if isinstance(inner, BaseException) else exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:300]}" if lines else type(cause).__name__


def from_url(url: str, timeout: float = TIMEOUT) -> GatewayProbe:
    """`GET <url>/status`; `url` is the gateway's metrics port, e.g. http://127.0.0.1:9090."""
    target = url.rstrip("/")
    if not target.endswith(STATUS_PATH):
        target += STATUS_PATH
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:
            return _parse(target, resp.status, resp.read())
    except urllib.error.HTTPError as exc:
        return _parse(target, exc.code, exc.read())
    except (OSError, ValueError) as exc:  # refused, timed out, unresolvable; a malformed URL
        return GatewayProbe(via=target, health=None, error=_reason(exc))


def via_service_proxy(
    client: ApiClient,
    namespace: str = GATEWAY_NAMESPACE,
    service: str = GATEWAY_SERVICE,
    port: str = METRICS_PORT_NAME,
    timeout: float = TIMEOUT,
) -> GatewayProbe:
    """`GET /status` through the API server (RBAC: `services/proxy` get in the gateway's namespace)."""
    path = proxy_path(namespace, service, port)
    via = f"the API server's service proxy ({namespace}/{service}:{port})"
    headers = {"Accept": "application/json"}
    client.update_params_for_auth(headers, None, ["BearerToken"], path, "GET", None)
    try:
        resp = client.call_api("GET", client.configuration.host + path, header_params=headers, _request_timeout=timeout)
        body = official.read_response(resp) or b""
    except ApiException as exc:
        raw = exc.body or b""
        return _parse(via, int(exc.status or 0), raw.encode() if isinstance(raw, str) else bytes(raw))
    except Exception as exc:  # urllib3's connection errors and the like
        return GatewayProbe(via=via, health=None, error=_reason(exc))
    return _parse(via, resp.status, body)
