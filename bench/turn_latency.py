"""Benchmark: turn latency through the whole stack, against the Claude Code CLI alone.

    uv run python bench/turn_latency.py [--turns 20] [--node dev|real|both] [--no-isolation]

--node dev (the default): a control plane (built from source, cached), the operator, the gateway
and two dev nodes in this process, and the scripted Anthropic server answering instantly. One dev
node runs its agent pods in bubblewrap sandboxes (what `pynchy dev` runs), the other as plain
processes (--no-isolation); turns and cold runs alternate between them, and the sandbox's cost is
printed beside (goal: cold +100 ms p50 at most). --no-isolation measures the plain processes only
(where bubblewrap cannot run).

--node real: the production stack on a real node (pynchy.kube.node.RealNode: containerd, kubelet,
kube-proxy, kube-router, CoreDNS; root on Linux), installed as tests/node installs it: the images
built from the project's Dockerfiles (cached) and imported, `manifests/overlays/k3s` plus the test
overlay of tests/node/helpers.py applied with kubectl, the operator and the gateway as pods, the
scripted server on the node's link (where pods reach the host). --node both: dev, then real.

Measures, over --turns turns each:

  warm   a message -> reply complete, with the Group's agent pod running. dev: handed to the
         gateway in process, to the turn's result. real: POSTed to the gateway's local channel API
         through a `kubectl port-forward` with the chat client (pynchy.chat.client, what `pynchy
         chat` uses), its NDJSON event stream read to the result
  cold   an AgentRun created (trigger Manual, isolated) -> reply complete (pod scheduled, runner and
         CLI started, turn run). dev: the turn's result in the gateway. real: the reply in the
         Group's local channel, read by the channel's long-poll through the port-forward as `pynchy
         chat` reads it (the first place outside the gateway where the reply is complete; the
         AgentRun's turnsServed and phase Succeeded come later, and are shown in the breakdown)
  floor  the CLI alone doing the same turn: a live ClaudeSDKClient (warm floor) and a fresh
         `claude_agent_sdk.query` process per turn (cold floor), straight at the scripted server

  start  a container start alone, `/bin/true` spawned plain and in an agent pod's sandbox
         (bwrap and the launcher), 50 of each, alternating: the sandbox's fixed cost

The floor is measured last, in the same run, with nothing else of the bench running. The sandbox's
cost is printed three ways: the difference of the cold p50s, the median of paired cold runs (each
sandboxed run next to a plain one), and the start alone.

Prints p50/p95 and the overheads over the floors; asserts nothing. On the real node it also prints
where a cold run's time goes: the p50 of each milestone after the AgentRun's creation (each p50 on
its own, so the steps are approximate), read from: watches on pods and AgentRuns (when the API
server told of it), the kubelet's log (its volume operations), `ctr events` of the node's containerd
(sandbox and container created, started, exited), the runner's log (`kubectl logs --timestamps`;
it logs nothing before "run started", so Python's start and imports are in that step) and the
scripted server's request times. All wall clock: the node is this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import yaml  # noqa: E402
from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, ResultMessage, query  # noqa: E402
from install import install  # noqa: E402
from kubernetes import watch  # noqa: E402
from kubernetes.client import CoreV1Api, CustomObjectsApi  # noqa: E402
from kubernetes.config import new_client_from_config  # noqa: E402

from conftest import RUN_TOKEN_KEY  # noqa: E402
from doubles.anthropic import ScriptedModel, is_side_request  # noqa: E402
from node.helpers import CHAT_TOKEN, SYSTEM, Install, PortForward, write_test_overlay  # noqa: E402
from pynchy.chat.client import ChatClient, ChatError, Deadline  # noqa: E402
from pynchy.chat.config import ChatConfig  # noqa: E402
from pynchy.chat.protocol import ChatMessage, is_final  # noqa: E402
from pynchy.devnode import Address, DevNode, Sandbox  # noqa: E402
from pynchy.devnode.sandbox import HostImage, Mount, SandboxSpec, bwrap_argv, passwd_lines  # noqa: E402
from pynchy.gateway.main import EmbeddedGateway  # noqa: E402
from pynchy.kube.binaries import ensure_binaries, ensure_node_binaries  # noqa: E402
from pynchy.kube.controlplane import ControlPlane  # noqa: E402
from pynchy.kube.images import ensure_images  # noqa: E402
from pynchy.kube.node.node import RealNode  # noqa: E402
from pynchy.logs import configure_logging  # noqa: E402
from pynchy.operator.run import EmbeddedOperator  # noqa: E402

NS = "bench"  # sandboxed dev node
PLAIN_NS = "bench-plain"  # the dev node without a sandbox
REAL_NS = "pynchy"  # where the production manifests put Groups
MODEL_PORT = 443  # as tests/node: the gateway's NetworkPolicy lets it reach HTTPS ports
PROMPT = "say ok"
GROUP = """
apiVersion: pynchy.dev/v1alpha1
kind: Group
metadata: {{name: {name}, namespace: {ns}}}
spec:
  channels: [{{local: {{name: {name}}}}}]
  agent: {{idleTimeoutSeconds: 600}}
