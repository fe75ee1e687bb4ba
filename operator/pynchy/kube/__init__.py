"""A real Kubernetes control plane on loopback, built from source (tests and `pynchy dev`)."""
