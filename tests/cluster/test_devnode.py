"""The development node against the real control plane: a Node, scheduling, pods as processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.helpers import condition, get, wait_for
from conftest import LOCAL_PATH_CLASS
from pynchy.devnode import DevNode, DevNodeError, Sandbox
from pynchy.kube.controlplane import ControlPlane

# By name, found on the dev node's PATH (it includes this interpreter's folder): an absolute host path
# such as /tmp/checkout/.venv/bin/python would be rewritten by the path mapping when a pod mounts /tmp.
PY = Path(sys.executable).name
REPO = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def node_name(namespace: str) -> str:
    return f"dev-{namespace}"


def make_devnode(plane: ControlPlane, namespace: str, data_dir: Path, **kwargs: Any) -> DevNode:
    kwargs.setdefault("sandbox", None)  # these tests pin the process mode; test_devnode_sandbox.py the other
    return DevNode(
        plane.kubeconfig,
        data_dir,
        name=node_name(namespace),
        namespaces=[namespace],
        heartbeat_seconds=1.0,
        backoff_seconds=0.2,
        shutdown_grace_seconds=2.0,
        **kwargs,
    )


@pytest.fixture
def ready_namespace(control_plane: ControlPlane, namespace: str) -> str:
    """A namespace whose default ServiceAccount exists (pods are refused until it does)."""
    control_plane.kubectl("apply", "-f", "-", input=LOCAL_PATH_CLASS)
    wait_for(
        lambda: control_plane.kubectl("get", "sa", "default", "-n", namespace, check=False).returncode == 0,
        what="default ServiceAccount",
    )
    return namespace


@pytest.fixture
def devnode(control_plane: ControlPlane, ready_namespace: str, tmp_path: Path) -> Iterator[DevNode]:
    node = make_devnode(control_plane, ready_namespace, tmp_path / "devnode")
    node.start()
    try:
        yield node
    finally:
        node.stop()


def create(plane: ControlPlane, namespace: str, obj: dict[str, Any]) -> None:
    plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj))


def python_pod(name: str, script: str, *args: str, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": "ignored.example/agent:1",
        "command": [PY, "-c", textwrap.dedent(script)],
        "args": list(args),
    }
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5, "containers": [container], **spec},
    }


def claim(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def pod_obj(plane: ControlPlane, name: str, namespace: str) -> dict[str, Any] | None:
    return get(plane, "pod", name, namespace)


def wait_phase(plane: ControlPlane, name: str, namespace: str, *phases: str, timeout: float = 30) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        p = pod_obj(plane, name, namespace)
        return p if p and p.get("status", {}).get("phase") in phases else None

    return wait_for(check, timeout=timeout, what=f"pod {name} in {phases}")  # type: ignore[no-any-return]


def main_status(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["status"]["containerStatuses"][0]  # type: ignore[no-any-return]


def pid_of(pod: dict[str, Any]) -> int:
    return int(main_status(pod)["containerID"].rsplit("://", 1)[1])


def log_of(node: DevNode, pod: dict[str, Any], container: str = "main") -> str:
    meta = pod["metadata"]
    pod_dir = node.data_dir / "pods" / meta["namespace"] / f"{meta['name']}-{meta['uid']}"
    return (pod_dir / f"{container}.log").read_text()


# -- the Node ------------------------------------------------------------------------------------


def test_node_becomes_ready_and_stays_ready(control_plane: ControlPlane, devnode: DevNode) -> None:
    def ready() -> dict[str, Any] | None:
        proc = control_plane.kubectl("get", "node", devnode.name, "-o", "json", check=False)
        node = json.loads(proc.stdout) if proc.returncode == 0 else None
        return node if condition(node, "Ready") and condition(node, "Ready")["status"] == "True" else None

    node = wait_for(ready, what="Node Ready")
    status = node["status"]
    assert status["capacity"]["pods"] == "110"
    assert int(status["capacity"]["cpu"]) >= 1
    assert status["capacity"]["memory"].endswith("Ki")
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
    assert status["nodeInfo"]["kubeletVersion"].startswith("v")
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == devnode.name

    def renew_time() -> str:
        lease = control_plane.kubectl("get", "lease", devnode.name, "-n", "kube-node-lease", "-o", "json")
        return str(json.loads(lease.stdout)["spec"]["renewTime"])

    first = renew_time()
    second = wait_for(lambda: (t := renew_time()) != first and t, timeout=10, what="lease renewed")
    wait_for(lambda: (t := renew_time()) != second and t, timeout=10, what="lease renewed again")
    node = ready()
    assert node is not None, "the node lost its Ready condition"
    heartbeat = condition(node, "Ready")["lastHeartbeatTime"]
    assert heartbeat >= first[:19] + "Z"
    taints = [t["key"] for t in node["spec"].get("taints") or []]
    assert not [t for t in taints if "not-ready" in t or "unreachable" in t], taints


# -- running pods --------------------------------------------------------------------------------

WRITER = """
import os, pathlib, sys
config = pathlib.Path(sys.argv[1]).read_text()
namespace = pathlib.Path(sys.argv[2]).read_text()
data = pathlib.Path(os.environ["DATA"])
data.joinpath("out.txt").write_text("|".join([os.environ["SECRET_VALUE"], os.environ["CM_VALUE"], config]))
print("pod", os.environ["POD_NAME"], "node", os.environ["NODE"], "ns", namespace)
print("greeting", os.environ["GREETING_PATH"], "cwd", os.getcwd(), "ip", os.environ["POD_IP"])
print("env", sorted(os.environ))
assert "OPTIONAL_VALUE" not in os.environ
assert "PYTEST_CURRENT_TEST" not in os.environ, "the pod inherited the dev node's environment"
assert os.environ["CFG_mode"] == "dev"
"""

READER = """
import os, pathlib
print("read", pathlib.Path(os.environ["DATA"], "out.txt").read_text())
"""


def test_pod_runs_with_secret_configmap_and_claim(
    control_plane: ControlPlane, devnode: DevNode, namespace: str
) -> None:
    control_plane.kubectl("create", "secret", "generic", "creds", "--from-literal=token=s3cret", "-n", namespace)
    control_plane.kubectl(
        "create", "configmap", "settings", "--from-literal=mode=dev", "--from-literal=greeting=hello", "-n", namespace
    )
    create(control_plane, namespace, claim("work"))
    mounts = [{"name": "data", "mountPath": "/data"}, {"name": "config", "mountPath": "/etc/config", "readOnly": True}]
    volumes = [
        {"name": "data", "persistentVolumeClaim": {"claimName": "work"}},
        {"name": "config", "configMap": {"name": "settings"}},
    ]
    env = [
        {"name": "SECRET_VALUE", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "CM_VALUE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "OPTIONAL_VALUE", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "x", "optional": True}}},
        {"name": "DATA", "value": "/data"},
        {"name": "GREETING_PATH", "value": "$(DATA)/greeting"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    writer = python_pod(
        "writer",
        WRITER,
        "/etc/config/greeting",
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
        container={
            "env": env,
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
            "volumeMounts": mounts,
            "workingDir": "/data",
        },
        volumes=volumes,
    )
    create(control_plane, namespace, writer)
    pod = wait_phase(control_plane, "writer", namespace, "Succeeded", "Failed")
    output = log_of(devnode, pod)
    assert pod["status"]["phase"] == "Succeeded", output
    assert pod["spec"]["nodeName"] == devnode.name
    state = main_status(pod)["state"]["terminated"]
    assert (state["exitCode"], state["reason"]) == (0, "Completed")
    assert pod["status"]["podIP"] == "127.0.0.1"
    assert condition(pod, "PodScheduled")["status"] == "True"

    root = devnode.data_dir / "pods" / namespace / f"writer-{pod['metadata']['uid']}" / "root"
    assert f"pod writer node {devnode.name} ns {namespace}" in output
    pvc = get(control_plane, "pvc", "work", namespace)
    assert pvc is not None
    assert pvc["status"]["phase"] == "Bound"
    pv = json.loads(control_plane.kubectl("get", "pv", pvc["spec"]["volumeName"], "-o", "json").stdout)
    claim_dir = devnode.data_dir / "volumes" / namespace / "work" / pvc["metadata"]["uid"]
    assert pv["spec"]["hostPath"]["path"] == str(claim_dir)
    assert pv["spec"]["storageClassName"] == "local-path"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert (claim_dir / "out.txt").read_text() == "s3cret|dev|hello"
    # $(DATA) expanded, then mapped to the pod root; workingDir mapped (getcwd shows the symlink's target).
    assert f"greeting {root}/data/greeting cwd {claim_dir} ip 127.0.0.1" in output

    reader = python_pod(
        "reader",
        READER,
        container={"env": [{"name": "DATA", "value": "/data"}], "volumeMounts": mounts[:1]},
        volumes=volumes[:1],
    )
    create(control_plane, namespace, reader)
    pod = wait_phase(control_plane, "reader", namespace, "Succeeded", "Failed")
    assert pod["status"]["phase"] == "Succeeded", log_of(devnode, pod)
    assert "read s3cret|dev|hello" in log_of(devnode, pod)


AGENT_SHAPED = """
import os, pathlib, stat, tempfile
home, workspace = pathlib.Path(os.environ["HOME"]), pathlib.Path(os.environ["PYNCHY_WORKSPACE"])
assert pathlib.Path.cwd() == workspace.resolve(), (os.getcwd(), workspace)
home.joinpath("memory.md").write_text("remember")
workspace.joinpath("notes.txt").write_text("work")
with tempfile.NamedTemporaryFile(dir=None) as f:
    assert f.name.startswith(os.environ["TMPDIR"]), f.name
