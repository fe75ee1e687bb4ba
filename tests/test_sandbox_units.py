"""Pure parts of the dev node's sandbox: bubblewrap argv, host image, egress check, relay addresses, launcher."""

from __future__ import annotations

import os
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pynchy.api.resources import Group
from pynchy.devnode import sandbox_launcher
from pynchy.devnode.egress import selector_matches, unsupported_egress
from pynchy.devnode.relay import SANDBOX_RELAY_DIR, Address
from pynchy.devnode.sandbox import (
    ETC_PATHS,
    HostImage,
    Mount,
    SandboxSpec,
    _without_covered,
    bwrap_argv,
    passwd_lines,
    unavailable_reason,
)
from pynchy.devnode.sandbox_launcher import START_ERROR, parse
from pynchy.operator.build.group import agent_pod_selector, network_policy
from pynchy.operator.settings import OperatorSettings

LAUNCHER = os.path.realpath(sandbox_launcher.__file__)
IMAGE = HostImage(
    binds=("/usr", "/etc/ssl", "/opt/venv"),
    symlinks=(("usr/bin", "/bin"), ("usr/lib", "/lib")),
    python="/opt/venv/bin/python",
)
BIND_FLAGS = {"--bind", "--ro-bind", "--symlink", "--proc", "--dev"}


def spec(**kw: Any) -> SandboxSpec:
    base: dict[str, Any] = {
        "argv": ["/bin/sh", "-c", "echo hi"],
        "mounts": [],
        "image": IMAGE,
        "passwd_file": "/host/pod/passwd",
        "group_file": "/host/pod/group",
    }
    base.update(kw)
    return SandboxSpec(**base)


def triples(argv: list[str], flag: str) -> list[tuple[str, str]]:
    """The (source, destination) pairs of every ``flag SRC DEST`` in argv (before the command)."""
    end = argv.index("--")
    return [(argv[i + 1], argv[i + 2]) for i in range(end) if argv[i] == flag]


def pairs(argv: list[str], flag: str) -> list[str]:
    end = argv.index("--")
    return [argv[i + 1] for i in range(end) if argv[i] == flag]


# -- bwrap_argv --------------------------------------------------------------------------------


def test_bwrap_argv_unshares_everything_and_dies_with_parent() -> None:
    argv = bwrap_argv(spec(bwrap="/usr/bin/bwrap"))
    assert argv[0] == "/usr/bin/bwrap"
    options = argv[: argv.index("--")]
    for flag in ("--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"):
        assert flag in options
    assert "--unshare-cgroup-try" in options
    assert "--die-with-parent" in options
    assert "--share-net" not in options


def test_bwrap_argv_uid_gid_hostname_from_spec() -> None:
    argv = bwrap_argv(spec(uid=1234, gid=5678, hostname="agent-pod"))
    assert pairs(argv, "--uid") == ["1234"]
    assert pairs(argv, "--gid") == ["5678"]
    assert pairs(argv, "--hostname") == ["agent-pod"]


def test_bwrap_argv_drops_all_capabilities_without_additions() -> None:
    argv = bwrap_argv(spec())
    assert pairs(argv, "--cap-drop") == ["ALL"]
    assert pairs(argv, "--cap-add") == []


@pytest.mark.parametrize("cap", ["NET_BIND_SERVICE", "CAP_NET_BIND_SERVICE", "net_bind_service"])
def test_bwrap_argv_adds_capabilities_in_either_spelling(cap: str) -> None:
    argv = bwrap_argv(spec(add_capabilities=[cap, "CHOWN"]))
    assert pairs(argv, "--cap-add") == ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"]
    # Additions come after dropping everything (bubblewrap applies them in order).
    assert argv.index("--cap-drop") < argv.index("--cap-add")


