"""End-to-end benchmark: load, text encode, denoise, decode and mp4 encode of one video, per stage, for chitu and
for the peers a user would otherwise run, every mode in a fresh process of the same call.

Every number comes from RANDOM weights: the Wan2.1-T2V-1.3B transformer and Wan2.1 VAE architectures with seeded
random weights and a tiny stand-in text encoder (UMT5-XXL costs load time, not run time: see
models/random_init.py), written once as a diffusers folder that every mode loads. Speed does not depend on the
weights; caching strategies' reuse and FP8's error do, so their quality numbers are not statements about real
videos.

    python bench/bench_e2e.py --out bench/results/e2e_h200.json                 # one GPU, every one-GPU mode
    python bench/bench_e2e.py --gpus 2 --out bench/results/e2e_h200x2.json      # every 2-GPU layout (torchrun)
    python bench/bench_e2e.py --arch tiny --steps 2 --frames 5 --height 64 --width 64 --out /tmp/e2e.json  # CPU smoke
    python bench/bench_e2e.py --modes stock,cachedit --extend e2e_h200.json --out ...  # a next call, same machine

One-GPU modes: `stock` (WanPipeline's own loop, eager, diffusers' default attention: cuDNN SDPA on Hopper);
`tuned` (diffusers tuned in two lines: `set_attention_backend("_flash_3")` + `compile_repeated_blocks(
fullgraph=True)`); `cachedit` (cache-dit 1.5.3, no cache, its cuDNN attention backend, regional compile);
`chitu-cold` (`load_engine(...).generate(...)` with defaults, empty compile cache); `chitu` (the same in a fresh
process with the cache that chitu-cold left: what a new pod sees; it makes two videos, the second is the steady
state); `chitu-fp8` (engine.precision=fp8); `chitu-pab` and `chitu-teacache` (PAB / TeaCache at cache_ratio 0.5;
two videos as `chitu`, so the second runs on every compiled variant their decisions need); `chitu-fp8-pab` (FP8 and
PAB 0.5 together, the one-GPU half of the moonshot). Two-GPU modes (torchrun, 2 ranks): `chitu-cfg2`,
`chitu-cfg2-split-decode` (VAE decode split across both ranks), `chitu-ulysses2`, `chitu-ring2`,
`cachedit-ulysses2`, `cachedit-ulysses2-async`, `cachedit-ring2`, `chitu-moonshot2` (issue 13's moonshot: FP8,
CFG parallel, PAB 0.5 and the split decode; PAB because its reuse follows a schedule, where TeaCache's follows
the weights, which are random here). Peers get `--warmup-steps`
untimed steps first (their compile happens there; reported as warmup_s); chitu's first video is timed as a user
gets it.

Each mode saves its final latents and frames; the driver reports rel-L2 of the latents and PSNR of the frames
against `--reference` (the tuned diffusers mode by default) and FP8 / cache modes against `chitu` too; cache modes
also report their reuse fraction and their steady-state loop's speed-up over `chitu`'s (`speedup_vs_chitu`).

On the GPU machine (no internet), carry the wheels the image lacks (`.whl/`, git-ignored): diffusers 0.42.1,
pydantic 2.14.4 + pydantic-core 2.50.5 + annotated-types + typing-inspection, cache-dit 1.5.3, fa3-fwd 0.0.3,
and imageio-ffmpeg's Python files (`.whl/py/imageio_ffmpeg`) with a static ffmpeg 4.2.2 compressed
(`.whl/ffmpeg.xz`, from the imageio-ffmpeg 0.5.1 wheel: the 0.8.1 wheel is 68 MB, over what a call can carry);
`bench/device_env.sh` installs them. The tree travels without .git: pass CHITU_COMMIT.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ONE_GPU = [
    "stock",
    "tuned",
    "cachedit",
    "chitu-cold",
    "chitu",
    "chitu-fp8",
    "chitu-pab",
    "chitu-teacache",
    "chitu-fp8-pab",
]
TWO_GPU = [
    "chitu-cfg2",
    "chitu-cfg2-split-decode",
    "chitu-ulysses2",
    "chitu-ring2",
    "cachedit-ulysses2",
    "cachedit-ulysses2-async",
    "cachedit-ring2",
    "chitu-moonshot2",
]
PROMPT, NEGATIVE = "A cat walking on grass", "blurry, low quality"
# engine overrides per chitu mode (on top of the defaults, which are what `chitu generate` runs)
CHITU_OVERRIDES = {
    "chitu-cold": [],
    "chitu": [],
    "chitu-fp8": ["infer.diffusion.precision=fp8"],
    "chitu-pab": [],
    "chitu-teacache": [],
    "chitu-cfg2": [],
    "chitu-cfg2-split-decode": ["infer.diffusion.parallel_decode=true"],
    "chitu-ulysses2": ["infer.diffusion.cp_size=2"],
    "chitu-ring2": ["infer.diffusion.cp_size=2", "infer.diffusion.up_limit=1"],
    "chitu-fp8-pab": ["infer.diffusion.precision=fp8"],
    "chitu-moonshot2": ["infer.diffusion.precision=fp8", "infer.diffusion.parallel_decode=true"],
}
# FlexCache strategy and cache_ratio per chitu mode (the others run without a cache)
CHITU_CACHES = {
    "chitu-pab": ("pab", 0.5),
    "chitu-teacache": ("teacache", 0.5),
    "chitu-fp8-pab": ("pab", 0.5),
    "chitu-moonshot2": ("pab", 0.5),
}
CACHE_DIT_LAYOUTS = {
    "cachedit": {},
    "cachedit-ulysses2": {"ulysses_size": 2},
    "cachedit-ulysses2-async": {"ulysses_size": 2, "ulysses_async": True},
    "cachedit-ring2": {"ring_size": 2},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gpus", type=int, choices=(1, 2), default=1)
    parser.add_argument("--modes", help="comma-separated subset (default: every mode for --gpus)")
    parser.add_argument("--arch", default="wan2.1-t2v-1.3b", choices=("wan2.1-t2v-1.3b", "tiny"))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps the peers run first (compile)")
    parser.add_argument("--reference", default="tuned", help="the mode rel-L2 and PSNR are measured against")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "chitu-bench-e2e")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one mode in this process
    parser.add_argument("--timeout", type=int, default=900, help="seconds one mode may take")
    parser.add_argument(
        "--extend",
        type=Path,
        help="a JSON this driver wrote in an earlier call on the same machine (same GPUs, shapes and --work-dir, "
        "whose files it names): its modes are kept and compared with this call's, as one run",
    )
    return parser.parse_args()


# ---------------------------------------------------------------------------------------------------- driver


def main() -> None:
    args = parse_args()
    if args.worker:
        from bench_e2e_worker import run_worker  # torch and the peers are imported in the worker only

        run_worker(args)
        return
    modes = args.modes.split(",") if args.modes else (ONE_GPU if args.gpus == 1 else TWO_GPU)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    model_dir = make_model(args)
    results: dict = {
        "benchmark": "wan2.1 t2v end to end, one video per mode, fresh process per mode",
        "weights": f"random (seed 0), {args.arch}; tiny text encoder",
        "gpus": args.gpus,
        "gpu_uuids": gpu_uuids(),
        "shapes": shapes(args),
        "modes": {},
        "failed": {},
    }
    if args.extend:
        results = extended(json.loads(args.extend.read_text()), results)
    for mode in modes:
        started = time.perf_counter()
        try:
            results["modes"][mode] = run_mode(args, mode, model_dir)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError) as err:
            results["failed"][mode] = f"{type(err).__name__}: {err}"
        print(f"{mode}: {time.perf_counter() - started:.1f} s wall; {summary_line(results, mode)}", flush=True)
        compare(results, args)
        summarise(results)
        write(results, args.out)
    print_table(results)


def gpu_uuids() -> list[str]:
    """The cards this call runs on (a later call that extends it must find the same)."""
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return []
    return listing.stdout.split()


def extended(previous: dict, fresh: dict) -> dict:
    """`previous` with this call's header checked against it: the same cards and shapes, or it is another run."""
    for key in ("gpus", "gpu_uuids", "shapes", "weights"):
        if previous.get(key) != fresh[key]:
            raise SystemExit(f"--extend: {key} differ ({previous.get(key)!r} there, {fresh[key]!r} here)")
    for entry in previous["modes"].values():
        for key in ("latents_file", "frames_file"):
            if not Path(entry[key]).is_file():
                raise SystemExit(f"--extend: {entry[key]} is gone: the machine is not the one that wrote it")
    previous["calls"] = previous.get("calls", 1) + 1
    return previous


