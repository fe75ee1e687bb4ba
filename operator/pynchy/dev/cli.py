"""The `pynchy dev` command group (imports stay light: the work is imported when it runs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pynchy.dev import config

_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State directory (etcd data, store, volumes, keys, logs). "
    "[default: $PYNCHY_DATA_DIR or ~/.local/share/pynchy/dev]",
)


def _data_dir(value: Path | None) -> Path:
    return value if value is not None else config.default_data_dir()


@click.group("dev", invoke_without_command=True)
@_data_dir_option
@click.option(
    "--apiserver-port",
    type=click.IntRange(1, 65535),
    default=config.DEFAULT_APISERVER_PORT,
    show_default=True,
    envvar="PYNCHY_DEV_APISERVER_PORT",
    help="kube-apiserver port on 127.0.0.1 (or PYNCHY_DEV_APISERVER_PORT).",
)
@click.option(
    "--gateway-port",
    type=click.IntRange(1, 65535),
    default=config.DEFAULT_GATEWAY_PORT,
    show_default=True,
    envvar="PYNCHY_DEV_GATEWAY_PORT",
    help="Gateway port on 127.0.0.1: run API, model proxy, local chat (or PYNCHY_DEV_GATEWAY_PORT).",
)
@click.option(
    "--namespace",
    default=config.DEFAULT_NAMESPACE,
    show_default=True,
    help="Namespace of the demo Group (and the one `pynchy chat` uses).",
)
@click.option("--demo/--no-demo", default=True, show_default=True, help="Create the demo Group if it is absent.")
@click.option("--verbose", is_flag=True, help="Show the control plane's info lines on the terminal too.")
@click.option(
    "--no-isolation",
    is_flag=True,
    help="Run agents as plain processes of your user, without the bubblewrap sandbox (where it cannot run).",
)
@click.pass_context
def dev(
    ctx: click.Context,
    data_dir: Path | None,
    apiserver_port: int,
    gateway_port: int,
    namespace: str,
    demo: bool,
    verbose: bool,
    no_isolation: bool,
) -> None:
    """Run all of Pynchy on this machine until Ctrl-C: control plane, gateway, operator, dev node.

    State stays in the data dir and a restart picks it up. `pynchy dev status` shows what runs.
    """
    if ctx.invoked_subcommand is not None:
        return
    from pynchy.dev.supervisor import Options, run

    options = Options(
        data_dir=_data_dir(data_dir),
        apiserver_port=apiserver_port,
        gateway_port=gateway_port,
        namespace=namespace,
        demo=demo,
        verbose=verbose,
        isolation=not no_isolation,
    )
    sys.exit(run(options))


@dev.command("status")
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, data_dir: Path | None, as_json: bool) -> None:
    """Components (pid, alive, port, health), Groups and AgentRuns of a `pynchy dev`.

    Exit status: 0 all healthy, 1 running but something is unhealthy, 3 not running.
    """
    from pynchy.dev.status import collect, exit_code, render

    parent = ctx.parent.params.get("data_dir") if ctx.parent else None
    result = collect(_data_dir(data_dir or parent))
    click.echo(json.dumps(result, indent=2) if as_json else render(result))
    sys.exit(exit_code(result))