def test_bwrap_argv_image_symlinks_then_read_only_binds_then_proc_dev_passwd() -> None:
    argv = bwrap_argv(spec())
    assert triples(argv, "--symlink") == [("usr/bin", "/bin"), ("usr/lib", "/lib")]
    ro = triples(argv, "--ro-bind")
    assert ro[:3] == [("/usr", "/usr"), ("/etc/ssl", "/etc/ssl"), ("/opt/venv", "/opt/venv")]
    last_symlink = max(i for i, a in enumerate(argv) if a == "--symlink")
    assert last_symlink < argv.index("--ro-bind")
    proc = argv.index("--proc")
    assert argv[proc : proc + 4] == ["--proc", "/proc", "--dev", "/dev"]
    assert argv.index("/opt/venv") < proc
    assert ro[3:5] == [("/host/pod/passwd", "/etc/passwd"), ("/host/pod/group", "/etc/group")]
    assert argv.index("/host/pod/passwd") > proc
    assert "/etc" not in [dest for _, dest in ro]


def test_bwrap_argv_mounts_outer_first_with_their_modes() -> None:
    mounts = [
        Mount("/home/agent/.cache", "/data/cache", read_only=False),
        Mount("/config", "/data/config", read_only=True),
        Mount("/home/agent", "/data/home", read_only=False),
        Mount("/home/agent/.cache/deep/x", "/data/x", read_only=True),
    ]
    argv = bwrap_argv(spec(mounts=mounts))
    order = [i for i, a in enumerate(argv) if a in ("--bind", "--ro-bind") and argv[i + 1].startswith("/data/")]
    got = [(argv[i], argv[i + 1], argv[i + 2]) for i in order]
    assert got == [
        ("--ro-bind", "/data/config", "/config"),
        ("--bind", "/data/home", "/home/agent"),
        ("--bind", "/data/cache", "/home/agent/.cache"),
        ("--ro-bind", "/data/x", "/home/agent/.cache/deep/x"),
    ]
    # Volumes come after the image, /proc, /dev and the passwd files, so they can shadow them.
    assert order[0] > argv.index("/host/pod/group")


def test_bwrap_argv_relay_dir_only_when_set() -> None:
    without = bwrap_argv(spec())
    assert SANDBOX_RELAY_DIR not in without
    relay_args = ["--relay", f"127.0.0.1:8080={SANDBOX_RELAY_DIR}/0.sock"]
    argv = bwrap_argv(spec(relay_dir="/tmp/pynchy-relay-x", relay_args=relay_args))
    assert ("/tmp/pynchy-relay-x", SANDBOX_RELAY_DIR) in triples(argv, "--ro-bind")
    assert ("/tmp/pynchy-relay-x", SANDBOX_RELAY_DIR) not in triples(argv, "--bind")


def test_bwrap_argv_termination_file_only_when_given() -> None:
    without = bwrap_argv(spec())
    assert "/dev/termination-log" not in without
    argv = bwrap_argv(spec(termination_file=("/host/pod/term", "/dev/termination-log")))
    assert ("/host/pod/term", "/dev/termination-log") in triples(argv, "--bind")
    # After /dev, or the fresh /dev would hide it.
    assert argv.index("/host/pod/term") > argv.index("--dev")


def test_bwrap_argv_remount_ro_only_with_read_only_root_and_after_every_mount() -> None:
    mounts = [Mount("/home/agent", "/data/home", read_only=False), Mount("/cfg", "/data/cfg", read_only=True)]
    kw: dict[str, Any] = {
        "mounts": mounts,
        "relay_dir": "/tmp/r",
        "termination_file": ("/host/term", "/dev/termination-log"),
    }
    assert "--remount-ro" not in bwrap_argv(spec(**kw))
    argv = bwrap_argv(spec(read_only_root=True, **kw))
    end = argv.index("--")
    assert argv.count("--remount-ro") == 1
    remount = argv.index("--remount-ro")
    assert argv[remount + 1] == "/"
    last_mount = max(i for i in range(end) if argv[i] in BIND_FLAGS)
    assert remount > last_mount
    assert remount < argv.index("--chdir") < end


def test_bwrap_argv_ends_with_launcher_then_container_command() -> None:
    relay_args = ["--relay", f"127.0.0.1:8080={SANDBOX_RELAY_DIR}/0.sock"]
    command = ["/usr/bin/env", "--", "python", "-c", "print(1)"]
    argv = bwrap_argv(spec(argv=command, workdir="/home/agent/work", relay_args=relay_args))
    end = argv.index("--")
    assert argv[end - 2 : end] == ["--chdir", "/home/agent/work"]
    tail = argv[end + 1 :]
    assert tail == ["/opt/venv/bin/python", "-I", "-S", LAUNCHER, *relay_args, "--", *command]
    assert os.path.isabs(LAUNCHER)
    assert os.path.isfile(LAUNCHER)


