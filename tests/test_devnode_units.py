"""Pure parts of the dev node: path mapping, $(VAR) expansion, env resolution, volume files, status."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pynchy.devnode import client
from pynchy.devnode.envvars import (
    CONFIG_MAP,
    SECRET,
    EnvError,
    container_env,
    env_references,
    expand,
    field_value,
    object_data,
    parse_quantity,
    resource_value,
)
from pynchy.devnode.pathmap import MountPathError, PathMap, map_path, normalize_container_path, plan_links
from pynchy.devnode.status import (
    Conditions,
    ContainerRecord,
    exit_code,
    node_selector_matches,
    set_pod_conditions,
    termination_message,
)
from pynchy.devnode.volumes import VolumeError, config_data, make_links, projection_files, remove_links, write_files

ROOT = "/data/pods/ns/agent-123/root"

# -- path mapping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/workspace", f"{ROOT}/workspace"),
        ("/workspace/src/main.py", f"{ROOT}/workspace/src/main.py"),
        ("/home/agent", f"{ROOT}/home/agent"),
        ("/home/agent/.cache/x", f"{ROOT}/home/agent/.cache/x"),
        ("/dev/termination-log", f"{ROOT}/dev/termination-log"),
        # left alone: not at or below a container path
        ("/workspaces", "/workspaces"),
        ("/workspace-old/x", "/workspace-old/x"),
        ("--dir=/workspace", "--dir=/workspace"),
        ("/usr/bin:/workspace/bin", "/usr/bin:/workspace/bin"),
        ("workspace/x", "workspace/x"),
        ("/home", "/home"),
        ("/etc/passwd", "/etc/passwd"),
        ("", ""),
        ("https://example.com/workspace", "https://example.com/workspace"),
    ],
)
def test_map_path(value: str, expected: str) -> None:
    pmap = PathMap.for_container(ROOT, ["/workspace", "/home/agent/", "/home/agent/.cache"], "/dev/termination-log")
    assert pmap(value) == expected


def test_map_path_function_and_trailing_slash_root() -> None:
    assert map_path("/a/b", ["/a"], "/r/") == "/r/a/b"
    assert map_path("/ab", ["/a"], "/r") == "/ab"


def test_agent_pod_example_from_the_docs() -> None:
    pmap = PathMap.for_container(ROOT, ["/workspace", "/home/agent", "/tmp"], "/dev/termination-log")
    env = {
        "PYNCHY_WORKSPACE": "/workspace",
        "HOME": "/home/agent",
        "TMPDIR": "/tmp",
        "PYNCHY_TERMINATION_LOG": "/dev/termination-log",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8080/model",
        "IS_SANDBOX": "1",
    }
    assert pmap.env(env) == {
        "PYNCHY_WORKSPACE": f"{ROOT}/workspace",
        "HOME": f"{ROOT}/home/agent",
        "TMPDIR": f"{ROOT}/tmp",
        "PYNCHY_TERMINATION_LOG": f"{ROOT}/dev/termination-log",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8080/model",
        "IS_SANDBOX": "1",
    }
    argv = ["pynchy-agent", "--config", "/workspace/x"]
    assert pmap.argv(argv) == ["pynchy-agent", "--config", f"{ROOT}/workspace/x"]
    assert pmap.local("/dev/termination-log") == f"{ROOT}/dev/termination-log"


def test_container_paths_are_normalised_and_validated() -> None:
    assert normalize_container_path("/a/b/") == "/a/b"
    assert normalize_container_path("//a//b") == "/a/b"
    with pytest.raises(MountPathError):
        normalize_container_path("relative")
    with pytest.raises(MountPathError):
        normalize_container_path("/")


def test_plan_links_puts_outer_mounts_first_and_last_wins() -> None:
    links = plan_links(
        "/r", [("/home/agent/.cache", "/v/cache"), ("/home/agent", "/v/home"), ("/w", "/v/1"), ("/w/", "/v/2")]
    )
    assert links == [("/r/w", "/v/2"), ("/r/home/agent", "/v/home"), ("/r/home/agent/.cache", "/v/cache")]


def test_links_are_created_through_outer_volumes_and_removed(tmp_path: Path) -> None:
    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    cache.mkdir()
    (cache / "f").write_text("cached")
    root = tmp_path / "root"
    created = make_links(plan_links(str(root), [("/home/agent", str(home)), ("/home/agent/.cache", str(cache))]))
    assert (root / "home/agent/.cache/f").read_text() == "cached"
    assert (home / ".cache").is_symlink()  # the nested mount point lives inside the outer volume
    remove_links(created)
    assert not (home / ".cache").exists()
    assert not (root / "home/agent").exists()


def test_a_link_refuses_to_hide_existing_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "keep").write_text("x")
    with pytest.raises(VolumeError):
        make_links([(str(root / "data"), str(tmp_path))])


# -- $(VAR) expansion ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "a"),
        ("x-$(A)-$(B)", "x-a-b"),
        ("$(UNDEFINED)", "$(UNDEFINED)"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$a"),
        ("$(A", "$(A"),
        ("$A", "$A"),
        ("$", "$"),
        ("a$", "a$"),
        ("$()", "$()"),
        ("$(A)$(A)", "aa"),
        ("no refs", "no refs"),
    ],
)
def test_expand_follows_kubernetes(text: str, expected: str) -> None:
    assert expand(text, {"A": "a"}, {"B": "b"}) == expected


def test_expand_first_context_wins() -> None:
    assert expand("$(X)", {"X": "pod"}, {"X": "service"}) == "pod"


# -- env ---------------------------------------------------------------------------------------

POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"b": "2", "a": "1"}},
    "spec": {"nodeName": "dev", "serviceAccountName": "agent"},
    "status": {"podIP": "127.0.0.1", "hostIP": "127.0.0.1"},
}


def test_env_order_expansion_and_sources() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}, {"secretRef": {"name": "s"}}],
        "env": [
            {"name": "A", "value": "/data"},
            {"name": "B", "value": "$(A)/x $(token) $(KUBERNETES_SERVICE_HOST) $(LATER)"},
            {"name": "LATER", "value": "l"},
            {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "mode"}}},
            {"name": "NOT_EXPANDED", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "ref"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "EMPTY"},
            {"name": "A", "value": "override"},
        ],
    }
    objects = {(CONFIG_MAP, "cm"): {"mode": "dev", "ref": "$(A)"}, (SECRET, "s"): {"token": "t0k"}}
    env = container_env(POD, container, objects, {"KUBERNETES_SERVICE_HOST": "127.0.0.1"})
    assert env["B"] == "/data/x t0k 127.0.0.1 $(LATER)"
    assert env["CM_mode"] == "dev"
    assert env["token"] == "t0k"
    assert env["FROM_SECRET"] == "t0k"
    assert env["FROM_CM"] == "dev"
    assert env["NOT_EXPANDED"] == "$(A)"
    assert (env["NAME"], env["UID"], env["IP"], env["SA"]) == ("p", "u-1", "127.0.0.1", "agent")
    assert env["EMPTY"] == ""
    assert env["A"] == "override"
    assert "KUBERNETES_SERVICE_HOST" not in env  # service variables are added by the caller


def test_env_optional_and_missing_sources() -> None:
    optional = {
        "envFrom": [{"secretRef": {"name": "nope", "optional": True}}],
        "env": [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
            {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "missing", "optional": True}}},
        ],
    }
    assert container_env(POD, optional, {(SECRET, "nope"): None, (CONFIG_MAP, "cm"): {}}) == {}

    missing_secret = {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]}
    with pytest.raises(EnvError, match='secret "gone" not found'):
        container_env(POD, missing_secret, {(SECRET, "gone"): None})
    missing_key = {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]}
    with pytest.raises(EnvError, match="couldn't find key k in ConfigMap ns/cm"):
        container_env(POD, missing_key, {(CONFIG_MAP, "cm"): {}})
    missing_from = {"envFrom": [{"configMapRef": {"name": "cm"}}]}
    with pytest.raises(EnvError, match='configmap "cm" not found'):
        container_env(POD, missing_from, {(CONFIG_MAP, "cm"): None})


def test_env_references() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "a"}}, {"secretRef": {"name": "b"}}],
        "env": [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "c", "key": "k"}}},
            {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "d", "key": "k"}}},
            {"name": "Z", "value": "v"},
        ],
    }
    assert env_references(container) == {(CONFIG_MAP, "a"), (SECRET, "b"), (SECRET, "c"), (CONFIG_MAP, "d")}


def test_field_values() -> None:
    assert field_value(POD, "spec.nodeName") == "dev"
    assert field_value(POD, "metadata.namespace") == "ns"
    assert field_value(POD, "metadata.labels['a']") == "1"
    assert field_value(POD, "metadata.labels") == 'a="1"\nb="2"'
    with pytest.raises(EnvError):
        field_value(POD, "spec.unknown")


def test_resource_values() -> None:
    container = {"resources": {"limits": {"memory": "1Gi"}, "requests": {"cpu": "250m"}}}
    assert resource_value(container, {"resource": "limits.memory", "divisor": "1Mi"}) == "1024"
    assert resource_value(container, {"resource": "requests.cpu", "divisor": "1m"}) == "250"
    assert resource_value(container, {"resource": "requests.cpu"}) == "1"  # rounded up, like the kubelet
    assert resource_value(container, {"resource": "limits.cpu"}, {"cpu": "4"}) == "4"  # node allocatable
    assert parse_quantity("1.5Gi") == 1.5 * 2**30


def test_object_data_decodes_secrets() -> None:
    secret = {"kind": "Secret", "data": {"k": base64.b64encode(b"v\xff").decode()}}
    assert object_data(secret)["k"].encode("utf-8", "surrogateescape") == b"v\xff"
    cm = {"kind": "ConfigMap", "data": {"a": "1"}, "binaryData": {"b": base64.b64encode(b"2").decode()}}
    assert object_data(cm) == {"a": "1", "b": "2"}
    assert config_data(secret) == {"k": b"v\xff"}
    assert config_data(None) is None


# -- volume files ------------------------------------------------------------------------------


def test_projection_files_all_keys_or_items_with_read_only_modes() -> None:
    data = {"a": b"1", "b": b"2"}
    assert projection_files(data, None, None, optional=False, kind="ConfigMap", name="cm") == [
        ("a", b"1", 0o444),
        ("b", b"2", 0o444),
    ]
    items = [{"key": "b", "path": "dir/b.txt", "mode": 0o600}]
    assert projection_files(data, items, 0o400, optional=False, kind="Secret", name="s") == [("dir/b.txt", b"2", 0o400)]
    assert projection_files(None, None, None, optional=True, kind="Secret", name="s") == []
    with pytest.raises(VolumeError, match='secret "s" not found'):
        projection_files(None, None, None, optional=False, kind="Secret", name="s")
    with pytest.raises(VolumeError, match="non-existent config key: z"):
        projection_files(data, [{"key": "z", "path": "z"}], None, optional=False, kind="ConfigMap", name="cm")


def test_write_files(tmp_path: Path) -> None:
    write_files(tmp_path / "v", [("a", b"1", 0o444), ("d/b", b"2", 0o400)])
    assert (tmp_path / "v/a").read_bytes() == b"1"
    assert (tmp_path / "v/a").stat().st_mode & 0o777 == 0o444
    assert (tmp_path / "v/d/b").stat().st_mode & 0o777 == 0o400
    write_files(tmp_path / "v", [("a", b"new", 0o444)])  # read-only files are replaced
    assert (tmp_path / "v/a").read_bytes() == b"new"
    with pytest.raises(VolumeError):
        write_files(tmp_path / "v", [("../escape", b"x", 0o444)])


# -- status ------------------------------------------------------------------------------------


def test_exit_codes() -> None:
    assert exit_code(0) == 0
    assert exit_code(3) == 3
    assert exit_code(-15) == 143
    assert exit_code(-9) == 137


def test_container_record_states() -> None:
    rec = ContainerRecord("main", "img")
    rec.running(42, "2026-01-01T00:00:00Z")
    status = rec.to_status()
    assert status["ready"]
    assert status["started"]
    assert status["containerID"] == "pynchy-devnode://42"
    rec.terminated(3, started_at="2026-01-01T00:00:00Z", finished_at="2026-01-01T00:00:05Z", message="boom")
    term = rec.to_status()["state"]["terminated"]
    assert (term["exitCode"], term["reason"], term["message"]) == (3, "Error", "boom")
    rec.restarting("CrashLoopBackOff", "back-off")
    assert rec.to_status()["lastState"]["terminated"]["exitCode"] == 3
    assert rec.to_status()["state"]["waiting"]["reason"] == "CrashLoopBackOff"


def test_pod_conditions_and_stable_transition_times() -> None:
    conds = Conditions([{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}])
    init, main = [ContainerRecord("init", "")], [ContainerRecord("main", "")]
    set_pod_conditions(conds, phase="Pending", init=init, main=main, sandbox_ready=True)
    by_type = {c["type"]: c for c in conds.to_list()}
    assert by_type["PodScheduled"]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert by_type["Initialized"]["status"] == "False"
    assert by_type["Ready"]["reason"] == "ContainersNotReady"
    init[0].terminated(0, started_at=None, finished_at="x")
    main[0].running(1, "t")
    set_pod_conditions(conds, phase="Running", init=init, main=main, sandbox_ready=True)
    by_type = {c["type"]: c for c in conds.to_list()}
    assert by_type["Initialized"]["status"] == by_type["Ready"]["status"] == "True"
    main[0].terminated(0, started_at="t", finished_at="u")
    set_pod_conditions(conds, phase="Succeeded", init=init, main=main, sandbox_ready=True)
    assert {c["type"]: c for c in conds.to_list()}["Ready"]["reason"] == "PodCompleted"


def test_termination_message() -> None:
    assert termination_message("written", "log", "FallbackToLogsOnError", 1) == "written"
    assert termination_message("", "a\nb", "FallbackToLogsOnError", 1) == "a\nb"
    assert termination_message("", "a\nb", "FallbackToLogsOnError", 0) == ""
    assert termination_message("", "a\nb", "File", 1) == ""
    long_log = "\n".join(f"line {i}" for i in range(200))
    message = termination_message(None, long_log, "FallbackToLogsOnError", 1)
    assert message.endswith("line 199")
    assert "line 119" not in message
    assert len(message) <= 2048


def test_node_selector() -> None:
    labels = {"kubernetes.io/os": "linux", "kubernetes.io/hostname": "dev"}
    assert node_selector_matches(None, labels)
    assert node_selector_matches({"kubernetes.io/os": "linux"}, labels)
    assert not node_selector_matches({"disktype": "ssd"}, labels)


class _OneEventKube:
    """Lists one object, then watches: one event, and the stream stays open."""

    def __init__(self) -> None:
        self.lists = 0

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        self.lists += 1
        return {"metadata": {"resourceVersion": "1"}, "items": [{"metadata": {"uid": "a", "name": "a"}}]}

    async def watch_stream(self, path: str, query: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        yield {"type": "ADDED", "object": {"metadata": {"uid": "b", "name": "b", "resourceVersion": "2"}}}
        await asyncio.Event().wait()


def test_informer_logs_a_failing_handler_and_goes_on_watching() -> None:
    kube = _OneEventKube()
    seen: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def handler(kind: str, obj: dict[str, Any]) -> None:
        seen.append((kind, obj["metadata"]["name"]))
        if obj["metadata"]["name"] == "a":
            raise RuntimeError("the handler failed")
        done.set()

    async def scenario() -> None:
        task = asyncio.create_task(client.informer(kube, "/api/v1/pods", handler, what="pods"))
        try:
            await asyncio.wait_for(done.wait(), 5)
        finally:
            task.cancel()

    asyncio.run(scenario())
    assert seen == [("ADDED", "a"), ("ADDED", "b")]
    assert kube.lists == 1  # no relist: the failure stayed inside the handler
