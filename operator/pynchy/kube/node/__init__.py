"""A real Kubernetes node for tests and benches (kubelet + containerd + CNI + DNS + NetworkPolicy)."""
