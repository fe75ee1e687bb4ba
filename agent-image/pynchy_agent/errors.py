"""The agent runner's exception base.

The agent image never imports `pynchy` (it ships alone), so it has its own small root:
every exception class in `pynchy_agent` derives from `AgentError`, and ``except AgentError``
means "one of ours, raised on purpose".
"""

from __future__ import annotations


class AgentError(Exception):
    """The base of every exception the agent runner raises on purpose; str() is its message."""
