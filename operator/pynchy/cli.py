"""The `pynchy` command."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import yaml

from pynchy.chat.cli import chat
from pynchy.dev.cli import dev
from pynchy.logs import configure_logging
from pynchy.paths import CRDS_DIR
from pynchy.store.migrate import db_cli


@click.group()
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (or PYNCHY_LOG_LEVEL).")
@click.option(
    "--log-format",
    type=click.Choice(["json", "console"]),
    default=None,
    help="Log format (or PYNCHY_LOG_FORMAT); default: console on a terminal, json otherwise.",
)
def main(log_level: str | None, log_format: str | None) -> None:
    """Pynchy: a personal Claude assistant on Kubernetes."""
    try:
        configure_logging(log_level, log_format)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@main.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=CRDS_DIR,
    show_default=True,
    help="Directory the CRD files are written to.",
)
@click.option("--check", is_flag=True, help="Do not write; exit 1 if the files differ from the models.")
def crds(out_dir: Path, check: bool) -> None:
    """Generate crds/*.yaml from the API models."""
    from pynchy.crdgen import render_crds, write_crds

    if check:
        stale = [
            name
            for name, text in render_crds().items()
            if not (out_dir / name).exists() or (out_dir / name).read_text() != text
        ]
        if stale:
            click.echo(f"out of date: {', '.join(stale)}; run `uv run pynchy crds`", err=True)
            sys.exit(1)
        click.echo("crds/ is up to date")
        return
    for path in write_crds(out_dir):
        click.echo(f"wrote {path}")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check pynchy.dev manifests against the API models (offline, before kubectl apply)."""
    from pynchy.api.validation import validate_document

    failed = 0
    for path in files:
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is None:
                continue
            problems = validate_document(doc)
            where = f"{path}#{index}"
            if problems:
                failed += 1
                click.echo(f"{where}: invalid", err=True)
                for line in problems:
                    click.echo(f"  {line}", err=True)
            else:
                click.echo(f"{where}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')} ok")
    sys.exit(1 if failed else 0)


@main.command("operator")
def operator_cmd() -> None:
    """Run the kopf operator (settings from PYNCHY_* variables; see docs/operator.md)."""
    from pynchy.operator.run import run_forever

    run_forever()


@main.command("gateway")
def gateway_cmd() -> None:
    """Run the gateway: run API and model proxy for agent pods (settings from PYNCHY_* variables)."""
    from pynchy.gateway.main import run_forever

    run_forever()


@main.command("status")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Kubeconfig of the cluster (default: $KUBECONFIG, else ~/.kube/config, else the pod's service account).",
)
@click.option("--context", default=None, help="Context of the kubeconfig to use (default: its current context).")
@click.option(
    "-n", "--namespace", default=None, help="Only Groups and AgentRuns of this namespace (default: all namespaces)."
)
@click.option(
    "--gateway-namespace",
    default="pynchy-system",
    show_default=True,
    help="Namespace of the Service pynchy-gateway, reached through the API server's service proxy.",
)
@click.option(
    "--gateway-url",
    default=None,
    metavar="URL",
    help="The gateway's metrics port instead of the service proxy, e.g. http://127.0.0.1:9090 "
    "after `kubectl -n pynchy-system port-forward svc/pynchy-gateway 9090:metrics`.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status_cmd(
    kubeconfig: Path | None,
    context: str | None,
    namespace: str | None,
    gateway_namespace: str,
    gateway_url: str | None,
    as_json: bool,
) -> None:
    """Groups (Ready, run, spend), recent AgentRuns and the gateway (store, queue) of a cluster.

    \b
    Exit status:
      0  healthy
      1  degraded: a Group not Ready or past its budget, the gateway unreachable, its store unhealthy
      3  the cluster could not be read (API server unreachable, credentials refused, forbidden)
    """
    import json

    from pynchy.clusterstatus.report import Options, collect, render

    options = Options(kubeconfig, context, namespace, gateway_namespace, gateway_url)
    report = collect(options)
    click.echo(json.dumps(report.model_dump(mode="json"), indent=2) if as_json else render(report))
    sys.exit(report.exit_code)


@main.command("controlplane")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for etcd data, certificates and the kubeconfig.",
)
@click.option("--install-crds/--no-install-crds", default=True, show_default=True)
@click.option("--port", type=int, default=6443, show_default=True, help="kube-apiserver port on 127.0.0.1.")
def controlplane_cmd(data_dir: Path, install_crds: bool, port: int) -> None:
    """Run etcd, kube-apiserver and kube-controller-manager locally until Ctrl-C."""
    import signal
    import threading

    from pynchy.kube.binaries import ensure_binaries
    from pynchy.kube.controlplane import ControlPlane

    plane = ControlPlane(ensure_binaries(), data_dir, apiserver_port=port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with plane:
        if install_crds:
            plane.apply_crds(CRDS_DIR)
        kubectl = plane.bin_dir / "kubectl"
        click.echo(
            "\nPynchy control plane is up (Ctrl-C stops it; state stays in "
            f"{data_dir}).\n\n"
            f"  export KUBECONFIG={plane.kubeconfig}\n"
            f"  alias kubectl={kubectl}\n"
            "  kubectl apply -f manifests/examples/group-local.yaml\n"
            "  kubectl get pynchy\n"
            "  kubectl explain group.spec\n"
        )
        stop.wait()


@main.command("devnode")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for volumes, pod roots and container logs.",
)
@click.option("--name", default="pynchy-dev", show_default=True, help="Name of the Node to register.")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Kubeconfig of the cluster (default: the first file in $KUBECONFIG, else ~/.kube/config).",
)
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Only schedule and run pods of this namespace (repeatable; default: all namespaces).",
)
@click.option(
    "--relay",
    "relays",
    multiple=True,
    metavar="HOST:PORT",
    help="An address sandboxed pods may reach, at the same address inside the sandbox (the gateway; repeatable).",
)
@click.option(
    "--no-isolation",
    is_flag=True,
    help="Run pods as plain processes of this user, with no sandbox (where bubblewrap cannot run).",
)
def devnode_cmd(
    data_dir: Path,
    name: str,
    kubeconfig: Path | None,
    namespaces: tuple[str, ...],
    relays: tuple[str, ...],
    no_isolation: bool,
) -> None:
    """Act as scheduler and kubelet for one Node, running its pods in sandboxes (see docs/devnode.md)."""
    import os

    from pynchy.devnode import Address, DevNode, DevNodeError, Sandbox

    if kubeconfig is None:
        candidates = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        kubeconfig = Path(candidates[0]) if candidates else Path.home() / ".kube" / "config"
    try:
        addresses = tuple(Address.parse(r) for r in relays)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--relay") from None
    if no_isolation and addresses:
        raise click.UsageError("--relay is for sandboxed pods; without isolation pods reach every address")
    sandbox = None if no_isolation else Sandbox(relays=addresses)
    node = DevNode(kubeconfig, data_dir, name=name, namespaces=list(namespaces) or None, sandbox=sandbox)
    try:
        node.run_until_signalled()
    except DevNodeError as exc:
        raise click.ClickException(str(exc)) from None


main.add_command(db_cli)

main.add_command(chat)

main.add_command(dev)

if __name__ == "__main__":
    main()
