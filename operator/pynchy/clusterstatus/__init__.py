"""`pynchy status`: the health of a Pynchy installation on any cluster, read through the Kubernetes API
(Groups, AgentRuns) and the gateway's `GET /status` (store, queue). A building block: it imports no
process, so the CLI, `pynchy dev status` and the gateway (for the contract) can all use it."""
