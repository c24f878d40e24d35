"""What a platform team gives a real cluster, given to the dev cluster the same way.

- The chart (charts/chitu) installed with helm, built from its Go module by scripts/build-helm.sh: the CRD, the
  operator's RBAC and Deployment, and its configuration, whose platform defaults point at the dev S3 (output
  bucket, endpoint, region, credentials Secret name). Release `chitu` in `chitu-system`, so the operator's
  service account is `chitu-operator` there, as identities.py names it.
- The credentials Secret `s3-creds` in `default`, as the defaults name it.
- A tiny random Wan2.1 model at DEV_MODEL_URI, where the examples' `model.uri` points: uploaded to the dev S3,
  and copied into this machine's model cache (the worker's layout), so `chitu run` finds it without S3.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import yaml

from .paths import REPO_ROOT, VENV_BIN, StateDir
from .s3 import S3Credentials

log = logging.getLogger(__name__)

CHART = REPO_ROOT / "charts" / "chitu"
HELM_BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-helm.sh"
RELEASE, RELEASE_NAMESPACE = "chitu", "chitu-system"
CONFIG_MAP = f"{RELEASE}-operator-config"  # the chart's fullname is the release name when it contains "chitu"
CONFIG_ENV = "CHITU_OPERATOR_CONFIG"  # how the chart's Deployment hands the configuration to the operator
CREDENTIALS_SECRET = "s3-creds"
OUTPUT_URI = "s3://chitu-dev/runs"
DEV_MODEL_URI = "s3://models/wan2.1-t2v-1.3b"


def ensure_helm() -> Path:
    """The cached helm binary, building it first when missing (minutes, once; the script is idempotent)."""
    done = subprocess.run(["bash", str(HELM_BUILD_SCRIPT)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building helm failed:\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def chart_values(s3: S3Credentials, *, liveness_port: int, operator_replicas: int) -> dict:
    """The dev cluster's values: defaults for its own S3; the operator's liveness on a port free here (every
    pod shares the loopback interface); no operator pod when the caller runs the operator as a process."""
    return {
        "replicas": operator_replicas,
        "livenessPort": liveness_port,
        "logFormat": "plain",
        "jobDefaults": {
            "output": {
                "uri": OUTPUT_URI,
                "endpoint": s3.endpoint,
                "region": s3.region,
                "credentialsSecretRef": {"name": CREDENTIALS_SECRET},
            }
        },
    }


def install_chart(state: StateDir, values: dict, timeout_seconds: int = 120) -> None:
    """`helm upgrade --install` of the chart with `values` (the same command on every `up`)."""
    helm = ensure_helm()
    values_file = state.root / "chart-values.yaml"
    values_file.write_text(yaml.safe_dump(values, sort_keys=False))
    command = [
        str(helm),
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--values",
        str(values_file),
        "--wait",
        "--timeout",
        f"{timeout_seconds}s",
    ]
    env = {
        "KUBECONFIG": str(state.kubeconfig),
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "HOME": str(state.root),
    }  # helm's cache and config stay in the state folder
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"helm install of {CHART} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    log.info("chart installed: release %s in %s", RELEASE, RELEASE_NAMESPACE)


def credentials_secret(s3: S3Credentials) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CREDENTIALS_SECRET, "namespace": "default"},
        "type": "Opaque",
        "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key_id, "AWS_SECRET_ACCESS_KEY": s3.secret_access_key},
    }


def preload_model(s3: S3Credentials, folder: Path, uri: str = DEV_MODEL_URI) -> int:
    """Upload a model folder to `uri` on the dev S3 and seed this machine's model cache with it; file count."""
    from chitu_worker.modelcache import seed_cache
    from chitu_worker.storage import S3Store, split_uri

    client = s3.client()
    bucket, prefix = split_uri(uri)
    if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=bucket)
    store = S3Store(client)
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    for path in files:
        store.upload_file(path, f"s3://{bucket}/{prefix}/{path.relative_to(folder).as_posix()}")
    seed_cache(uri, folder)
    log.info("tiny model at %s (%d files) and in the local model cache", uri, len(files))
    return len(files)


def make_tiny_model(state: StateDir) -> Path:
    """The demo's tiny random Wan2.1 model (`chitu make-tiny-model`), built once per state folder."""
    folder = state.root / "models" / "tiny-wan"
    if not (folder / "model_index.json").exists():
        subprocess.run([str(VENV_BIN / "chitu"), "make-tiny-model", str(folder)], check=True, capture_output=True)
    return folder