key = pathlib.Path(os.environ["PYNCHY_GIT_SSH_KEY_FILE"])
assert key.read_text() == "ssh-key", key
assert stat.S_IMODE(key.stat().st_mode) == 0o400
pathlib.Path(os.environ["PYNCHY_TERMINATION_LOG"]).write_text("agent done")
"""


def test_agent_shaped_pod(control_plane: ControlPlane, devnode: DevNode, namespace: str) -> None:
    """The shape of the operator's agent pods: one claim for home and (subPath) workspace, /tmp, secrets."""
    control_plane.kubectl(
        "create", "secret", "generic", "git", "--from-literal=ssh-privatekey=ssh-key", "-n", namespace
    )
    create(control_plane, namespace, claim("state"))
    env = {
        "HOME": "/home/agent",
        "PYNCHY_WORKSPACE": "/workspace",
        "TMPDIR": "/tmp",
        "PYNCHY_TERMINATION_LOG": "/dev/termination-log",
        "PYNCHY_GIT_SSH_KEY_FILE": "/etc/pynchy/git/ssh-privatekey",
    }
    pod = python_pod(
        "agent",
        AGENT_SHAPED,
        container={
            "workingDir": "/workspace",
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "volumeMounts": [
                {"name": "home", "mountPath": "/home/agent"},
                {"name": "home", "mountPath": "/workspace", "subPath": "workspace"},
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "git-ssh", "mountPath": "/etc/pynchy/git", "readOnly": True},
            ],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": True},
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
        },
        volumes=[
            {"name": "home", "persistentVolumeClaim": {"claimName": "state"}},
            {"name": "tmp", "emptyDir": {}},
            {
                "name": "git-ssh",
                "secret": {
                    "secretName": "git",
                    "items": [{"key": "ssh-privatekey", "path": "ssh-privatekey", "mode": 0o400}],
                    "optional": True,
                },
            },
        ],
        automountServiceAccountToken=False,
        enableServiceLinks=False,
        securityContext={"runAsUser": 1000, "fsGroup": 1000},
    )
    create(control_plane, namespace, pod)
    got = wait_phase(control_plane, "agent", namespace, "Succeeded", "Failed")
    assert got["status"]["phase"] == "Succeeded", main_status(got)
    assert main_status(got)["state"]["terminated"]["message"] == "agent done"
    pvc = get(control_plane, "pvc", "state", namespace)
    assert pvc is not None
    claim_dir = devnode.data_dir / "volumes" / namespace / "state" / pvc["metadata"]["uid"]
    assert (claim_dir / "memory.md").read_text() == "remember"
    assert (claim_dir / "workspace" / "notes.txt").read_text() == "work"


