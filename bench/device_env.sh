# Source on the GPU machine (no internet) from the repository root: installs the carried wheels (.whl/, see
# bench/bench_e2e.py's docstring), unpacks the static ffmpeg, and puts the FA3 shim for diffusers' `_flash_3`
# backend on the path.   set -e is left to the caller.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.whl/ffmpeg.xz'), open('/tmp/ffmpeg', 'wb'))"
chmod +x /tmp/ffmpeg
export IMAGEIO_FFMPEG_EXE=/tmp/ffmpeg
export PYTHONPATH="$PWD:$PWD/bench:/tmp/site:$PWD/.whl/py${PYTHONPATH:+:$PYTHONPATH}"
export CHITU_FA3_SHIM=$(python3 -c "import sys; sys.path.insert(0, 'bench'); from pathlib import Path; from bench_e2e import shim_dir; print(shim_dir(Path('/tmp/chitu-bench-e2e')))")
export PYTHONPATH="$CHITU_FA3_SHIM:$PYTHONPATH"
