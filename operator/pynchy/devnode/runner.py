"""The dev node itself: registration, heartbeat, scheduling, and a worker per pod, in one thread."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import signal
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pynchy.devnode import node as nodeapi
from pynchy.devnode import process
from pynchy.devnode.client import Kube, informer, pod_path, pods_path
from pynchy.devnode.pods import NodeContext, PodWorker, host_environment, remove_pod_files
from pynchy.devnode.relay import Relays
from pynchy.devnode.sandbox import HostImage, Sandbox, SandboxRuntime, unavailable_reason
from pynchy.devnode.status import node_selector_matches, now
from pynchy.devnode.volumes import release
from pynchy.errors import PynchyError
from pynchy.kube.api import KubeError, KubeNotFoundError
from pynchy.logs import get_logger

log = get_logger(__name__)

DEFAULT_SCHEDULER = "default-scheduler"
UNSCHEDULABLE_MESSAGE = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."


class DevNodeError(PynchyError, RuntimeError):
    """The dev node could not start; the message says why."""


class DevNode:
    """Scheduler and kubelet for one Node, running the pods bound to it as local processes.

    ``start()`` registers the Node, handles the pods already bound to it, and returns; the
    work happens in a background thread with its own event loop until ``stop()``. Also a
    context manager. ``namespaces`` limits the pods it schedules and runs (default: all).
    ``sandbox`` runs every container in a bubblewrap sandbox (start() fails when bubblewrap
    cannot run here); ``None`` runs them as plain processes of this user, with no isolation.
    """

    def __init__(
        self,
        kubeconfig: Path,
        data_dir: Path,
        name: str = "pynchy-dev",
        namespaces: list[str] | None = None,
        *,
        sandbox: Sandbox | None,
        heartbeat_seconds: float = 10.0,
        backoff_seconds: float = 10.0,
        max_backoff_seconds: float = 300.0,
        shutdown_grace_seconds: float = 10.0,
        start_timeout: float = 60.0,
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.data_dir = Path(data_dir).resolve()
        self.name = name
        self.namespaces = list(namespaces) if namespaces is not None else None
        self.heartbeat_seconds = heartbeat_seconds
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.start_timeout = start_timeout
        self.sandbox = sandbox
        self._relays: Relays | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._workers: dict[str, PodWorker] = {}
        self._live: set[PodWorker] = set()
        self._ctx: NodeContext | None = None
        self._node: dict[str, Any] | None = None
        self._stopping = False

    # -- public API --------------------------------------------------------------------------

    def __enter__(self) -> DevNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> DevNode:
        if self._thread is not None:
            raise DevNodeError("this DevNode was already started")
        if self.sandbox is not None and (reason := unavailable_reason(self.sandbox.bwrap)) is not None:
            raise DevNodeError(f"cannot sandbox pods: {reason}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._thread_main, name=f"devnode-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout):
            self.stop()
            raise DevNodeError(f"dev node {self.name!r} not ready after {self.start_timeout:.0f}s")
        if self._error is not None:
            self._thread.join(10)
            raise DevNodeError(f"dev node {self.name!r} failed to start: {self._error}") from self._error
        atexit.register(self.stop)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every pod (marked Failed, reason Terminated), mark the Node NotReady, end the thread."""
        atexit.unregister(self.stop)
        loop, stop_event, thread = self._loop, self._stop, self._thread
        if thread is None or not thread.is_alive():
            return
        if loop is not None and stop_event is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout)
        if thread.is_alive():
            log.error("dev node thread did not stop in time", node=self.name)

    # -- the thread ---------------------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self._error = self._error or exc
            log.exception("dev node stopped with an error", node=self.name)
        finally:
            self._ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        kube = Kube(self.kubeconfig)
        await kube.open()
        tasks: list[asyncio.Task[None]] = []
        try:
            version = await nodeapi.server_version(kube)
            self._node = await nodeapi.register(kube, self.name, self.data_dir, version)
            await nodeapi.renew_lease(kube, self.name, self._node["metadata"]["uid"])
            host_path, lang = host_environment()
            box = await self._sandbox_runtime()
            server = urlsplit(kube.host)
            port = str(server.port or 443)
            self._ctx = NodeContext(
                kube=kube,
                name=self.name,
                data_dir=self.data_dir,
                host_path=host_path,
                lang=lang,
                service_env={
                    "KUBERNETES_SERVICE_HOST": server.hostname or "127.0.0.1",
                    "KUBERNETES_SERVICE_PORT": port,
                    "KUBERNETES_SERVICE_PORT_HTTPS": port,
                    "KUBERNETES_PORT": f"tcp://{server.hostname}:{port}",
                },
                allocatable=dict(self._node["status"].get("allocatable") or {}),
                backoff=self.backoff_seconds,
                max_backoff=self.max_backoff_seconds,
                shutdown_grace=self.shutdown_grace_seconds,
                labels=nodeapi.labels(self.name),
                sandbox=box,
            )
            scopes: list[str | None] = list(self.namespaces) if self.namespaces is not None else [None]
            for ns in scopes:  # fail start() now, with the server's message, if pods cannot be listed
                await kube.request("GET", pods_path(ns), query={"limit": "1"})
            synced: list[asyncio.Event] = []
            for ns in scopes:
                own = asyncio.Event()
                synced.append(own)
                tasks.append(
                    asyncio.create_task(
                        informer(
                            kube,
                            pods_path(ns),
                            self._on_own_pod,
                            query={"fieldSelector": f"spec.nodeName={self.name}"},
                            synced=own,
                            what=f"pods on {self.name} in {ns or 'all namespaces'}",
                        )
                    )
                )
                tasks.append(
                    asyncio.create_task(
                        informer(
                            kube,
                            pods_path(ns),
                            self._on_unscheduled_pod,
                            query={"fieldSelector": "spec.nodeName="},
                            what=f"unscheduled pods in {ns or 'all namespaces'}",
                        )
                    )
                )
            tasks.append(
                asyncio.create_task(informer(kube, "/api/v1/persistentvolumes", self._on_volume, what="volumes"))
            )
            tasks.append(asyncio.create_task(self._heartbeat(kube)))
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in synced)), timeout=self.start_timeout)
            log.info("dev node ready", node=self.name, namespaces=self.namespaces or "all", data_dir=str(self.data_dir))
            self._ready.set()
            await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._stopping = True
            if self._ctx is not None:
                self._ctx.stopping = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._shutdown_pods()
            if self._node is not None:
                with contextlib.suppress(Exception):
                    await nodeapi.post_ready(kube, self.name, False, self._node)
            if self._relays is not None:
                await self._relays.close()
            await kube.close()
            log.info("dev node stopped", node=self.name)

    async def _sandbox_runtime(self) -> SandboxRuntime | None:
        if self.sandbox is None:
            log.warning("pods run without isolation: as processes of this user, in the host's namespaces")
            return None
        image = await asyncio.to_thread(HostImage.of_host)
        if (problem := image.exposes(self.data_dir)) is not None:
            raise DevNodeError(problem)
        relay_dir: str | None = None
        if self.sandbox.relays:
            self._relays = Relays(self.sandbox.relays, self.data_dir)
            await self._relays.start()
            relay_dir = str(self._relays.directory)
        log.info("pods run in bubblewrap sandboxes", relays=[str(a) for a in self.sandbox.relays])
        return SandboxRuntime(
            bwrap=self.sandbox.bwrap,
            image=image,
            relay_dir=relay_dir,
            relay_args=tuple(self._relays.launcher_args()) if self._relays else (),
        )

    async def _shutdown_pods(self) -> None:
        live = list(self._live)
        for w in live:
            w.shutdown()
        tasks = [w.task for w in live if w.task is not None]
        deadline = self.shutdown_grace_seconds + 15
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=deadline)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for w in live:  # anything still running after the grace: killed outright
            running = w._running
            if running is not None:
                process.signal_group(running.proc.pid, signal.SIGKILL)
        deletions = [w._deleting for w in self._workers.values() if w._deleting is not None and not w._deleting.done()]
        if deletions:
            await asyncio.wait(deletions, timeout=5)

    async def _heartbeat(self, kube: Kube) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                assert self._node is not None
                await nodeapi.renew_lease(kube, self.name, self._node["metadata"]["uid"])
                self._node = await nodeapi.post_ready(kube, self.name, True, self._node)
            except asyncio.CancelledError:
                raise
            except KubeNotFoundError:
                log.warning("node object gone; registering again", node=self.name)
                with contextlib.suppress(Exception):
                    version = await nodeapi.server_version(kube)
                    self._node = await nodeapi.register(kube, self.name, self.data_dir, version)
            except KubeError as exc:
                log.warning("heartbeat failed", node=self.name, error=str(exc))
            except Exception:
                log.exception("heartbeat failed", node=self.name)

    # -- pods ---------------------------------------------------------------------------------

    async def _on_own_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        worker = self._workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                self._workers.pop(uid, None)
                worker.object_deleted()
                if worker.task is None or worker.task.done():
                    await asyncio.to_thread(worker.cleanup)
            else:
                await asyncio.to_thread(remove_pod_files, self.data_dir, meta["namespace"], meta["name"], uid)
            return
        if self._stopping:
            return
        if worker is not None:
            worker.update(pod)
            return
        assert self._ctx is not None
        worker = PodWorker(self._ctx, pod)
        self._workers[uid] = worker
        self._live.add(worker)
        task = worker.start()
        task.add_done_callback(lambda _t: self._worker_done(worker))

    def _worker_done(self, worker: PodWorker) -> None:
        self._live.discard(worker)
        if worker.gone:
            worker.cleanup()

    async def _on_unscheduled_pod(self, kind: str, pod: dict[str, Any]) -> None:
        if kind == "DELETED" or self._stopping:
            return
        meta, spec = pod["metadata"], pod.get("spec") or {}
        if spec.get("nodeName") or meta.get("deletionTimestamp") or spec.get("schedulingGates"):
            return
        if (spec.get("schedulerName") or DEFAULT_SCHEDULER) != DEFAULT_SCHEDULER:
            return
        if ((pod.get("status") or {}).get("phase") or "Pending") != "Pending":
            return
        assert self._ctx is not None
        kube = self._ctx.kube
        if not node_selector_matches(spec.get("nodeSelector"), self._ctx.labels):
            await self._mark_unschedulable(kube, pod)
            return
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.name},
        }
        try:
            await kube.create(pod_path(meta["namespace"], meta["name"], "binding"), binding)
            log.info("bound pod", pod=f"{meta['namespace']}/{meta['name']}", node=self.name)
        except KubeError as exc:
            if exc.status not in (404, 409):
                log.warning("binding failed", pod=f"{meta['namespace']}/{meta['name']}", error=str(exc))

    async def _mark_unschedulable(self, kube: Kube, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable":
                return
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": UNSCHEDULABLE_MESSAGE,
            "lastProbeTime": None,
            "lastTransitionTime": now(),
        }
        with contextlib.suppress(KubeError):
            await kube.merge_patch(
                pod_path(meta["namespace"], meta["name"], "status"),
                {"metadata": {"uid": meta["uid"]}, "status": {"conditions": [condition]}},
            )

    # -- volumes ------------------------------------------------------------------------------

    async def _on_volume(self, kind: str, pv: dict[str, Any]) -> None:
        if kind == "DELETED" or self._stopping:
            return
        claim_ns = ((pv.get("spec") or {}).get("claimRef") or {}).get("namespace")
        if self.namespaces is not None and claim_ns not in self.namespaces:
            return
        assert self._ctx is not None
        await release(self._ctx.kube, pv, self.data_dir / "volumes")

    # -- CLI ----------------------------------------------------------------------------------

    def run_until_signalled(self) -> None:
        """Run until SIGINT/SIGTERM (the `pynchy devnode` command); must be called from the main thread."""
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        with self:
            while not stop.wait(1.0):
                if not self.alive:
                    raise DevNodeError(f"dev node {self.name!r} stopped unexpectedly: {self._error}")
