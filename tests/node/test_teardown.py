"""A node whose owner is SIGKILLed leaves nothing behind (its reaper tears it down), and runs
beside the session's node without touching it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from cluster.helpers import wait_for
from node.helpers import Install
from pynchy.kube.images import BuiltImage
from pynchy.kube.node.cleanup import CGROUP_ROOT, mounts_under
from pynchy.kube.node.network import STATE_ROOT

OWNER = """
import json, sys, time
from pathlib import Path
from pynchy.kube.binaries import ensure_binaries, ensure_node_binaries
from pynchy.kube.images import BuiltImage
from pynchy.kube.node.node import RealNode
images = {k: BuiltImage(v[0], Path(v[1])) for k, v in json.loads(sys.argv[2]).items()}
node = RealNode(ensure_binaries(), ensure_node_binaries(), Path(sys.argv[1]),
                sandbox_image=images["pause"], dns_image=images["coredns"])
node.start()
print("NODE", json.dumps({"run_id": node.run_id, "netns": node.net.netns, "veth": node.net.host_veth,
                  "cgroup": node.state.cgroup, "pod_cidr": node.net.pod_cidr}), flush=True)
time.sleep(3600)
"""


def leftovers(info: dict[str, str], data_dir: Path) -> list[str]:
    found = []
    if Path("/run/netns", info["netns"]).exists():
        found.append(f"network namespace {info['netns']}")
    if subprocess.run(["ip", "link", "show", info["veth"]], capture_output=True).returncode == 0:
        found.append(f"veth {info['veth']}")
    if (STATE_ROOT / f"{info['run_id']}.json").exists():
        found.append("state file")
    found += [f"cgroup {d}" for d in CGROUP_ROOT.glob(f"*/{info['cgroup'].lstrip('/')}")]
    found += [f"mount {m}" for m in mounts_under(str(data_dir))]
    routes = subprocess.run(["ip", "route", "show", info["pod_cidr"]], capture_output=True, text=True).stdout
    if routes.strip():
        found.append(f"route {routes.strip()}")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(data_dir) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(f"process {entry.name}")
            except OSError:
                continue
    return found


def test_a_killed_owner_leaves_nothing_and_the_other_node_is_untouched(
    installed: Install, node_images: dict[str, BuiltImage], tmp_path: Path
) -> None:
    data_dir = (tmp_path / "node").resolve()
    images = {k: (node_images[k].ref, str(node_images[k].archive)) for k in ("pause", "coredns")}
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(data_dir), json.dumps(images)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYNCHY_LOG_FORMAT": "json"},
        start_new_session=True,  # its own process group, as a separate test run would be
    )
    try:
        assert owner.stdout is not None
        # Its log lines come first (stdout); the line we want is marked.
        line = next((x for x in owner.stdout if x.startswith("NODE ")), "")
        assert line, "the second node did not start"
        info = json.loads(line.removeprefix("NODE "))
        assert info["pod_cidr"] != installed.node.net.pod_cidr  # type: ignore[union-attr]
        assert leftovers(info, data_dir), "the second node should be running now"
    finally:
        os.killpg(owner.pid, signal.SIGKILL)
        owner.wait(10)

    wait_for(lambda: not leftovers(info, data_dir), timeout=90, what="the reaper's teardown")
    # The session's node still serves: its API server answers and its node is Ready.
    ready = installed.kubectl(
        "get", "node", installed.node.name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
    )
    assert ready.stdout == "True"
