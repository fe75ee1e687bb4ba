"""`pynchy dev`: the whole system on one machine, as one supervised process tree.

Start order: etcd → kube-apiserver → kube-controller-manager (the control plane, via
:class:`pynchy.kube.controlplane.ControlPlane`), then CRDs, RBAC and a default StorageClass,
then the gateway, the operator and the dev node (each a `pynchy …` subprocess with the
credentials of its own ServiceAccount), then the demo Group. Stop order is the reverse.

Policy when a child dies: a control-plane process is fatal (everything stops, exit 1: the
cluster is unusable without it). The gateway, the operator and the dev node keep no state
of their own (it is in the API server and the store), so they are restarted with backoff
(1 s doubling to 30 s); five crashes in a row, each within a minute of its start, stop
everything with exit 1. A child that fails before it was ever ready is fatal at once: that
is a configuration problem a restart would only repeat.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pynchy.chat.config import config_path
from pynchy.clusterstatus.resources import condition_of
from pynchy.dev import config
from pynchy.dev.components import Child, LogStream, Spec, pynchy_argv, stop_children
from pynchy.dev.config import DevPaths
from pynchy.dev.preflight import DevError, PidLock, Port, check_ports, http_ok, stale_report
from pynchy.paths import CRDS_DIR, REPO_ROOT

STABLE_SECONDS = 60.0
MAX_CRASHES = 5
MAX_BACKOFF = 30.0

# k3s's default StorageClass: claims bind when their first pod is scheduled.
LOCAL_PATH_CLASS = """
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
"""


class Interrupted(BaseException):
    """SIGINT/SIGTERM while starting or running: stop everything and exit 0."""


@dataclass
class Options:
    data_dir: Path
    apiserver_port: int = config.DEFAULT_APISERVER_PORT
    gateway_port: int = config.DEFAULT_GATEWAY_PORT
    namespace: str = config.DEFAULT_NAMESPACE
    demo: bool = True
    verbose: bool = False
    isolation: bool = True  # False: --no-isolation, agents run as plain processes of this user
    start_timeout: float = 120.0
    stop_grace: float = 20.0


def _display(path: Path) -> str:
    """A path as the user would type it from here (relative inside the current directory)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Supervisor:
    def __init__(self, options: Options, out: TextIO | None = None, environ: dict[str, str] | None = None) -> None:
        self.o = options
        self.paths = DevPaths.at(options.data_dir)
        self.environ = dict(os.environ if environ is None else environ)
        self.stream = LogStream(out, verbose=options.verbose, width=23 if options.verbose else 8)
        self.err = sys.stderr
        self.plane: Any = None  # ControlPlane, imported lazily
        self.children: dict[str, Child] = {}
        self.lock: PidLock | None = None
        self.started = time.monotonic()
        self.started_wall = _now()
        self.ready_seconds: float | None = None
        self.gateway_url = f"http://127.0.0.1:{options.gateway_port}"
        self.operator_health_port = 0
        self.isolation: str | None = None  # what isolates agents, once checked (shown by `pynchy dev status`)
        self._signal: int | None = None  # the first SIGINT/SIGTERM received
        self._signal_at = 0.0
        self._hurry = False  # a second one: kill instead of waiting
        self._raise_ok = False  # while True, a signal interrupts the blocking call at once
        self._keep_pid_file = False

    # -- entry point ---------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, supervise until Ctrl-C/SIGTERM or a fatal failure, stop everything."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        self.stream.start()
        code = 0
        try:
            try:
                self._preflight()
                self._start()
                self._monitor()
            except Interrupted:
                name = signal.Signals(self._signal or signal.SIGINT).name
                self.say(f"{name}: stopping everything (Ctrl-C again kills at once)")
                code = 0
            except DevError as exc:
                self._error(str(exc))
                code = 1
            finally:
                self._signal = self._signal or signal.SIGTERM
                self._shutdown()
        finally:
            self.stream.stop()
            if self.lock is not None and not self._keep_pid_file:
                self.lock.release()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Only flags: the handler runs between any two bytecodes of the main thread, which may
        # hold the terminal stream's lock. The loops poll `_stop_requested()`; the few blocking
        # calls that cannot poll (building/starting the control plane) run with `_raise_ok`.
        # `uv run` forwards the terminal's SIGINT that the child also got from the terminal: a
        # repeat within a second is the same Ctrl-C, not a second one.
        if self._signal is not None:
            if time.monotonic() - self._signal_at > 1.0:
                self._hurry = True
            return
        self._signal = signum
        self._signal_at = time.monotonic()
        if self._raise_ok:
            raise Interrupted

    def _stop_requested(self) -> None:
        if self._signal is not None:
            raise Interrupted

    @contextlib.contextmanager
    def _interruptible(self) -> Iterator[None]:
        self._stop_requested()
        self._raise_ok = True
        try:
            yield
        finally:
            self._raise_ok = False

    def say(self, text: str) -> None:
        self.stream.say(text, prefix="dev")

    def _error(self, text: str) -> None:
        self.stream.flush()  # the children's last lines first
        self.err.write(f"pynchy dev: {text}\n")
        self.err.flush()

    # -- before anything starts ----------------------------------------------------------------

    def _preflight(self) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.lock = PidLock.acquire(self.paths)
        try:
            note = stale_report(self.paths, self.lock)
        except DevError:
            self.lock.restore_stale()
            self._keep_pid_file = True
            raise
        if note:
            self.say(note)
        check_ports(
            [
                Port(self.o.apiserver_port, "kube-apiserver", "--apiserver-port"),
                Port(self.o.gateway_port, "gateway: run API, model proxy, local chat", "--gateway-port"),
            ]
        )
        from pynchy.kube.controlplane import free_port

        self.operator_health_port = free_port()
        self.isolation = self._check_isolation()
        self.credential = config.model_credential(self.environ)
        if self.credential.source:
            self.say(f"model credential: {self.credential.source}, used only by the gateway's model proxy")
        for note in self.credential.notes:
            self.say(f"WARNING: {note}")
        if config.slack_enabled(self.environ):
            self.say("Slack: on (PYNCHY_SLACK_BOT_TOKEN is set)")
        elif self.environ.get("PYNCHY_SLACK_BOT_TOKEN"):
            self.say("Slack: PYNCHY_SLACK_BOT_TOKEN is set, but no PYNCHY_SLACK_APP_TOKEN or _SIGNING_SECRET")
        else:
            self.say("Slack: off (export PYNCHY_SLACK_BOT_TOKEN and PYNCHY_SLACK_APP_TOKEN to use it)")

    def _isolation_args(self) -> list[str]:
        """The dev node's sandbox arguments: only the gateway is reachable from an agent pod."""
        return ["--relay", f"127.0.0.1:{self.o.gateway_port}"] if self.o.isolation else ["--no-isolation"]

    def _check_isolation(self) -> str:
        """What isolates agents (for status), or a DevError saying why it cannot and what to do."""
        from pynchy.devnode.sandbox import bwrap_version, unavailable_reason

        reason = unavailable_reason()
        if not self.o.isolation:
            self.say(
                "WARNING: --no-isolation: agents run as your user with your files and network; "
                "a prompt-injected agent can read anything you can"
                + (f" (sandboxing is unavailable here: {reason})" if reason else "")
            )
            return "none (--no-isolation)"
        if reason is not None:
            raise DevError(
                f"agents cannot be sandboxed here: {reason}.\n"
                "  To run them unsandboxed anyway (as your user, with your files and network): "
                "pynchy dev --no-isolation"
            )
        version = bwrap_version() or "bubblewrap"
        self.say(f"isolation: each agent pod in a {version} sandbox, network: loopback and the gateway only")
        return f"{version} sandbox (user, mount, pid, ipc, uts and network namespaces; egress: the gateway)"

    # -- start ---------------------------------------------------------------------------------

    def _start(self) -> None:
        from pynchy.kube.binaries import BinariesUnavailableError, ensure_binaries
        from pynchy.kube.controlplane import ControlPlane, ControlPlaneError

        try:
            with self._interruptible():
                bin_dir = ensure_binaries()
        except BinariesUnavailableError as exc:
            raise DevError(str(exc)) from None
        self.bin_dir = bin_dir
        if self.o.verbose:  # otherwise only in the files (their last lines are shown if one dies)
            for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
                self.stream.follow(name, self.paths.log(name))
        self.say(f"starting etcd, kube-apiserver, kube-controller-manager (data dir {self.paths.root})")
        logging.getLogger("pynchy.kube.controlplane").setLevel(logging.WARNING)  # we say it ourselves
        began = time.monotonic()
        self.plane = ControlPlane(bin_dir, self.paths.root, apiserver_port=self.o.apiserver_port)
        try:
            with self._interruptible():
                self.plane.start()
        except ControlPlaneError as exc:
            raise DevError(f"the control plane did not start: {exc}") from None
        self._write_state()
        took = time.monotonic() - began
        self.say(f"control plane ready at {self.plane.server} in {took:.1f}s; installing CRDs and RBAC")
        self._bootstrap()
        self._stop_requested()
        for spec in self._specs():
            child = Child(spec)
            self.children[spec.name] = child
            self.stream.follow(spec.name, spec.log)
            child.start()
        self._write_state()
        self._wait_ready()
        self._demo()
        self._chat_config()
        self.ready_seconds = round(time.monotonic() - self.started, 1)
        self._write_state()
        self._instructions()

    def _kubectl(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        from pynchy.kube.controlplane import KubectlError

        try:
            return self.plane.kubectl(*args, input=input, check=check)
        except KubectlError as exc:
            raise DevError(f"kubectl {' '.join(args)} failed: {exc.stderr.strip() or exc.stdout.strip()}") from None

    def _bootstrap(self) -> None:
        from pynchy.kube.controlplane import ControlPlaneError, KubectlError

        try:
            self.plane.apply_crds(CRDS_DIR)
        except (ControlPlaneError, KubectlError) as exc:
            raise DevError(f"installing the CRDs failed: {exc}") from None
        # Established is not yet servable ("storage is (re)initializing"): wait, so the operator's
        # and gateway's first list does not fail.
        kinds = "groups.pynchy.dev,workspaces.pynchy.dev,scheduledtasks.pynchy.dev,agentruns.pynchy.dev"
        deadline = time.monotonic() + 60
        while self._kubectl("get", kinds, "-A", check=False).returncode != 0 and time.monotonic() < deadline:
            self._stop_requested()
            time.sleep(0.2)
        self._ensure_namespace(config.SYSTEM_NAMESPACE)
        for component in ("operator", "gateway"):
            self._kubectl("apply", "-f", str(config.MANIFESTS_DIR / "base" / component / "rbac.yaml"))
        classes = json.loads(self._kubectl("get", "storageclasses", "-o", "json").stdout)["items"]
        if not any(
            (c["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class") == "true"
            for c in classes
        ):
            self._kubectl("apply", "-f", "-", input=LOCAL_PATH_CLASS)
        self.operator_kubeconfig = self.plane.service_account_kubeconfig(config.SYSTEM_NAMESPACE, "pynchy-operator")
        self.gateway_kubeconfig = self.plane.service_account_kubeconfig(config.SYSTEM_NAMESPACE, "pynchy-gateway")

    def _ensure_namespace(self, name: str) -> None:
        if self._kubectl("get", "namespace", name, check=False).returncode != 0:
            self._kubectl("create", "namespace", name)

    def _specs(self) -> list[Spec]:
        base = {k: v for k, v in self.environ.items() if k not in config.SECRET_ENV and k != "KUBECONFIG"}
        base |= {"PYNCHY_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
        key = config.run_token_key(self.paths)
        gateway = Spec(
            "gateway",
            pynchy_argv("gateway"),
            base
            | self.credential.env
            | {
                "KUBECONFIG": str(self.gateway_kubeconfig),
                "PYNCHY_RUN_TOKEN_KEY": key,
                "PYNCHY_DATABASE_URL": f"sqlite:///{self.paths.database}",
                "PYNCHY_LISTEN_HOST": "127.0.0.1",
                "PYNCHY_LISTEN_PORT": str(self.o.gateway_port),
                "PYNCHY_METRICS_PORT": "0",  # off: 9090 may be taken (Debian's prometheus listens there)
                "PYNCHY_CHAT_TOKEN": config.chat_token(self.paths),
            },
            self.paths.log("gateway"),
            port=self.o.gateway_port,
            ready=lambda: http_ok(f"{self.gateway_url}/healthz"),
        )
        operator = Spec(
            "operator",
            pynchy_argv("operator"),
            base
            | {
                "KUBECONFIG": str(self.operator_kubeconfig),
                "PYNCHY_RUN_TOKEN_KEY": key,
                "PYNCHY_GATEWAY_URL": self.gateway_url,
                "PYNCHY_LIVENESS_PORT": str(self.operator_health_port),
                "PYNCHY_METRICS_PORT": "0",  # 9090 may be taken (Debian's prometheus listens there)
            },
            self.paths.log("operator"),
            port=self.operator_health_port,
            ready=lambda: http_ok(f"http://127.0.0.1:{self.operator_health_port}/healthz"),
        )
        devnode = Spec(
            "devnode",
            pynchy_argv(
                "devnode",
                "--data-dir",
                str(self.paths.node_dir),
                "--name",
                config.NODE_NAME,
                "--kubeconfig",
                str(self.paths.kubeconfig),
                *self._isolation_args(),
            ),
            base | {"KUBECONFIG": str(self.paths.kubeconfig)},
            self.paths.log("devnode"),
        )
        node_started = time.time()
        devnode.ready = lambda: self._node_heartbeat_since(node_started)
        return [gateway, operator, devnode]

    def _node_heartbeat_since(self, since: float) -> bool:
        proc = self._kubectl("get", "node", config.NODE_NAME, "-o", "json", check=False)
        if proc.returncode != 0:
            return False
        ready = condition_of(json.loads(proc.stdout), "Ready")
        if ready.get("status") != "True":
            return False
        beat = dt.datetime.fromisoformat(ready["lastHeartbeatTime"].replace("Z", "+00:00"))
        return beat.timestamp() >= int(since)

    def _wait_ready(self) -> None:
        waiting = dict(self.children)
        deadline = time.monotonic() + self.o.start_timeout
        while waiting:
            self._stop_requested()
            for name, child in list(waiting.items()):
                if not child.alive():
                    raise DevError(
                        f"{name} exited during start-up with code {child.returncode}. "
                        f"Last lines of {child.spec.log}:\n{child.tail(25)}"
                    )
                if child.spec.ready is None or child.spec.ready():
                    port = f", port {child.spec.port}" if child.spec.port else ""
                    self.say(f"{name} ready (pid {child.pid}{port})")
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                names = ", ".join(waiting)
                raise DevError(f"{names} not ready after {self.o.start_timeout:.0f}s; see {self.paths.logs}")
            time.sleep(0.2)

    def _demo(self) -> None:
        ns = self.o.namespace
        self._ensure_namespace(ns)
        if not self.o.demo:
            return
        if self._kubectl("get", "groups.pynchy.dev", "demo", "-n", ns, check=False).returncode != 0:
            self._kubectl("apply", "-n", ns, "-f", str(config.DEMO_GROUP))
            self.say(f"created Group {ns}/demo from {_display(config.DEMO_GROUP)} (local channel `demo`)")
        deadline = time.monotonic() + 60
        message = ""
        while time.monotonic() < deadline:
            self._stop_requested()
            obj = json.loads(self._kubectl("get", "groups.pynchy.dev", "demo", "-n", ns, "-o", "json").stdout)
            ready = condition_of(obj, "Ready")
            if ready.get("status") == "True":
                return
            if ready:
                message = ready.get("message") or ready.get("reason") or ""
            time.sleep(0.3)
        self.say(
            f"WARNING: Group {ns}/demo is not Ready yet: {message or 'no status'}; see `kubectl describe group demo`"
        )

    def _chat_config(self) -> None:
        text = config.chat_config_text(self.gateway_url, config.chat_token(self.paths), self.o.namespace)
        config.write_private(self.paths.chat_config, text)
        self.chat_env = f"PYNCHY_CONFIG={self.paths.chat_config} "
        if self.paths.root == DevPaths.at(config.DEFAULT_DATA_DIR).root:
            user = config_path()  # where `pynchy chat` looks
            if config.may_overwrite_chat_config(user):
                config.write_private(user, text)
                self.chat_env = ""
            else:
                self.say(f"note: {user} was not written by pynchy dev; left as it is")

    def _instructions(self) -> None:
        # The other terminal has no venv on its PATH: `uv run` from the checkout, else the venv's script.
        in_checkout = Path.cwd().resolve() == REPO_ROOT
        run = "uv run " if in_checkout and shutil.which("uv") else f"{Path(sys.executable).parent}/"
        lines = [
            "",
            f"Pynchy is running (ready in {self.ready_seconds}s). Ctrl-C stops everything; "
            f"state stays in {self.paths.root}.",
            "",
            "  Chat with the demo agent, from another terminal:",
            f"    {self.chat_env}{run}pynchy chat demo",
            "",
            "  Look around with kubectl:",
            f"    export KUBECONFIG={self.paths.kubeconfig}",
        ]
        if shutil.which("kubectl") is None:
            lines.append(f"    export PATH={self.bin_dir}:$PATH   # the kubectl built with the control plane")
        examples = config.MANIFESTS_DIR / "examples"
        where = (
            "" if self.paths.root == DevPaths.at(config.default_data_dir()).root else f" --data-dir {self.paths.root}"
        )
        lines += [
            "    kubectl get groups",
            "    kubectl get agentruns --watch",
            f"    kubectl apply -f {_display(examples / 'scheduledtask-interval.yaml')}",
            f"    ls {_display(examples)}",
            "",
            f"  Status: {run}pynchy dev status{where}",
            f"  Logs:   {self.paths.logs}/<component>.log (JSON lines); agent pods: {self.paths.node_dir}/pods/",
            "",
        ]
        self.stream.say("\n".join(lines))

    # -- running -------------------------------------------------------------------------------

    def _monitor(self) -> None:
        while True:
            time.sleep(0.5)
            self._stop_requested()
            for proc in self.plane.processes:
                if not proc.alive():
                    code = proc.proc.returncode if proc.proc else None
                    raise DevError(
                        f"{proc.name} exited with code {code}; the cluster cannot go on without it, so "
                        f"everything stops (your data stays in {self.paths.root}; run again to restart).\n"
                        f"Last lines of {proc.log_path}:\n{proc.tail(15)}"
                    )
            for child in self.children.values():
                self._check_child(child)

    def _check_child(self, child: Child) -> None:
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restarts += 1
                child.start()
                self.say(f"restarted {child.name} (pid {child.pid}, restart #{child.restarts})")
                self._write_state()
            return
        if child.alive():
            if child.crashes_in_a_row and now - child.started_at > STABLE_SECONDS:
                child.crashes_in_a_row = 0
            return
        code = child.returncode
        child.reap()
        child.crashes_in_a_row += 1
        last = child.tail(15)
        if child.crashes_in_a_row >= MAX_CRASHES:
            raise DevError(
                f"{child.name} exited (code {code}) {child.crashes_in_a_row} times in a row, each within "
                f"{STABLE_SECONDS:.0f}s of starting; giving up. Last lines of {child.spec.log}:\n{last}"
            )
        delay = min(MAX_BACKOFF, 2.0 ** (child.crashes_in_a_row - 1))
        self.say(f"{child.name} (pid {child.pid}) exited with code {code}; last lines of {child.spec.log}:")
        self.stream.say(last, prefix=child.name)
        self.say(f"restarting {child.name} in {delay:.0f}s")
        child.restart_at = now + delay
        self._write_state()

    # -- stop ----------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        if not self.children and self.plane is None:
            return
        self.say("stopping: dev node, then operator and gateway, then the control plane")
        order = [[self.children[n] for n in ("devnode",) if n in self.children]]
        order.append([self.children[n] for n in ("operator", "gateway") if n in self.children])
        for group in order:
            stop_children(group, self.o.stop_grace, hurry=lambda: self._hurry)
        if self.plane is not None:
            if self._hurry:
                self.say("second signal: killed the rest")
                for proc in self.plane.processes:
                    if proc.proc is not None and proc.proc.poll() is None:
                        proc.proc.kill()
            self.plane.stop()
        self._write_state(stopped=True)
        self.say(f"stopped; state kept in {self.paths.root}")

    # -- the state file ------------------------------------------------------------------------

    def _components(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for proc in getattr(self.plane, "processes", []):
            port = None
            if proc.name == "kube-apiserver":
                port = self.o.apiserver_port
            for arg in proc.argv:
                if proc.name == "etcd" and arg.startswith("--listen-client-urls="):
                    port = int(arg.rsplit(":", 1)[1])
            out.append(
                {
                    "name": proc.name,
                    "pid": proc.pid,
                    "cmdline": " ".join(proc.argv),  # what /proc/<pid>/cmdline shows once it runs
                    "port": port,
                    "log": str(proc.log_path),
                    "restarts": 0,
                }
            )
        for child in self.children.values():
            out.append(
                {
                    "name": child.name,
                    "pid": child.pid,
                    "cmdline": child.cmdline,
                    "port": child.spec.port,
                    "log": str(child.spec.log),
                    "restarts": child.restarts,
                    "started_at": child.started_wall,
                }
            )
        return out

    def _write_state(self, *, stopped: bool = False) -> None:
        state = {
            "pid": os.getpid(),
            "started_at": self.started_wall,
            "ready": self.ready_seconds is not None and not stopped,
            "ready_seconds": self.ready_seconds,
            "stopped_at": _now() if stopped else None,
            "data_dir": str(self.paths.root),
            "kubeconfig": str(self.paths.kubeconfig),
            "apiserver": getattr(self.plane, "server", None),
            "gateway_url": self.gateway_url,
            "operator_health_url": f"http://127.0.0.1:{self.operator_health_port}/healthz",
            "namespace": self.o.namespace,
            "node": config.NODE_NAME,
            "isolation": self.isolation,
            "chat_config": str(self.paths.chat_config),
            "components": self._components(),
        }
        config.write_private(self.paths.state_file, json.dumps(state, indent=2) + "\n")


def run(options: Options, out: TextIO | None = None) -> int:
    return Supervisor(options, out).run()
