"""`pynchy dev status`: the components (from the data dir's pid and state files), then the
Groups and AgentRuns (from the API server), each with its health."""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

from pynchy.dev.components import same_process
from pynchy.dev.config import DevPaths
from pynchy.dev.preflight import http_ok, read_pid, read_state, supervisor_alive
from pynchy.operator.conditions import condition

# Exit codes, as `systemctl status` uses them.
HEALTHY, DEGRADED, NOT_RUNNING = 0, 1, 3


def condition_of(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """The object's condition of that type, {} when it has none."""
    return condition((obj.get("status") or {}).get("conditions"), kind) or {}


def _age(stamp: str | None, now: dt.datetime) -> str:
    if not stamp:
        return "-"
    seconds = int((now - dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _channels(group: dict[str, Any]) -> str:
    out = []
    for binding in (group.get("spec") or {}).get("channels") or []:
        if "local" in binding:
            out.append(f"local:{binding['local'].get('name')}")
        elif "slack" in binding:
            out.append(f"slack:{binding['slack'].get('channelId')}")
    return ",".join(out) or "-"


def _items(listing: object) -> list[dict[str, Any]]:
    """The items of a custom object list (the client hands it over as decoded JSON)."""
    assert isinstance(listing, dict)
    return list(listing["items"])


def _cluster(state: dict[str, Any]) -> dict[str, Any]:
    """Groups, AgentRuns and the dev node, or an error saying why they could not be read."""
    from kubernetes.client import CoreV1Api, CustomObjectsApi

    from pynchy.kube import official

    now = dt.datetime.now(dt.UTC)
    try:
        client = official.new_client_from_config(state["kubeconfig"])
        custom = CustomObjectsApi(client)
        groups = _items(custom.list_cluster_custom_object("pynchy.dev", "v1alpha1", "groups", _request_timeout=5))
        runs = _items(custom.list_cluster_custom_object("pynchy.dev", "v1alpha1", "agentruns", _request_timeout=5))
        node = official.to_json(client, CoreV1Api(client).read_node(state["node"], _request_timeout=5))
    except Exception as exc:
        return {"api_error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"}
    finally:
        with contextlib.suppress(Exception):
            official.close_client(client)
    out_groups = []
    for g in sorted(groups, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        ready = condition_of(g, "Ready")
        status = g.get("status") or {}
        current = status.get("observedGeneration") == g["metadata"].get("generation")
        out_groups.append(
            {
                "namespace": g["metadata"]["namespace"],
                "name": g["metadata"]["name"],
                "ready": ready.get("status", "Unknown") if current or not ready else "Unknown",
                "channels": _channels(g),
                "active_run": status.get("activeRun"),
                "session_id": status.get("sessionId"),
                "message": "" if ready.get("status") == "True" else (ready.get("message") or ready.get("reason") or ""),
            }
        )
    out_runs = []
    for r in sorted(runs, key=lambda o: o["metadata"]["creationTimestamp"]):
        status = r.get("status") or {}
        out_runs.append(
            {
                "namespace": r["metadata"]["namespace"],
                "name": r["metadata"]["name"],
                "group": (r.get("spec") or {}).get("groupRef", {}).get("name"),
                "phase": status.get("phase") or "New",
                "reason": status.get("reason") or "",
                "turns": status.get("turnsServed", 0),
                "age": _age(r["metadata"].get("creationTimestamp"), now),
                "message": status.get("message") or "",
            }
        )
    ready = condition_of(node, "Ready")
    beat = ready.get("lastHeartbeatTime")
    fresh = bool(beat and (now - dt.datetime.fromisoformat(beat.replace("Z", "+00:00"))).total_seconds() < 60)
    return {
        "api_error": None,
        "groups": out_groups,
        "runs": out_runs,
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


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


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
    lines += _table(rows)
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
        lines += _table(rows)
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
        lines += _table(rows)
    else:
        lines.append("  No AgentRuns yet: a message to a Group starts one.")
    return "\n".join(lines)
