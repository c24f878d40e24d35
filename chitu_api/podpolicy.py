"""Everything a GenerationJob puts into its worker pods, checked before the operator creates anything.

Two kinds of rule, each reported at the spec field to change (``spec.worker.env[2].name``):

- Kubernetes' own (chitu_api.kubernetes_rules): a value the apiserver would refuse in the pod (a label key
  ``a=b``, ``cpu: abc``, limits below requests, a Secret name ``Bad_Name``) fails the job at once as
  InvalidSpec, instead of leaving it accepted and hanging while every pod create gets 422.
- The platform's (``PodPolicy``, set once by the platform team in the operator's configuration): the volume
  types a job may mount (no ``hostPath`` unless allowed), labels the operator owns, credentials only through
  Secrets (never a literal env value or an endpoint URL's userinfo), which Secrets a job may name (the operator
  would otherwise read a Secret on behalf of a user who may not: the confused deputy), and prompt text
  (control characters are refused, naming the prompt and the character, rather than reaching logs, status and
  metadata by accident; tab and newline are kept).

``pod_value_problems(spec, policy)`` returns every problem as ``(field, message)``; parse_spec raises the first.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from chitu_api import kubernetes_rules as k8s
from chitu_api.names import GROUP, KUEUE_QUEUE_LABEL

if TYPE_CHECKING:
    from chitu_api.generationjob import GenerationJobSpec

GPU_RESOURCE = "nvidia.com/gpu"
#: Volume sources a model (or extra) volume may use unless the platform says otherwise: storage made for data.
DEFAULT_VOLUME_TYPES = ("persistentVolumeClaim", "emptyDir", "configMap", "csi", "ephemeral", "nfs", "image")
#: Names whose value is a credential: such a variable must come from a Secret (valueFrom.secretKeyRef).
CREDENTIAL_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY)", re.IGNORECASE)
#: Labels the operator sets on every worker pod (its chitu.dev/* ones, its managed-by, the queue label).
OWNED_LABEL_PREFIXES = (f"{GROUP}/", "app.kubernetes.io/managed-by", KUEUE_QUEUE_LABEL)
#: Kept in prompts: they are ordinary text layout.
PROMPT_WHITESPACE = frozenset("\t\n")

Problem = tuple[str, str]


class PodPolicy(BaseModel):
    """What the platform allows a job's pods to carry (a section of the operator's configuration)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    volume_types: tuple[str, ...] = Field(
        DEFAULT_VOLUME_TYPES, alias="volumeTypes", description="Volume sources a job may mount."
    )
    allow_host_path: bool = Field(
        False,
        alias="allowHostPath",
        description="Let jobs mount hostPath volumes (node files: only on clusters "
        "whose every GenerationJob author is trusted with the node).",
    )
    secret_names: tuple[str, ...] | None = Field(
        None,
        alias="secretNames",
        description="The Secrets a job may name (output credentials, env, envFrom, "
        "volumes, image pull secrets); unset: any Secret of the job's namespace.",
    )


def pod_value_problems(spec: GenerationJobSpec, policy: PodPolicy | None = None) -> list[Problem]:
    """Every value of ``spec`` that the apiserver or the platform policy would refuse in a worker pod."""
    policy = policy or PodPolicy()
    problems = list(_prompt_problems(spec))
    problems += _volume_problems("spec.model.volume", spec.model.volume, policy)
    problems += _output_problems(spec, policy)
    if spec.worker is not None:
        problems += _worker_problems(spec, policy)
    problems += _scheduling_problems(spec.scheduling)
    return problems


def _prompt_problems(spec: GenerationJobSpec) -> Iterator[Problem]:
    named = [("spec.prompt", spec.prompt)] if spec.prompt is not None else []
    named += [(f"spec.prompts[{i}]", text) for i, text in enumerate(spec.prompts or ())]
    named.append(("spec.negativePrompt", spec.negative_prompt))
    for field, text in named:
        for position, char in enumerate(text):
            if char not in PROMPT_WHITESPACE and unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp"):
                yield (
                    field,
                    (
                        f"control character U+{ord(char):04X} at position {position}: prompts are plain text "
                        f"(tab and newline allowed)"
                    ),
                )
                break


def _volume_problems(field: str, volume: Mapping[str, Any] | None, policy: PodPolicy) -> list[Problem]:
    if volume is None:
        return []
    sources = [key for key in volume if key != "name"]
    if len(sources) != 1:
        return [(field, f"must name exactly one volume source, got {sources or 'none'}")]
    kind = sources[0]
    allowed = {*policy.volume_types, *(("hostPath",) if policy.allow_host_path else ())}
    if kind not in allowed:
        return [
            (
                field,
                f"{kind} volumes are not allowed here (allowed: {', '.join(sorted(allowed))}); the "
                f"platform's operator configuration decides",
            )
        ]
    secret = volume[kind].get("secretName") if kind == "secret" and isinstance(volume[kind], Mapping) else None
    return list(_secret_problems(f"{field}.secret.secretName", secret, policy))