def test_recreated_claim_starts_empty(control_plane: ControlPlane, devnode: DevNode, namespace: str) -> None:
    script = """
    import os, pathlib, sys
    f = pathlib.Path(os.environ["DATA"], "marker")
    print("existed" if f.exists() else "fresh")
    f.write_text("x")
    """
    spec = {
        "container": {
            "env": [{"name": "DATA", "value": "/data"}],
            "volumeMounts": [{"name": "d", "mountPath": "/data"}],
        },
        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "scratch"}}],
    }
    create(control_plane, namespace, claim("scratch"))
    create(control_plane, namespace, python_pod("first", script, **spec))
    first = wait_phase(control_plane, "first", namespace, "Succeeded", "Failed")
    assert "fresh" in log_of(devnode, first)
    pvc = get(control_plane, "pvc", "scratch", namespace)
    assert pvc is not None
    old_dir = devnode.data_dir / "volumes" / namespace / "scratch" / pvc["metadata"]["uid"]
    assert (old_dir / "marker").exists()

    # As in any cluster, a claim is deleted once no scheduled pod refers to it.
    control_plane.kubectl("delete", "pod", "first", "-n", namespace)
    control_plane.kubectl("delete", "pvc", "scratch", "-n", namespace, "--timeout=30s")
    volume = pvc["spec"]["volumeName"]
    wait_for(
        lambda: control_plane.kubectl("get", "pv", volume, check=False).returncode != 0 and not old_dir.exists(),
        what="released volume and its data deleted",
    )
    create(control_plane, namespace, claim("scratch"))
    create(control_plane, namespace, python_pod("second", script, **spec))
    second = wait_phase(control_plane, "second", namespace, "Succeeded", "Failed")
    assert "fresh" in log_of(devnode, second)


