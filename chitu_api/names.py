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
WORKER_IDENTITY = "chitu-worker"  # the default of spec.worker.serviceAccountName: "the job's own identity"
MASTER_PORT = 29500  # the worker's default outside a cluster; on a cluster each job has its own (rendezvous_port)
RENDEZVOUS_PORTS = range(20000, 30000)
MODEL_VOLUME = "model"


def pod_name(job: str, rank: int) -> str:
    return f"{job}-worker-{rank}"


def worker_identity(job: str) -> str:
    """The job's own worker ServiceAccount, and its Role and RoleBinding (they reach only this job)."""
    return f"{job}-worker"


def service_name(job: str) -> str:
    return f"{job}-workers"


def rendezvous_port(job_uid: str) -> int:
    """Rank 0's rendezvous port, from the job's uid: a gang restarted while its old port lingers in TIME_WAIT, or
    two jobs whose ranks share a host (hostNetwork, the dev cluster), do not collide on one fixed port."""
    digits = int("".join(ch for ch in job_uid if ch in "0123456789abcdef") or "0", 16)
    return RENDEZVOUS_PORTS.start + digits % len(RENDEZVOUS_PORTS)


def master_addr(job: str, namespace: str) -> str:
    """Rank 0's DNS name through the headless Service (pod hostname + subdomain)."""
    return f"{pod_name(job, 0)}.{service_name(job)}.{namespace}.svc"


#: A job's name is a DNS label leaving room for `-worker-<rank>` (ranks up to 999) in a pod's 63-character hostname.
MAX_JOB_NAME_LENGTH = 63 - len(pod_name("", 999))


#: Set by a node whose nvidia.com/gpu capacity is simulated (the dev cluster's node agent): GPU pods then run on
#: the CPU (chitu_worker.gpus fails a GPU pod whose CUDA sees too few devices unless this is set).
SIMULATED_GPUS_ENV = "CHITU_SIMULATED_GPUS"