def _secret_problems(field: str, name: str | None, policy: PodPolicy) -> Iterator[Problem]:
    if name is None:
        return
    if problem := k8s.dns1123_subdomain(name):
        yield field, f"Secret name {problem}"
    elif policy.secret_names is not None and name not in policy.secret_names:
        yield (
            field,
            (
                f"Secret {name!r} is not one the platform lets jobs use (allowed: "
                f"{', '.join(policy.secret_names) or 'none'})"
            ),
        )


def _output_problems(spec: GenerationJobSpec, policy: PodPolicy) -> Iterator[Problem]:
    output = spec.output
    if output is None:  # given by the platform's defaults (checked there), or a local run
        return
    if output.endpoint and (urlsplit(output.endpoint).username or urlsplit(output.endpoint).password):
        yield "spec.output.endpoint", "must not hold credentials (user:password@): use credentialsSecretRef"
    ref = output.credentials_secret_ref
    if ref is not None:
        yield from _secret_problems("spec.output.credentialsSecretRef.name", ref.name, policy)
        for attribute, key in (
            ("accessKeyIdKey", ref.access_key_id_key),
            ("secretAccessKeyKey", ref.secret_access_key_key),
        ):
            if problem := k8s.config_key(key):
                yield f"spec.output.credentialsSecretRef.{attribute}", problem


def worker_resources(spec: GenerationJobSpec) -> dict[str, dict[str, Any]]:
    """The worker container's requests and limits: the user's, with the GPU count parallelism.gpusPerPod needs
    (extended resources need requests == limits, so a GPU request the user wrote is set to it too)."""
    resources = {kind: dict(amounts) for kind, amounts in spec.worker.resources.items()}
    gpus = spec.parallelism.gpus_per_pod
    if gpus:
        resources.setdefault("limits", {})[GPU_RESOURCE] = str(gpus)
        if GPU_RESOURCE in resources.get("requests", {}):
            resources["requests"][GPU_RESOURCE] = str(gpus)
    return resources


def _worker_problems(spec: GenerationJobSpec, policy: PodPolicy) -> Iterator[Problem]:
    worker = spec.worker
    if problem := k8s.container_image(worker.image):
        yield "spec.worker.image", problem
    for index, var in enumerate(worker.env):
        where = f"spec.worker.env[{index}]"
        yield from _prefixed(where, k8s.env_var(var))
        secret = ((var.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
        if secret is not None and not k8s.dns1123_subdomain(secret):
            yield from _secret_problems(f"{where}.valueFrom.secretKeyRef.name", secret, policy)
        if var.get("value") and CREDENTIAL_NAME.search(var.get("name") or ""):
            yield (
                f"{where}.value",
                (
                    f"{var['name']} looks like a credential: set it through valueFrom.secretKeyRef, "
                    f"never as a literal value in the job"
                ),
            )
    yield from _prefixed("spec.worker.resources", k8s.resource_requirements(worker_resources(spec)))
    if problem := k8s.dns1123_subdomain(worker.service_account_name):
        yield "spec.worker.serviceAccountName", f"ServiceAccount name {problem}"
    yield from _prefixed("spec.worker.podLabels", k8s.labels(worker.pod_labels))
    for key in worker.pod_labels:
        if key.startswith(OWNED_LABEL_PREFIXES):
            yield f"spec.worker.podLabels[{key}]", f"{key} is a label the operator sets and cannot be overridden"
    yield from _prefixed("spec.worker.podAnnotations", k8s.annotations(worker.pod_annotations))
    for index, volume in enumerate(getattr(worker, "volumes", ())):
        yield from _volume_problems(f"spec.worker.volumes[{index}]", volume, policy)
    for index, source in enumerate(getattr(worker, "env_from", ())):
        secret = (source.get("secretRef") or {}).get("name")
        yield from _secret_problems(f"spec.worker.envFrom[{index}].secretRef.name", secret, policy)
    for index, reference in enumerate(getattr(worker, "image_pull_secrets", ())):
        yield from _secret_problems(f"spec.worker.imagePullSecrets[{index}].name", reference.name, policy)


def _scheduling_problems(scheduling: Any) -> Iterator[Problem]:
    yield from _prefixed("spec.scheduling.nodeSelector", k8s.labels(scheduling.node_selector))
    for index, toleration in enumerate(scheduling.tolerations):
        yield from _prefixed(f"spec.scheduling.tolerations[{index}]", k8s.toleration(toleration))
    if scheduling.priority_class_name and (problem := k8s.dns1123_subdomain(scheduling.priority_class_name)):
        yield "spec.scheduling.priorityClassName", f"PriorityClass name {problem}"
    if scheduling.queue_name and (problem := k8s.label_value(scheduling.queue_name)):
        yield "spec.scheduling.queueName", f"(a label value) {problem}"


def _prefixed(prefix: str, problems: Iterable[Problem]) -> Iterator[Problem]:
    """Relative subfields (``limits[cpu]``, ``name``, or none) under the spec field they belong to."""
    for subfield, message in problems:
        joiner = "" if not subfield or subfield.startswith("[") else "."
        yield f"{prefix}{joiner}{subfield}", message