"""
RUN = """
apiVersion: pynchy.dev/v1alpha1
kind: AgentRun
metadata: {{name: {name}, namespace: {ns}}}
spec:
  groupRef: {{name: cold}}
  trigger: {{kind: Manual}}
  prompt: {prompt}
  contextMode: isolated
"""
REPLY = "reply in the channel (long-poll)"
# Runner log messages worth a milestone (pynchy_agent: runner.py, conversation.py); it logs nothing
# before "run started".
RUNNER_MARKS = {
    "run started": "runner: run info fetched (GET /v1/run)",
    "turn received": "runner: turn received",
    "claude session ready": "runner: CLI session ready",
    "turn started": "runner: turn sent to the CLI",
    "turn finished": "runner: CLI's result",
}
WIDTH = 35


@dataclass
class Figures:
    first: float
    warm: list[float]
    cold: list[float]
    marks: list[dict[str, float]] = field(default_factory=list)  # real node: per cold run, seconds after creation


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def line(label: str, values: list[float], width: int = WIDTH) -> str:
    ms = [v * 1000 for v in values]
    return f"{label:<{width - 1}} p50 {pct(ms, 50):7.0f} ms   p95 {pct(ms, 95):7.0f} ms   (n={len(ms)})"


def figure(label: str, seconds: float, note: str = "", width: int = WIDTH) -> str:
    return f"{label + ':':<{width}}{seconds * 1000:7.0f} ms" + (f"   ({note})" if note else "")


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def group_ready(plane: ControlPlane, name: str, namespace: str = NS) -> bool:
    out = plane.kubectl(
        "get", "group", name, "-n", namespace, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
    )
    return out.stdout.strip() == "True"


def run_phase(plane: ControlPlane, name: str, namespace: str = NS) -> str:
    return plane.kubectl("get", "agentrun", name, "-n", namespace, "-o", "jsonpath={.status.phase}").stdout.strip()


async def floor(model: ScriptedModel, turns: int, tmp: Path) -> tuple[list[float], list[float]]:
    home = tmp / "floor-home"
    home.mkdir()
    env = {
        "ANTHROPIC_BASE_URL": model.base_url,
        "ANTHROPIC_API_KEY": "bench",
        "IS_SANDBOX": "1",
        "HOME": str(home),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    options = ClaudeAgentOptions(cwd=str(home), env=env, permission_mode="bypassPermissions")
    warm: list[float] = []
    async with ClaudeSDKClient(options) as client:
        for i in range(turns + 1):
            started = time.monotonic()
            await client.query(PROMPT)
            async for message in client.receive_response():
                if isinstance(message, ResultMessage):
                    break
            if i:  # the first turn warms the session up
                warm.append(time.monotonic() - started)
    cold: list[float] = []
    for _ in range(turns):
        started = time.monotonic()
        async for message in query(prompt=PROMPT, options=options):
            if isinstance(message, ResultMessage):
                pass
        cold.append(time.monotonic() - started)
    return warm, cold


# -- the dev node ---------------------------------------------------------------------------------


def measure_dev(tmp: Path, turns: int, *, sandboxed: bool) -> dict[str, Figures]:
    """One stack, two dev nodes: namespace NS sandboxed, PLAIN_NS not (unless ``sandboxed`` is
    False: then PLAIN_NS only). Turns and cold runs alternate between them, each going first
    every other time, so drift of the machine's load falls on both alike and the difference is
    the sandbox's."""
    tmp.mkdir()
    spaces = {NS: True, PLAIN_NS: False} if sandboxed else {PLAIN_NS: False}
    with (
        mock.patch.dict(os.environ),  # the variables set below are for this stack only
        ControlPlane(ensure_binaries(), tmp / "cp") as plane,
        ScriptedModel() as model,
    ):
        kubeconfigs = install(plane, PLAIN_NS, ("operator", "gateway"))
        if sandboxed:
            plane.kubectl("create", "namespace", NS)
        gateway = EmbeddedGateway(
            kubeconfig=kubeconfigs["gateway"],
            run_token_key=RUN_TOKEN_KEY,
            database_url=f"sqlite:///{tmp}/gateway.db",
            listen_host="127.0.0.1",
            listen_port=0,
            namespaces=list(spaces),
            anthropic_api_key="sk-bench",
            model_upstream_url=model.base_url,
            metrics_port=0,
        ).start()
        os.environ.update(
            {
                "KUBECONFIG": str(kubeconfigs["operator"]),
                "PYNCHY_RUN_TOKEN_KEY": RUN_TOKEN_KEY,
                "PYNCHY_GATEWAY_URL": gateway.url,
                "PYNCHY_NAMESPACES": ",".join(spaces),
            }
        )
        operator = EmbeddedOperator().start()
        relay = Address.parse(urlsplit(gateway.url).netloc)
        nodes = [
            DevNode(plane.kubeconfig, tmp / ns, name=f"node-{ns}", namespaces=[ns], sandbox=box)
            for ns, box in ((ns, Sandbox((relay,)) if on else None) for ns, on in spaces.items())
        ]
        for node in nodes:
            node.start()
        gw = gateway.gateway
        assert gw is not None
        try:
            for ns in spaces:
                for name in ("warm", "cold"):
                    plane.kubectl("apply", "-f", "-", input=GROUP.format(name=name, ns=ns))
                    wait(lambda n=name, s=ns: group_ready(plane, n, s), 60, f"Group {ns}/{name} Ready")
                    wait(lambda n=name, s=ns: gw.groups.get(s, n), 10, "gateway cache")

            async def turn(ns: str, group: str) -> float:
                started = time.monotonic()
                row = await gw.submit(ns, group, PROMPT, sender="bench")
                result = await asyncio.wait_for(gw.watch(row.id).done, 120)
                if result.type != "result":
                    raise SystemExit(f"turn failed: {result}")
                return time.monotonic() - started

            async def reply(turn_id: str) -> Any:
                return await asyncio.wait_for(gw.watch(turn_id).done, 120)

            first = {ns: gateway.call(turn(ns, "warm"), timeout=130) for ns in spaces}  # starts the pods
            warm: dict[str, list[float]] = {ns: [] for ns in spaces}
            cold: dict[str, list[float]] = {ns: [] for ns in spaces}

            def order(i: int) -> list[str]:  # who goes first alternates: neither always follows the other
                return list(spaces) if i % 2 == 0 else list(reversed(spaces))

            for i in range(turns):
                for ns in order(i):
                    warm[ns].append(gateway.call(turn(ns, "warm"), timeout=130))
            admin = CustomObjectsApi(new_client_from_config(str(plane.kubeconfig)))
            for i in range(turns):
                for ns in order(i):
                    name = f"cold-{i}"
                    body = yaml.safe_load(RUN.format(name=name, ns=ns, prompt=PROMPT))
                    started = time.monotonic()
                    created = admin.create_namespaced_custom_object("pynchy.dev", "v1alpha1", ns, "agentruns", body)
                    result = gateway.call(reply(f"run-{created['metadata']['uid']}"), timeout=130)
                    if result.type != "result":
                        raise SystemExit(f"cold turn failed: {result}")
                    cold[ns].append(time.monotonic() - started)
                    wait(lambda n=name, s=ns: run_phase(plane, n, s) == "Succeeded", 60, f"{ns}/{name} Succeeded")
        finally:
            for node in nodes:
                node.stop()
            operator.stop()
            gateway.stop()
    return {ns: Figures(first[ns], warm[ns], cold[ns]) for ns in spaces}