def make_model(args: argparse.Namespace) -> Path:
    """The random model folder every mode loads (written once; kept in --work-dir across calls)."""
    model_dir = args.work_dir / f"model-{args.arch}"
    if not (model_dir / "model_index.json").is_file():
        # Random init of 1.3 B parameters is minutes on a CPU and a second on a GPU; saved in fp32 as released.
        code = (
            "import torch; from chitu_diffusion.models.random_init import build_random_pipeline; "
            f"device = 'cuda' if torch.cuda.is_available() else 'cpu'; "
            f"build_random_pipeline({args.arch!r}, device=device).save_pretrained({str(model_dir)!r})"
        )
        subprocess.run([sys.executable, "-c", code], check=True)
    return model_dir


def run_mode(args: argparse.Namespace, mode: str, model_dir: Path) -> dict:
    """One mode in a fresh process (torchrun for 2 GPUs); its JSON comes back through a file."""
    result_path = args.work_dir / f"{mode}.json"
    result_path.unlink(missing_ok=True)
    forwarded = [
        f"--{name.replace('_', '-')}={getattr(args, name)}"
        for name in ("arch", "steps", "frames", "height", "width", "guidance_scale", "warmup_steps", "work_dir")
    ]
    script = [str(Path(__file__).resolve()), "--out", str(result_path), "--worker", mode, *forwarded]
    launcher = (
        [sys.executable] if args.gpus == 1 else [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(shim_dir(args.work_dir)), os.environ.get("PYTHONPATH")])),
    }
    if mode == "chitu-cold":  # chitu modes keep their compile cache where the engine is told (chitu_cache_dir)
        shutil.rmtree(chitu_cache_dir(args.work_dir), ignore_errors=True)
    elif not mode.startswith("chitu"):  # each peer compiles from scratch, in its untimed warm-up
        env["TORCHINDUCTOR_CACHE_DIR"] = str(args.work_dir / f"compile-cache-{mode}")
        shutil.rmtree(env["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
    with open(args.work_dir / f"{mode}.log", "w") as log:  # the worker's stderr, for a failed mode's reason
        subprocess.run([*launcher, *script], check=True, env=env, timeout=args.timeout, stderr=log)
    return json.loads(result_path.read_text())


def chitu_cache_dir(work_dir: Path) -> Path:
    return work_dir / "compile-cache-chitu"


def shim_dir(work_dir: Path) -> Path:
    """diffusers' `_flash_3` backend imports `flash_attn_interface` and wants a distribution named flash_attn_3;
    fa3-fwd ships the same functions as `fa3_fwd_interface`, so a re-export and a stub dist-info make it usable."""
    folder = work_dir / "fa3-shim"
    (folder / "flash_attn_3").mkdir(parents=True, exist_ok=True)
    (folder / "flash_attn_3" / "__init__.py").write_text("")
    (folder / "flash_attn_interface.py").write_text("from fa3_fwd_interface import *  # noqa: F403\n")
    info = folder / "flash_attn_3-3.0.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flash_attn_3\nVersion: 3.0.0\n")
    (info / "top_level.txt").write_text("flash_attn_3\nflash_attn_interface\n")
    return folder


def shapes(args: argparse.Namespace) -> dict:
    latent_frames = (args.frames - 1) // 4 + 1
    return {
        "frames": args.frames,
        "height": args.height,
        "width": args.width,
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "forwards": 2 * args.steps,
        "tokens": latent_frames * (args.height // 16) * (args.width // 16),
    }


def compare(results: dict, args: argparse.Namespace) -> None:
    """rel-L2 (final latents) and PSNR (decoded frames) of every mode against the reference mode and chitu."""
    import torch
    from benchlib import rel_l2

    modes = results["modes"]
    for against in dict.fromkeys((args.reference, "chitu")):
        if against not in modes:
            continue
        ref_latents = torch.load(modes[against]["latents_file"])
        ref_frames = np.load(modes[against]["frames_file"])
        for mode, entry in modes.items():
            if mode == against:
                continue
            entry[f"rel_l2_vs_{against}"] = rel_l2(torch.load(entry["latents_file"]), ref_latents)
            entry[f"psnr_db_vs_{against}"] = psnr(np.load(entry["frames_file"]), ref_frames)
            if "loop_s" in entry and "loop_s" in modes[against]:
                entry[f"loop_time_vs_{against}"] = entry["loop_s"] / modes[against]["loop_s"]
                entry[f"speedup_vs_{against}"] = modes[against]["loop_s"] / entry["loop_s"]


def summarise(results: dict) -> None:
    """The headline per mode: loop seconds, speed-up and distance vs chitu, a cache's reuse fraction."""
    keys = ("loop_s", "speedup_vs_chitu", "rel_l2_vs_chitu", "psnr_db_vs_chitu")
    results["summary"] = {
        mode: {
            **{key: entry[key] for key in keys if key in entry},
            **({"reuse_fraction": entry["cache"]["reuse_fraction"]} if entry.get("cache") else {}),
        }
        for mode, entry in results["modes"].items()
    }


def psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((frames.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def summary_line(results: dict, mode: str) -> str:
    if mode in results["failed"]:
        return "FAILED " + results["failed"][mode][:200]
    entry = results["modes"][mode]
    stages = " ".join(f"{k} {v:.2f}" for k, v in entry["stages_s"].items())
    return f"loop {entry['loop_s']:.2f} s | {stages}"


def print_table(results: dict) -> None:
    print(
        f"{'mode':26} {'loop s':>8} {'first video s':>14} {'load s':>7} {'rel-L2 ref':>10} {'PSNR ref':>9} "
        f"{'reuse':>6} {'x chitu':>8} {'rel-L2 chitu':>12}"
    )
    nan = float("nan")
    for mode, entry in results["modes"].items():
        ref = next((k for k in entry if k.startswith("rel_l2_vs_")), None)
        psnr_key = ref.replace("rel_l2", "psnr_db") if ref else None
        rel, db = (entry.get(ref, nan), entry.get(psnr_key, nan)) if ref else (nan, nan)
        reuse = (entry.get("cache") or {}).get("reuse_fraction", nan)
        print(
            f"{mode:26} {entry['loop_s']:8.2f} {entry['stages_s'].get('total', nan):14.2f} "
            f"{entry['stages_s'].get('load', nan):7.2f} {rel:10.4f} {db:9.2f} {reuse:6.3f} "
            f"{entry.get('speedup_vs_chitu', nan):8.3f} {entry.get('rel_l2_vs_chitu', nan):12.4f}"
        )
    for mode, reason in results["failed"].items():
        print(f"{mode:26} FAILED {reason[:300]}")


def write(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