def test_exit_code_and_termination_message(control_plane: ControlPlane, devnode: DevNode, namespace: str) -> None:
    script = """
    import sys
    open(sys.argv[1], "w").write("something broke")
    print("about to fail")
    sys.exit(3)
    """
    create(control_plane, namespace, python_pod("fails", script, "/dev/termination-log"))
    pod = wait_phase(control_plane, "fails", namespace, "Succeeded", "Failed")
    assert pod["status"]["phase"] == "Failed"
    state = main_status(pod)["state"]["terminated"]
    assert state["exitCode"] == 3
    assert state["reason"] == "Error"
    assert state["message"] == "something broke"
    assert state["startedAt"] <= state["finishedAt"]
    assert condition(pod, "Ready")["reason"] == "PodCompleted"


def test_fallback_to_logs_on_error(control_plane: ControlPlane, devnode: DevNode, namespace: str) -> None:
    script = "import sys; print('the last words'); sys.exit(1)"
    pod = python_pod("logs", script, container={"terminationMessagePolicy": "FallbackToLogsOnError"})
    create(control_plane, namespace, pod)
    got = wait_phase(control_plane, "logs", namespace, "Succeeded", "Failed")
    assert main_status(got)["state"]["terminated"]["message"].strip() == "the last words"


def test_active_deadline_exceeded(control_plane: ControlPlane, devnode: DevNode, namespace: str) -> None:
    create(control_plane, namespace, python_pod("slow", "import time; time.sleep(600)", activeDeadlineSeconds=2))
    running = wait_phase(control_plane, "slow", namespace, "Running")
    pid = pid_of(running)
    pod = wait_phase(control_plane, "slow", namespace, "Succeeded", "Failed")
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["reason"] == "DeadlineExceeded"
    assert "longer than the specified deadline" in pod["status"]["message"]
    assert main_status(pod)["state"]["terminated"]["exitCode"] == 143  # SIGTERM
    assert not alive(pid)


def test_deleting_a_running_pod_kills_its_process(
    control_plane: ControlPlane, devnode: DevNode, namespace: str
) -> None:
    script = """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("child", child.pid, flush=True)
    time.sleep(600)
    """
    create(control_plane, namespace, python_pod("sleeper", script))
    pod = wait_phase(control_plane, "sleeper", namespace, "Running")
    assert condition(pod, "Ready")["status"] == "True"
    pid = pid_of(pod)
    assert alive(pid)
    child = int(wait_for(lambda: "child" in log_of(devnode, pod) and log_of(devnode, pod), what="child pid").split()[1])
    assert alive(child)
    control_plane.kubectl("delete", "pod", "sleeper", "-n", namespace, "--wait=false")
    wait_for(lambda: not alive(pid) and not alive(child), timeout=10, what="the pod's processes to end")
    wait_for(lambda: pod_obj(control_plane, "sleeper", namespace) is None, timeout=10, what="pod object deleted")