# -- passwd_lines, _without_covered, HostImage -----------------------------------------------


def test_passwd_lines_root_agent_nobody() -> None:
    passwd, group = passwd_lines(1000, 1001, "/home/agent")
    users = passwd.splitlines()
    assert users[0].startswith("root:x:0:0:")
    assert "agent:x:1000:1001:agent:/home/agent:/bin/sh" in users
    assert users[-1].startswith("nobody:x:65534:65534:")
    assert passwd.endswith("\n")
    groups = group.splitlines()
    assert groups == ["root:x:0:", "agent:x:1001:", "nogroup:x:65534:"]
    for line in users:
        assert len(line.split(":")) == 7


def test_passwd_lines_without_agent_for_root() -> None:
    passwd, group = passwd_lines(0, 0, "/root")
    assert not any(line.startswith("agent:") for line in passwd.splitlines())
    assert not any(line.startswith("agent:") for line in group.splitlines())
    assert [line.split(":")[0] for line in passwd.splitlines()] == ["root", "nobody"]


def test_without_covered_drops_nested_paths_only() -> None:
    got = _without_covered(["/usr/lib/python3", "/usr2", "/usr", "/opt/a/b", "/usr", "/opt/a", "/opt/ab"])
    assert sorted(got) == ["/opt/a", "/opt/ab", "/usr", "/usr2"]
    assert _without_covered(["/a/b", "/a/"]) == ["/a/"]
    assert _without_covered(["/x", "/"]) == ["/"]


def _covered(path: str, binds: tuple[str, ...]) -> bool:
    return any(path == b or path.startswith(b.rstrip("/") + "/") for b in binds)


def test_host_image_of_host_has_this_python_and_the_launcher_but_no_secrets() -> None:
    image = HostImage.of_host()
    assert _covered(sys.prefix, image.binds) or _covered(os.path.realpath(sys.prefix), image.binds)
    assert _covered(os.path.dirname(LAUNCHER), image.binds)
    assert image.python == sys.executable
    assert "/etc" not in image.binds
    assert "/" not in image.binds
    for b in image.binds:
        if b == "/etc" or b.startswith("/etc/"):
            assert b in ETC_PATHS
    home = os.path.realpath(Path.home())
    assert home not in image.binds
    assert str(Path.home()) not in image.binds
    # Nothing that holds the home directory either (a parent of it would expose it whole).
    assert not any(home.startswith(b.rstrip("/") + "/") for b in image.binds if b != "/")
    assert not _covered("/etc/shadow", image.binds)
    # Every bound path exists, and none is bound twice or inside another bind.
    assert all(os.path.lexists(b) for b in image.binds)
    assert list(image.binds) == _without_covered(image.binds)
    for target, path in image.symlinks:
        assert os.readlink(path) == target


def test_unavailable_reason_here_and_without_bubblewrap() -> None:
    assert shutil.which("bwrap") is not None, "this machine is expected to have bubblewrap"
    assert unavailable_reason() is None
    reason = unavailable_reason("/nonexistent/bwrap")
    assert reason is not None
    assert "not installed" in reason
    assert "/nonexistent/bwrap" in reason


# -- egress --------------------------------------------------------------------------------------


def test_selector_match_labels() -> None:
    labels = {"app": "agent", "group": "g"}
    assert selector_matches({"matchLabels": {"app": "agent"}}, labels)
    assert selector_matches({"matchLabels": {"app": "agent", "group": "g"}}, labels)
    assert not selector_matches({"matchLabels": {"app": "agent", "group": "h"}}, labels)
    assert not selector_matches({"matchLabels": {"missing": "x"}}, labels)


