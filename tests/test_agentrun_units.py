"""Pure parts of AgentRun reconciliation: admission order, pod → status, token, config hash, TTL."""

from __future__ import annotations

import asyncio
import base64
import copy
from typing import Any

import pytest

from pynchy.api.resources import Group
from pynchy.operator.admission import RunIndex, RunView, history_excess, plan, run_view
from pynchy.operator.build.agentrun import RunInputs, agent_pod, parse_time, token_secret
from pynchy.operator.conditions import Cond
from pynchy.operator.reconcile_agentrun import Outcome, config_condition, pod_outcome, run_status, ttl_remaining
from pynchy.operator.settings import OperatorSettings
from pynchy.runtoken import GRACE_SECONDS, verify
from pynchy.settings import SettingsExit, load

KEY = "unit-test-run-token-key-0123456789abcdefghijklmn"
SETTINGS = OperatorSettings(run_token_key=KEY)
NOW = "2026-03-01T12:00:00Z"


def run(name: str, group: str, minute: int, **kw: Any) -> RunView:
    return RunView("ns", name, group, f"2026-03-01T10:{minute:02d}:00Z", **kw)


# -- admission ---------------------------------------------------------------------------------


def test_one_active_run_per_group_in_creation_order() -> None:
    runs = [run("b", "g", 2), run("a", "g", 1), run("c", "h", 3)]
    assert plan(runs, {}, limit=10) == {
        ("ns", "a"): None,
        ("ns", "b"): "Group g already has an active run a",
        ("ns", "c"): None,
    }


def test_cluster_limit_admits_oldest_first_and_says_why() -> None:
    runs = [run("late", "g3", 9), run("early", "g1", 1), run("middle", "g2", 5)]
    assert plan(runs, {}, limit=2) == {
        ("ns", "early"): None,
        ("ns", "middle"): None,
        ("ns", "late"): "cluster limit of 2 active runs reached",
    }


def test_same_timestamp_orders_by_name() -> None:
    runs = [run("r2", "a", 1), run("r1", "b", 1)]
    assert plan(runs, {}, limit=1) == {("ns", "r1"): None, ("ns", "r2"): "cluster limit of 1 active runs reached"}


def test_active_means_a_pod_that_has_not_finished() -> None:
    active = run("old", "g", 0, started=True)
    waiting = run("new", "g", 1)
    other = run("other", "h", 2)
    # Running pod: the Group is busy and the only cluster slot is taken.
    assert plan([active, waiting, other], {("ns", "old"): "Running"}, limit=1) == {
        ("ns", "new"): "Group g already has an active run old",
        ("ns", "other"): "cluster limit of 1 active runs reached",
    }
    # The pod succeeded (even before the run's status says so): room for the oldest waiting run.
    assert plan([active, waiting, other], {("ns", "old"): "Succeeded"}, limit=1) == {
        ("ns", "new"): None,
        ("ns", "other"): "cluster limit of 1 active runs reached",
    }
    # Admitted but its pod not seen yet: still holds its place.
    assert plan([active, waiting], {}, limit=5)[("ns", "new")] == "Group g already has an active run old"
    # Finished runs never hold a place.
    done = run("old", "g", 0, started=True, finished=True)
    assert plan([done, waiting], {("ns", "old"): "Running"}, limit=1) == {("ns", "new"): None}


def test_a_blocked_group_does_not_block_other_groups() -> None:
    runs = [run("busy", "g", 0, started=True), run("g-2", "g", 1), run("h-1", "h", 2)]
    assert plan(runs, {("ns", "busy"): "Pending"}, limit=2) == {
        ("ns", "g-2"): "Group g already has an active run busy",
        ("ns", "h-1"): None,
    }


def test_runs_that_cannot_start_are_not_candidates() -> None:
    runs = [run("no-group", "x", 0, startable=False), run("ok", "y", 1)]
    assert plan(runs, {}, limit=1) == {("ns", "ok"): None}


def test_groups_are_per_namespace() -> None:
    a = RunView("ns1", "r", "g", "2026-03-01T10:00:00Z", started=True)
    b = RunView("ns2", "r", "g", "2026-03-01T10:01:00Z")
    assert plan([a, b], {}, limit=5) == {("ns2", "r"): None}


