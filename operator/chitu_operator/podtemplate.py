"""The platform's worker defaults layered under a job's own pod fields, and applied to a built pod (pure).

``layer`` merges (chitu_api.podtemplate says the rule); ``apply_template`` adds to the pod that
manifests.build_pod made: security contexts, the scratch emptyDir on the read-only root's writable paths,
a memory-backed /dev/shm on pods with GPUs, volumes, mounts, envFrom, pull secrets and placement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chitu_api.operatorconfig import WorkerDefaults

SCRATCH_VOLUME = "scratch"
SHM_VOLUME = "dshm"
SHM_PATH = "/dev/shm"


@dataclass(frozen=True)
class PodTemplate:
    """The resolved pod fields of one job (defaults with the job's overrides)."""

    volumes: tuple[Mapping[str, Any], ...] = ()
    volume_mounts: tuple[Mapping[str, Any], ...] = ()
    env_from: tuple[Mapping[str, Any], ...] = ()
    image_pull_secrets: tuple[str, ...] = ()
    runtime_class_name: str = ""
    pod_security_context: Mapping[str, Any] | None = None
    security_context: Mapping[str, Any] | None = None
    shm_size: str | None = None
    scratch_size: str | None = None
    scratch_mounts: tuple[str, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] | None = None
    priority_class_name: str = ""
    scheduler_name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


def layer(defaults: WorkerDefaults, worker: Any, scheduling: Any) -> PodTemplate:
    """``worker``/``scheduling``: the job's spec.worker and spec.scheduling (their unset fields are empty)."""
    return PodTemplate(
        volumes=_by_name(defaults.volumes, worker.volumes),
        volume_mounts=_by_key("mountPath", defaults.volume_mounts, worker.volume_mounts),
        env_from=(*defaults.env_from, *worker.env_from),
        image_pull_secrets=tuple(
            dict.fromkeys(ref.name for ref in (*defaults.image_pull_secrets, *worker.image_pull_secrets))
        ),
        runtime_class_name=worker.runtime_class_name or defaults.runtime_class_name,
        pod_security_context=_first(worker.pod_security_context, defaults.pod_security_context),
        security_context=_first(worker.security_context, defaults.security_context),
        shm_size=worker.shm_size or defaults.shm_size,
        scratch_size=worker.scratch_size or defaults.scratch_size,
        scratch_mounts=defaults.scratch_mounts,
        node_selector={**defaults.node_selector, **scheduling.node_selector},
        tolerations=(*defaults.tolerations, *(dict(t) for t in scheduling.tolerations)),
        affinity=_first(scheduling.affinity, defaults.affinity),
        priority_class_name=scheduling.priority_class_name or defaults.priority_class_name,
        scheduler_name=scheduling.scheduler_name or defaults.scheduler_name,
        labels={**defaults.pod_labels, **worker.pod_labels},
        annotations={**defaults.pod_annotations, **worker.pod_annotations},
    )


def apply_template(pod: dict[str, Any], template: PodTemplate, gpus: int) -> dict[str, Any]:
    """``pod`` (one worker container, as manifests.build_pod made it) with the template's fields added."""
    spec = pod["spec"]
    container = spec["containers"][0]
    volumes, mounts = list(spec.get("volumes") or []), list(container.get("volumeMounts") or [])
    if template.scratch_mounts:
        volumes.append({"name": SCRATCH_VOLUME, "emptyDir": _sized({}, template.scratch_size)})
        mounts += [
            {"name": SCRATCH_VOLUME, "mountPath": path, "subPath": path.strip("/").replace("/", "-")}
            for path in template.scratch_mounts
        ]
    if gpus and template.shm_size:
        volumes.append({"name": SHM_VOLUME, "emptyDir": _sized({"medium": "Memory"}, template.shm_size)})
        mounts.append({"name": SHM_VOLUME, "mountPath": SHM_PATH})
    volumes += [dict(v) for v in template.volumes]
    mounts += [dict(m) for m in template.volume_mounts]
    if volumes:
        spec["volumes"] = volumes
    if mounts:
        container["volumeMounts"] = mounts
    if template.env_from:
        container["envFrom"] = [dict(source) for source in template.env_from]
    if template.security_context:
        container["securityContext"] = dict(template.security_context)
    if template.pod_security_context:
        spec["securityContext"] = dict(template.pod_security_context)
    if template.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in template.image_pull_secrets]
    placement = {
        "runtimeClassName": template.runtime_class_name,
        "affinity": template.affinity,
        "priorityClassName": template.priority_class_name,
        "schedulerName": template.scheduler_name,
        "nodeSelector": dict(template.node_selector),
        "tolerations": [dict(t) for t in template.tolerations],
    }
    spec.update({key: value for key, value in placement.items() if value})
    return pod


def _sized(empty_dir: dict[str, Any], size: str | None) -> dict[str, Any]:
    return {**empty_dir, "sizeLimit": size} if size else empty_dir


def _first(*values: Any) -> Any:
    return next((value for value in values if value), None)


def _by_name(defaults: Iterable[Mapping[str, Any]], job: Iterable[Mapping[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    return _by_key("name", defaults, job)


def _by_key(
    key: str, defaults: Iterable[Mapping[str, Any]], job: Iterable[Mapping[str, Any]]
) -> tuple[Mapping[str, Any], ...]:
    """Defaults then the job's items; a job item replaces a default with the same ``key``."""
    merged = {item.get(key): item for item in defaults}
    merged.update({item.get(key): item for item in job})
    return tuple(merged.values())