def test_selector_empty_matches_everything() -> None:
    assert selector_matches({}, {"a": "b"})
    assert selector_matches(None, {})
    assert selector_matches({"matchLabels": {}, "matchExpressions": []}, {})


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ({"key": "tier", "operator": "In", "values": ["web", "agent"]}, True),
        ({"key": "tier", "operator": "In", "values": ["web"]}, False),
        ({"key": "absent", "operator": "In", "values": ["agent"]}, False),
        ({"key": "tier", "operator": "NotIn", "values": ["web"]}, True),
        ({"key": "tier", "operator": "NotIn", "values": ["agent"]}, False),
        ({"key": "absent", "operator": "NotIn", "values": ["agent"]}, True),
        ({"key": "tier", "operator": "Exists"}, True),
        ({"key": "absent", "operator": "Exists"}, False),
        ({"key": "tier", "operator": "DoesNotExist"}, False),
        ({"key": "absent", "operator": "DoesNotExist"}, True),
    ],
)
def test_selector_match_expressions(expr: dict[str, Any], expected: bool) -> None:
    assert selector_matches({"matchExpressions": [expr]}, {"tier": "agent"}) is expected


def test_selector_labels_and_expressions_must_both_match() -> None:
    sel = {"matchLabels": {"app": "a"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]}
    assert selector_matches(sel, {"app": "a", "tier": "x"})
    assert not selector_matches(sel, {"app": "a"})
    assert not selector_matches(sel, {"app": "b", "tier": "x"})


SETTINGS = OperatorSettings(run_token_key="unit-test-run-token-key-0123456789abcdefghijklmn")


def group_policy(**network: Any) -> dict[str, Any]:
    raw = {
        "apiVersion": "pynchy.dev/v1alpha1",
        "kind": "Group",
        "metadata": {"name": "g", "namespace": "ns", "uid": "gu", "generation": 1},
        "spec": {"channels": [{"local": {"name": "g"}}], "network": network},
    }
    return network_policy(Group.from_k8s(raw), raw, SETTINGS)


POD_LABELS = {**agent_pod_selector("g"), "pynchy.dev/run": "r"}


def test_group_policy_without_cidrs_is_supported() -> None:
    policy = group_policy()
    peers = [peer for rule in policy["spec"]["egress"] for peer in rule["to"]]
    assert peers
    assert all(set(peer) <= {"podSelector", "namespaceSelector"} for peer in peers)
    assert selector_matches(policy["spec"]["podSelector"], POD_LABELS)
    assert unsupported_egress([policy], POD_LABELS) is None


def test_group_policy_with_a_cidr_is_refused_with_the_reason() -> None:
    policy = group_policy(egress=[{"cidr": "10.1.0.0/16", "ports": [{"port": 443}]}])
    name = policy["metadata"]["name"]
    problem = unsupported_egress([policy], POD_LABELS)
    assert problem is not None
    assert name in problem
    assert "10.1.0.0/16" in problem
    assert "443/TCP" in problem
    assert "--no-isolation" in problem
    # The DNS and gateway rules are not what is refused.
    assert "53/UDP" not in problem


def _policy(name: str, egress: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": egress, **spec},
    }


def test_rule_without_to_allows_every_destination() -> None:
    problem = unsupported_egress([_policy("open", [{"ports": [{"port": 80, "protocol": "TCP"}]}])], {})
    assert problem is not None
    assert "open: every destination port 80/TCP" in problem
    problem = unsupported_egress([_policy("open2", [{"to": []}])], {})
    assert problem is not None
    assert "open2: every destination" in problem


def test_ip_block_without_ports_and_several_policies() -> None:
    policies = [
        _policy("a", [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]),
        _policy("b", [{"to": [{"podSelector": {}}]}]),
        _policy("c", [{"to": [{"ipBlock": {"cidr": "192.168.0.0/24"}}], "ports": [{"port": 22}]}]),
    ]
    problem = unsupported_egress(policies, {"x": "y"})
    assert problem is not None
    assert "a: 0.0.0.0/0" in problem
    assert "c: 192.168.0.0/24 port 22/TCP" in problem
    assert "b:" not in problem