def sandbox_start(tmp: Path, samples: int = 50) -> tuple[list[float], list[float]]:
    """A container start alone, as the dev node makes it: `/bin/true` spawned plain and in the
    agent pod's sandbox (the image, five volumes, a relay, the memory limit), alternating."""
    image = HostImage.of_host()
    root = tmp / "sandbox-start"
    volumes = [root / name for name in ("home", "workspace", "tmp", "config", "secret")]
    for v in volumes:
        v.mkdir(parents=True)
    passwd, group = passwd_lines(1000, 1000, "/home/agent")
    (root / "passwd").write_text(passwd)
    (root / "group").write_text(group)
    (root / "termination-log").write_text("")
    paths = ["/home/agent", "/workspace", "/tmp", "/etc/pynchy/group", "/etc/pynchy/mcp/x"]
    spec = SandboxSpec(
        argv=["/bin/true"],
        mounts=[Mount(c, str(h), c.startswith("/etc")) for c, h in zip(paths, volumes, strict=True)],
        image=image,
        passwd_file=str(root / "passwd"),
        group_file=str(root / "group"),
        read_only_root=True,
        relay_dir=str(root),
        relay_args=("--relay", "127.0.0.1:8420=/run/pynchy/relay/0.sock"),
        termination_file=(str(root / "termination-log"), "/dev/termination-log"),
        memory_limit=2 << 30,
    )
    boxed_argv = bwrap_argv(spec)
    plain: list[float] = []
    boxed: list[float] = []
    for _ in range(samples):
        for argv, out in ((["/bin/true"], plain), (boxed_argv, boxed)):
            started = time.perf_counter()
            subprocess.run(argv, check=True)
            out.append(time.perf_counter() - started)
    return plain, boxed


