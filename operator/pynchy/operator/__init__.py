"""The kopf operator: Groups, Workspaces (and later AgentRuns, ScheduledTasks) → Kubernetes objects."""
