"""A container's environment, computed the way the kubelet does (pure functions).

Order, as in the kubelet's ``makeEnvironmentVariables``: ``envFrom`` sources first (later
sources win), then each ``env`` entry in order (an entry replaces an earlier one). An
``env`` value has its ``$(VAR)`` references expanded against the variables defined so far
and the service variables; ``valueFrom`` values are never expanded. Missing ConfigMaps,
Secrets or keys are errors unless ``optional: true``, with the kubelet's messages.

Secrets and ConfigMaps are fetched by the caller beforehand (see :func:`env_references`)
and passed in as plain ``{key: str}`` dicts, ``None`` for "not found", which keeps this
module free of I/O.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from pynchy.errors import PynchyError

SECRET = "Secret"
CONFIG_MAP = "ConfigMap"
ObjectKey = tuple[str, str]  # (kind, name)
ObjectData = Mapping[ObjectKey, Mapping[str, str] | None]


class EnvError(PynchyError):
    """The environment cannot be built; the kubelet reports this as CreateContainerConfigError."""

    reason = "CreateContainerConfigError"


# -- $(VAR) expansion: a port of k8s.io/kubernetes/third_party/forked/golang/expansion -----


def expand(text: str, *contexts: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` from the first context defining VAR; ``$$`` is a literal ``$``.

    An undefined reference, an unclosed ``$(`` and a ``$`` followed by anything else are
    left as they are, exactly like Kubernetes.
    """

    def mapping(name: str) -> str:
        for ctx in contexts:
            if name in ctx:
                return ctx[name]
        return f"$({name})"

    out: list[str] = []
    checkpoint = 0
    cursor = 0
    n = len(text)
    while cursor < n:
        if text[cursor] == "$" and cursor + 1 < n:
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            if rest[0] == "$":
                read, is_var, advance = "$", False, 1
            elif rest[0] == "(":
                close = rest.find(")", 1)
                if close == -1:
                    read, is_var, advance = "$(", False, 1
                else:
                    read, is_var, advance = rest[1:close], True, close + 1
            else:
                read, is_var, advance = "$" + rest[0], False, 1
            out.append(mapping(read) if is_var else read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


# -- references and fields ------------------------------------------------------------------


def env_references(container: Mapping[str, Any]) -> set[ObjectKey]:
    """The Secrets and ConfigMaps a container's env and envFrom read."""
    refs: set[ObjectKey] = set()
    for src in container.get("envFrom") or []:
        if src.get("configMapRef"):
            refs.add((CONFIG_MAP, src["configMapRef"].get("name", "")))
        if src.get("secretRef"):
            refs.add((SECRET, src["secretRef"].get("name", "")))
    for var in container.get("env") or []:
        vf = var.get("valueFrom") or {}
        if vf.get("configMapKeyRef"):
            refs.add((CONFIG_MAP, vf["configMapKeyRef"].get("name", "")))
        if vf.get("secretKeyRef"):
            refs.add((SECRET, vf["secretKeyRef"].get("name", "")))
    return refs


def object_bytes(obj: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret's or ConfigMap's data as bytes (Secret values and binaryData decoded)."""
    if obj.get("kind") == SECRET:
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data


def object_data(obj: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's or ConfigMap's data as text; binary bytes survive as surrogates."""
    return {k: v.decode("utf-8", "surrogateescape") for k, v in object_bytes(obj).items()}


_LABEL_FIELD = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(pod: Mapping[str, Any], field_path: str) -> str:
    """The value of a downward-API ``fieldRef`` (the paths the kubelet supports)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    simple: dict[str, Callable[[], str]] = {
        "metadata.name": lambda: meta.get("name", ""),
        "metadata.namespace": lambda: meta.get("namespace", ""),
        "metadata.uid": lambda: meta.get("uid", ""),
        "spec.nodeName": lambda: spec.get("nodeName", ""),
        "spec.serviceAccountName": lambda: spec.get("serviceAccountName", ""),
        "status.hostIP": lambda: status.get("hostIP", ""),
        "status.hostIPs": lambda: ",".join(i["ip"] for i in status.get("hostIPs") or []),
        "status.podIP": lambda: status.get("podIP", ""),
        "status.podIPs": lambda: ",".join(i["ip"] for i in status.get("podIPs") or []),
        "metadata.labels": lambda: format_map(meta.get("labels") or {}),
        "metadata.annotations": lambda: format_map(meta.get("annotations") or {}),
    }
    if field_path in simple:
        return simple[field_path]()
    m = _LABEL_FIELD.match(field_path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise EnvError(f"unsupported fieldRef fieldPath {field_path!r}")


def format_map(values: Mapping[str, str]) -> str:
    """The downward API's rendering of labels/annotations: ``key="value"`` lines, sorted."""
    return "\n".join(f'{k}="{_go_quote_body(v)}"' for k, v in sorted(values.items()))


def _go_quote_body(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


_SUFFIX: dict[str, int | Decimal] = {
    "": 1,
    "m": Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


def parse_quantity(text: str | int | float) -> Decimal:
    """A Kubernetes quantity (``500m``, ``1Gi``, ``2``) as a Decimal."""
    m = _QUANTITY.match(str(text).strip())
    if not m:
        raise EnvError(f"invalid quantity {text!r}")
    return Decimal(m.group(1)) * Decimal(_SUFFIX[m.group(2) or ""])


def resource_value(
    container: Mapping[str, Any], ref: Mapping[str, Any], node_allocatable: Mapping[str, str] | None = None
) -> str:
    """A ``resourceFieldRef`` value: the container's limit/request, else (limits) the node's allocatable."""
    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "limits":
        raw = (node_allocatable or {}).get(name)
    if raw is None:
        raw = 0
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor == 0:
        raise EnvError(f"resourceFieldRef {resource}: divisor must not be zero")
    return str(math.ceil(parse_quantity(raw) / divisor))


# -- the environment ----------------------------------------------------------------------


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    objects: ObjectData,
    service_env: Mapping[str, str] | None = None,
    node_allocatable: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's variables (without the service variables), as the kubelet computes them.

    ``objects`` maps ``(kind, name)`` to the object's data, or ``None`` when it does not exist.
    Raises :class:`EnvError` with the kubelet's message for a missing required source.
    """
    ns = (pod.get("metadata") or {}).get("namespace", "")
    service_env = service_env or {}
    env: dict[str, str] = {}

    for src in container.get("envFrom") or []:
        prefix = src.get("prefix") or ""
        for field, kind in (("configMapRef", CONFIG_MAP), ("secretRef", SECRET)):
            ref = src.get(field)
            if not ref:
                continue
            data = objects.get((kind, ref.get("name", "")))
            if data is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f'{kind.lower()} "{ref.get("name", "")}" not found')
            for key, value in data.items():
                env[prefix + key] = value

    for var in container.get("env") or []:
        name = var["name"]
        if var.get("value"):
            env[name] = expand(var["value"], env, service_env)
            continue
        vf = var.get("valueFrom")
        if not vf:
            env[name] = ""
            continue
        if vf.get("fieldRef"):
            env[name] = field_value(pod, vf["fieldRef"].get("fieldPath", ""))
        elif vf.get("resourceFieldRef"):
            env[name] = resource_value(container, vf["resourceFieldRef"], node_allocatable)
        elif vf.get("configMapKeyRef") or vf.get("secretKeyRef"):
            kind = CONFIG_MAP if vf.get("configMapKeyRef") else SECRET
            ref = vf.get("configMapKeyRef") or vf.get("secretKeyRef")
            obj_name, key = ref.get("name", ""), ref.get("key", "")
            data = objects.get((kind, obj_name))
            if data is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f'{kind.lower()} "{obj_name}" not found')
            if key not in data:
                if ref.get("optional"):
                    continue
                raise EnvError(f"couldn't find key {key} in {kind} {ns}/{obj_name}")
            env[name] = data[key]
        else:
            raise EnvError(f"env {name}: unsupported valueFrom {sorted(vf)}")
    return env
