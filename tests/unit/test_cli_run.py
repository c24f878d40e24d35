"""`chitu run examples/<file> --output DIR`: the example as written, on this machine, with no cluster and no S3.

The example's model.uri is an s3:// URI; the model is in this machine's model cache (where the dev cluster
pre-loads it, chitu_worker.modelcache.seed_cache), so nothing is fetched. The environment holds no kubeconfig,
no S3 endpoint and no credentials: any attempt to reach either would fail the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from chitu_worker.modelcache import seed_cache

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "single-prompt.yaml"


def test_an_example_runs_here_without_cluster_or_s3(tiny_model_dir, tmp_path):
    cache = tmp_path / "model-cache"
    seed_cache(yaml.safe_load(EXAMPLE.read_text())["spec"]["model"]["uri"], tiny_model_dir, cache)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CHITU_MODEL_CACHE": str(cache),
        "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
    }
    out = tmp_path / "out" / "x"
    done = subprocess.run(
        [sys.executable, "-m", "chitu_cli", "run", str(EXAMPLE), "--output", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (out / "prompt-0000").iterdir()) == ["metrics.json", "video.mp4"]
    assert (out / "prompt-0000" / "video.mp4").read_bytes()[4:8] == b"ftyp"
    assert (
        json.loads((out / "prompt-0000" / "metrics.json").read_text())["params"]["prompt"] == "A cat walking on grass"
    )
