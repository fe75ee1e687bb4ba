"""The deploys are a package of the repository root (deploys.pynchy_infra), as pyinfra imports them
when run from the root; put the root on sys.path for these tests too."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
