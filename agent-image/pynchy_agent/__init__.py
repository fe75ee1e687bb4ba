"""The agent runner: the program inside a Pynchy agent pod.

It depends only on claude-agent-sdk, pydantic and httpx (never on the operator's
dependencies), so the agent image stays small.
"""
