"""The local node: scheduler and kubelet for the local stack, running the mock engine per pod."""

from ferry_local.node.kubelet import LocalNode, NodeSettings

__all__ = ["LocalNode", "NodeSettings"]
