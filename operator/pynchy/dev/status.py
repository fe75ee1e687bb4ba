"""`pynchy dev status`: the components (from the data dir's pid and state files), then the
Groups and AgentRuns (from the API server), each with its health."""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

from pynchy.clusterstatus import resources
from pynchy.clusterstatus.report import table
from pynchy.clusterstatus.resources import condition_of, parse_time
from pynchy.dev.components import same_process
from pynchy.dev.config import DevPaths
from pynchy.dev.preflight import http_ok, read_pid, read_state, supervisor_alive

# Exit codes, as `systemctl status` uses them (and `pynchy status`).
HEALTHY, DEGRADED, NOT_RUNNING = 0, 1, 3


def _cluster(state: dict[str, Any]) -> dict[str, Any]:
    """Groups, AgentRuns (the rows `pynchy status` shows) and the dev node, or an error saying why they
    could not be read."""
    from kubernetes.client import CoreV1Api

    from pynchy.kube import official

    now = dt.datetime.now(dt.UTC)
    client = None
    try:
        client = official.new_client_from_config(state["kubeconfig"])
        groups, runs = resources.read(client, None, now)
        node = official.to_json(
            client, CoreV1Api(client).read_node(state["node"], _request_timeout=resources.REQUEST_TIMEOUT)
        )
    except Exception as exc:
        return {"api_error": resources.api_error(exc)}
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                official.close_client(client)
    ready = condition_of(node, "Ready")
    beat = ready.get("lastHeartbeatTime")
    fresh = bool(beat and (now - parse_time(beat)).total_seconds() < 60)
    return {
        "api_error": None,
        "groups": [g.model_dump(mode="json") for g in groups],
        "runs": [r.model_dump(mode="json") for r in runs],
        "node_ready": ready.get("status") == "True" and fresh,
        "node_message": ready.get("message") or ready.get("reason") or "",
    }


def collect(data_dir: Path) -> dict[str, Any]:
    """Everything `pynchy dev status` shows, as plain data (also its --json output)."""
    paths = DevPaths.at(data_dir)
    state = read_state(paths)
    pid = read_pid(paths.pid_file)
    running = supervisor_alive(pid)
    result: dict[str, Any] = {
        "data_dir": str(paths.root),
        "running": running,
        "pid": pid if running else None,
        "stale_pid": pid if pid and not running else None,
        "ready": bool(running and state.get("ready")),
        "ready_seconds": state.get("ready_seconds"),
        "started_at": state.get("started_at") if running else None,
        "gateway_url": state.get("gateway_url"),
        "kubeconfig": state.get("kubeconfig"),
        "isolation": state.get("isolation"),
        "components": [],
        "groups": [],
        "runs": [],
        "api_error": None,
    }
    cluster = _cluster(state) if running and state.get("kubeconfig") else {}
    result.update({k: v for k, v in cluster.items() if k in ("groups", "runs", "api_error")})
    for comp in state.get("components", []):
        alive = running and same_process(comp.get("pid"), comp.get("cmdline"))
        name, port = comp.get("name"), comp.get("port")
        health = "-"
        if alive:
            if name == "etcd" and port:
                health = "ok" if http_ok(f"http://127.0.0.1:{port}/health") else "unhealthy"
            elif name == "kube-apiserver":
                health = "ok" if cluster and not cluster.get("api_error") else "unreachable"
            elif name == "gateway":
                health = "ok" if http_ok(f"{state.get('gateway_url')}/healthz") else "unhealthy"
            elif name == "operator":
                health = "ok" if http_ok(str(state.get("operator_health_url"))) else "unhealthy"
            elif name == "devnode":
                health = "ok" if cluster.get("node_ready") else f"node not Ready: {cluster.get('node_message') or '?'}"
            else:
                health = "ok"
        result["components"].append(
            {
                "name": name,
                "pid": comp.get("pid") if alive else None,
                "alive": alive,
                "port": port,
                "restarts": comp.get("restarts", 0),
                "health": health,
                "log": comp.get("log"),
            }
        )
    return result


def exit_code(result: dict[str, Any]) -> int:
    if not result["running"]:
        return NOT_RUNNING
    comps = result["components"]
    if not result["ready"] or result["api_error"] or not comps:
        return DEGRADED
    if any(not c["alive"] or c["health"] != "ok" for c in comps):
        return DEGRADED
    return HEALTHY


def render(result: dict[str, Any]) -> str:
    root = result["data_dir"]
    if not result["running"]:
        lines = [f"pynchy dev is not running (data dir {root})."]
        if result["stale_pid"]:
            lines.append(
                f"  Stale pid file: pid {result['stale_pid']} ended without cleaning up; "
                "the next `pynchy dev` removes it."
            )
        lines.append("  Start it with ./scripts/dev (or `pynchy dev`).")
        return "\n".join(lines)
    ready = f"ready in {result['ready_seconds']}s" if result["ready"] else "starting"
    lines = [
        f"pynchy dev: running, pid {result['pid']}, since {result['started_at']} ({ready}); data dir {root}",
        f"  agent isolation: {result.get('isolation') or 'unknown'}",
        "",
    ]
    rows = [["COMPONENT", "PID", "ALIVE", "PORT", "RESTARTS", "HEALTH"]]
    for c in result["components"]:
        rows.append(
            [
                c["name"],
                str(c["pid"] or "-"),
                "yes" if c["alive"] else "NO",
                str(c["port"] or "-"),
                str(c["restarts"]),
                c["health"],
            ]
        )
    lines += table(rows)
    lines.append("")
    if result["api_error"]:
        lines.append(f"The API server did not answer: {result['api_error']}")
        return "\n".join(lines)
    if result["groups"]:
        rows = [["NAMESPACE", "GROUP", "READY", "CHANNELS", "ACTIVE RUN", "MESSAGE"]]
        for g in result["groups"]:
            rows.append(
                [g["namespace"], g["name"], g["ready"], g["channels"], g["active_run"] or "-", g["message"][:80]]
            )
        lines += table(rows)
    else:
        lines.append("  No Groups. Try: kubectl apply -f manifests/examples/group-local.yaml")
    lines.append("")
    if result["runs"]:
        rows = [["NAMESPACE", "AGENTRUN", "GROUP", "PHASE", "TURNS", "AGE", "REASON", "MESSAGE"]]
        for r in result["runs"][-20:]:
            rows.append(
                [
                    r["namespace"],
                    r["name"],
                    r["group"] or "-",
                    r["phase"],
                    str(r["turns"]),
                    r["age"],
                    r["reason"] or "-",
                    r["message"].replace("\n", " ")[:80],
                ]
            )
        lines += table(rows)
    else:
        lines.append("  No AgentRuns yet: a message to a Group starts one.")
    return "\n".join(lines)