def paired_difference(a: list[float], b: list[float]) -> float:
    """Median of the per-pair differences a[i] - b[i] (pairs were measured next to each other)."""
    return pct([x - y for x, y in zip(a, b, strict=True)], 50)


# -- the real node --------------------------------------------------------------------------------


class TimedModel(ScriptedModel):
    """The scripted server, noting when each request arrived (wall clock: the node's clock is this
    machine's, so the times line up with pod status and runner logs)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, str]] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        at = time.time()
        raw = await request.read()  # aiohttp keeps the body: the scripted server reads it again
        kind = request.path
        with contextlib.suppress(ValueError):
            body = json.loads(raw) if raw else None
            if kind == "/v1/messages" and isinstance(body, dict) and is_side_request(body):
                kind += " (side)"
        self.arrivals.append((at, kind))
        return await super()._handle(request)

    def marks(self, since: float, until: float) -> dict[str, float]:
        """The first request of each kind between `since` and `until`, in seconds after `since`."""
        out: dict[str, float] = {}
        for at, kind in self.arrivals:
            if since <= at <= until:
                out.setdefault(f"model: first {kind}", at - since)
        return out


class Timeline:
    """When the API server told a watch of each pod's and AgentRun's milestones (wall clock)."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        client = new_client_from_config(str(kubeconfig))
        self.core, self.custom = CoreV1Api(client), CustomObjectsApi(client)
        self.namespace = namespace
        self.seen: dict[tuple[str, str], float] = {}
        self.containers: dict[str, str] = {}  # pod -> its container's containerd id
        self.watches: list[watch.Watch] = []
        self.stopped = False

    def start(self) -> Timeline:
        pods = (self.core.list_namespaced_pod, self.namespace)
        runs = (self.custom.list_namespaced_custom_object, "pynchy.dev", "v1alpha1", self.namespace, "agentruns")
        for target, args in ((self._pod, pods), (self._run, runs)):
            threading.Thread(target=self._follow, args=(target, *args), daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopped = True
        for w in self.watches:
            w.stop()

    def at(self, name: str, milestone: str) -> float | None:
        return self.seen.get((name, milestone))

    def marks(self, name: str, since: float) -> dict[str, float]:
        return {m: at - since for (n, m), at in list(self.seen.items()) if n == name}

    def _follow(self, record: Callable[[Any], None], list_call: Any, *args: str) -> None:
        w = watch.Watch()
        self.watches.append(w)
        while not self.stopped:
            try:
                for event in w.stream(list_call, *args, timeout_seconds=300):
                    record(event["object"])
            except Exception:  # the node going away at the end, or a dropped watch: list again
                time.sleep(0.2)

    def _note(self, name: str, milestone: str) -> None:
        self.seen.setdefault((name, milestone), time.time())

    def _pod(self, pod: Any) -> None:
        name = pod.metadata.name
        self._note(name, "operator: pod created")
        if pod.spec.node_name:
            self._note(name, "scheduler: pod bound to the node")
        for status in (pod.status and pod.status.container_statuses) or []:
            if status.container_id:
                self.containers[name] = status.container_id.removeprefix("containerd://")
            if status.state and status.state.running:
                self._note(name, "kubelet: container running")
            if status.state and status.state.terminated:
                self._note(name, "kubelet: container exited")

    def _run(self, run: dict[str, Any]) -> None:
        name, status = run["metadata"]["name"], run.get("status") or {}
        if status.get("phase"):
            self._note(name, f"operator: run {status['phase']}")
        if status.get("turnsServed"):
            self._note(name, "gateway: status.turnsServed 1")


class ContainerdEvents:
    """`ctr events` of the node's containerd (a sandbox's and a container's create, start, exit),
    with containerd's own times."""

    LINE = re.compile(r"^(\S+) (\S+) \+0000 UTC \S+ (\S+) (\{.*\})$")
    TOPICS = {"/containers/create": "created", "/tasks/start": "started", "/tasks/exit": "exited"}

    def __init__(self, socket: Path) -> None:
        self.proc = subprocess.Popen(
            ["ctr", "--address", str(socket), "events"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for entry in self.proc.stdout:
            match = self.LINE.match(entry.strip())
            if match:
                day, clock, topic, data = match.groups()
                self.events.append((parse_stamp(f"{day}T{clock}Z"), topic, json.loads(data)))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def marks(self, pod: str, container: str | None, since: float) -> dict[str, float]:
        events = list(self.events)
        sandboxes = {
            data["id"]
            for _, topic, data in events
            if topic == "/containers/update"
            and (data.get("labels") or {}).get("io.kubernetes.pod.name") == pod
            and data["labels"].get("io.cri-containerd.kind") == "sandbox"
        }
        out: dict[str, float] = {}
        for at, topic, data in events:
            key = data.get("container_id") or data.get("id")
            what = "sandbox" if key in sandboxes else "agent container" if key == container else None
            if what and topic in self.TOPICS:
                out.setdefault(f"containerd: {what} {self.TOPICS[topic]}", at - since)
        return out


def kubelet_marks(log: Path, namespace: str, pod: str, since: float) -> dict[str, float]:
    """When the kubelet began on the pod's volumes (it has the pod) and had them all mounted."""
    out: dict[str, float] = {}
    year = datetime.fromtimestamp(since).year
    for entry in log.read_text(errors="replace").splitlines():
        if f'pod="{namespace}/{pod}"' not in entry:
            continue
        stamp = datetime.strptime(f"{year} {entry[1:5]} {entry[6:21]}", "%Y %m%d %H:%M:%S.%f")  # klog: local time
        at = stamp.timestamp() - since
        if "VerifyControllerAttachedVolume started" in entry:
            out.setdefault("kubelet: has the pod (volumes checked)", at)
        if "MountVolume.SetUp succeeded" in entry:
            out["kubelet: volumes mounted"] = at
    return out


@dataclass
class RealStack:
    setup: Install
    model: TimedModel
    chat: ChatClient
    timeline: Timeline
    containerd: ContainerdEvents


@contextlib.contextmanager
def real_stack(tmp: Path) -> Iterator[RealStack]:
    """A real node with the production manifests applied, the operator and the gateway Ready as
    pods, a chat client talking to the gateway through a port-forward, and the probes."""
    print("real node: images (built once per change of their inputs), node start, install...", file=sys.stderr)
    bins = ensure_node_binaries()
    images = ensure_images(REPO, pause_binary=bins / "pause", coredns_binary=bins / "coredns")
    with contextlib.ExitStack() as stack:
        node = RealNode(
            ensure_binaries(), bins, tmp / "realnode", sandbox_image=images["pause"], dns_image=images["coredns"]
        )
        stack.enter_context(node)
        node.import_images([images["pynchy"], images["agent"]])
        model = stack.enter_context(TimedModel().listen_on(node.link_host_ip, MODEL_PORT))
        overlay = write_test_overlay(tmp / "overlay", images, model.base_url)
        setup = Install(node, model, overlay, images["agent"].ref)
        setup.kubectl("apply", "--server-side", "-k", str(overlay))
        for deployment in ("pynchy-operator", "pynchy-gateway"):
            setup.wait_available(deployment)
        forward = stack.enter_context(PortForward(setup.plane, SYSTEM, "svc/pynchy-gateway", 8080))
        setup.gateway_url = forward.url
        config = ChatConfig(gateway_url=forward.url, token=CHAT_TOKEN, namespace=REAL_NS, path=tmp / "chat.yaml")
        chat = stack.enter_context(ChatClient(config))
        timeline = Timeline(setup.plane.kubeconfig, REAL_NS).start()
        stack.callback(timeline.stop)
        containerd = ContainerdEvents(node.paths.containerd_socket)
        stack.callback(containerd.stop)
        yield RealStack(setup, model, chat, timeline, containerd)


def channel_known(chat: ChatClient, channel: str) -> bool:
    try:
        return chat.info(channel).namespace == REAL_NS
    except ChatError as exc:
        if exc.status != 404:
            raise
        return False


def chat_turn(chat: ChatClient, channel: str) -> float:
    """A message to the local channel -> its turn's final event on the event stream."""
    started = time.monotonic()
    accepted = chat.send(channel, PROMPT, uuid.uuid4().hex, Deadline(30))
    if accepted.turn_id is None:
        raise SystemExit(f"message not queued: {accepted}")
    final = None
    for event in chat.events(channel, accepted.turn_id, Deadline(120)):
        if is_final(event):
            final = event
    if final is None or final.type != "result" or final.is_error:
        raise SystemExit(f"turn failed: {final}")
    return time.monotonic() - started


def channel_reply(chat: ChatClient, channel: str, after: int, turn_id: str) -> ChatMessage:
    """The long-poll for the channel's messages after `after`, until the turn's reply is there."""
    deadline = Deadline(120)
    while not deadline.passed:
        batch = chat.messages(channel, after, wait=deadline.cap(30))
        for message in batch.messages:
            if message.turn_id == turn_id:
                return message
        after = batch.cursor
    raise SystemExit(f"no reply for {turn_id} in channel {channel}")


def parse_stamp(stamp: str) -> float:
    """An RFC 3339 UTC time with up to nanoseconds (kubectl logs --timestamps) as a Unix time."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")


def runner_marks(setup: Install, pod: str, since: float) -> dict[str, float]:
    """Milestones of the runner's log (the container runtime's timestamps), in seconds after `since`."""
    logs = setup.kubectl("logs", "-n", REAL_NS, pod, "--timestamps", check=False).stdout
    out: dict[str, float] = {}
    for entry in logs.splitlines():
        match = re.match(r"(\S+) (\{.*\})$", entry)
        if not match:
            continue
        with contextlib.suppress(ValueError):
            label = RUNNER_MARKS.get(json.loads(match.group(2)).get("msg", ""))
            if label:
                out.setdefault(label, parse_stamp(match.group(1)) - since)
    return out


def cold_turn(real: RealStack, name: str) -> dict[str, float]:
    """One cold turn on the real node: its milestones in seconds after the AgentRun's creation."""
    admin = CustomObjectsApi(new_client_from_config(str(real.setup.plane.kubeconfig)))
    after = real.chat.info("cold").cursor
    body = yaml.safe_load(RUN.format(name=name, ns=REAL_NS, prompt=PROMPT))
    since, started = time.time(), time.monotonic()
    created = admin.create_namespaced_custom_object("pynchy.dev", "v1alpha1", REAL_NS, "agentruns", body)
    message = channel_reply(real.chat, "cold", after, f"run-{created['metadata']['uid']}")
    reply = time.monotonic() - started
    if message.is_error:
        raise SystemExit(f"cold turn failed: {message.text}")
    wait(lambda: real.timeline.at(name, "operator: run Succeeded"), 120, f"{name} Succeeded")
    return {
        REPLY: reply,
        **real.timeline.marks(name, since),
        **real.containerd.marks(name, real.timeline.containers.get(name), since),
        **kubelet_marks(real.setup.node.component_log("kubelet"), REAL_NS, name, since),
        **real.model.marks(since, since + reply),
        **runner_marks(real.setup, name, since),
    }


def measure_real(tmp: Path, turns: int) -> Figures:
    with real_stack(tmp) as real:
        for name in ("warm", "cold"):
            real.setup.ready_group(REAL_NS, GROUP.format(name=name, ns=REAL_NS), name)
            wait(lambda n=name: channel_known(real.chat, n), 30, f"local channel {name} in the gateway")
        first = chat_turn(real.chat, "warm")  # starts the pod
        warm = [chat_turn(real.chat, "warm") for _ in range(turns)]
        marks = [cold_turn(real, f"cold-{i}") for i in range(turns)]
    return Figures(first, warm, [m[REPLY] for m in marks], marks)


# -- the report -----------------------------------------------------------------------------------


def breakdown(marks: list[dict[str, float]]) -> list[str]:
    """Each milestone's p50 after the AgentRun's creation, in the order they come."""
    names = {name for m in marks for name in m}
    p50 = {name: pct([m[name] for m in marks if name in m], 50) for name in names}
    width = max(len(name) for name in names) + 2
    out = ["cold on the real node, where the time goes (p50 after the AgentRun was created; n per milestone):"]
    previous = 0.0
    for name in sorted(names, key=p50.__getitem__):
        n = sum(name in m for m in marks)
        delta = p50[name] - previous
        out.append(f"  {name:<{width}}{p50[name] * 1000:7.0f} ms   (+{delta * 1000:5.0f})   n={n}")
        previous = p50[name]
    return out


def report(
    dev: Figures | None,
    plain: Figures | None,
    real: Figures | None,
    warm_floor: list[float],
    cold_floor: list[float],
    start: tuple[list[float], list[float]] | None = None,
) -> None:
    """``dev``: the dev node as `pynchy dev` runs it (sandboxed); ``plain``: its pods unsandboxed;
    ``start``: a container start alone, plain and sandboxed."""
    width = WIDTH if real is None else 56
    width = max(width, 50) if plain is not None else width
    rows: list[str] = []
    if dev is not None:
        rows.append(figure("first turn (pod start + turn), sandboxed", dev.first, width=width))
        rows.append(line("(a) warm: message -> reply, sandboxed", dev.warm, width))
        rows.append(line("(b) cold: AgentRun -> reply, sandboxed", dev.cold, width))
    if plain is not None:
        rows.append(figure("first turn (pod start + turn), no sandbox", plain.first, width=width))
        rows.append(line("(a) warm: message -> reply, no sandbox", plain.warm, width))
        rows.append(line("(b) cold: AgentRun -> reply, no sandbox", plain.cold, width))
    if real is not None:
        rows.append(figure("real node, first turn (pod start + turn)", real.first, width=width))
        rows.append(line("(a) real node, warm: chat API message -> reply", real.warm, width))
        rows.append(line("(b) real node, cold: AgentRun -> reply in the channel", real.cold, width))
    rows.append(line("(c) floor, warm CLI session", warm_floor, width))
    rows.append(line("(c) floor, fresh CLI process", cold_floor, width))
    shown = dev if dev is not None else plain
    if shown is not None:
        warm_over = pct(shown.warm, 50) - pct(warm_floor, 50)
        cold_over = pct(shown.cold, 50) - pct(cold_floor, 50)
        rows.append(figure("warm overhead over floor (p50)", warm_over, "goal <= 150 ms", width))
        rows.append(figure("cold over fresh-CLI floor (p50)", cold_over, "goal <= 1500 ms", width))
    if dev is not None and plain is not None:
        cold_cost = pct(dev.cold, 50) - pct(plain.cold, 50)
        warm_cost = pct(dev.warm, 50) - pct(plain.warm, 50)
        ratio = pct(dev.cold, 50) / pct(plain.cold, 50)
        rows.append(figure("sandbox cost, cold first turn (p50)", cold_cost, f"goal <= 100 ms; {ratio:.2f}x", width))
        paired = paired_difference(dev.cold, plain.cold)
        rows.append(figure("sandbox cost, cold (median of paired runs)", paired, "goal <= 100 ms", width))
        rows.append(figure("sandbox cost, warm turn (p50; the relay)", warm_cost, "", width))
    if start is not None:
        plain_start, boxed_start = start
        rows.append(line("container start alone, plain", plain_start, width))
        rows.append(line("container start alone, sandboxed", boxed_start, width))
        cost = pct(boxed_start, 50) - pct(plain_start, 50)
        rows.append(figure("sandbox cost, start alone (p50)", cost, "bwrap + launcher", width))
    if real is not None:
        warm_over = pct(real.warm, 50) - pct(warm_floor, 50)
        cold_over = pct(real.cold, 50) - pct(cold_floor, 50)
        ratio = pct(real.cold, 50) / pct(cold_floor, 50)
        rows.append(figure("warm on the real node over the floor (p50)", warm_over, "port-forward included", width))
        rows.append(
            figure(
                "cold on the real node over the fresh-CLI floor (p50)",
                cold_over,
                f"goal <= 1500 ms; {ratio:.1f}x the floor",
                width,
            )
        )
        rows += ["", *breakdown(real.marks)]
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--node", choices=("dev", "real", "both"), default="dev")
    parser.add_argument("--no-isolation", action="store_true", help="dev node: unsandboxed pods only")
    args = parser.parse_args()
    configure_logging(level="WARNING", fmt="console")

    with tempfile.TemporaryDirectory(prefix="pynchy-bench-") as tmp_name:
        tmp = Path(tmp_name)
        figures = measure_dev(tmp / "dev", args.turns, sandboxed=not args.no_isolation) if args.node != "real" else {}
        dev, plain = figures.get(NS), figures.get(PLAIN_NS)
        real = measure_real(tmp / "real", args.turns) if args.node in ("real", "both") else None
        with ScriptedModel() as model:
            warm_floor, cold_floor = asyncio.run(floor(model, args.turns, tmp))
        start = sandbox_start(tmp) if dev is not None else None
    report(dev, plain, real, warm_floor, cold_floor, start)


if __name__ == "__main__":
    main()
