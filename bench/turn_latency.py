"""Benchmark: turn latency through the whole stack, against the Claude Code CLI alone.

    uv run python bench/turn_latency.py [--turns 20]

Starts a control plane (built from source, cached), the operator, the gateway and the dev node
in this process, and the scripted Anthropic server answering instantly. Measures, over --turns
turns each:

  warm   a message handed to the gateway -> reply complete, with the Group's agent pod running
  cold   an AgentRun created -> reply complete (pod scheduled, runner and CLI started, turn run)
  floor  the CLI alone doing the same turn: a live ClaudeSDKClient (warm floor) and a fresh
         `claude_agent_sdk.query` process per turn (cold floor), straight at the scripted server

Prints p50/p95 and the overheads over the floors; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import yaml  # noqa: E402
from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, ResultMessage, query  # noqa: E402
from install import install  # noqa: E402
from kubernetes.client import CustomObjectsApi  # noqa: E402
from kubernetes.config import new_client_from_config  # noqa: E402

from conftest import RUN_TOKEN_KEY  # noqa: E402
from doubles.anthropic import ScriptedModel  # noqa: E402
from pynchy.devnode import DevNode  # noqa: E402
from pynchy.gateway.run import EmbeddedGateway  # noqa: E402
from pynchy.kube.binaries import ensure_binaries  # noqa: E402
from pynchy.kube.controlplane import ControlPlane  # noqa: E402
from pynchy.logs import configure_logging  # noqa: E402
from pynchy.operator.run import EmbeddedOperator  # noqa: E402

NS = "bench"
PROMPT = "say ok"
GROUP = """
apiVersion: pynchy.dev/v1alpha1
kind: Group
metadata: {{name: {name}, namespace: bench}}
spec:
  channels: [{{local: {{name: {name}}}}}]
  agent: {{idleTimeoutSeconds: 600}}
"""
RUN = """
apiVersion: pynchy.dev/v1alpha1
kind: AgentRun
metadata: {{name: {name}, namespace: bench}}
spec:
  groupRef: {{name: cold}}
  trigger: {{kind: Manual}}
  prompt: {prompt}
  contextMode: isolated
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def line(label: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{label:<34} p50 {pct(ms, 50):7.0f} ms   p95 {pct(ms, 95):7.0f} ms   (n={len(ms)})"


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def group_ready(plane: ControlPlane, name: str) -> bool:
    out = plane.kubectl(
        "get", "group", name, "-n", NS, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
    )
    return out.stdout.strip() == "True"


def run_phase(plane: ControlPlane, name: str) -> str:
    return plane.kubectl("get", "agentrun", name, "-n", NS, "-o", "jsonpath={.status.phase}").stdout.strip()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    configure_logging(level="WARNING", fmt="console")

    with (
        tempfile.TemporaryDirectory(prefix="pynchy-bench-") as tmp_name,
        ControlPlane(ensure_binaries(), Path(tmp_name) / "cp") as plane,
        ScriptedModel() as model,
    ):
        tmp = Path(tmp_name)
        kubeconfigs = install(plane, NS, ("operator", "gateway"))
        gateway = EmbeddedGateway(
            kubeconfig=kubeconfigs["gateway"],
            run_token_key=RUN_TOKEN_KEY,
            database_url=f"sqlite:///{tmp}/gateway.db",
            listen_host="127.0.0.1",
            listen_port=0,
            namespaces=[NS],
            anthropic_api_key="sk-bench",
            model_upstream_url=model.base_url,
        ).start()
        os.environ.update(
            {
                "KUBECONFIG": str(kubeconfigs["operator"]),
                "PYNCHY_RUN_TOKEN_KEY": RUN_TOKEN_KEY,
                "PYNCHY_GATEWAY_URL": gateway.url,
                "PYNCHY_NAMESPACES": NS,
            }
        )
        operator = EmbeddedOperator().start()
        node = DevNode(plane.kubeconfig, tmp / "node", namespaces=[NS])
        node.start()
        gw = gateway.gateway
        assert gw is not None
        try:
            for name in ("warm", "cold"):
                plane.kubectl("apply", "-f", "-", input=GROUP.format(name=name))
                wait(lambda n=name: group_ready(plane, n), 60, f"Group {name} Ready")
                wait(lambda n=name: gw.groups.get(NS, n), 10, "gateway cache")

            async def turn(group: str) -> float:
                started = time.monotonic()
                row = await gw.submit(NS, group, PROMPT, sender="bench")
                result = await asyncio.wait_for(gw.watch(row.id).done, 120)
                if result.type != "result":
                    raise SystemExit(f"turn failed: {result}")
                return time.monotonic() - started

            async def reply(turn_id: str) -> Any:
                return await asyncio.wait_for(gw.watch(turn_id).done, 120)

            first = gateway.call(turn("warm"), timeout=130)  # starts the pod
            warm = [gateway.call(turn("warm"), timeout=130) for _ in range(args.turns)]

            cold: list[float] = []
            admin = CustomObjectsApi(new_client_from_config(str(plane.kubeconfig)))
            for i in range(args.turns):
                name = f"cold-{i}"
                body = yaml.safe_load(RUN.format(name=name, prompt=PROMPT))
                started = time.monotonic()
                created = admin.create_namespaced_custom_object("pynchy.dev", "v1alpha1", NS, "agentruns", body)
                result = gateway.call(reply(f"run-{created['metadata']['uid']}"), timeout=130)
                if result.type != "result":
                    raise SystemExit(f"cold turn failed: {result}")
                cold.append(time.monotonic() - started)
                wait(lambda n=name: run_phase(plane, n) == "Succeeded", 60, f"{name} Succeeded")
        finally:
            node.stop()
            operator.stop()
            gateway.stop()
        warm_floor, cold_floor = asyncio.run(floor(model, args.turns, tmp))

    print(f"first turn (pod start + turn):     {first * 1000:7.0f} ms")
    print(line("(a) warm: message -> reply", warm))
    print(line("(b) cold: AgentRun -> reply", cold))
    print(line("(c) floor, warm CLI session", warm_floor))
    print(line("(c) floor, fresh CLI process", cold_floor))
    warm_over = pct(warm, 50) - pct(warm_floor, 50)
    cold_over = pct(cold, 50) - pct(cold_floor, 50)
    print(f"warm overhead over floor (p50):    {warm_over * 1000:7.0f} ms   (goal <= 150 ms)")
    print(f"cold over fresh-CLI floor (p50):   {cold_over * 1000:7.0f} ms   (goal <= 1500 ms)")


if __name__ == "__main__":
    main()
