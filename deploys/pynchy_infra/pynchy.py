"""Pynchy on the cluster: the manifests (CRDs, control plane) for this host's overlay and images,
and the Secrets, from values on this machine or generated on the host."""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Generator
from io import BytesIO
from typing import Any

from deploys.pynchy_infra import bundle, secrets
from deploys.pynchy_infra.defaults import DEFAULTS, data
from deploys.pynchy_infra.facts import KUBECTL, Stamp
from deploys.pynchy_infra.ops import generated_secret, private_file, rollouts_available, stamped
from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.operations import files

NAMESPACE = "pynchy-system"
DEPLOYMENTS = ["pynchy-operator", "pynchy-gateway"]
FIELD_MANAGER = "pynchy-deploy"


@deploy("Pynchy: manifests", data_defaults=DEFAULTS)
def manifests(refs: dict[str, str]) -> None:
    state_dir = data("pynchy_state_dir")
    content = bundle.manifests_bundle(data("pynchy_overlay"), list(data("pynchy_components")), refs)
    tar = f"{state_dir}/manifests.tar"
    work = f"{state_dir}/manifests"
    files.put(name="Upload the manifests", src=BytesIO(content), dest=tar, mode="600")
    stamped(
        name="Apply the manifests (server-side)",
        stamp=f"{state_dir}/stamps/manifests",
        digest=bundle.digest({"manifests.tar": content}),
        commands=[
            f"rm -rf {work} && mkdir -p {work} && tar -xf {tar} -C {work}",
            f"{KUBECTL} apply --server-side --force-conflicts --field-manager={FIELD_MANAGER} -k {work}/host",
        ],
        what="manifests",
    )


@operation()
def secret_applied(
    secret: str, patch_file: str, content_sha256: str, stamp: str, restart: list[str]
) -> Generator[Any, None, None]:
    """Merge the keys in `patch_file` into the Secret `secret` (creating it), then restart the
    Deployments that read it, unless the file's content (by hash) was applied already. The stamp
    is written on the host from the file itself, so no digest of a value is in any command."""
    if host.get_fact(Stamp, path=stamp) == content_sha256:
        host.noop(f"Secret {secret} is up to date")
        return
    ns, n, p = shlex.quote(NAMESPACE), shlex.quote(secret), shlex.quote(patch_file)
    exists = f"{KUBECTL} get secret --namespace {ns} {n} >/dev/null 2>&1"
    yield f"{exists} || {KUBECTL} create secret generic --namespace {ns} {n}"
    yield f"{KUBECTL} patch secret --namespace {ns} {n} --type=merge --patch-file={p}"
    for deployment in restart:
        yield (
            f"! {KUBECTL} get deployment --namespace {ns} {deployment} >/dev/null 2>&1"
            f" || {KUBECTL} rollout restart deployment --namespace {ns} {deployment}"
        )
    yield f"mkdir -p {shlex.quote(os.path.dirname(stamp))} && sha256sum {p} | cut -d' ' -f1 > {shlex.quote(stamp)}"


def _random_secret(name: str, keys: dict[str, str]) -> list[str]:
    """Commands creating Secret `name` from one random value generated on the host; `keys` maps each
    key to a printf format of that value (%s). The value exists only in a root-only temp dir."""
    script = ["umask 077", "d=$(mktemp -d)", "v=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')"]
    args = []
    for key, fmt in keys.items():
        script.append(f'printf {shlex.quote(fmt)} "$v" > "$d/{key}"')
        args.append(f'--from-file="$d/{key}"')
    script.append(
        f'{KUBECTL} create secret generic --namespace {NAMESPACE} {name} {" ".join(args)}; s=$?; rm -rf "$d"; exit $s'
    )
    return ["sh -c " + shlex.quote("; ".join(script))]


def _secret_from_values(secret: str, values: dict[str, str], file_label: str, restart: list[str]) -> None:
    """Secret `secret` holding `values` (read on this machine): a root-only patch file on the host,
    merged into the Secret when its content changed, then the Deployments in `restart` restarted."""
    state_dir = data("pynchy_state_dir")
    patch_file = f"{state_dir}/secrets/{secret}.json"
    content = secrets.merge_patch(values)
    private_file(name=file_label, dest=patch_file, content=content)
    secret_applied(
        name=f"Secret {secret}",
        secret=secret,
        patch_file=patch_file,
        content_sha256=hashlib.sha256(content).hexdigest(),
        stamp=f"{state_dir}/stamps/secret-{secret}",
        restart=restart,
    )


@deploy("Pynchy: secrets", data_defaults=DEFAULTS)
def secret_values() -> None:
    files_map = dict(data("pynchy_secret_files"))
    files.directory(name="Secret files directory (root only)", path=f"{data('pynchy_state_dir')}/secrets", mode="700")

    run_token = secrets.run_token_value(files_map, os.environ)
    if run_token is None:
        generated_secret(
            name="Run-token key (generated on the host once)",
            secret="pynchy-run-token",
            namespace=NAMESPACE,
            create=_random_secret("pynchy-run-token", {secrets.RUN_TOKEN_KEY: "%s"}),
        )
    else:
        _secret_from_values(
            "pynchy-run-token", {secrets.RUN_TOKEN_KEY: run_token}, "Run-token key file (value not shown)", DEPLOYMENTS
        )

    values = secrets.gateway_values(files_map, os.environ)
    if values:
        _secret_from_values(
            "pynchy-gateway",
            values,
            f"Gateway credentials file ({', '.join(sorted(values))}; values not shown)",
            ["pynchy-gateway"],
        )
    else:
        # Nothing in this environment: keep what the Secret has (a run without your variables
        # must not wipe the Slack tokens set by an earlier one).
        host.noop("no gateway credentials in the environment; Secret pynchy-gateway left as it is")

    if data("pynchy_overlay") == "postgres":
        generated_secret(
            name="PostgreSQL password (generated on the host once)",
            secret="pynchy-postgres",
            namespace=NAMESPACE,
            create=_random_secret(
                "pynchy-postgres",
                {
                    "POSTGRES_PASSWORD": "%s",
                    "PYNCHY_DATABASE_URL": "postgresql+psycopg://pynchy:%s@pynchy-postgres.pynchy-system.svc:5432/pynchy",
                },
            ),
        )


@deploy("Pynchy: control plane", data_defaults=DEFAULTS)
def pynchy(refs: dict[str, str]) -> None:
    manifests(refs)
    secret_values()
    rollouts_available(name="Operator and gateway available", namespace=NAMESPACE, names=DEPLOYMENTS)