def test_policies_that_do_not_apply_are_ignored() -> None:
    open_rule = [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]
    other_pods = _policy("other", open_rule, podSelector={"matchLabels": {"pynchy.dev/group": "h"}})
    ingress_only = {
        "metadata": {"name": "in"},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
        },
    }
    # Without policyTypes, a policy with only ingress rules is an ingress policy.
    implicit_ingress = {"metadata": {"name": "in2"}, "spec": {"podSelector": {}, "ingress": [{}]}}
    assert unsupported_egress([other_pods, ingress_only, implicit_ingress], POD_LABELS) is None
    assert unsupported_egress([], POD_LABELS) is None
    # The same open rule does apply to the pod the selector names.
    assert unsupported_egress([other_pods], {"pynchy.dev/group": "h"}) is not None
    # Without policyTypes, egress rules make it an egress policy.
    implicit_egress = {"metadata": {"name": "e"}, "spec": {"podSelector": {}, "egress": open_rule}}
    problem = unsupported_egress([implicit_egress], POD_LABELS)
    assert problem is not None
    assert "e: 0.0.0.0/0" in problem


# -- relay addresses -----------------------------------------------------------------------------


def test_address_parse_ipv4_and_round_trip() -> None:
    a = Address.parse("127.0.0.1:8080")
    assert (a.host, a.port) == ("127.0.0.1", 8080)
    assert str(a) == "127.0.0.1:8080"
    assert Address.parse(str(a)) == a


def test_address_parse_ipv6_in_brackets() -> None:
    a = Address.parse("[::1]:80")
    assert (a.host, a.port) == ("::1", 80)
    assert str(a) == "[::1]:80"
    assert Address.parse(str(a)) == a


@pytest.mark.parametrize("text", ["nohost", "h:0", "h:99999", ":80", "h:", "h:http", "h:-1", "[::1]"])
def test_address_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not HOST:PORT") as info:
        Address.parse(text)
    assert repr(text) in str(info.value)


# -- sandbox launcher: arguments -----------------------------------------------------------------


def test_launcher_parse_relays_and_command() -> None:
    relays, command, memory = parse(
        ["--relay", "127.0.0.1:8080=/run/r/0.sock", "--relay", "::1:9000=/run/r/1.sock", "--", "cmd", "--", "-x"]
    )
    assert relays == [("127.0.0.1", 8080, "/run/r/0.sock"), ("::1", 9000, "/run/r/1.sock")]
    assert command == ["cmd", "--", "-x"]
    assert memory is None


def test_launcher_parse_command_only() -> None:
    assert parse(["--", "/bin/true"]) == ([], ["/bin/true"], None)
    assert parse(["--memory-limit", "1048576", "--", "/bin/true"]) == ([], ["/bin/true"], 1048576)