def test_init_containers_and_restart_on_failure(control_plane: ControlPlane, devnode: DevNode, namespace: str) -> None:
    init = {
        "name": "prepare",
        "image": "ignored",
        "command": [PY, "-c", "import pathlib, sys; pathlib.Path(sys.argv[1], 'ready').write_text('yes')", "/scratch"],
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
    }
    script = """
    import pathlib, sys
    scratch = pathlib.Path(sys.argv[1])
    assert (scratch / "ready").read_text() == "yes"
    attempts = scratch / "attempts"
    n = int(attempts.read_text()) + 1 if attempts.exists() else 1
    attempts.write_text(str(n))
    sys.exit(0 if n >= 2 else 1)
    """
    pod = python_pod(
        "retry",
        script,
        "/scratch",
        container={"volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
        volumes=[{"name": "scratch", "emptyDir": {}}],
        initContainers=[init],
        restartPolicy="OnFailure",
    )
    create(control_plane, namespace, pod)
    got = wait_phase(control_plane, "retry", namespace, "Succeeded", "Failed")
    assert got["status"]["phase"] == "Succeeded"
    status = main_status(got)
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert got["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert condition(got, "Initialized")["status"] == "True"


def test_pod_without_command_fails_clearly(control_plane: ControlPlane, devnode: DevNode, namespace: str) -> None:
    pod = python_pod("nocmd", "")
    del pod["spec"]["containers"][0]["command"]
    create(control_plane, namespace, pod)
    got = wait_phase(control_plane, "nocmd", namespace, "Failed")
    assert "has no command" in got["status"]["message"]
    assert main_status(got)["state"]["terminated"]["reason"] == "StartError"


def test_missing_executable_is_a_start_error(control_plane: ControlPlane, devnode: DevNode, namespace: str) -> None:
    pod = python_pod("noexec", "")
    pod["spec"]["containers"][0]["command"] = ["no-such-program-pynchy"]
    create(control_plane, namespace, pod)
    got = wait_phase(control_plane, "noexec", namespace, "Failed")
    state = main_status(got)["state"]["terminated"]
    assert (state["exitCode"], state["reason"]) == (128, "StartError")
    assert "executable file not found" in state["message"]


def test_node_selector_mismatch_is_unschedulable(control_plane: ControlPlane, devnode: DevNode, namespace: str) -> None:
    create(control_plane, namespace, python_pod("picky", "pass", nodeSelector={"disktype": "ssd"}))
    wait_for(
        lambda: (c := condition(pod_obj(control_plane, "picky", namespace), "PodScheduled")) and c["status"] == "False",
        what="Unschedulable condition",
    )
    pod = pod_obj(control_plane, "picky", namespace)
    assert pod is not None
    assert not pod["spec"].get("nodeName")
    assert condition(pod, "PodScheduled")["reason"] == "Unschedulable"


# -- stopping and restarting the dev node --------------------------------------------------------


def test_stop_kills_pods_and_marks_them_failed(control_plane: ControlPlane, devnode: DevNode, namespace: str) -> None:
    create(control_plane, namespace, python_pod("victim", "import time; time.sleep(600)"))
    pid = pid_of(wait_phase(control_plane, "victim", namespace, "Running"))
    devnode.stop()
    assert not alive(pid)
    pod = pod_obj(control_plane, "victim", namespace)
    assert pod is not None
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["reason"] == "Terminated"
    assert condition(pod, "DisruptionTarget")["status"] == "True"
    node = json.loads(control_plane.kubectl("get", "node", devnode.name, "-o", "json").stdout)
    assert condition(node, "Ready")["status"] == "False"


def test_restart_after_kill_marks_lost_pods_failed(
    control_plane: ControlPlane, ready_namespace: str, tmp_path: Path
) -> None:
    namespace = ready_namespace
    data_dir = tmp_path / "devnode"
    with (tmp_path / "cli.log").open("wb") as cli_log:
        cli = subprocess.Popen(
            [
                PY,
                "-m",
                "pynchy",
                "devnode",
                "--data-dir",
                str(data_dir),
                "--name",
                node_name(namespace),
                "--kubeconfig",
                str(control_plane.kubeconfig),
                "--namespace",
                namespace,
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=cli_log,
        )
        try:
            create(control_plane, namespace, python_pod("orphan", "import time; time.sleep(600)"))
            pid = pid_of(wait_phase(control_plane, "orphan", namespace, "Running"))
            assert alive(pid)
        finally:
            cli.send_signal(signal.SIGKILL)
            cli.wait(10)
    wait_for(lambda: not alive(pid), timeout=10, what="the container to die with its dev node (PDEATHSIG)")

    with make_devnode(control_plane, namespace, data_dir):
        pod = wait_phase(control_plane, "orphan", namespace, "Failed")
    assert pod["status"]["reason"] == "DevNodeRestarted"
    assert "restarted" in pod["status"]["message"]
    state = main_status(pod)["state"]["terminated"]
    assert (state["exitCode"], state["reason"]) == (137, "ContainerStatusUnknown")


def test_start_fails_clearly_without_permissions(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "nobody.kubeconfig", "nobody")
    node = DevNode(kubeconfig, tmp_path / "devnode", name=node_name(namespace), namespaces=[namespace], sandbox=None)
    with pytest.raises(DevNodeError, match="forbidden"):
        node.start()
    assert not node.alive


# -- the sandbox (bubblewrap) --------------------------------------------------------------------


@pytest.fixture
def sandboxed(control_plane: ControlPlane, ready_namespace: str, tmp_path: Path) -> Iterator[DevNode]:
    node = make_devnode(control_plane, ready_namespace, tmp_path / "devnode", sandbox=Sandbox())
    node.start()
    try:
        yield node
    finally:
        node.stop()


SANDBOXED_AGENT = """
import errno, os, pathlib, stat, sys
assert os.getcwd() == "/workspace", os.getcwd()            # mounted at its path: nothing is mapped
assert (os.getuid(), os.getgid()) == (1000, 1000), (os.getuid(), os.getgid())
assert os.environ["HOME"] == "/home/agent"
pathlib.Path("/home/agent/memory.md").write_text("remember")
pathlib.Path("/workspace/notes.txt").write_text("work")
pathlib.Path("/tmp/scratch").write_text("tmp is a volume")
key = pathlib.Path("/etc/pynchy/git/ssh-privatekey")
assert key.read_text() == "ssh-key"
assert stat.S_IMODE(key.stat().st_mode) == 0o400
assert key.stat().st_uid == 1000                             # the dev node's files are the container user's
refused = {}
for path in ("/probe", "/usr/probe", "/etc/pynchy/git/probe", "/reference/probe", sys.prefix + "/probe"):
    try:
        open(path, "w")
    except OSError as exc:
        refused[path] = errno.errorcode[exc.errno]
print("refused", sorted(refused.items()), flush=True)
assert set(refused.values()) == {"EROFS"}, refused
assert len(refused) == 5, refused
assert pathlib.Path("/reference/shared.txt").read_text() == "read me"
assert not pathlib.Path(os.environ["HOST_FILE"]).exists()   # a file in the invoking user's home
assert sorted(int(p) for p in os.listdir("/proc") if p.isdigit()) == [1, 2, 3], os.listdir("/proc")
pathlib.Path("/dev/termination-log").write_text("agent done")
"""


def test_sandboxed_pod_sees_its_volumes_at_their_paths_and_nothing_else(
    control_plane: ControlPlane, sandboxed: DevNode, namespace: str
) -> None:
    host_file = Path.home() / f".pynchy-sandbox-test-{os.getpid()}"
    host_file.write_text("private")
    try:
        sandboxed_agent(control_plane, sandboxed, namespace, host_file)
    finally:
        host_file.unlink()


def sandboxed_agent(control_plane: ControlPlane, sandboxed: DevNode, namespace: str, host_file: Path) -> None:
    control_plane.kubectl(
        "create", "secret", "generic", "git", "--from-literal=ssh-privatekey=ssh-key", "-n", namespace
    )
    create(control_plane, namespace, claim("state"))
    create(control_plane, namespace, claim("shared"))
    create(
        control_plane,
        namespace,
        python_pod(
            "seed",
            "import pathlib; pathlib.Path('/s/shared.txt').write_text('read me')",
            container={"volumeMounts": [{"name": "shared", "mountPath": "/s"}]},
            volumes=[{"name": "shared", "persistentVolumeClaim": {"claimName": "shared"}}],
        ),
    )
    assert wait_phase(control_plane, "seed", namespace, "Succeeded", "Failed")["status"]["phase"] == "Succeeded"
    pod = python_pod(
        "agent",
        SANDBOXED_AGENT,
        container={
            "workingDir": "/workspace",
            "env": [{"name": "HOME", "value": "/home/agent"}, {"name": "HOST_FILE", "value": str(host_file)}],
            "volumeMounts": [
                {"name": "home", "mountPath": "/home/agent"},
                {"name": "home", "mountPath": "/workspace", "subPath": "workspace"},
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "git-ssh", "mountPath": "/etc/pynchy/git"},  # a Secret: read-only without saying so
                {"name": "shared", "mountPath": "/reference", "readOnly": True},
            ],
            "securityContext": {"readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        },
        volumes=[
            {"name": "home", "persistentVolumeClaim": {"claimName": "state"}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "shared", "persistentVolumeClaim": {"claimName": "shared"}},
            {
                "name": "git-ssh",
                "secret": {
                    "secretName": "git",
                    "items": [{"key": "ssh-privatekey", "path": "ssh-privatekey", "mode": 0o400}],
                },
            },
        ],
        securityContext={"runAsUser": 1000, "runAsGroup": 1000},
    )
    create(control_plane, namespace, pod)
    got = wait_phase(control_plane, "agent", namespace, "Succeeded", "Failed")
    assert got["status"]["phase"] == "Succeeded", log_of(sandboxed, got)
    assert main_status(got)["state"]["terminated"]["message"] == "agent done"
    pvc = get(control_plane, "pvc", "state", namespace)
    assert pvc is not None
    claim_dir = sandboxed.data_dir / "volumes" / namespace / "state" / pvc["metadata"]["uid"]
    assert (claim_dir / "memory.md").read_text() == "remember"
    assert (claim_dir / "workspace" / "notes.txt").read_text() == "work"


def host_processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_sandboxed_pod_stops_gracefully_and_takes_every_process_with_it(
    control_plane: ControlPlane, sandboxed: DevNode, namespace: str
) -> None:
    marker = f"sandbox-escapee-{namespace}"
    script = f"""
    import os, signal, subprocess, sys, time
    # A grandchild in its own session: outside the container's process group, not its PID namespace.
    subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)", "{marker}"])
    def stop(*_):
        print("stopped gracefully", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    time.sleep(600)
    """
    create(control_plane, namespace, python_pod("sleeper", script))
    pod = wait_phase(control_plane, "sleeper", namespace, "Running")
    wait_for(lambda: "ready" in log_of(sandboxed, pod) and host_processes_with(marker), what="the grandchild")
    control_plane.kubectl("delete", "pod", "sleeper", "-n", namespace, "--wait=false")
    wait_for(lambda: not host_processes_with(marker) and not alive(pid_of(pod)), timeout=10, what="every process gone")
    wait_for(lambda: pod_obj(control_plane, "sleeper", namespace) is None, timeout=10, what="pod object deleted")
    assert "stopped gracefully" in log_of(sandboxed, pod)  # SIGTERM reached it; bubblewrap did not cut it short


def test_sandboxed_deadline_and_exit_codes(control_plane: ControlPlane, sandboxed: DevNode, namespace: str) -> None:
    create(control_plane, namespace, python_pod("slow", "import time; time.sleep(600)", activeDeadlineSeconds=2))
    create(control_plane, namespace, python_pod("killed", "import os; os.kill(os.getpid(), 9)"))
    create(control_plane, namespace, python_pod("missing", "", container={"command": ["/no/such/program"]}))
    slow = wait_phase(control_plane, "slow", namespace, "Failed")
    assert slow["status"]["reason"] == "DeadlineExceeded"
    assert main_status(slow)["state"]["terminated"]["exitCode"] == 143  # SIGTERM, as without the sandbox
    killed = wait_phase(control_plane, "killed", namespace, "Failed")
    assert main_status(killed)["state"]["terminated"]["exitCode"] == 137
    missing = wait_phase(control_plane, "missing", namespace, "Failed")
    assert main_status(missing)["state"]["terminated"]["exitCode"] == 128
    assert "/no/such/program" in log_of(sandboxed, missing)


def test_sandbox_that_cannot_run_fails_start_with_the_fix(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    node = make_devnode(control_plane, namespace, tmp_path / "devnode", sandbox=Sandbox(bwrap="/nonexistent/bwrap"))
    with pytest.raises(DevNodeError, match=r"not installed.*apt-get install bubblewrap"):
        node.start()
    assert not node.alive
