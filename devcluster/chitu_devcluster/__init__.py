"""The hermetic dev/test cluster: real control plane, SeaweedFS, and a node agent playing the kubelet.

Dev tooling, not part of the operator: it runs the operator as a local process like any user would.
Entry points: ``chitu_devcluster.cluster.DevCluster`` (tests, Python) and ``chitu_devcluster.main.main``
(the ``chitu-dev-cluster`` console script).
"""
