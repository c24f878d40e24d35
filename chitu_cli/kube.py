"""The cluster side of the job commands: the current kubeconfig (or the pod's service account), GenerationJob
reads and writes, and a watch that survives the apiserver closing it.

The `kubernetes` package takes about a second to import, so this module is imported only by commands that talk to
a cluster, after their input has been validated.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from chitu_api.names import GROUP, PLURAL, VERSION
from chitu_cli.errors import ClusterError, SpecRejected

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
WATCH_CHUNK_SECONDS = 60  # the apiserver ends a watch after this; we open the next one from the same version


@dataclass
class Cluster:
    """A connection: the API client and the namespace to use when none is given."""

    api: client.ApiClient
    default_namespace: str

    @classmethod
    def connect(cls, context: str | None = None) -> Cluster:
        """$KUBECONFIG / ~/.kube/config (its current or the named context), else the pod's service account."""
        try:
            api = config.new_client_from_config(context=context)
            _, active = config.list_kube_config_contexts()
            if context:
                active = next(c for c in config.list_kube_config_contexts()[0] if c["name"] == context)
            return cls(api, active.get("context", {}).get("namespace") or "default")
        except (config.ConfigException, FileNotFoundError, StopIteration) as kubeconfig_error:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                raise ClusterError(f"no cluster configured: {kubeconfig_error}") from None
            namespace = IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.exists() else "default"
            return cls(client.ApiClient(), namespace)

    @property
    def jobs(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def create_job(self, namespace: str, manifest: dict) -> dict:
        try:
            return self.jobs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
        except ApiException as err:
            if err.status == 422:
                raise SpecRejected(f"the cluster refused the job: {api_message(err)}") from None
            raise ClusterError(f"creating the job failed: {api_message(err)}") from None

    def get_job(self, namespace: str, name: str) -> dict:
        try:
            return self.jobs.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as err:
            raise ClusterError(_not_found(err, namespace, name) or api_message(err)) from None

    def list_jobs(self, namespace: str | None) -> list[dict]:
        """The jobs of one namespace, or of every namespace when `namespace` is None, oldest first."""
        try:
            if namespace is None:
                items = self.jobs.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
            else:
                items = self.jobs.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        except ApiException as err:
            raise ClusterError(api_message(err)) from None
        return sorted(items, key=lambda job: job["metadata"].get("creationTimestamp", ""))

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete the job; the garbage collector removes its pods and Service (they are owned by it)."""
        try:
            self.jobs.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background"
            )
        except ApiException as err:
            raise ClusterError(_not_found(err, namespace, name) or api_message(err)) from None

    def watch_job(self, job: dict, deadline: float) -> Iterator[dict | None]:
        """The job each time it changes until `deadline` (time.monotonic()); None once it is deleted."""
        meta = job["metadata"]
        namespace, name, version = meta["namespace"], meta["name"], meta["resourceVersion"]
        stream = watch.Watch()
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                for event in stream.stream(
                    self.jobs.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    field_selector=f"metadata.name={name}",
                    resource_version=version,
                    timeout_seconds=max(1, min(WATCH_CHUNK_SECONDS, round(remaining))),
                    allow_watch_bookmarks=True,
                ):
                    version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] == "DELETED":
                        yield None
                        return
                    if event["type"] in ("ADDED", "MODIFIED"):
                        yield event["object"]
            except ApiException as err:
                if err.status != 410:  # 410 Gone: our version is too old; start again from the current object
                    raise ClusterError(api_message(err)) from None
                current = self.get_job(namespace, name)
                version = current["metadata"]["resourceVersion"]
                yield current

    def pod_log(self, namespace: str, pod: str, container: str, *, follow: bool, tail: int | None) -> Iterator[bytes]:
        """A container's log as it arrives (the apiserver proxies it from the node's kubelet)."""
        try:
            response = self.core.read_namespaced_pod_log(
                pod, namespace, container=container, follow=follow, tail_lines=tail, _preload_content=False
            )
        except ApiException as err:
            raise ClusterError(_not_found(err, namespace, pod, kind="pod") or api_message(err)) from None
        yield from response.stream(amt=64 * 1024)

    def list_pods(self, namespace: str, selector: str) -> list[dict]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        return [self.api.sanitize_for_serialization(pod) for pod in pods]

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data (decoded), or None when it is absent or we may not read it."""
        try:
            data = self.core.read_namespaced_secret(name, namespace).data or {}
        except ApiException as err:
            if err.status in (403, 404):
                return None
            raise ClusterError(api_message(err)) from None
        return {key: base64.b64decode(value).decode() for key, value in data.items()}


def api_message(err: ApiException) -> str:
    """The apiserver's own message (a Status object's `message`), else the HTTP reason."""
    try:
        return json.loads(err.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"{err.status} {err.reason}"


def _not_found(err: ApiException, namespace: str, name: str, kind: str = "generationjob") -> str | None:
    return f'{kind} "{name}" not found in namespace {namespace}' if err.status == 404 else None