@pytest.mark.parametrize(
    "argv",
    [
        ["--"],
        [],
        ["--relay", "127.0.0.1:1=/s"],
        ["--relay", "127.0.0.1:1=/s", "--"],
        ["--verbose", "--", "cmd"],
        ["cmd"],
        ["--relay"],
        ["--relay", "h:x=/s", "--", "cmd"],
        ["--memory-limit", "2Gi", "--", "cmd"],
    ],
)
def test_launcher_parse_refuses(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert "sandbox launcher" in str(info.value.code)


# -- sandbox launcher: run for real, without bubblewrap ------------------------------------------


@pytest.fixture
def short_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory short enough for Unix socket paths (at most 107 bytes)."""
    if len(str(tmp_path)) < 60:
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class _PongHandler(socketserver.BaseRequestHandler):
    """Reads until "ping" (or end of stream), answers "pong", closes."""

    def handle(self) -> None:
        data = b""
        while data != b"ping":
            chunk = self.request.recv(16)
            if not chunk:
                break
            data += chunk
        if data == b"ping":
            self.request.sendall(b"pong")


@pytest.fixture
def pong_socket(short_dir: Path) -> Iterator[str]:
    """A Unix socket served by a thread; bound and listening before the fixture returns."""
    path = str(short_dir / "r.sock")
    server = socketserver.ThreadingUnixStreamServer(path, _PongHandler)  # binds and listens here
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_launcher(
    args: list[str], code: str | None = None, command: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = command if command is not None else [sys.executable, "-c", code or ""]
    return subprocess.run(
        [sys.executable, "-I", "-S", LAUNCHER, *args, "--", *cmd],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


CLIENT = """
import socket, sys
with socket.create_connection(("127.0.0.1", {port}), timeout=20) as s:
    s.sendall(b"ping")
    {half_close}
    reply = b""
    while chunk := s.recv(16):
        reply += chunk
print("reply:" + reply.decode())
"""


@pytest.mark.parametrize("half_close", [False, True])
def test_launcher_relays_loopback_to_unix_socket(pong_socket: str, half_close: bool) -> None:
    port = free_port()
    code = CLIENT.format(port=port, half_close="s.shutdown(socket.SHUT_WR)" if half_close else "pass")
    result = run_launcher(["--relay", f"127.0.0.1:{port}={pong_socket}"], code)
    assert result.returncode == 0, result.stderr
    assert "reply:pong" in result.stdout


def test_launcher_passes_on_exit_status() -> None:
    result = run_launcher([], "import sys; print('out'); sys.exit(7)")
    assert result.returncode == 7
    assert "out" in result.stdout


def test_launcher_killed_by_signal_is_128_plus_n() -> None:
    result = run_launcher([], "import os; os.kill(os.getpid(), 9)")
    assert result.returncode == 137


def test_launcher_command_that_does_not_exist_is_start_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-command")
    result = run_launcher([], command=[missing, "arg"])
    assert START_ERROR == 128
    assert result.returncode == 128
    assert missing in result.stderr
    assert "No such file or directory" in result.stderr


def test_launcher_refuses_bad_arguments_without_running_anything(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = subprocess.run(
        [sys.executable, "-I", "-S", LAUNCHER, "--bogus", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "unexpected argument '--bogus'" in result.stderr
    assert not marker.exists()


def test_launcher_memory_limit_refuses_an_allocation_beyond_it() -> None:
    code = (
        "import resource\n"
        "print('limit', resource.getrlimit(resource.RLIMIT_DATA)[0], flush=True)\n"
        "small = bytearray(16 << 20)\n"
        "try:\n"
        "    big = bytearray(512 << 20)\n"
        "except MemoryError:\n"
        "    print('refused', flush=True)\n"
    )
    result = run_launcher(["--memory-limit", str(256 << 20)], code)
    assert result.returncode == 0, result.stderr
    assert f"limit {256 << 20}" in result.stdout
    assert "refused" in result.stdout


def test_a_data_dir_inside_the_image_is_refused(tmp_path: Path) -> None:
    image = HostImage(binds=("/usr", str(tmp_path / "venv")), symlinks=(), python=sys.executable)
    assert image.exposes(tmp_path / "data") is None
    problem = image.exposes(tmp_path / "venv" / "data")
    assert problem is not None
    assert f"lies inside {tmp_path / 'venv'}" in problem
    assert "choose a data dir outside it" in problem
    assert image.exposes(Path("/usr/local/pynchy")) is not None


def test_image_paths_under_a_volume_are_bound_again_after_the_volumes(tmp_path: Path) -> None:
    """A checkout in /tmp, and the pod mounts an emptyDir at /tmp: the venv must stay visible."""
    image = HostImage(
        binds=("/usr", "/tmp/ci/.venv", "/tmp/ci/operator"), symlinks=(), python="/tmp/ci/.venv/bin/python"
    )
    spec = SandboxSpec(
        argv=["/tmp/ci/.venv/bin/pynchy-agent"],
        mounts=[Mount("/tmp", str(tmp_path / "tmp"), False), Mount("/workspace", str(tmp_path / "ws"), False)],
        image=image,
        passwd_file="/p",
        group_file="/g",
    )
    argv = bwrap_argv(spec)
    volume = argv.index(str(tmp_path / "tmp"))
    for path in ("/tmp/ci/.venv", "/tmp/ci/operator"):
        binds = [i for i in range(len(argv) - 2) if argv[i : i + 3] == ["--ro-bind", path, path]]
        assert len(binds) == 1, argv
        assert binds[0] > volume, argv
    assert argv.index("/usr") < volume
