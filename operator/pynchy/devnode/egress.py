"""The network a sandboxed pod may have: the NetworkPolicies selecting it against what the dev node can give.

A sandbox has loopback and the dev node's relays (its stand-ins for the in-cluster Services a
policy names with pod and namespace selectors, such as the gateway), nothing else. A policy
that allows egress to addresses (``ipBlock``) or to everything (a rule without ``to``) asks for
more than that, and the pod is refused with a message that says so rather than run with less
(or more) than it asked for. A pod no policy restricts gets the same loopback-and-relays
network: stricter than a cluster without policies, never looser than one with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a set of labels."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # the API server refuses such selectors; never widen what a policy selects
    return True


def _egress_policy(policy: Mapping[str, Any]) -> bool:
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    return "Egress" in types if types else "egress" in spec


def _describe_ports(rule: Mapping[str, Any]) -> str:
    ports = [f"{p.get('port', 'any')}/{p.get('protocol', 'TCP')}" for p in rule.get("ports") or []]
    return f" port {', '.join(ports)}" if ports else ""


def unsupported_egress(policies: Iterable[Mapping[str, Any]], pod_labels: Mapping[str, str]) -> str | None:
    """None when every egress the pod's policies allow is one the dev node can give; else why not."""
    wanted: list[str] = []
    for policy in policies:
        spec = policy.get("spec") or {}
        if not _egress_policy(policy) or not selector_matches(spec.get("podSelector"), pod_labels):
            continue
        name = (policy.get("metadata") or {}).get("name", "?")
        for rule in spec.get("egress") or []:
            peers = rule.get("to")
            if not peers:
                wanted.append(f"{name}: every destination{_describe_ports(rule)}")
                continue
            for peer in peers:
                block = peer.get("ipBlock")
                if block:
                    wanted.append(f"{name}: {block.get('cidr')}{_describe_ports(rule)}")
    if not wanted:
        return None
    return (
        "the dev node's sandbox gives a pod only loopback and the gateway, but its NetworkPolicy allows egress to "
        + "; ".join(wanted)
        + ". Run this Group on a real node, remove the egress rules from its spec.network, "
        "or start the dev node with --no-isolation (no sandbox at all)"
    )
