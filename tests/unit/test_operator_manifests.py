"""Pure builders (pods, Service, worker identity) and the pod observations read back from the API."""

from __future__ import annotations

import copy

import kopf

from chitu_api.names import rendezvous_port
from chitu_operator import manifests
from chitu_operator.lifecycle import Job
from chitu_operator.pods import PodView
from chitu_operator.rbac import build_operator_cluster_role, build_worker_cluster_role

UID = "0123456789abcdef"
BODY = {
    "apiVersion": "chitu.dev/v1alpha1",
    "kind": "GenerationJob",
    "metadata": {"name": "cats", "namespace": "ns", "uid": "0123456789abcdef", "generation": 1},
    "spec": {
        "model": {"uri": "/models/wan", "volume": {"persistentVolumeClaim": {"claimName": "models"}}},
        "prompts": ["a", "b"],
        "parallelism": {"cfg": 2, "cpSize": 2, "gpusPerPod": 2},
        "worker": {
            "image": "ghcr.io/chitu/worker:0.1.0",
            "env": [{"name": "EXTRA", "value": "1"}],
            "resources": {"requests": {"cpu": "4", "nvidia.com/gpu": 1}},
            "podAnnotations": {"note": "hi"},
        },
        "output": {
            "uri": "s3://videos/runs",
            "endpoint": "http://s3.local:8333",
            "region": "eu-west-1",
            "credentialsSecretRef": {"name": "s3-creds"},
        },
        "scheduling": {
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
            "priorityClassName": "batch",
            "queueName": "videos",
        },
    },
}


def job(**spec_changes) -> Job:
    body = copy.deepcopy(BODY)
    body["spec"].update(spec_changes)
    return Job.from_body(body)


def env_of(pod: dict) -> dict:
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in pod["spec"]["containers"][0]["env"]}


def test_pod_identity_labels_and_dns():
    pod = manifests.build_pod(job(), rank=1, attempt=2)
    assert pod["metadata"]["name"] == "cats-worker-1" and pod["metadata"]["namespace"] == "ns"
    assert pod["metadata"]["labels"] == {
        "chitu.dev/job-name": "cats",
        "chitu.dev/rank": "1",
        "chitu.dev/role": "worker",
        "chitu.dev/restart-attempt": "2",
        "app.kubernetes.io/managed-by": "chitu-operator",
    }  # the queue is the job's
    assert pod["metadata"]["annotations"] == {"note": "hi"}
    spec = pod["spec"]
    assert (spec["hostname"], spec["subdomain"], spec["restartPolicy"]) == ("cats-worker-1", "cats-workers", "Never")
    assert spec["serviceAccountName"] == "cats-worker"  # the job's own identity
    assert (
        manifests.build_pod(job(worker={**BODY["spec"]["worker"], "serviceAccountName": "mine"}), 0, 0)["spec"][
            "serviceAccountName"
        ]
        == "mine"
    )


def test_pod_env_follows_the_contract():
    env = env_of(manifests.build_pod(job(), rank=1, attempt=2))
    assert {
        k: env[k]
        for k in (
            "CHITU_JOB_NAME",
            "CHITU_JOB_NAMESPACE",
            "CHITU_JOB_UID",
            "CHITU_RESTART_ATTEMPT",
            "MASTER_ADDR",
            "MASTER_PORT",
            "NNODES",
            "NODE_RANK",
            "NPROC_PER_NODE",
            "WORLD_SIZE",
            "CHITU_S3_ENDPOINT",
            "AWS_DEFAULT_REGION",
            "EXTRA",
        )
    } == {
        "CHITU_JOB_NAME": "cats",
        "CHITU_JOB_NAMESPACE": "ns",
        "CHITU_JOB_UID": "0123456789abcdef",
        "CHITU_RESTART_ATTEMPT": "2",
        "MASTER_ADDR": "cats-worker-0.cats-workers.ns.svc",
        "MASTER_PORT": str(rendezvous_port(UID)),
        "NNODES": "2",
        "NODE_RANK": "1",
        "NPROC_PER_NODE": "2",
        "WORLD_SIZE": "4",
        "CHITU_S3_ENDPOINT": "http://s3.local:8333",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "EXTRA": "1",
    }
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_optional_output_settings_add_no_env():
    env = env_of(manifests.build_pod(job(output={"uri": "s3://videos/runs"}), rank=0, attempt=0))
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "CHITU_S3_ENDPOINT", "AWS_DEFAULT_REGION"} & env.keys()


