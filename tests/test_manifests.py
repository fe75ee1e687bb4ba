"""manifests/: every kustomization renders with kubectl's kustomize and passes a server-side
dry-run apply against the real test API server; the rendered control plane keeps the RBAC the
operator's and gateway's tests run under, meets the restricted Pod Security Standard, and agrees
with the settings and labels the code uses."""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from pynchy.kube.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"


def kubectl_bin() -> Path:
    from pynchy.kube.binaries import ensure_binaries

    return ensure_binaries() / "kubectl"


@cache
def _kustomize_output(path: Path) -> str:
    proc = subprocess.run(
        [str(kubectl_bin()), "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {path}:\n{proc.stderr}"
    return proc.stdout


def kustomize(path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize path` as objects (fresh ones on every call; kubectl runs once per path)."""
    return [d for d in yaml.safe_load_all(_kustomize_output(path)) if d]


def _dirs_of_kind(kind: str) -> list[Path]:
    return [
        f.parent
        for f in sorted(MANIFESTS.rglob("kustomization.yaml"))
        if yaml.safe_load(f.read_text()).get("kind", "Kustomization") == kind
    ]


def kustomizations() -> list[Path]:
    """Every Kustomization under manifests/ (Components are rendered through a wrapper below)."""
    return _dirs_of_kind("Kustomization")


def components() -> list[Path]:
    return _dirs_of_kind("Component")


def rel(p: Path) -> str:
    return str(p.relative_to(MANIFESTS))


def render_component(component: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """A Component on top of what it extends: the base, or for the Argo CD health check an argocd-cm."""
    wrapper = tmp_path / "wrapper"
    wrapper.mkdir()
    wrapper_spec: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(MANIFESTS / "base", wrapper)],  # kustomize takes relative paths only
        "components": [os.path.relpath(component, wrapper)],
    }
    if component.name == "health":
        (wrapper / "argocd-cm.yaml").write_text(
            # As in Argo CD's install.yaml: no namespace; the installing kustomization sets it.
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\ndata:\n  url: https://argocd.example.com\n"
        )
        wrapper_spec.update(resources=["argocd-cm.yaml"], namespace="argocd")
    (wrapper / "kustomization.yaml").write_text(yaml.safe_dump(wrapper_spec))
    return kustomize(wrapper)


# -- stand-ins for the GitOps tools' CRDs ------------------------------------------------------------
# The test API server has no Flux or Argo CD. These CRDs declare exactly the fields our manifests
# use, with the types and required fields of the Flux v1 and Argo CD v1alpha1 API references, and
# no unknown fields: a misspelt or misplaced field fails the dry run.


def _crd(group: str, version: str, kind: str, plural: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec}}},
                }
            ],
        },
    }


def _obj(required: list[str] | None = None, **props: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


STR = {"type": "string"}
BOOL = {"type": "boolean"}
INT = {"type": "integer"}
REF = _obj(["kind", "name"], kind=STR, name=STR, namespace=STR)
STR_MAP = {"type": "object", "additionalProperties": STR}

GITOPS_CRDS = [
    _crd(
        "source.toolkit.fluxcd.io",
        "v1",
        "GitRepository",
        "gitrepositories",
        _obj(["interval", "url"], interval=STR, url=STR, ref=_obj(branch=STR, tag=STR, semver=STR, commit=STR)),
    ),
    _crd(
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
        "kustomizations",
        _obj(
            ["interval", "prune", "sourceRef"],
            interval=STR,
            retryInterval=STR,
            timeout=STR,
            path=STR,
            prune=BOOL,
            wait=BOOL,
            targetNamespace=STR,
            sourceRef=REF,
            dependsOn={"type": "array", "items": _obj(["name"], name=STR, namespace=STR)},
        ),
    ),
    _crd(
        "argoproj.io",
        "v1alpha1",
        "Application",
        "applications",
        _obj(
            ["destination", "project"],
            project=STR,
            source=_obj(["repoURL"], repoURL=STR, targetRevision=STR, path=STR),
            destination=_obj(server=STR, namespace=STR, name=STR),
            syncPolicy=_obj(
                automated=_obj(prune=BOOL, selfHeal=BOOL, allowEmpty=BOOL),
                syncOptions={"type": "array", "items": STR},
                retry=_obj(limit=INT, backoff=_obj(duration=STR, factor=INT, maxDuration=STR)),
            ),
        ),
    ),
    # The Prometheus Operator's (monitoring.coreos.com/v1), for manifests/components/monitoring.
    _crd(
        "monitoring.coreos.com",
        "v1",
        "ServiceMonitor",
        "servicemonitors",
        _obj(
            ["selector", "endpoints"],
            selector=_obj(matchLabels=STR_MAP),
            endpoints={"type": "array", "items": _obj(port=STR, path=STR, interval=STR, scheme=STR)},
        ),
    ),
    _crd(
        "monitoring.coreos.com",
        "v1",
        "PrometheusRule",
        "prometheusrules",
        _obj(
            groups={
                "type": "array",
                "items": _obj(
                    ["name", "rules"],
                    name=STR,
                    interval=STR,
                    rules={
                        "type": "array",
                        "items": _obj(
                            ["expr"],
                            alert=STR,
                            record=STR,
                            expr=STR,
                            labels=STR_MAP,
                            annotations=STR_MAP,
                            **{"for": STR},
                        ),
                    },
                ),
            },
        ),
    ),
]


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> ControlPlane:
    """The test API server with the namespaces our manifests name and the GitOps stand-in CRDs."""
    for ns in ("pynchy-system", "pynchy", "flux-system", "argocd"):
        control_plane.kubectl("create", "namespace", ns, check=False)
    # Pods need their ServiceAccounts (the same files the operator's and gateway's tests apply).
    for component in ("operator", "gateway"):
        control_plane.kubectl("apply", "-f", str(MANIFESTS / "base" / component / "rbac.yaml"))
    for crd in GITOPS_CRDS:
        control_plane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(crd))
    names = [f"crd/{c['metadata']['name']}" for c in GITOPS_CRDS]
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return control_plane


def dry_run(plane: ControlPlane, objects: list[dict[str, Any]], namespace: str | None = None) -> str:
    """Server-side apply in dry-run mode; returns stderr (warnings) and fails on any error."""
    args = ["apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-"]
    # Objects that name no namespace (the examples) go to `namespace`, as `kubectl apply -n` would;
    # kubectl refuses -n for objects that name another one.
    if namespace and not any(o["metadata"].get("namespace") for o in objects):
        args[1:1] = ["-n", namespace]
    stream = "\n---\n".join(yaml.safe_dump(o) for o in objects)
    proc = plane.kubectl(*args, input=stream, check=False)
    assert proc.returncode == 0, proc.stderr
    # Objects other tests created with client-side apply make kubectl mention a field-manager
    # migration; that says nothing about our manifests. Any other warning (Pod Security, deprecated
    # API, unknown field) does.
    return "\n".join(line for line in proc.stderr.splitlines() if "last-applied-configuration" not in line)


# -- rendering and dry runs --------------------------------------------------------------------------


def test_crd_copies_match_the_models() -> None:
    from pynchy.crdgen import render_crds

    copies = {
        p.name: p.read_text() for p in (MANIFESTS / "base" / "crds").glob("*.yaml") if p.name != "kustomization.yaml"
    }
    assert copies == render_crds(), "run: uv run pynchy crds --out manifests/base/crds"
    listed = yaml.safe_load((MANIFESTS / "base" / "crds" / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(copies)


@pytest.mark.parametrize("path", kustomizations(), ids=rel)
def test_kustomization_renders_and_passes_a_server_dry_run(cluster: ControlPlane, namespace: str, path: Path) -> None:
    objects = kustomize(path)
    assert objects, f"{rel(path)} renders nothing"
    warnings = dry_run(cluster, objects, namespace=namespace)
    assert "Warning" not in warnings, warnings


@pytest.mark.parametrize("path", components(), ids=rel)
def test_component_renders_and_passes_a_server_dry_run(
    cluster: ControlPlane, namespace: str, path: Path, tmp_path: Path
) -> None:
    objects = render_component(path, tmp_path)
    warnings = dry_run(cluster, objects, namespace=namespace)
    assert "Warning" not in warnings, warnings


def test_every_component_is_used_or_documented() -> None:
    used = {
        (f.parent / c).resolve()
        for f in MANIFESTS.rglob("kustomization.yaml")
        for c in yaml.safe_load(f.read_text()).get("components", [])
    }
    for component in components():
        # slack-http and the Argo CD health check are opt-in: docs/install.md says how to add them.
        assert component in used or rel(component) in (REPO / "docs" / "install.md").read_text(), rel(component)


# -- what the rendered control plane must keep -------------------------------------------------------


def _by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


@pytest.mark.parametrize("overlay", ["k3s", "postgres"])
@pytest.mark.parametrize("component", ["operator", "gateway"])
def test_rbac_is_exactly_the_file_the_tests_run_under(overlay: str, component: str) -> None:
    rendered = _by_key(kustomize(MANIFESTS / "overlays" / overlay))
    for doc in yaml.safe_load_all((MANIFESTS / "base" / component / "rbac.yaml").read_text()):
        assert rendered[(doc["kind"], doc["metadata"]["name"])] == doc
    # and no other RBAC object grants anything
    rbac_kinds = {"ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
    names = {k for k in rendered if k[0] in rbac_kinds}
    assert names == {
        (kind, f"pynchy-{c}")
        for c in ("operator", "gateway")
        for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
    }


def test_namespaces_enforce_restricted_pod_security() -> None:
    rendered = kustomize(MANIFESTS / "overlays" / "k3s")
    namespaces = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "Namespace"}
    assert set(namespaces) == {"pynchy-system", "pynchy"}
    for ns in namespaces.values():
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", ["k3s", "postgres"])
def test_every_pod_is_admitted_under_restricted(cluster: ControlPlane, overlay: str) -> None:
    # Pod Security admission enforces on Pods (it only warns on workloads): create each template
    # as a Pod, dry-run, in pynchy-system, which enforces "restricted".
    rendered = kustomize(MANIFESTS / "overlays" / overlay)
    workloads = [o for o in rendered if o["kind"] in ("Deployment", "StatefulSet")]
    assert workloads
    for w in workloads:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"psa-{w['metadata']['name']}", "namespace": "pynchy-system"},
            "spec": w["spec"]["template"]["spec"],
        }
        if w["kind"] == "StatefulSet":  # claim templates become volumes of the real pods
            pod["spec"] = {
                **pod["spec"],
                "volumes": [*pod["spec"].get("volumes", []), {"name": "data", "emptyDir": {}}],
            }
        proc = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
        assert proc.returncode == 0, f"{w['kind']}/{w['metadata']['name']}: {proc.stderr}"


def test_control_plane_deployments() -> None:
    rendered = _by_key(kustomize(MANIFESTS / "overlays" / "k3s"))
    for name in ("pynchy-operator", "pynchy-gateway"):
        d = rendered[("Deployment", name)]
        assert d["spec"]["replicas"] == 1
        assert d["spec"]["strategy"] == {"type": "Recreate"}
        (c,) = d["spec"]["template"]["spec"]["containers"]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert set(c["resources"]["limits"]) == {"cpu", "memory"}
    gateway = rendered[("Deployment", "pynchy-gateway")]["spec"]["template"]["spec"]
    data = next(v for v in gateway["volumes"] if v["name"] == "data")
    assert data == {"name": "data", "persistentVolumeClaim": {"claimName": "pynchy-gateway-data"}}
    assert ("PersistentVolumeClaim", "pynchy-gateway-data") in rendered


def _env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in c.get("env", [])}


def _config_map(rendered: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, str]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    (ref,) = c["envFrom"]
    name = ref["configMapRef"]["name"]
    return next(o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name)["data"]


def test_settings_named_in_the_manifests_exist() -> None:
    from pynchy.gateway.settings import GatewaySettings
    from pynchy.operator.settings import OperatorSettings

    rendered = kustomize(MANIFESTS / "overlays" / "k3s")
    by_key = _by_key(rendered)
    for name, settings in (("pynchy-operator", OperatorSettings), ("pynchy-gateway", GatewaySettings)):
        d = by_key[("Deployment", name)]
        known = {f"PYNCHY_{field.upper()}" for field in settings.model_fields} | {"PYNCHY_LOG_FORMAT"}
        assert set(_env(d)) | set(_config_map(rendered, d)) <= known, name


def test_gateway_gets_every_secret_setting_from_a_secret() -> None:
    from pydantic import SecretStr

    from pynchy.gateway.settings import GatewaySettings

    d = _by_key(kustomize(MANIFESTS / "overlays" / "k3s"))[("Deployment", "pynchy-gateway")]
    env = _env(d)
    secret_fields = {
        f"PYNCHY_{name.upper()}"
        for name, field in GatewaySettings.model_fields.items()
        if SecretStr in (getattr(field.annotation, "__args__", None) or (field.annotation,))
    }
    assert secret_fields <= set(env)
    for name in secret_fields:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == name
        # Only the run-token key is required: the rest depend on which channels and credential you use.
        assert ref.get("optional", False) is (name != "PYNCHY_RUN_TOKEN_KEY"), name
    assert "PYNCHY_OWNER" in env


def test_postgres_overlay_points_the_gateway_at_postgres() -> None:
    rendered = kustomize(MANIFESTS / "overlays" / "postgres")
    by_key = _by_key(rendered)
    env = _env(by_key[("Deployment", "pynchy-gateway")])
    assert env["PYNCHY_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "pynchy-postgres",
        "key": "PYNCHY_DATABASE_URL",
    }
    assert ("StatefulSet", "pynchy-postgres") in by_key
    assert ("Service", "pynchy-postgres") in by_key


def test_names_and_labels_agree_with_the_operator() -> None:
    from pynchy.operator.settings import OperatorSettings

    defaults = OperatorSettings(run_token_key="x" * 32)
    rendered = _by_key(kustomize(MANIFESTS / "overlays" / "k3s"))
    gateway = rendered[("Deployment", "pynchy-gateway")]
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert defaults.gateway_pod_labels.items() <= labels.items()
    service = rendered[("Service", "pynchy-gateway")]
    assert defaults.gateway_url == (
        f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{service['spec']['ports'][0]['port']}"
    )
    assert gateway["metadata"]["namespace"] == defaults.gateway_namespace

    # The gateway admits what the operator's agent pods carry (labels from a golden AgentRun pod).
    golden = yaml.safe_load_all((REPO / "tests" / "golden" / "cases" / "agentrun-minimal.children.yaml").read_text())
    pod = next(d for d in golden if d and d["kind"] == "Pod")
    policy = rendered[("NetworkPolicy", "pynchy-gateway")]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"] == {}
    assert peer["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert rule["ports"] == [{"protocol": "TCP", "port": defaults.gateway_port}]


def test_monitoring_scrapes_the_ports_the_processes_serve(tmp_path: Path) -> None:
    from pynchy.gateway.settings import GatewaySettings
    from pynchy.operator.settings import OperatorSettings

    defaults = OperatorSettings(run_token_key="x" * 32)
    gateway_defaults = GatewaySettings(run_token_key="x" * 32)
    rendered = _by_key(render_component(MANIFESTS / "components" / "monitoring", tmp_path))
    for name in ("pynchy-gateway", "pynchy-operator"):
        monitor = rendered[("ServiceMonitor", name)]
        service = rendered[("Service", name)]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert service["spec"]["selector"].items() <= (
            rendered[("Deployment", name)]["spec"]["template"]["metadata"]["labels"].items()
        )
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        (container,) = rendered[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
        (target,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
        expected = defaults.metrics_port if name == "pynchy-operator" else gateway_defaults.metrics_port
        assert target["containerPort"] == expected, name
        # Prometheus may reach that port through the NetworkPolicies.
        policy = rendered[("NetworkPolicy", "pynchy-metrics")]
        assert {"protocol": "TCP", "port": expected} in policy["spec"]["ingress"][0]["ports"]
    dashboard = rendered[("ConfigMap", "pynchy-grafana-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["pynchy.json"])["uid"] == "pynchy"


def test_argocd_health_component_merges_into_argocd_cm(tmp_path: Path) -> None:
    health = MANIFESTS / "gitops" / "argocd" / "health"
    (cm,) = render_component(health, tmp_path)
    assert (cm["kind"], cm["metadata"]["name"], cm["metadata"]["namespace"]) == ("ConfigMap", "argocd-cm", "argocd")
    script = (health / "health.lua").read_text()
    assert cm["data"].pop("url") == "https://argocd.example.com"  # the rest of argocd-cm is kept
    assert set(cm["data"].values()) == {script}
    assert len(cm["data"]) == 4
