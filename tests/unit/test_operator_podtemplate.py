"""Platform defaults under a job's own pod fields, and the pod they make (restricted PSS, /dev/shm, scratch)."""

from __future__ import annotations

import copy

from chitu_api.generationjob import parse_spec
from chitu_api.operatorconfig import RESTRICTED_CONTAINER_SECURITY, RESTRICTED_POD_SECURITY, parse_operator_config
from chitu_operator.podtemplate import SHM_PATH, apply_template, layer

SPEC = {
    "model": {"uri": "/models/wan"},
    "prompts": ["a cat"],
    "output": {"uri": "s3://videos/runs"},
    "worker": {"image": "chitu/worker:1"},
}
PLATFORM = parse_operator_config(
    {
        "worker": {
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
            "imagePullSecrets": [{"name": "registry"}],
            "volumes": [{"name": "hf", "persistentVolumeClaim": {"claimName": "hf-cache"}}],
            "volumeMounts": [{"name": "hf", "mountPath": "/cache"}],
            "podLabels": {"team": "platform", "tier": "batch"},
            "schedulerName": "volcano",
            "shmSize": "16Gi",
        }
    }
).worker


def pod_for(worker: dict | None = None, scheduling: dict | None = None, gpus: int = 1) -> dict:
    spec = copy.deepcopy(SPEC)
    spec["worker"].update(worker or {})
    spec["scheduling"] = scheduling or {}
    spec["parallelism"] = {"cfg": 2, "gpusPerPod": gpus}
    job = parse_spec(spec)
    pod = {"spec": {"containers": [{"name": "worker"}]}}
    return apply_template(pod, layer(PLATFORM, job.worker, job.scheduling), gpus)


def test_defaults_pass_the_restricted_pod_security_standard():
    pod = pod_for()
    assert pod["spec"]["securityContext"] == RESTRICTED_POD_SECURITY
    assert pod["spec"]["containers"][0]["securityContext"] == RESTRICTED_CONTAINER_SECURITY
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert {"/tmp", "/var/cache/chitu"} <= set(mounts)  # writable paths under a read-only root
    scratch = next(v for v in pod["spec"]["volumes"] if v["name"] == mounts["/tmp"]["name"])
    assert scratch["emptyDir"] == {"sizeLimit": "20Gi"}


def test_gpu_pods_get_a_memory_backed_dev_shm_and_cpu_pods_do_not():
    gpu = pod_for(gpus=2)
    mount = next(m for m in gpu["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == SHM_PATH)
    volume = next(v for v in gpu["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    cpu = pod_for(gpus=0)
    assert SHM_PATH not in {m["mountPath"] for m in cpu["spec"]["containers"][0]["volumeMounts"]}
    assert pod_for(worker={"shmSize": "2Gi"}, gpus=1)["spec"]["volumes"][1]["emptyDir"]["sizeLimit"] == "2Gi"


def test_job_values_win_field_by_field_maps_merge_by_key_named_lists_by_name():
    pod = pod_for(
        worker={
            "podLabels": {"tier": "interactive"},
            "volumes": [{"name": "hf", "emptyDir": {}}],
            "imagePullSecrets": [{"name": "mine"}],
            "runtimeClassName": "nvidia",
            "securityContext": {"runAsUser": 1234},
        },
        scheduling={"nodeSelector": {"gpu": "h200"}, "schedulerName": "default-scheduler"},
    )
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"pool": "gpu", "gpu": "h200"}
    assert spec["schedulerName"] == "default-scheduler" and spec["runtimeClassName"] == "nvidia"
    assert spec["imagePullSecrets"] == [{"name": "registry"}, {"name": "mine"}]
    assert [v for v in spec["volumes"] if v["name"] == "hf"] == [{"name": "hf", "emptyDir": {}}]
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert spec["containers"][0]["securityContext"] == {"runAsUser": 1234}
    assert layer(
        PLATFORM,
        parse_spec({**SPEC, "worker": {"image": "x", "podLabels": {"tier": "i"}}}).worker,
        parse_spec(SPEC).scheduling,
    ).labels == {"team": "platform", "tier": "i"}
