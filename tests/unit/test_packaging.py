"""Packaging: what each extra brings, what each image copies and installs, and what the torch-free parts import.

The extras are read from pyproject.toml (self-references such as ``chitu[engine]`` expanded). The images are
checked from their Dockerfiles (there is no Docker engine here): base image, non-root user, entrypoint, the
sources copied and the extra installed; the wheel that pip would build from exactly the copied sources is built
and its packages listed. One test asks PyPI (pip's resolver, a dry run) what ``pip install .[operator]`` would
install: it needs the network to PyPI, and nothing else.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from chitu_api.operatorconfig import SCRATCH_MOUNTS

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
# What only the engine needs: none of it may reach the operator, the cluster-side CLI or the dev cluster.
ENGINE_ONLY = {
    "torch",
    "diffusers",
    "transformers",
    "accelerate",
    "safetensors",
    "numpy",
    "imageio",
    "imageio-ffmpeg",
    "pillow",
}
DEV_TOOLS = {"pytest", "pytest-timeout", "hypothesis", "ruff", "cel-python"}
TORCH_FREE_ENTRY_MODULES = ("chitu_operator.main", "chitu_devcluster.main")


def requirements(extra: str | None) -> list[Requirement]:
    """The extra's requirements (None: the base dependencies), with chitu[...] self-references expanded."""
    listed = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    found = []
    for line in listed:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == PROJECT["name"]:
            for inner in sorted(requirement.extras):
                found += requirements(inner)
        else:
            found.append(requirement)
    return found


def names(extra: str | None) -> set[str]:
    """Every distribution `pip install .[extra]` asks for directly (base dependencies included)."""
    return {canonicalize_name(r.name) for r in [*requirements(None), *requirements(extra)]}


# --- extras ---------------------------------------------------------------------------------------------------


def test_the_base_is_the_torch_free_contract():
    assert names(None) == {"pydantic", "pyyaml"}


@pytest.mark.parametrize("extra", ["operator", "cli", "devcluster"])
def test_cluster_side_extras_bring_no_engine(extra):
    assert not names(extra) & ENGINE_ONLY


def test_worker_extra_is_the_engine_plus_s3_and_the_api_and_no_operator():
    assert names("engine") <= names("worker")
    assert {"boto3", "kubernetes"} <= names("worker") and "kopf" not in names("worker")
    assert "torch" in names("engine") and "kopf" in names("operator")


def test_dev_extra_holds_every_extra_and_the_tools():
    for extra in set(PROJECT["optional-dependencies"]) - {"dev"}:
        assert names(extra) <= names("dev"), extra
    assert names("dev") >= DEV_TOOLS
    assert not DEV_TOOLS & set().union(*(names(e) for e in set(PROJECT["optional-dependencies"]) - {"dev"}))


def test_each_package_has_one_pin_across_extras():
    pins: dict[str, set[str]] = {}
    for extra in [None, *PROJECT["optional-dependencies"]]:
        for requirement in requirements(extra):
            pins.setdefault(canonicalize_name(requirement.name), set()).add(str(requirement.specifier))
    assert {name: spec for name, spec in pins.items() if len(spec) > 1} == {}
    assert all(spec != {""} for spec in pins.values()), pins  # every dependency is pinned or bounded
    assert pins["kubernetes"] == {"==36.0.3"}  # 37.x makes pip backtrack for minutes against botocore


@pytest.mark.network
def test_pip_resolves_the_operator_extra_without_torch(tmp_path):
    """What PyPI would install for `.[operator]` (transitive dependencies too), by pip's own resolver."""
    report = tmp_path / "report.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--no-build-isolation",
            "--report",
            str(report),
            f"{ROOT}[operator]",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    installed = {canonicalize_name(item["metadata"]["name"]) for item in json.loads(report.read_text())["install"]}
    assert {"kopf", "kubernetes", "pydantic", "chitu"} <= installed
    assert not installed & ENGINE_ONLY, installed & ENGINE_ONLY
    assert not {name for name in installed if name.startswith(("nvidia-", "triton"))}


@pytest.mark.parametrize("module", TORCH_FREE_ENTRY_MODULES)
def test_operator_and_dev_cluster_import_without_the_engine_stack(module):
    """With torch and diffusers made unimportable, the entry module still imports (what a torch-free install sees)."""
    blocked = "import sys\nfor name in ('torch', 'diffusers', 'transformers'):\n    sys.modules[name] = None\n"
    subprocess.run([sys.executable, "-c", f"{blocked}import {module}"], check=True, timeout=120)


# --- images ---------------------------------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined and comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")),
    )
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in text.splitlines() if line.strip()
    ]


def arguments(dockerfile: Path, instruction: str) -> list[str]:
    return [args for name, args in instructions(dockerfile) if name == instruction]


