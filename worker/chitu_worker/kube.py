"""The worker's use of the Kubernetes API: read its GenerationJob, merge-patch the job's status.

Credentials: the pod's service account in-cluster; else $KUBECONFIG (the dev cluster's node agent gives each pod
a kubeconfig holding its service-account token, so RBAC applies the same way). The ClusterRole `chitu-worker`
allows get on generationjobs and patch on generationjobs/status, nothing else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from chitu_api.names import GROUP, PLURAL, VERSION
from chitu_worker.env import PodEnv
from chitu_worker.failures import InvalidInput
from chitu_worker.plan import JobRef

logger = logging.getLogger(__name__)

FIELD_MANAGER = "chitu-worker"
REQUEST_TIMEOUT = (3, 10)  # (connect, read) seconds: a slow API must not stall generation for long
FETCH_ATTEMPTS = 6  # about 30 s of retries: the API may be briefly unreachable while a pod starts
PERMANENT = (401, 403, 404)


def custom_objects_api() -> client.CustomObjectsApi:
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException:
        try:
            config.load_kube_config(client_configuration=configuration)
        except ConfigException as err:
            raise RuntimeError(
                f"no in-cluster service account and no usable kubeconfig ({err}); outside a cluster use --job-file"
            ) from None
    return client.CustomObjectsApi(client.ApiClient(configuration))


def fetch_job(api: client.CustomObjectsApi, env: PodEnv, retry_delay: float = 1.0) -> dict:
    """The GenerationJob named by CHITU_JOB_NAME/CHITU_JOB_NAMESPACE, checked against CHITU_JOB_UID."""
    if not env.job_name or not env.job_namespace:
        raise InvalidInput("CHITU_JOB_NAME", "CHITU_JOB_NAME and CHITU_JOB_NAMESPACE are required without --job-file")
    for attempt in range(1, FETCH_ATTEMPTS + 1):
        try:
            job = api.get_namespaced_custom_object(
                GROUP, VERSION, env.job_namespace, PLURAL, env.job_name, _request_timeout=REQUEST_TIMEOUT
            )
            break
        except ApiException as err:
            if err.status in PERMANENT or attempt == FETCH_ATTEMPTS:
                raise RuntimeError(
                    f"cannot get GenerationJob {env.job_namespace}/{env.job_name}: {err.status} {err.reason}"
                ) from None
            logger.warning("get GenerationJob failed (%s %s), attempt %d", err.status, err.reason, attempt)
        except urllib3.exceptions.HTTPError as err:
            if attempt == FETCH_ATTEMPTS:
                raise RuntimeError(f"cannot reach the Kubernetes API: {err}") from None
            logger.warning("Kubernetes API unreachable (%s), attempt %d", err, attempt)
        time.sleep(retry_delay * 2 ** (attempt - 1))
    uid = job["metadata"]["uid"]
    if env.job_uid and env.job_uid != uid:
        raise RuntimeError(
            f"GenerationJob {env.job_namespace}/{env.job_name} has uid {uid}, but this pod belongs to uid "
            f"{env.job_uid} (the job was deleted and created again)"
        )
    return job


def status_publisher(api: client.CustomObjectsApi, job: JobRef) -> Callable[[dict], None]:
    """A function that merge-patches `{"status": ...}` through the status subresource."""

    def publish(status: dict) -> None:
        api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            job.namespace,
            PLURAL,
            job.name,
            {"status": status},
            field_manager=FIELD_MANAGER,
            _content_type="application/merge-patch+json",
            _request_timeout=REQUEST_TIMEOUT,
        )

    return publish
