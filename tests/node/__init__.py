"""End to end on a real node: kubelet + containerd, the built images, the production manifests."""
