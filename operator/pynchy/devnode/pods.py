"""One pod on the dev node: volumes, init containers, the container, restarts, deadline, deletion.

A :class:`PodWorker` lives from the first time the dev node sees a pod bound to it until
the pod object is gone. Its status is written like a kubelet's (merge patch of the status
subresource, with the pod's uid as precondition).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pynchy.devnode import process
from pynchy.devnode.client import Kube, config_object_path, pod_path
from pynchy.devnode.egress import unsupported_egress
from pynchy.devnode.envvars import EnvError, container_env, env_references, expand, object_data, parse_quantity
from pynchy.devnode.pathmap import MountPathError, PathMap, normalize_container_path, plan_links
from pynchy.devnode.sandbox import DEFAULT_UID, Mount, SandboxRuntime, SandboxSpec, bwrap_argv, passwd_lines
from pynchy.devnode.status import (
    DEADLINE_MESSAGE,
    DEADLINE_REASON,
    LOST_MESSAGE,
    LOST_REASON,
    SHUTDOWN_MESSAGE,
    SHUTDOWN_REASON,
    TERMINAL,
    UNKNOWN_CONTAINER_MESSAGE,
    Conditions,
    ContainerRecord,
    exit_code,
    now,
    phase_from_exit,
    pod_addresses,
    set_pod_conditions,
    termination_message,
)
from pynchy.devnode.volumes import VolumeError, VolumePreparer, make_links, remove_links
from pynchy.errors import NotFoundError, RefusedError, TemporaryError
from pynchy.kube.api import KubeError
from pynchy.logs import get_logger

log = get_logger(__name__)

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
DEFAULT_GRACE = 30.0
FORCED_DELETE_GRACE = 2.0
UNSUPPORTED_REASON = "DevNodeUnsupported"
READ_ONLY_VOLUME_KINDS = ("configMap", "secret", "projected", "downwardAPI")  # read-only in any kubelet


class PodGoneError(NotFoundError):
    """The pod object no longer exists (or was replaced): stop without writing anything."""


class PodFailedError(RefusedError):
    """The pod cannot run on the dev node at all; it is marked Failed with this reason and message."""


@dataclass
class NodeContext:
    """What every pod worker shares: the API, the node and the host environment."""

    kube: Kube
    name: str
    data_dir: Path
    host_path: str  # PATH of the dev node: searched for executables, appended to a pod's PATH
    lang: str | None
    service_env: dict[str, str]
    allocatable: dict[str, str]
    backoff: float = 10.0
    max_backoff: float = 300.0
    shutdown_grace: float = 10.0
    retry_delay: float = 1.0
    labels: dict[str, str] = field(default_factory=dict)
    sandbox: SandboxRuntime | None = None  # None: containers run as plain processes (--no-isolation)
    stopping: bool = False  # set when the dev node stops: API calls are tried once or twice, not for long


@dataclass
class _Running:
    """The container process running now, and what is needed to record how it ended."""

    proc: asyncio.subprocess.Process
    record: ContainerRecord
    started_at: str
    container: dict[str, Any]
    launch: Launch
    log_path: Path
    log_offset: int
    mtime_before: float | None


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    links: list[tuple[str, str]]
    termination_file: Path
    termination_in_volume: bool
    sandboxed: bool = False  # argv is bubblewrap's: it survives SIGTERM, the sandbox gets it
    command: list[str] | None = None  # the container's own argv, when argv wraps it (for the log)


def _in_mounts(container_path: str, mounts: list[Mount]) -> str | None:
    """The host path of ``container_path`` when it lies inside one of the mounts (the innermost)."""
    norm = normalize_container_path(container_path)
    best: tuple[int, str] | None = None
    for m in mounts:
        mp = normalize_container_path(m.container_path)
        if norm == mp or norm.startswith(mp.rstrip("/") + "/"):
            rel = norm[len(mp) :].lstrip("/")
            host = str(Path(m.host_path) / rel) if rel else m.host_path
            if best is None or len(mp) > best[0]:
                best = (len(mp), host)
    return None if best is None else best[1]


def _memory_limit(c: dict[str, Any]) -> int | None:
    limit = ((c.get("resources") or {}).get("limits") or {}).get("memory")
    return None if limit is None else int(parse_quantity(limit))


def pod_dir(data_dir: Path, namespace: str, name: str, uid: str) -> Path:
    return data_dir / "pods" / namespace / f"{name}-{uid}"


class PodWorker:
    def __init__(self, ctx: NodeContext, pod: dict[str, Any]) -> None:
        self.ctx = ctx
        self.pod = pod
        meta = pod["metadata"]
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.dir = pod_dir(ctx.data_dir, self.ns, self.name, self.uid)
        self.root = self.dir / "root"
        self.log = log.bind(pod=f"{self.ns}/{self.name}", uid=self.uid)
        spec = pod.get("spec") or {}
        self.init = [ContainerRecord(c["name"], c.get("image", "")) for c in spec.get("initContainers") or []]
        self.main = [ContainerRecord(c["name"], c.get("image", "")) for c in spec.get("containers") or []]
        for r in self.init:
            r.waiting("PodInitializing")
        for r in self.main:
            r.waiting("PodInitializing" if self.init else "ContainerCreating")
        self.conds = Conditions((pod.get("status") or {}).get("conditions"))
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time: str | None = None
        self.sandbox_ready = False
        self.disruption: tuple[str, str] | None = None
        self.volume_paths: dict[str, Path] = {}
        self._links: list[Path] = []
        self._running: _Running | None = None
        self.interrupt: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.gone = False
        self.finished = False
        self._deleting: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._started_mono: float | None = None
        self.task: asyncio.Task[None] | None = None

    # -- events from the dev node ----------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"pod {self.ns}/{self.name}")
        return self.task

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            if self.finished:
                self._start_deletion()
            else:
                self._interrupt("delete")
        self._arm_deadline()

    def object_deleted(self) -> None:
        """The pod object is gone: kill what runs, write nothing."""
        self.gone = True
        self._interrupt("gone")

    def shutdown(self) -> None:
        self._interrupt("shutdown")

    def _interrupt(self, reason: str) -> None:
        if not self.interrupt.done():
            self.interrupt.set_result(reason)

    def _arm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        seconds = (self.pod.get("spec") or {}).get("activeDeadlineSeconds")
        if seconds is None or self._started_mono is None or self.finished:
            return
        remaining = float(seconds) - (time.monotonic() - self._started_mono)
        self._deadline = asyncio.get_running_loop().call_later(max(remaining, 0.0), self._interrupt, "deadline")

    # -- the lifecycle ---------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._lifecycle()
        except PodGoneError:
            self.log.info("pod object gone")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.exception("pod worker failed")
            with contextlib.suppress(Exception):
                await self._kill(0)
                self.phase, self.reason, self.message = (
                    "Failed",
                    "DevNodeError",
                    f"the dev node failed on this pod: {exc}",
                )
                await self._write_status()
        finally:
            if self._deadline is not None:
                self._deadline.cancel()
            if self._running is not None:
                process.signal_group(self._running.proc.pid, signal.SIGKILL)
            self._unlink()
            self.finished = True
        if self.pod["metadata"].get("deletionTimestamp") and not self.gone:
            self._start_deletion()

    async def _lifecycle(self) -> None:
        status = self.pod.get("status") or {}
        meta = self.pod["metadata"]
        if status.get("phase") in TERMINAL:
            self.finished = True
            return
        if status.get("startTime"):
            await self._mark_lost(status)
            return
        if meta.get("deletionTimestamp"):
            return  # deleted before it ever started: nothing to stop
        self.start_time = now()
        self._started_mono = time.monotonic()
        self._arm_deadline()
        await self._write_status()
        life = asyncio.get_running_loop().create_task(self._life())
        either: set[asyncio.Future[Any]] = {life, self.interrupt}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if life.done():
            life.result()
            return
        reason = self.interrupt.result()
        life.cancel()
        try:
            await life
        except asyncio.CancelledError:
            pass
        except (PodGoneError, PodFailedError):
            pass
        await self._on_interrupt(reason)

    async def _life(self) -> None:
        spec = self.pod.get("spec") or {}
        try:
            self._check_supported(spec)
            if self.ctx.sandbox is not None:
                await self._check_egress()
            await self._prepare_volumes()
            self.sandbox_ready = True
            policy = spec.get("restartPolicy") or "Always"
            init_specs = spec.get("initContainers") or []
            for c, rec in zip(init_specs, self.init, strict=True):
                if not await self._run_with_restarts(c, rec, policy, init=True):
                    return
            for rec in self.main:
                rec.waiting("ContainerCreating")
            await self._run_with_restarts(spec["containers"][0], self.main[0], policy, init=False)
        except PodFailedError as exc:
            self.log.warning("pod failed", reason=exc.reason, message=exc.message)
            self.phase, self.reason, self.message = "Failed", exc.reason, exc.message
            await self._write_status()

    def _check_supported(self, spec: dict[str, Any]) -> None:
        containers = spec.get("containers") or []
        if len(containers) != 1:
            raise PodFailedError(
                UNSUPPORTED_REASON,
                f"the dev node runs pods with exactly one container (plus init containers); this pod has "
                f"{len(containers)}",
            )
        for c in spec.get("initContainers") or []:
            if c.get("restartPolicy") == "Always":
                raise PodFailedError(UNSUPPORTED_REASON, f"init container {c['name']!r}: sidecars are not supported")
        for c in [*(spec.get("initContainers") or []), *containers]:
            if not c.get("command"):
                message = (
                    f"container {c['name']!r} has no command: the dev node ignores images, so there is no "
                    "entrypoint to fall back to; set command (and args)"
                )
                record = next(r for r in [*self.init, *self.main] if r.name == c["name"])
                record.terminated(128, started_at=None, finished_at=now(), reason="StartError", message=message)
                raise PodFailedError(UNSUPPORTED_REASON, message)

    async def _check_egress(self) -> None:
        """Refuse a pod whose NetworkPolicies allow egress a sandbox cannot give (see egress.py)."""
        listing = await self.ctx.kube.get(f"/apis/networking.k8s.io/v1/namespaces/{self.ns}/networkpolicies")
        labels = self.pod["metadata"].get("labels") or {}
        problem = unsupported_egress((listing or {}).get("items") or [], labels)
        if problem is not None:
            raise PodFailedError(UNSUPPORTED_REASON, problem)

    async def _prepare_volumes(self) -> None:
        preparer = VolumePreparer(
            self.ctx.kube, self.ctx.name, self.ctx.data_dir, self.pod_view(), self.dir, self.ctx.allocatable
        )
        delay = self.ctx.retry_delay
        last = ""
        while True:
            try:
                self.volume_paths = await preparer.prepare(self.volume_paths)
                return
            except VolumeError as exc:
                if exc.permanent:
                    raise PodFailedError("FailedMount", str(exc)) from None
                message = f"MountVolume failed: {exc}"
            except KubeError as exc:
                message = f"MountVolume failed: {exc.message}"
            if message != last:
                self.log.info("waiting for volumes", message=message)
                for r in self.main:
                    r.waiting("ContainerCreating", message)
                await self._write_status()
                last = message
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _run_with_restarts(self, c: dict[str, Any], rec: ContainerRecord, policy: str, *, init: bool) -> bool:
        """Run one container according to the restart policy; False when the pod ends Failed."""
        backoff = self.ctx.backoff
        while True:
            started = time.monotonic()
            code = await self._run_once(c, rec, init=init)
            if init and code == 0:
                return True
            if init and policy == "Never":
                self.phase = "Failed"
                await self._write_status()
                return False
            if not init and (policy == "Never" or (policy == "OnFailure" and code == 0)):
                self.phase = phase_from_exit(code)
                await self._write_status()
                return code == 0
            if time.monotonic() - started > 2 * self.ctx.max_backoff:
                backoff = self.ctx.backoff
            rec.restarting(
                "CrashLoopBackOff",
                f"back-off {backoff:g}s restarting failed container={rec.name} pod={self.name}_{self.ns}({self.uid})",
            )
            await self._write_status()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.ctx.max_backoff)
            rec.restart_count += 1

    async def _run_once(self, c: dict[str, Any], rec: ContainerRecord, *, init: bool) -> int:
        launch = await self._launch_with_retries(c, rec)
        if isinstance(launch, int):
            return launch
        try:
            self._links = make_links(launch.links)
        except (VolumeError, OSError) as exc:
            return self._start_error(rec, str(exc))
        # On cancellation (deletion, deadline, shutdown) the links stay until _kill has stopped the process.
        code = await self._execute(c, rec, launch, init=init)
        self._unlink()
        return code

    def _start_error(self, rec: ContainerRecord, message: str) -> int:
        """The container could not start: terminated with the runtime's StartError, exit code 128."""
        self.log.warning("container failed to start", container=rec.name, message=message)
        rec.terminated(128, started_at=None, finished_at=now(), reason="StartError", message=message)
        return 128

    def _unlink(self) -> None:
        links, self._links = self._links, []
        remove_links(links)

    async def _launch_with_retries(self, c: dict[str, Any], rec: ContainerRecord) -> Launch | int:
        delay = self.ctx.retry_delay
        last = ""
        while True:
            try:
                return await self._launch(c)
            except (EnvError, VolumeError, KubeError) as exc:
                message = exc.message if isinstance(exc, KubeError) else str(exc)
                if isinstance(exc, VolumeError) and exc.permanent:
                    return self._start_error(rec, message)
            except (process.StartError, MountPathError) as exc:
                return self._start_error(rec, str(exc))
            if message != last:
                self.log.info("container config error", container=c["name"], message=message)
                rec.waiting(EnvError.reason, message)
                await self._write_status()
                last = message
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _launch(self, c: dict[str, Any]) -> Launch:
        """Everything needed to start container ``c``: env, argv, cwd, mounts (may raise)."""
        refs = env_references(c)
        objects: dict[tuple[str, str], dict[str, str] | None] = {}
        for kind, name in refs:
            obj = await self.ctx.kube.get(config_object_path(self.ns, kind, name))
            objects[(kind, name)] = None if obj is None else object_data(obj)
        pod_env = container_env(self.pod_view(), c, objects, self.ctx.service_env, self.ctx.allocatable)
        mounts = self._mounts(c, pod_env)
        argv = [expand(a, pod_env, self.ctx.service_env) for a in [*(c.get("command") or []), *(c.get("args") or [])]]
        if self.ctx.sandbox is not None:
            return await self._sandboxed(c, pod_env, mounts, argv, self.ctx.sandbox)
        return await self._as_process(c, pod_env, mounts, argv)

    def _mounts(self, c: dict[str, Any], pod_env: dict[str, str]) -> list[Mount]:
        """The container's volume mounts resolved to host paths (``subPath`` made if missing)."""
        kinds = {v["name"]: v for v in (self.pod.get("spec") or {}).get("volumes") or []}
        mounts: list[Mount] = []
        for m in c.get("volumeMounts") or []:
            volume = self.volume_paths.get(m["name"])
            if volume is None:
                raise VolumeError(f"volume {m['name']!r} is not defined in the pod", permanent=True)
            sub = m.get("subPath") or (
                expand(m["subPathExpr"], pod_env, self.ctx.service_env) if m.get("subPathExpr") else ""
            )
            target = volume / sub if sub else volume
            if sub and not target.exists():
                target.mkdir(parents=True, exist_ok=True)
            source = kinds.get(m["name"]) or {}
            read_only = bool(m.get("readOnly")) or any(k in source for k in READ_ONLY_VOLUME_KINDS)
            mounts.append(Mount(m["mountPath"], str(target), read_only))
        return mounts

    def _base_env(self) -> dict[str, str]:
        """What the runtime adds under the pod's own variables: PATH, LANG, HOSTNAME, service variables."""
        env: dict[str, str] = {"PATH": self.ctx.host_path}
        if self.ctx.lang:
            env["LANG"] = self.ctx.lang
        env["HOSTNAME"] = self.hostname
        env.update(self.ctx.service_env)
        return env

    @property
    def hostname(self) -> str:
        return ((self.pod.get("spec") or {}).get("hostname") or self.name)[:63]

    async def _as_process(
        self, c: dict[str, Any], pod_env: dict[str, str], mounts: list[Mount], argv: list[str]
    ) -> Launch:
        """No sandbox: container paths are mapped into the pod root (symlinks to the volumes)."""
        tpath = c.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
        pmap = PathMap.for_container(str(self.root), [m.container_path for m in mounts], tpath)
        links = plan_links(str(self.root), [(m.container_path, m.host_path) for m in mounts])
        env = self._base_env()
        env["HOME"] = str(self.root)
        mapped = pmap.env(pod_env)
        if "PATH" in mapped:
            mapped["PATH"] = f"{mapped['PATH']}:{self.ctx.host_path}" if mapped["PATH"] else self.ctx.host_path
        env.update(mapped)

        argv = pmap.argv(argv)
        working_dir = c.get("workingDir") or ""
        cwd = Path(pmap(working_dir)) if working_dir else self.root
        self.root.mkdir(parents=True, exist_ok=True)
        if working_dir and not working_dir.startswith("/"):
            cwd = self.root / working_dir
        elif working_dir and pmap(working_dir) == working_dir and not cwd.is_dir():
            raise process.StartError(f"workingDir {working_dir!r} does not exist on the dev node")
        search = self.ctx.host_path + (f":{mapped['PATH']}" if "PATH" in pod_env else "")
        argv[0] = await asyncio.to_thread(process.resolve_executable, argv[0], search, cwd)
        in_volume = _in_mounts(tpath, mounts) is not None
        return Launch(argv, env, cwd, links, Path(pmap.local(tpath)), in_volume)

    async def _sandboxed(
        self, c: dict[str, Any], pod_env: dict[str, str], mounts: list[Mount], argv: list[str], box: SandboxRuntime
    ) -> Launch:
        """A bubblewrap sandbox: the volumes really mounted at their paths, so nothing is mapped."""
        pod_sc = (self.pod.get("spec") or {}).get("securityContext") or {}
        sc = c.get("securityContext") or {}
        uid = int(sc.get("runAsUser", pod_sc.get("runAsUser", DEFAULT_UID)))
        gid = int(sc.get("runAsGroup", pod_sc.get("runAsGroup", DEFAULT_UID)))
        env = self._base_env()
        env["HOME"] = "/"
        env.update(pod_env)
        if "PATH" in pod_env:
            env["PATH"] = f"{pod_env['PATH']}:{self.ctx.host_path}" if pod_env["PATH"] else self.ctx.host_path
        if "/" not in argv[0]:  # looked up on the host: the image (venv, /usr) is at the same paths inside
            argv[0] = await asyncio.to_thread(process.resolve_executable, argv[0], env["PATH"], self.dir)
        files = self.dir / "sandbox"
        files.mkdir(parents=True, exist_ok=True)
        passwd, group = passwd_lines(uid, gid, env["HOME"])
        (files / "passwd").write_text(passwd)
        (files / "group").write_text(group)
        tpath = normalize_container_path(c.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH)
        in_volume = _in_mounts(tpath, mounts)
        tfile = Path(in_volume) if in_volume is not None else self.root / tpath.lstrip("/")
        spec = SandboxSpec(
            argv=argv,
            mounts=mounts,
            image=box.image,
            passwd_file=str(files / "passwd"),
            group_file=str(files / "group"),
            uid=uid,
            gid=gid,
            hostname=self.hostname,
            workdir=c.get("workingDir") or "/",
            read_only_root=bool(sc.get("readOnlyRootFilesystem")),
            add_capabilities=tuple((sc.get("capabilities") or {}).get("add") or ()),
            relay_dir=box.relay_dir,
            relay_args=box.relay_args,
            termination_file=None if in_volume is not None else (str(tfile), tpath),
            memory_limit=_memory_limit(c),
            bwrap=box.bwrap,
        )
        return Launch(bwrap_argv(spec), env, self.dir, [], tfile, in_volume is not None, sandboxed=True, command=argv)

    async def _execute(self, c: dict[str, Any], rec: ContainerRecord, launch: Launch, *, init: bool) -> int:
        log_path = self.dir / f"{c['name']}.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        tfile = launch.termination_file
        before: float | None = None
        if launch.termination_in_volume:
            before = tfile.stat().st_mtime if tfile.exists() else None
        else:
            tfile.parent.mkdir(parents=True, exist_ok=True)
            tfile.write_bytes(b"")
        if launch.cwd.is_relative_to(self.root) and not launch.cwd.exists():
            launch.cwd.mkdir(parents=True, exist_ok=True)
        try:
            proc = await process.spawn(
                launch.argv, launch.env, launch.cwd, log_path, leader_ignores_term=launch.sandboxed
            )
        except process.StartError as exc:
            return self._start_error(rec, str(exc))
        started_at = now()
        running = _Running(proc, rec, started_at, c, launch, log_path, offset, before)
        self._running = running
        rec.running(proc.pid, started_at)
        if not init:
            self.phase = "Running"
        self.log.info("container started", container=rec.name, pid=proc.pid, argv=launch.command or launch.argv)
        await self._write_status()
        rc = await proc.wait()
        process.signal_group(proc.pid, signal.SIGKILL)  # what the leader left behind, as when PID 1 exits
        self._running = None
        return await self._finish_container(running, rc)

    async def _finish_container(self, running: _Running, rc: int) -> int:
        code = exit_code(rc)
        message = await asyncio.to_thread(self._read_message, running, code)
        running.record.terminated(code, started_at=running.started_at, finished_at=now(), message=message)
        self.log.info("container exited", container=running.record.name, exit_code=code)
        return code

    def _read_message(self, running: _Running, code: int) -> str:
        launch, tfile = running.launch, running.launch.termination_file
        text = None
        try:
            if not launch.termination_in_volume or (tfile.exists() and tfile.stat().st_mtime != running.mtime_before):
                text = tfile.read_text(errors="replace")
        except OSError:
            text = None
        tail = None
        policy = running.container.get("terminationMessagePolicy") or "File"
        if not text and policy == "FallbackToLogsOnError" and code != 0:
            try:
                with running.log_path.open("rb") as f:
                    f.seek(max(running.log_offset, running.log_path.stat().st_size - 64 * 1024))
                    tail = f.read().decode(errors="replace")
            except OSError:
                tail = None
        return termination_message(text, tail, policy, code)

    # -- interruptions ---------------------------------------------------------------------

    def _grace(self, reason: str) -> float:
        spec = self.pod.get("spec") or {}
        pod_grace = spec.get("terminationGracePeriodSeconds")
        grace = DEFAULT_GRACE if pod_grace is None else float(pod_grace)
        if reason == "delete":
            dgp = self.pod["metadata"].get("deletionGracePeriodSeconds")
            return grace if dgp is None else float(dgp)
        if reason == "shutdown":
            return min(grace, self.ctx.shutdown_grace)
        if reason == "gone":
            return min(grace, FORCED_DELETE_GRACE)
        return grace

    async def _kill(self, grace: float) -> None:
        running = self._running
        if running is not None:
            rc = await process.stop(running.proc, grace)
            self._running = None
            await self._finish_container(running, rc)
        self._unlink()

    async def _on_interrupt(self, reason: str) -> None:
        self.log.info("stopping pod", why=reason)
        await self._kill(self._grace(reason))
        if reason == "gone":
            return
        if reason == "deadline":
            self.phase, self.reason, self.message = "Failed", DEADLINE_REASON, DEADLINE_MESSAGE
        elif reason == "shutdown":
            self.phase, self.reason, self.message = "Failed", SHUTDOWN_REASON, SHUTDOWN_MESSAGE
            self.disruption = ("TerminationByKubelet", SHUTDOWN_MESSAGE)
        else:  # deleted: the phase follows from how the container ended
            code = self.main[0].exit_code if self.main else None
            self.phase = "Succeeded" if code == 0 else "Failed"
        await self._write_status()

    async def _mark_lost(self, status: dict[str, Any]) -> None:
        """A pod started by an earlier run of the dev node: its processes are gone. Mark it Failed."""
        self.start_time = status.get("startTime")
        by_name = {
            cs["name"]: cs
            for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        }
        for rec in [*self.init, *self.main]:
            cs = by_name.get(rec.name)
            if not cs:
                continue
            rec.restart_count = int(cs.get("restartCount") or 0)
            rec.container_id = cs.get("containerID") or ""
            rec.last_state = cs.get("lastState") or {}
            state = cs.get("state") or {}
            if "terminated" in state:
                rec.state = state
            elif "running" in state:
                rec.terminated(
                    137,
                    started_at=state["running"].get("startedAt"),
                    finished_at=now(),
                    reason="ContainerStatusUnknown",
                    message=UNKNOWN_CONTAINER_MESSAGE,
                )
            else:
                rec.state = state
        self.phase, self.reason, self.message = "Failed", LOST_REASON, LOST_MESSAGE
        self.log.warning("pod lost in a dev node restart; marked Failed")
        await self._write_status()

    # -- API writes ------------------------------------------------------------------------

    def pod_view(self) -> dict[str, Any]:
        """The pod with the addresses this node assigns, whether or not the watch has shown our write yet."""
        return {**self.pod, "status": {**(self.pod.get("status") or {}), **pod_addresses()}}

    def compose(self) -> dict[str, Any]:
        set_pod_conditions(
            self.conds, phase=self.phase, init=self.init, main=self.main, sandbox_ready=self.sandbox_ready
        )
        if self.disruption:
            self.conds.set("DisruptionTarget", True, *self.disruption)
        return {
            "phase": self.phase,
            "conditions": self.conds.to_list(),
            **pod_addresses(),
            "startTime": self.start_time,
            "initContainerStatuses": [r.to_status() for r in self.init] or None,
            "containerStatuses": [r.to_status() for r in self.main],
            "reason": self.reason,
            "message": self.message,
        }

    async def _write_status(self) -> None:
        if self.gone:
            raise PodGoneError
        body = {"metadata": {"uid": self.uid}, "status": self.compose()}
        delay = 0.2
        attempts = 2 if self.ctx.stopping else 10
        for attempt in range(attempts):
            try:
                await self.ctx.kube.merge_patch(pod_path(self.ns, self.name, "status"), body)
                return
            except KubeError as exc:
                if exc.status in (404, 409):
                    self.gone = True
                    raise PodGoneError from None
                if not isinstance(exc, TemporaryError) or attempt == attempts - 1:
                    self.log.error("pod status update refused", error=str(exc))
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _start_deletion(self) -> None:
        if self._deleting is None and not self.gone:
            self._deleting = asyncio.get_running_loop().create_task(self._finish_deletion())

    async def _finish_deletion(self) -> None:
        """The kubelet's last step: delete the object for good once nothing runs (grace 0, uid precondition)."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        delay = 0.2
        for _ in range(10):
            try:
                await self.ctx.kube.delete(pod_path(self.ns, self.name), body)
                self.log.info("pod deleted")
                break
            except KubeError as exc:
                if exc.status in (404, 409):
                    break
                self.log.warning("final pod deletion failed; retrying", error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        await asyncio.to_thread(self.cleanup)

    def cleanup(self) -> None:
        remove_pod_files(self.ctx.data_dir, self.ns, self.name, self.uid)


def remove_pod_files(data_dir: Path, namespace: str, name: str, uid: str) -> None:
    """Remove the pod root and its local volumes (emptyDir, secrets...); container logs stay."""
    d = pod_dir(data_dir, namespace, name, uid)
    for sub in ("root", "volumes"):
        shutil.rmtree(d / sub, ignore_errors=True)


def host_environment() -> tuple[str, str | None]:
    """The dev node's PATH (plus its interpreter's bin folder, where the venv's scripts are) and LANG."""
    path = os.environ.get("PATH", os.defpath)
    scripts = os.path.dirname(sys.executable)
    if scripts and scripts not in path.split(os.pathsep):
        path = f"{path}{os.pathsep}{scripts}" if path else scripts
    return path, os.environ.get("LANG")
