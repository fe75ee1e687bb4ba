"""Pure parts of the operator: change detection, conditions, the work queue, settings."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from pynchy.operator.conditions import Cond, merge_conditions
from pynchy.operator.diff import contains, up_to_date
from pynchy.operator.settings import OperatorSettings
from pynchy.operator.workqueue import WorkQueue, retry_delay
from pynchy.settings import SettingsExit, load


def test_contains_ignores_server_added_fields_but_not_changes() -> None:
    desired = {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    live = {
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "volumeMode": "Filesystem",
            "storageClassName": "local-path",
        },
        "status": {"phase": "Bound"},
    }
    assert contains(desired, live)
    live["spec"]["resources"]["requests"]["storage"] = "2Gi"
    assert not contains(desired, live)


def test_empty_desired_values_match_missing_ones_only() -> None:
    assert contains({"spec": {"ingress": []}}, {"spec": {}})
    assert not contains({"spec": {"ingress": []}}, {"spec": {"ingress": [{}]}})
    assert not contains({"a": [1, 2]}, {"a": [1, 2, 3]})


def _obj(owners: list[dict[str, object]], labels: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "n", "labels": labels or {"a": "1"}, "ownerReferences": owners},
        "data": {"k": "v"},
    }


def test_up_to_date_compares_owner_references_exactly() -> None:
    owner = {"apiVersion": "pynchy.dev/v1alpha1", "kind": "Group", "name": "g", "uid": "u", "controller": True}
    live = _obj([owner])
    live["metadata"]["resourceVersion"] = "42"  # type: ignore[index]
    live["metadata"]["labels"]["extra"] = "kept"  # type: ignore[index]
    assert up_to_date(_obj([owner]), live)
    assert not up_to_date(_obj([]), live)  # Retain: the owner must go
    assert not up_to_date(_obj([owner]), _obj([]))  # Delete: the owner must come
    assert not up_to_date(_obj([owner], {"a": "2"}), live)


def test_conditions_keep_transition_time_when_status_is_unchanged() -> None:
    first = merge_conditions([], [Cond("Ready", False, "ClaimPending", "waiting")], 1, now="2026-01-01T00:00:00Z")
    same = merge_conditions(first, [Cond("Ready", False, "ClaimPending", "waiting")], 1, now="2026-01-02T00:00:00Z")
    assert same == first
    flipped = merge_conditions(first, [Cond("Ready", True, "Ready", "ok")], 2, now="2026-01-03T00:00:00Z")
    assert flipped[0]["lastTransitionTime"] == "2026-01-03T00:00:00Z"
    assert flipped[0]["observedGeneration"] == 2
    reason_only = merge_conditions(flipped, [Cond("Ready", True, "Other", "ok")], 2, now="2026-01-04T00:00:00Z")
    assert reason_only[0]["lastTransitionTime"] == "2026-01-03T00:00:00Z"
    dropped = merge_conditions(
        [*first, {"type": "Stalled", "status": "True", "reason": "X", "message": "", "lastTransitionTime": "t"}],
        [],
        1,
        drop=("Stalled",),
    )
    assert [c["type"] for c in dropped] == ["Ready"]


def test_workqueue_collapses_bursts_and_never_runs_a_key_twice_at_once() -> None:
    async def main() -> tuple[list[str], int]:
        seen: list[str] = []
        running: set[str] = set()
        overlaps = 0

        async def reconcile(key: str) -> None:
            nonlocal overlaps
            if key in running:
                overlaps += 1
            running.add(key)
            seen.append(key)
            await asyncio.sleep(0.05)
            running.discard(key)

        q = WorkQueue(reconcile, workers=4)
        q.start()
        for _ in range(50):
            q.add("a")
        q.add("b")
        await asyncio.sleep(0.01)
        for _ in range(50):
            q.add("a")  # arrives while "a" runs: exactly one more run
        await asyncio.sleep(0.3)
        await q.stop()
        return seen, overlaps

    seen, overlaps = asyncio.run(main())
    assert sorted(seen) == ["a", "a", "b"]
    assert overlaps == 0


def test_retry_delay_doubles_up_to_the_cap() -> None:
    delays = [retry_delay(n, base=0.5, cap=300.0) for n in range(1, 13)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays[-1] == 300.0
    assert all(later >= earlier for earlier, later in itertools.pairwise(delays))
    assert retry_delay(1, base=0.5, cap=300.0, jitter=0.999) < 0.5 * 1.2


def test_workqueue_schedules_a_retry_instead_of_hot_looping() -> None:
    async def main() -> tuple[int, float | None]:
        calls = 0

        async def reconcile(key: str) -> None:
            nonlocal calls
            calls += 1
            raise RuntimeError("API down")

        q = WorkQueue(reconcile, workers=1, base_delay=30.0, max_delay=60.0)
        q.start()
        q.add("k")
        while calls == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the worker records the failure and schedules the retry
        delay = q.scheduled_in("k")
        await q.stop()
        return calls, delay

    calls, delay = asyncio.run(main())
    assert calls == 1  # not retried at once
    assert delay is not None
    assert 29.0 < delay <= 36.0  # first retry after base_delay, with at most 20 % jitter


def test_operator_settings_are_validated_with_variable_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNCHY_HOST_PATH_ALLOWLIST", "relative/path")
    monkeypatch.setenv("PYNCHY_MAX_CONCURRENT_RUNS", "0")
    with pytest.raises(SettingsExit) as err:
        load(OperatorSettings)
    text = str(err.value)
    assert "PYNCHY_HOST_PATH_ALLOWLIST" in text
    assert "must be an absolute path" in text
    assert "PYNCHY_MAX_CONCURRENT_RUNS" in text


def test_host_path_allowlist_matches_whole_path_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNCHY_HOST_PATH_ALLOWLIST", "/srv/pynchy/, /data")
    monkeypatch.setenv("PYNCHY_RUN_TOKEN_KEY", "k" * 32)
    s = load(OperatorSettings)
    assert s.host_path_allowed("/srv/pynchy/photos")
    assert s.host_path_allowed("/data")
    assert not s.host_path_allowed("/srv/pynchy-evil")
    assert not s.host_path_allowed("/srv/pynchy/../etc")
