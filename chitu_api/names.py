"""Names shared by the CRD, the operator and the worker (docs/generationjob.md is the contract).

Everything derived from a job's name lives here, so pod names, the headless Service, labels and
the rendezvous address cannot drift apart between the builders, the lifecycle and the tests.
"""

from __future__ import annotations

GROUP = "chitu.dev"
VERSION = "v1alpha1"
PLURAL = "generationjobs"
KIND = "GenerationJob"

# Labels on every worker pod (and the job-name label on the Service).
JOB_NAME_LABEL = "chitu.dev/job-name"
RANK_LABEL = "chitu.dev/rank"
ROLE_LABEL = "chitu.dev/role"
ATTEMPT_LABEL = "chitu.dev/restart-attempt"
WORKER_ROLE = "worker"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

# kopf's own bookkeeping (handler progress, last-handled spec, its finalizer) under our prefix.
OPERATOR_PREFIX = "operator.chitu.dev"
FINALIZER = f"{OPERATOR_PREFIX}/finalizer"

WORKER_CONTAINER = "worker"
WORKER_COMMAND = ("chitu-worker",)
WORKER_IDENTITY = "chitu-worker"  # ServiceAccount, RoleBinding and ClusterRole share this name
MASTER_PORT = 29500
MODEL_VOLUME = "model"


def pod_name(job: str, rank: int) -> str:
    return f"{job}-worker-{rank}"


def service_name(job: str) -> str:
    return f"{job}-workers"


def master_addr(job: str, namespace: str) -> str:
    """Rank 0's DNS name through the headless Service (pod hostname + subdomain)."""
    return f"{pod_name(job, 0)}.{service_name(job)}.{namespace}.svc"


#: A job's name is a DNS label leaving room for `-worker-<rank>` (ranks up to 999) in a pod's 63-character hostname.
MAX_JOB_NAME_LENGTH = 63 - len(pod_name("", 999))