def test_container_command_resources_and_termination_policy():
    container = manifests.build_pod(job(), rank=0, attempt=0)["spec"]["containers"][0]
    assert container["name"] == "worker" and container["command"] == ["chitu-worker"]
    assert container["image"] == "ghcr.io/chitu/worker:0.1.0" and container["imagePullPolicy"] == "IfNotPresent"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["resources"] == {
        "requests": {"cpu": "4", "nvidia.com/gpu": "2"},
        "limits": {"nvidia.com/gpu": "2"},
    }


def test_cpu_only_pods_get_no_gpu_limit():
    resources = manifests.build_pod(
        job(parallelism={"cfg": 2, "gpusPerPod": 0}, worker={"image": "w", "resources": {"limits": {"cpu": "2"}}}), 0, 0
    )
    assert resources["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "2"}}


def test_command_override_for_tests():
    pod = manifests.build_pod(job(worker={"image": "w", "command": ["python", "-c", "pass"]}), 0, 0)
    assert pod["spec"]["containers"][0]["command"] == ["python", "-c", "pass"]


def test_model_volume_is_mounted_read_only():
    pod = manifests.build_pod(job(), rank=0, attempt=0)
    assert pod["spec"]["volumes"][0] == {"name": "model", "persistentVolumeClaim": {"claimName": "models"}}
    mounts = pod["spec"]["containers"][0]["volumeMounts"]
    assert mounts[0] == {"name": "model", "mountPath": "/models", "readOnly": True}
    bare = manifests.build_pod(job(model={"uri": "s3://models/wan"}), rank=0, attempt=0)
    assert "model" not in {v["name"] for v in bare["spec"]["volumes"]}  # only the platform's scratch and /dev/shm


def test_rendezvous_port_is_the_jobs_own():
    ports = {rendezvous_port(uid) for uid in ("0123456789abcdef", "fedcba9876543210", "00000000-0000-0000-0000-1")}
    assert len(ports) == 3 and all(20000 <= port < 30000 for port in ports)
    pod = manifests.build_pod(job(), rank=0, attempt=0)
    assert pod["spec"]["containers"][0]["ports"] == [{"name": "rendezvous", "containerPort": rendezvous_port(UID)}]
    assert manifests.build_service(job())["spec"]["ports"][0]["port"] == rendezvous_port(UID)


def test_scheduling_fields_are_copied_and_omitted_when_empty():
    spec = manifests.build_pod(job(), rank=0, attempt=0)["spec"]
    assert spec["nodeSelector"] == {"gpu": "h100"} and spec["priorityClassName"] == "batch"
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    plain = manifests.build_pod(job(scheduling={}), rank=0, attempt=0)
    assert not {"nodeSelector", "tolerations", "priorityClassName"} & plain["spec"].keys()
    assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]


def test_headless_service_selects_the_gang():
    service = manifests.build_service(job())
    assert service["metadata"]["name"] == "cats-workers"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"chitu.dev/job-name": "cats", "chitu.dev/role": "worker"}


def test_adopted_objects_are_owned_by_the_job():
    pod, service = manifests.build_pod(job(), 0, 0), manifests.build_service(job())
    kopf.adopt([pod, service], owner=kopf.Body(copy.deepcopy(BODY)))
    for obj in (pod, service):
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "chitu.dev/v1alpha1",
                "kind": "GenerationJob",
                "name": "cats",
                "uid": "0123456789abcdef",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_each_job_has_its_own_worker_identity_reaching_only_that_job():
    account, role, binding = manifests.build_worker_identity(job())
    assert [o["metadata"]["name"] for o in (account, role, binding)] == ["cats-worker"] * 3
    assert role["rules"] == [
        {"apiGroups": ["chitu.dev"], "resources": ["generationjobs"], "verbs": ["get"], "resourceNames": ["cats"]},
        {
            "apiGroups": ["chitu.dev"],
            "resources": ["generationjobs/status"],
            "verbs": ["get", "patch"],
            "resourceNames": ["cats"],
        },
    ]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cats-worker"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "cats-worker", "namespace": "ns"}]