def test_history_excess_deletes_oldest_finished_per_group() -> None:
    runs = [run(f"r{i}", "g", i, finished=True, completed=f"2026-03-01T11:{59 - i:02d}:00Z") for i in range(5)] + [
        run("live", "g", 9),
        run("h", "h", 0, finished=True, completed=NOW),
    ]
    # Completion time decides, not creation: r4 finished first.
    assert history_excess(runs, 3) == [("ns", "r4"), ("ns", "r3")]
    assert history_excess(runs, 10) == []


def test_index_admits_within_limits_under_concurrency() -> None:
    """Many workers deciding at once never admit more than the limits allow."""

    async def main() -> list[str]:
        woken: list[tuple[str, str]] = []
        index = RunIndex(limit=3, history_limit=20, wake=woken.append)
        views = [run(f"r{i:02d}", f"g{i % 5}", i) for i in range(20)]
        admitted: list[str] = []

        async def worker(view: RunView) -> None:
            await asyncio.sleep(0)
            async with index.lock:
                await asyncio.sleep(0)  # a decision spans awaits (the seed) without losing the lock
                if index.admit(view) is None:
                    admitted.append(view.name)

        index._seeded = True
        await asyncio.gather(*(worker(v) for v in reversed(views)))
        return admitted

    admitted = asyncio.run(main())
    assert len(admitted) == 3
    assert len({int(name[1:]) % 5 for name in admitted}) == 3  # three different Groups


def test_index_wakes_the_next_run_when_a_pod_finishes() -> None:
    woken: list[tuple[str, str]] = []
    index = RunIndex(limit=1, history_limit=20, wake=woken.append)
    index._seeded = True
    first = run("first", "g", 1)
    second = run("second", "h", 2)
    index.runs[second.key] = second
    assert index.admit(first) is None
    assert index.admit(second) == "cluster limit of 1 active runs reached"
    woken.clear()
    pod = {"metadata": {"namespace": "ns", "name": "first", "labels": {"pynchy.dev/run": "first"}}}
    index.observe_pod({**pod, "status": {"phase": "Running"}}, deleted=False)
    assert woken == []
    index.observe_pod({**pod, "status": {"phase": "Succeeded"}}, deleted=False)
    assert woken == [("ns", "second")]


def test_run_view_keeps_what_this_process_decided_over_a_lagging_event() -> None:
    body = {
        "metadata": {"namespace": "ns", "name": "r", "uid": "u1", "creationTimestamp": NOW},
        "spec": {"groupRef": {"name": "g"}},
    }
    decided = RunView("ns", "r", "g", NOW, uid="u1", started=True, finished=True, completed=NOW)
    assert run_view(body, decided) == decided
    # The same name, a new object: nothing carries over.
    recreated = run_view({**body, "metadata": {**body["metadata"], "uid": "u2"}}, decided)
    assert recreated is not None
    assert (recreated.started, recreated.finished) == (False, False)
    assert run_view({"metadata": {"name": "x", "namespace": "ns"}, "spec": {}}) is None


# -- pod → run status ----------------------------------------------------------------------------


def pod(phase: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "r"}, "spec": {"nodeName": "n1"}, "status": {"phase": phase, **status}}


def terminated(code: int, reason: str = "", message: str = "") -> dict[str, Any]:
    state = {"exitCode": code, "finishedAt": "2026-03-01T11:00:00Z", "startedAt": "2026-03-01T10:59:00Z"}
    if reason:
        state["reason"] = reason
    if message:
        state["message"] = message
    return {"containerStatuses": [{"name": "agent", "state": {"terminated": state}}]}


def test_pod_outcomes() -> None:
    waiting = {
        "containerStatuses": [
            {"name": "agent", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}
        ]
    }
    assert pod_outcome(pod("Pending", **waiting), NOW) == Outcome(
        "Pending", "PodPending", "ImagePullBackOff: no such image"
    )
    unscheduled = {"metadata": {"name": "r"}, "spec": {}, "status": {"phase": "Pending"}}
    assert pod_outcome(unscheduled, NOW).message == "agent pod r is waiting to be scheduled"
    running = pod_outcome(pod("Running", startTime="2026-03-01T10:59:00Z"), NOW)
    assert (running.phase, running.reason, running.start_time) == ("Running", "Running", "2026-03-01T10:59:00Z")
    ok = pod_outcome(pod("Succeeded", **terminated(0)), NOW)
    assert (ok.phase, ok.completion_time) == ("Succeeded", "2026-03-01T11:00:00Z")
    crashed = pod_outcome(pod("Failed", **terminated(3, "Error")), NOW)
    assert (crashed.phase, crashed.reason, crashed.message) == ("Failed", "Error", "exit code 3")
    told = pod_outcome(pod("Failed", **terminated(1, "Error", "turn API refused the token\n")), NOW)
    assert told.message == "turn API refused the token"
    oom = pod_outcome(pod("Failed", **terminated(137, "OOMKilled")), NOW)
    assert oom.reason == "OOMKilled"
    no_reason = pod_outcome(pod("Failed", **terminated(2, "weird reason!")), NOW)
    assert no_reason.reason == "weirdreason"
    assert pod_outcome(pod("Failed", **terminated(2, "!")), NOW).reason == "ExitCode2"
    late = pod_outcome(pod("Failed", reason="DeadlineExceeded", message="Pod was active too long"), NOW)
    assert (late.phase, late.reason, late.message, late.completion_time) == (
        "TimedOut",
        "DeadlineExceeded",
        "Pod was active too long",
        NOW,
    )
    evicted = pod_outcome(pod("Failed", reason="Evicted", message="low on memory"), NOW)
    assert (evicted.phase, evicted.reason, evicted.message) == ("Failed", "Evicted", "low on memory")


