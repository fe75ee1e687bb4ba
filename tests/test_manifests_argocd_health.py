"""The Argo CD health check for the pynchy.dev kinds, run by a Lua 5.1 interpreter (lupa).

Argo CD runs health scripts in gopher-lua (Lua 5.1) with only the base and table libraries, the
object as the global `obj`, and JSON null as nil. The sandbox below gives the script exactly that
(strings lose their methods too), so a script that works here does not lean on anything Argo CD
leaves out. Cases: the samples in Argo CD's own health_test.yaml format, and objects as the real
operator writes them against the test API server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from cluster.helpers import condition, get, is_ready, wait_for
from pynchy.kube.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[1]
HEALTH = REPO / "manifests" / "gitops" / "argocd" / "health"
SCRIPT = (HEALTH / "health.lua").read_text()
CASES = yaml.safe_load((HEALTH / "health_test.yaml").read_text())["tests"]

# What gopher-lua's base library offers (Argo CD opens base, table, package and a reduced os).
BASE = [
    "assert",
    "error",
    "ipairs",
    "next",
    "pairs",
    "pcall",
    "select",
    "tonumber",
    "tostring",
    "type",
    "unpack",
    "xpcall",
    "rawequal",
    "rawget",
    "rawset",
    "setmetatable",
    "getmetatable",
]

RUNNER = """
function(script, obj, names)
  -- Strings keep no methods: Argo CD does not open the string library.
  getmetatable("").__index = nil
  local env = {table = table, obj = obj}
  for _, name in ipairs(names) do env[name] = _G[name] end
  local fn, err = loadstring(script, "=health.lua")
  if fn == nil then error(err) end
  setfenv(fn, env)
  return fn()
end
"""


def sandboxed(script: str, obj: dict[str, Any]) -> Any:
    """What `script` returns in the sandbox, with `obj` as the global `obj`."""
    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    return lua.eval(RUNNER)(script, lua.table_from(obj, recursive=True), lua.table_from(BASE))


def health(obj: dict[str, Any]) -> dict[str, Any]:
    """The script's verdict for `obj`, as Argo CD would read it (status, message)."""
    # JSON first: what Argo CD decodes is JSON (no YAML timestamps or other Python types).
    result = sandboxed(SCRIPT, json.loads(json.dumps(obj, default=str)))
    assert lua51.lua_type(result) == "table", f"the script returned {result!r}, not a table"
    return {"status": result["status"], "message": result["message"]}


def test_the_component_registers_the_script_for_every_kind() -> None:
    from pynchy.api import KINDS

    component = yaml.safe_load((HEALTH / "kustomization.yaml").read_text())
    files = component["configMapGenerator"][0]["files"]
    assert sorted(files) == sorted(f"resource.customizations.health.pynchy.dev_{k.kind}=health.lua" for k in KINDS)


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_samples(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((HEALTH / case["inputPath"]).read_text())
    assert health(obj) == {"status": case["healthStatus"]["status"], "message": case["healthStatus"]["message"]}


def test_every_sample_is_a_valid_object() -> None:
    # The samples are what the operator could write: their specs pass the API models.
    from pynchy.api.validation import validate_document

    for path in sorted((HEALTH / "testdata").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        assert validate_document(doc) == [], path.name


def test_a_script_error_is_an_error_here_too() -> None:
    # The sandbox is strict: string methods do not exist, as in Argo CD.
    with pytest.raises(lua51.LuaError):
        sandboxed('return {status = ("x"):upper()}', {})


@pytest.mark.usefixtures("operator")
def test_objects_written_by_the_real_operator(control_plane: ControlPlane, namespace: str) -> None:
    examples = REPO / "manifests" / "examples"
    control_plane.kubectl("apply", "-n", namespace, "-f", str(examples / "group-local.yaml"))
    control_plane.kubectl("apply", "-n", namespace, "-f", str(examples / "scheduledtask-interval.yaml"))
    wait_for(lambda: is_ready(control_plane, "group", "demo", namespace), what="Group demo Ready")
    wait_for(lambda: is_ready(control_plane, "scheduledtask", "demo-status-check", namespace), what="task Ready")

    group = get(control_plane, "group", "demo", namespace)
    assert group is not None
    assert health(group) == {"status": "Healthy", "message": condition(group, "Ready")["message"]}
    task = get(control_plane, "scheduledtask", "demo-status-check", namespace)
    assert task is not None
    assert health(task)["status"] == "Healthy"

    control_plane.kubectl(
        "patch",
        "scheduledtask",
        "demo-status-check",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"suspend":true}}',
    )
    wait_for(
        lambda: (
            health(get(control_plane, "scheduledtask", "demo-status-check", namespace) or {})["status"] == "Suspended"
        ),
        what="suspended task reported Suspended",
    )

    # A Group whose Workspace does not exist: the operator's own words come through as Degraded.
    broken = yaml.safe_load((examples / "group-local.yaml").read_text())
    broken["metadata"]["name"] = "orphan"
    broken["spec"]["workspaceRef"] = {"name": "nowhere"}
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(broken))
    accepted = wait_for(
        lambda: condition(get(control_plane, "group", "orphan", namespace), "Accepted"), what="Accepted written"
    )
    assert accepted["status"] == "False"
    assert health(get(control_plane, "group", "orphan", namespace) or {}) == {
        "status": "Degraded",
        "message": accepted["message"],
    }
