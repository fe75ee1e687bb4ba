"""`pynchy status`: everything read once (Groups, recent AgentRuns, the gateway's /status), the problems
found in it, the exit code, and the text people read. `--json` prints the same report as data."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from pynchy.clusterstatus import resources
from pynchy.clusterstatus.connect import ConnectError, Connection, connect
from pynchy.clusterstatus.gateway import GATEWAY_NAMESPACE, GatewayProbe, from_url, via_service_proxy
from pynchy.clusterstatus.resources import GroupRow, RunRow

# Exit codes, as `pynchy dev status` (and `systemctl status`) use them; click's usage errors are 2.
HEALTHY, DEGRADED, UNREACHABLE = 0, 1, 3
RECENT_RUNS = 20  # AgentRuns shown (the newest); AgentRuns are deleted after their TTL anyway


@dataclass(frozen=True)
class Options:
    kubeconfig: Path | None = None
    context: str | None = None
    namespace: str | None = None  # None: every namespace
    gateway_namespace: str = GATEWAY_NAMESPACE
    gateway_url: str | None = None  # instead of the API server's service proxy


class StatusReport(BaseModel):
    server: str | None  # the API server's URL
    credentials: str | None  # where they came from
    namespace: str | None
    api_error: str | None  # the cluster could not be read: why
    groups: list[GroupRow]
    runs: list[RunRow]  # the newest RECENT_RUNS, oldest first
    runs_total: int
    gateway: GatewayProbe | None  # None: not asked (the API server did not answer, and no --gateway-url)
    problems: list[str]
    exit_code: int


def problems(groups: list[GroupRow], gateway: GatewayProbe | None) -> list[str]:
    """What makes the installation degraded: a Group not Ready or out of budget, the gateway
    unreachable or its store unhealthy. Failed runs are not problems: runs end, and a Group's
    Ready condition says whether it can run again."""
    found = []
    for g in groups:
        if g.ready != "True":
            why = f": {g.message}" if g.message else ""
            found.append(f"Group {g.namespace}/{g.name} is not Ready ({g.ready}){why}")
        if g.spend is not None and g.spend.budget == "exceeded":
            found.append(f"Group {g.namespace}/{g.name} reached its budget: its model calls are refused")
    if gateway is not None:
        if gateway.health is None:
            found.append(f"gateway unreachable through {gateway.via}: {gateway.error}")
        elif not gateway.health.store.ok:
            found.append(f"gateway store unhealthy: {gateway.health.store.error}")
    return found


def exit_code(api_error: str | None, found: list[str]) -> int:
    if api_error is not None:
        return UNREACHABLE
    return DEGRADED if found else HEALTHY


def collect(options: Options, now: dt.datetime | None = None) -> StatusReport:
    now = now or dt.datetime.now(dt.UTC)
    conn: Connection | None = None
    api_error: str | None = None
    groups: list[GroupRow] = []
    runs: list[RunRow] = []
    try:
        conn = connect(options.kubeconfig, options.context)
        groups, runs = resources.read(conn.client, options.namespace, now)
    except ConnectError as exc:
        api_error = str(exc)
    except Exception as exc:  # unreachable, refused credentials, forbidden, CRDs missing
        api_error = resources.api_error(exc)
    try:
        gateway: GatewayProbe | None = None
        if options.gateway_url:
            gateway = from_url(options.gateway_url)
        elif conn is not None and api_error is None:
            gateway = via_service_proxy(conn.client, options.gateway_namespace)
    finally:
        if conn is not None:
            conn.close()
    found = problems(groups, gateway)
    if api_error is not None:
        found.insert(0, f"cannot read the cluster: {api_error}")
    return StatusReport(
        server=conn.server if conn else None,
        credentials=conn.source if conn else None,
        namespace=options.namespace,
        api_error=api_error,
        groups=groups,
        runs=runs[-RECENT_RUNS:],
        runs_total=len(runs),
        gateway=gateway,
        problems=found,
        exit_code=exit_code(api_error, found),
    )


# -- text ------------------------------------------------------------------------------------------


def table(rows: list[list[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart, indented by two."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def usd(value: float | None) -> str:
    if value is None:
        return "-"
    return "<$0.01" if 0 < value < 0.005 else f"${value:.2f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _gateway_line(probe: GatewayProbe) -> str:
    health = probe.health
    if health is None:
        return f"Gateway: unreachable through {probe.via}: {probe.error}"
    store = health.store
    if store.ok:
        store_text = f"store ok ({store.latency_ms:g} ms)" if store.latency_ms is not None else "store ok"
    else:
        store_text = f"store UNHEALTHY: {store.error}"
    queue = "queue unknown" if health.queue_depth is None else f"{_plural(health.queue_depth, 'queued turn')}"
    running = "" if health.running_turns is None else f", {health.running_turns} running"
    approvals = "n/a" if health.pending_approvals is None else str(health.pending_approvals)
    return (
        f"Gateway ({probe.via}): {store_text}; {queue}{running}; {_plural(health.active_runs, 'active run')}; "
        f"pending approvals {approvals}"
    )


GROUP_COLUMNS = [
    "NAMESPACE",
    "GROUP",
    "READY",
    "CHANNELS",
    "ACTIVE RUN",
    "QUEUED",
    "LAST TURN",
    "TODAY",
    "MONTH",
    "BUDGET",
    "MESSAGE",
]


def _groups(report: StatusReport) -> list[str]:
    if not report.groups:
        return ["  No Groups. Try: kubectl apply -f manifests/examples/group-local.yaml"]
    queued = report.gateway.health.queued if report.gateway and report.gateway.health else None
    rows = [list(GROUP_COLUMNS)]
    for g in report.groups:
        spend = g.spend
        rows.append(
            [
                g.namespace,
                g.name,
                g.ready,
                g.channels,
                g.active_run or "-",
                "-" if queued is None else str(queued.get(f"{g.namespace}/{g.name}", 0)),
                g.last_activity,
                usd(spend.today_usd) if spend else "-",
                usd(spend.month_usd) if spend else "-",
                spend.budget if spend else "-",
                g.message.replace("\n", " ")[:80],
            ]
        )
    return table(rows)


def _runs(report: StatusReport) -> list[str]:
    if not report.runs:
        return ["  No AgentRuns: a message to a Group starts one."]
    rows = [["NAMESPACE", "AGENTRUN", "GROUP", "PHASE", "TURNS", "COST", "AGE", "REASON", "MESSAGE"]]
    for r in report.runs:
        rows.append(
            [
                r.namespace,
                r.name,
                r.group or "-",
                r.phase,
                str(r.turns),
                usd(r.cost_usd),
                r.age,
                r.reason or "-",
                r.message.replace("\n", " ")[:80],
            ]
        )
    lines = table(rows)
    if report.runs_total > len(report.runs):
        lines.append(f"  ({report.runs_total - len(report.runs)} older AgentRuns not shown)")
    return lines


def render(report: StatusReport) -> str:
    scope = f"namespace {report.namespace}" if report.namespace else "all namespaces"
    if report.api_error is not None:
        where = f" ({report.credentials})" if report.credentials else ""
        lines = [f"pynchy status: cannot read the cluster{where}: {report.api_error}"]
        if report.gateway is not None:
            lines.append(_gateway_line(report.gateway))
        return "\n".join(lines)
    lines = [f"Cluster {report.server} ({report.credentials}); {scope}", ""]
    lines += _groups(report)
    lines.append("")
    lines += _runs(report)
    lines.append("")
    if report.gateway is not None:
        lines.append(_gateway_line(report.gateway))
    if report.problems:
        lines.append(f"Degraded: {_plural(len(report.problems), 'problem')}")
        lines += [f"  - {p}" for p in report.problems]
    else:
        lines.append("Healthy.")
    return "\n".join(lines)
