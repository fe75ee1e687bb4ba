"""`pynchy dev`: etcd, kube-apiserver, kube-controller-manager, the gateway, the operator and the
dev node as one supervised process tree on this machine, with a demo Group; see docs/dev.md."""