def test_only_the_jobs_own_ranks_reach_its_pods():
    policy = manifests.build_network_policy(job())
    ranks = {"matchLabels": {"chitu.dev/job-name": "cats", "chitu.dev/role": "worker"}}
    assert policy["metadata"]["name"] == "cats-workers"
    assert policy["spec"] == {
        "podSelector": ranks,
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": ranks}]}],
    }


def test_cluster_roles_grant_what_the_operator_and_worker_do():
    def verbs(role, resource):
        return {v for rule in role["rules"] if resource in rule["resources"] for v in rule["verbs"]}

    operator, worker = build_operator_cluster_role(), build_worker_cluster_role()
    assert {"create", "delete", "list", "watch"} <= verbs(operator, "pods")
    assert {"patch", "delete"} <= verbs(operator, "generationjobs")  # kopf annotations, TTL
    assert verbs(operator, "clusterroles") == set()  # it binds no ClusterRole: each job's Role is its own
    assert verbs(operator, "roles") == verbs(operator, "networkpolicies") == {"create"}
    assert verbs(worker, "generationjobs") == {"get", "list", "watch"}
    assert verbs(worker, "generationjobs/status") == {"get", "patch"}


def test_pod_view_reads_failure_details():
    pod = {
        "metadata": {
            "name": "cats-worker-1",
            "uid": "u1",
            "creationTimestamp": "2026-01-01T12:00:00Z",
            "labels": {"chitu.dev/rank": "1", "chitu.dev/restart-attempt": "2"},
            "ownerReferences": [{"uid": "job-uid", "controller": True}],
        },
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "worker",
                    "state": {
                        "terminated": {
                            "exitCode": 3,
                            "message": "model not found\n",
                            "finishedAt": "2026-01-01T12:01:00Z",
                        }
                    },
                }
            ],
        },
    }
    view = PodView.from_pod(pod)
    assert (view.rank, view.attempt, view.owner_uid, view.phase, view.exit_code) == (1, 2, "job-uid", "Failed", 3)
    assert view.failure() == "rank 1 (pod cats-worker-1) failed with exit code 3: model not found"
    assert not view.deleting


def test_pod_view_reads_the_worker_containers_exit_not_a_sidecars():
    pod = {
        "metadata": {"name": "cats-worker-0", "labels": {"chitu.dev/rank": "0"}},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "log-shipper", "state": {"terminated": {"exitCode": 0}}},
                {"name": "worker", "state": {"terminated": {"exitCode": 2, "message": "spec.model.uri: not a folder"}}},
            ],
        },
    }
    view = PodView.from_pod(pod)
    assert (view.exit_code, view.termination_message) == (2, "spec.model.uri: not a folder")
    assert view.failed_permanently


def test_pod_view_reads_waiting_and_unschedulable_reasons():
    waiting = {
        "metadata": {"name": "p", "labels": {"chitu.dev/rank": "0"}, "deletionTimestamp": "2026-01-01T12:00:00Z"},
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "worker",
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}},
                }
            ],
        },
    }
    view = PodView.from_pod(waiting)
    assert (view.waiting_reason, view.waiting_message, view.deleting, view.attempt) == (
        "ImagePullBackOff",
        "Back-off pulling image",
        True,
        0,
    )
    unschedulable = {
        "metadata": {"name": "p", "labels": {"chitu.dev/rank": "0"}},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes: Insufficient nvidia.com/gpu",
                }
            ],
        },
    }
    assert PodView.from_pod(unschedulable).waiting_reason == "Unschedulable"
    assert PodView.from_pod({"metadata": {"name": "p", "labels": {"chitu.dev/rank": "x"}}}) is None


def test_long_log_tails_keep_their_end():
    view = PodView("p", "u", None, 0, 0, "Failed", False, None, exit_code=1, termination_message="x" * 5000 + "END")
    assert view.failure().endswith("xEND") and len(view.failure()) < 900
