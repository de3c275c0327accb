"""The local stack (etcd, kube-apiserver, kube-controller-manager, nats-server) and the local node."""