def _raw(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "r", "namespace": "ns", "generation": 1, "creationTimestamp": "2026-03-01T10:00:00Z"},
        "spec": {"groupRef": {"name": "g"}},
        "status": status or {},
    }


def _types(fields: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in fields["conditions"]}


def test_status_conditions_per_phase() -> None:
    queued = run_status(_raw(), Outcome("Pending", "Queued", "cluster limit of 1 active runs reached"), now=NOW)
    assert queued["phase"] == "Pending"
    assert _types(queued) == {"Ready": "False", "Reconciling": "True"}
    # Never the gateway's fields: a merge patch of these keys leaves them alone.
    assert not {"turnsServed", "sessionId", "usage"} & set(queued)

    current = Cond("ConfigCurrent", True, "ConfigCurrent", "")
    running = run_status(
        _raw(queued), Outcome("Running", "Running", "up", start_time=NOW), pod_name="r", config=current, now=NOW
    )
    assert _types(running) == {"Ready": "True", "Reconciling": "True", "ConfigCurrent": "True"}
    assert (running["podName"], running["startTime"]) == ("r", NOW)

    done = run_status(_raw(running), Outcome("Succeeded", "Succeeded", "ok", completion_time=NOW), now=NOW)
    assert _types(done) == {"Ready": "True", "Complete": "True"}
    assert (done["podName"], done["startTime"], done["completionTime"]) == ("r", NOW, NOW)

    failed = run_status(_raw(running), Outcome("TimedOut", "DeadlineExceeded", "late", completion_time=NOW), now=NOW)
    assert _types(failed) == {"Ready": "False", "Failed": "True", "Stalled": "True"}


def test_status_is_stable_when_nothing_changed() -> None:
    outcome = Outcome("Pending", "PodPending", "agent pod r is waiting to be scheduled")
    first = run_status(_raw(), outcome, pod_name="r", now="2026-03-01T10:00:01Z")
    again = run_status(_raw(copy.deepcopy(first)), outcome, pod_name="r", now="2026-03-01T10:05:00Z")
    assert again == first
    # Unknown configuration (Group gone for a moment): keep what was known.
    known = run_status(_raw(first), outcome, config=Cond("ConfigCurrent", False, "ConfigChanged", "x"), now=NOW)
    assert _types(run_status(_raw(known), outcome, now=NOW))["ConfigCurrent"] == "False"


def test_ttl_counts_from_completion() -> None:
    raw = _raw({"phase": "Succeeded", "completionTime": "2026-03-01T11:00:00Z"})
    done = parse_time("2026-03-01T11:00:00Z")
    assert ttl_remaining(raw, 3600, done + 600) == 3000
    raw["spec"]["ttlSecondsAfterFinished"] = 0
    assert ttl_remaining(raw, 3600, done) == 0


# -- the pod and its token -------------------------------------------------------------------------


def _group(**spec: Any) -> Group:
    return Group.from_k8s(
        {
            "apiVersion": "pynchy.dev/v1alpha1",
            "kind": "Group",
            "metadata": {"name": "g", "namespace": "ns", "uid": "gu", "generation": 1},
            "spec": {"channels": [{"local": {"name": "g"}}], **spec},
        }
    )


RUN = {
    "apiVersion": "pynchy.dev/v1alpha1",
    "kind": "AgentRun",
    "metadata": {"name": "r", "namespace": "ns", "uid": "ru", "creationTimestamp": "2026-03-01T10:00:00Z"},
    "spec": {"groupRef": {"name": "g"}},
}


