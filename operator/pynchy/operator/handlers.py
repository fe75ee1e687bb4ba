"""kopf wiring: watch events become work-queue keys. Run with `pynchy operator` or
`kopf run -m pynchy.operator.handlers --all-namespaces --standalone`.

Handlers are level-triggered (`on.event`): kopf stores no per-object progress, adds no
finalizers (children are garbage-collected through owner references) and writes nothing
to our objects except what the reconcilers decide, so an idle operator or a restart
makes no write request.

Every handler is `async`: kopf runs plain functions in a thread pool, and the work queue and the
AgentRun admission index belong to the event loop.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from pynchy.kube.api import KubeApi, load_client
from pynchy.logs import get_logger
from pynchy.metrics import MetricsServer
from pynchy.operator.admission import AGENT_POD_SELECTOR
from pynchy.operator.build.common import LABEL_MANAGED_BY, MANAGED_BY
from pynchy.operator.controller import Controller
from pynchy.operator.metrics import OperatorMetrics
from pynchy.operator.settings import OperatorSettings
from pynchy.settings import load

log = get_logger(__name__)
GROUP, VERSION = "pynchy.dev", "v1alpha1"


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """Project-specific storage names, so another kopf operator never collides with ours."""
    settings.persistence.finalizer = "pynchy.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="pynchy.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="pynchy.dev", key="last-handled-configuration"
    )
    # We post our own Events on condition transitions; kopf's log-as-event would add writes.
    settings.posting.enabled = False
    # Least privilege: no CustomResourceDefinition or Namespace listing.
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster credentials, else $KUBECONFIG as it is now (the client library reads it only at import)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure_kopf(settings)
    op_settings = load(OperatorSettings)
    metrics = OperatorMetrics()
    # The process serves /metrics on PYNCHY_METRICS_PORT; an embedding (tests) puts (host, port) or
    # None in the memo instead, so operators embedded side by side never reach for the same port.
    address = getattr(
        memo, "metrics_address", ("0.0.0.0", op_settings.metrics_port) if op_settings.metrics_port else None
    )
    if address is not None:
        server = MetricsServer(metrics.registry)
        try:
            await server.start(*address)
        except OSError as exc:
            raise kopf.PermanentError(
                f"cannot serve metrics on {address[0]}:{address[1]} ({exc}); set PYNCHY_METRICS_PORT to a free "
                "port, or 0 to turn metrics off"
            ) from exc
        memo.metrics_server = server
    api = KubeApi(load_client(), threads=op_settings.workers)
    # An embedding (tests) may put a clock in the memo; schedules then run on its time.
    memo.controller = Controller(api, op_settings, clock=getattr(memo, "clock", None), metrics=metrics)
    await memo.controller.start()
    log.info("operator started", namespaces=op_settings.namespaces or "all", workers=op_settings.workers)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = getattr(memo, "controller", None)
    if controller is not None:
        await controller.stop()
        controller.api.close()
    server: MetricsServer | None = getattr(memo, "metrics_server", None)
    if server is not None:
        await server.stop()


@kopf.on.probe(id="queue")
def queue_probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    controller: Controller = memo.controller
    return {"processed": controller.queue.processed, "idle": controller.queue.idle()}


@kopf.on.event(GROUP, VERSION, "groups")
async def group_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_owner_event("Group", event.get("type"), dict(body))


@kopf.on.event(GROUP, VERSION, "workspaces")
async def workspace_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_owner_event("Workspace", event.get("type"), dict(body))


@kopf.on.event(GROUP, VERSION, "scheduledtasks")
async def scheduledtask_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_task_event(event.get("type"), dict(body))


@kopf.on.event(GROUP, VERSION, "agentruns")
async def agentrun_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_run_event(event.get("type"), dict(body))


_MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}


@kopf.on.event("v1", "pods", labels=AGENT_POD_SELECTOR)
async def pod_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_pod_event(event.get("type"), dict(body))


@kopf.on.event("v1", "serviceaccounts", labels=_MANAGED)
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=_MANAGED)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "roles", labels=_MANAGED)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "rolebindings", labels=_MANAGED)
async def child_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_child_event(dict(body))


@kopf.on.event("v1", "configmaps")
async def config_map_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_child_event(dict(body))
    memo.controller.on_referenced_event("ConfigMap", dict(body))


@kopf.on.event("v1", "persistentvolumeclaims")
async def claim_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_child_event(dict(body))
    memo.controller.on_referenced_event("PersistentVolumeClaim", dict(body))


@kopf.on.event("v1", "secrets")
async def secret_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_referenced_event("Secret", dict(body))


@kopf.on.event("node.k8s.io", "v1", "runtimeclasses")
async def runtime_class_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_referenced_event("RuntimeClass", dict(body))


logging.getLogger("kopf.activities.probe").setLevel(logging.WARNING)
