"""What SGLang finds on its machine before it loads anything, for the stand-in started as
``python -m sglang.launch_server`` inside a Daytona stand-in sandbox (which says what the machine has:
``DAYTONA_STANDIN_GPU_TYPE``, ``_GPU_COUNT``, ``_IMAGE``; elsewhere nothing is checked).

Three ways the real one dies at once, in torch's and SGLang's own words:
- a CUDA build of torch (an image tagged ``-cuXXX``) on an AMD GPU: "Found no NVIDIA driver on your system";
- a ROCm build (``-rocmXXX``) on an NVIDIA GPU: "No HIP GPUs are available";
- more ranks than GPUs (``--tp-size`` x ``--dp-size``): the scheduler of a rank past the last GPU hits
  "invalid device ordinal".
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Mapping, Sequence

_TORCH_INIT = (
    '  File "/usr/local/lib/python3.12/dist-packages/torch/cuda/__init__.py", line 372, in _lazy_init\n'
    "    torch._C._cuda_init()\n"
)


def ranks(argv: Sequence[str]) -> int:
    """GPUs the server uses: tensor-parallel size times data-parallel size (SGLang's flags, aliases)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--tensor-parallel-size", "--tp-size", "--tp", dest="tp", type=int, default=1)
    parser.add_argument("--data-parallel-size", "--dp-size", "--dp", dest="dp", type=int, default=1)
    known, _ = parser.parse_known_args(list(argv))
    return known.tp * known.dp


def refusal(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    """The log the real server prints as it dies on this machine, or None when it would start."""
    gpu = env.get("DAYTONA_STANDIN_GPU_TYPE")
    if not gpu:
        return None
    amd = gpu.upper().startswith("MI")
    image = env.get("DAYTONA_STANDIN_IMAGE", "")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    if amd and re.search(r"-cu\d+", image):
        return _traceback(
            "RuntimeError: Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU "
            "and installed a driver from http://www.nvidia.com/Download/index.aspx"
        )
    if not amd and "-rocm" in image:
        return _traceback("RuntimeError: No HIP GPUs are available")
    count = int(env.get("DAYTONA_STANDIN_GPU_COUNT", "1"))
    wanted = ranks(argv)
    if wanted > count:
        api = "HIP" if amd else "CUDA"
        return (
            f"[{stamp} TP{count}] Scheduler hit an exception: Traceback (most recent call last):\n"
            f"torch.AcceleratorError: {api} error: invalid device ordinal\n"
            f"[{stamp}] Received sigquit from a child process. It usually means the child failed.\n"
        )
    return None


def _traceback(last_line: str) -> str:
    return f"Traceback (most recent call last):\n{_TORCH_INIT}{last_line}\n"