def test_token_names_the_run_and_lasts_the_timeout_plus_grace() -> None:
    g = _group(agent={"timeoutSeconds": 600})
    issued = parse_time("2026-03-01T10:05:00Z")
    secret = token_secret(RUN, g, SETTINGS, issued)
    token = base64.b64decode(secret["data"]["token"]).decode()
    claims = verify(KEY, token, now=issued + 1)
    assert (claims.namespace, claims.run, claims.uid, claims.group) == ("ns", "r", "ru", "g")
    assert claims.expires == issued + 600 + GRACE_SECONDS
    assert token_secret(RUN, g, SETTINGS, issued) == secret  # deterministic: a re-reconcile writes nothing


def test_config_hash_follows_spec_and_config_map_but_not_run_status() -> None:
    g = _group()
    base = agent_pod(RUN, g, RunInputs("aaaa"), SETTINGS)
    assert agent_pod({**RUN, "status": {"phase": "Running"}}, g, RunInputs("aaaa"), SETTINGS) == base
    other_config = agent_pod(RUN, g, RunInputs("bbbb"), SETTINGS)
    other_spec = agent_pod(RUN, _group(agent={"idleTimeoutSeconds": 60}), RunInputs("aaaa"), SETTINGS)
    hashes = {p["metadata"]["annotations"]["pynchy.dev/config-hash"] for p in (base, other_config, other_spec)}
    assert len(hashes) == 3
    live = copy.deepcopy(base)
    want = base["metadata"]["annotations"]["pynchy.dev/config-hash"]
    assert config_condition(live, want).status
    changed = config_condition(live, other_config["metadata"]["annotations"]["pynchy.dev/config-hash"])
    assert (changed.status, changed.reason) == (False, "ConfigChanged")


def test_credentials_cannot_override_what_pynchy_sets() -> None:
    g = _group(
        credentials=[
            {"env": "HOME", "secretKeyRef": {"name": "s", "key": "k"}},
            {"env": "PYNCHY_RUN_TOKEN", "secretKeyRef": {"name": "s", "key": "k"}},
            {"env": "GH_TOKEN", "secretKeyRef": {"name": "s", "key": "k"}},
        ]
    )
    env = agent_pod(RUN, g, RunInputs("h"), SETTINGS)["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    assert "GH_TOKEN" in names
    assert next(e for e in env if e["name"] == "HOME")["value"] == "/home/agent"


def test_run_token_key_is_required_and_named_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYNCHY_RUN_TOKEN_KEY", raising=False)
    with pytest.raises(SettingsExit) as missing:
        load(OperatorSettings)
    assert "PYNCHY_RUN_TOKEN_KEY: Field required" in str(missing.value)
    monkeypatch.setenv("PYNCHY_RUN_TOKEN_KEY", "too-short")
    with pytest.raises(SettingsExit) as short:
        load(OperatorSettings)
    assert "PYNCHY_RUN_TOKEN_KEY" in str(short.value)
    assert "at least 32 characters" in str(short.value)
    assert "too-short" not in str(short.value)  # the value itself is never printed
    monkeypatch.setenv("PYNCHY_RUN_TOKEN_KEY", KEY)
    assert "unit-test" not in repr(load(OperatorSettings))


def test_a_reconcile_does_not_wake_the_run_it_works_on() -> None:
    """Else a run that keeps failing would be retried at once, past the queue's backoff."""
    woken: list[tuple[str, str]] = []
    index = RunIndex(limit=1, history_limit=20, wake=woken.append)
    body = {
        "metadata": {"namespace": "ns", "name": "r", "uid": "u", "creationTimestamp": NOW},
        "spec": {"groupRef": {"name": "g"}},
    }
    index.observe_run(body, wake=False)
    assert woken == []
    index.observe_run(body)  # a watch event does
    assert woken == [("ns", "r")]


def test_a_new_waiting_run_wakes_no_other_run() -> None:
    """It only takes room; its own reconcile (from its own event) decides for it."""
    woken: list[tuple[str, str]] = []
    index = RunIndex(limit=1, history_limit=20, wake=woken.append)
    for name in ("r1", "r2"):
        index.observe_run(
            {
                "metadata": {"namespace": "ns", "name": name, "uid": name, "creationTimestamp": NOW},
                "spec": {"groupRef": {"name": name}},
            }
        )
    assert woken == []
