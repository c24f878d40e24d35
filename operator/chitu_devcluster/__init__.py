"""The hermetic dev/test cluster: real control plane, SeaweedFS, and a node agent playing the kubelet.

Entry points: ``chitu_devcluster.cluster.DevCluster`` and ``chitu_devcluster.cli.main``.
"""