def copied_sources(dockerfile: Path) -> set[str]:
    """What COPY takes from the build context (the repo root)."""
    return {source.rstrip("/") for args in arguments(dockerfile, "COPY") for source in shlex.split(args)[:-1]}


def installed_extras(dockerfile: Path) -> set[str]:
    """The extras of `pip install '.[a,b]'` in RUN instructions."""
    extras = set()
    for args in arguments(dockerfile, "RUN"):
        for match in re.finditer(r"pip install\s+'?\.\[([^\]]*)\]", args):
            extras |= {extra.strip() for extra in match.group(1).split(",")}
    return extras


def build_wheel_from(sources: set[str], workdir: Path) -> set[str]:
    """The top-level packages of the wheel pip builds from exactly these sources (as `pip install .` would)."""
    context = workdir / "context"
    for source in sources:
        target = context / source
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / source, target)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(workdir / "wheels"),
            str(context),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (workdir / "wheels").glob("chitu-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return {name.split("/")[0] for name in archive.namelist() if name.endswith(".py")}


IMAGES = {
    # Dockerfile -> (base image, entrypoint, extra, packages in the image)
    "operator/Dockerfile": (
        "python:3.11-slim",
        ["chitu-operator"],
        "operator",
        {"chitu_api", "chitu_diffusion", "chitu_operator"},
    ),
    "worker/Dockerfile": (
        "pytorch/pytorch:",
        ["chitu-worker"],
        "worker",
        {"chitu_api", "chitu_diffusion", "chitu_worker"},
    ),
}


@pytest.mark.parametrize("path", sorted(IMAGES))
def test_image_structure(path):
    dockerfile = ROOT / path
    base, entrypoint, extra, _ = IMAGES[path]
    (image,) = arguments(dockerfile, "FROM")
    if image.startswith("${"):  # FROM ${BASE_IMAGE}: the ARG's default
        default = next(args for args in arguments(dockerfile, "ARG") if args.startswith(f"{image[2:-1]}="))
        image = default.split("=", 1)[1]
    assert image.startswith(base)
    users = arguments(dockerfile, "USER")
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    assert json.loads(arguments(dockerfile, "ENTRYPOINT")[-1]) == entrypoint
    assert installed_extras(dockerfile) == {extra}
    assert not {s for s in copied_sources(dockerfile) if s.startswith(("tests", "devcluster", ".venv", "bench"))}
    assert not [args for args in arguments(dockerfile, "RUN") if re.search(r"\b(pytest|ruff|\[dev\])", args)]


def test_worker_image_caches_live_on_the_pods_writable_scratch():
    """The pod's root is read-only (restricted template): the model copies and the compile cache (under
    XDG_CACHE_HOME when the model folder is read-only: compile_cache.user_cache) must be on a scratch mount."""
    env = dict(
        token.split("=", 1) for args in arguments(ROOT / "worker/Dockerfile", "ENV") for token in shlex.split(args)
    )
    for name in ("CHITU_MODEL_CACHE", "XDG_CACHE_HOME"):
        assert any(Path(env[name]).is_relative_to(mount) for mount in SCRATCH_MOUNTS), (name, env.get(name))


@pytest.mark.parametrize("path", sorted(IMAGES))
def test_image_sources_build_a_wheel_of_only_its_own_parts(path, tmp_path):
    """The worker image holds no operator or dev cluster code; the operator image no worker or dev cluster."""
    packages = IMAGES[path][3]
    assert build_wheel_from(copied_sources(ROOT / path), tmp_path) == packages


def test_worker_image_runs_what_the_benchmarks_measured():
    """The README's GPU numbers come from bench/results: the image pins the same torch (and CUDA) and FA3 build,
    and pyproject pins that torch, so the tests run the dynamo and inductor that ship."""
    dockerfile = ROOT / "worker" / "Dockerfile"
    args = dict(arg.split("=", 1) for arg in arguments(dockerfile, "ARG") if "=" in arg)
    versions = json.loads((ROOT / "bench" / "results" / "engine_h200.json").read_text())["versions"]
    assert args["BASE_IMAGE"] == f"pytorch/pytorch:{versions['torch']}-cuda{versions['cuda']}-cudnn9-runtime"
    torch_pin = {str(r.specifier) for r in requirements("engine") if canonicalize_name(r.name) == "torch"}
    assert torch_pin == {f"=={versions['torch']}"}
    recorded = re.search(r"`fa3-fwd` (\S+?)[.,]? ", (ROOT / "bench" / "results" / "README.md").read_text())
    assert recorded and args["FA3_FWD_VERSION"] == recorded.group(1)
    assert any("fa3-fwd==${FA3_FWD_VERSION}" in run for run in arguments(dockerfile, "RUN"))
