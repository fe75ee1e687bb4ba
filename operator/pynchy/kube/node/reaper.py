"""Tear a node down when its owner dies: `python -m pynchy.kube.node.reaper <state file>`.

The owner starts this in a session of its own with a pipe on stdin and never writes to it. When
the owner exits for any reason (a clean stop, a failed test, SIGKILL), the pipe closes; if the
state file still exists the owner did not clean up, and this process does.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pynchy.kube.node.cleanup import NodeState, teardown


def main(argv: list[str]) -> int:
    state_file = Path(argv[1])
    sys.stdin.buffer.read()  # returns at EOF: the owner is gone
    if state_file.exists():
        teardown(NodeState.load(state_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
