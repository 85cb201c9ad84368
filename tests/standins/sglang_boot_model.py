"""How long SGLang's boot phases take, decided by what is already in the sandbox's filesystem.

A model, not a measurement (no GPU here): each phase takes a published figure for gpt-oss-20b on one H100,
times a stated factor (``SANDSERVE_FAKE_SGLANG_TIME_SCALE``, default 0: no waiting at all), and a phase
whose output is already on disk is skipped, as SGLang skips it:

- weights: present in the Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``) -> "Found local HF snapshot for ...; skipping download." and no download;
  absent -> the download's time, then the files are written there (a sparse file of the weights' real size:
  13 GB on `du -b` and in a snapshot's size, a few bytes on disk).
- kernels: FlashInfer's autotune cache under ``$SGLANG_CACHE_DIR`` (default ``~/.cache/sglang``) and
  Triton's cache under ``$TRITON_CACHE_DIR`` present -> autotune reads its cache (seconds); absent -> the
  compile's time, then the caches are written.
- CUDA graphs are captured on every boot (they live in GPU memory, never on disk), and weights are loaded
  from disk on every boot.

The model touches files only inside a sandbox (``DAYTONA_SANDBOX_ID`` set, as the Daytona stand-in and
Daytona itself set it), so a stand-in started on this machine never writes into the user's caches.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

TIME_SCALE_ENV = "SANDSERVE_FAKE_SGLANG_TIME_SCALE"
#: The weights' size on disk (GB): the published checkpoint sizes.
WEIGHTS_GB = {"openai/gpt-oss-20b": 13.0, "openai/gpt-oss-120b": 65.0}
DEFAULT_WEIGHTS_GB = 13.0

#: Published or derived seconds per phase for gpt-oss-20b (13 GB of weights) on one H100, and where each
#: comes from. The cold total matches the guide's "about 5 minutes" from create to the first generation.
PUBLISHED_SECONDS: dict[str, float] = {
    "create": 60.0,
    "start": 10.0,
    "weights": 90.0,
    "load": 8.0,
    "compile": 110.0,
    "compile (cached)": 4.0,
    "graphs": 9.4,
    "warm-up": 5.0,
    "first generation": 1.0,
}
SOURCES: dict[str, str] = {
    "create": "sandbox scheduled and the ~11 GB SGLang image pulled (not published; the guide's boot less "
    "the other phases leaves about a minute)",
    "start": "python, torch and SGLang imported and the CUDA context made (not published: about 10 s)",
    "weights": "13 GB from the Hugging Face hub at ~150 MB/s",
    "load": "SGLang loads a 64 GB model in 36-39 s on an H100 from local NVMe: 13 GB scaled",
    "compile": "the rest of the guide's ~5 minutes: FlashInfer autotune, Triton and torch compile JIT",
    "compile (cached)": "vLLM 3B went from 81 s to 38 s with warm caches, SGLang on 8 GPUs from 695 s to "
    "88 s: with the caches present, what is left is reading them",
    "graphs": "SGLang's own log line in the guide's run: 'Capture cuda graph end. Time elapsed: 9.41 s'",
    "warm-up": "the server's warm-up request and the first /health_generate",
    "first generation": "one short generation through the preview proxy",
}


def time_scale(env: Mapping[str, str] = os.environ) -> float:
    return float(env.get(TIME_SCALE_ENV) or 0)


def cold_seconds() -> float:
    """The whole cold boot in real seconds, as modelled."""
    phases = ("create", "start", "weights", "load", "compile", "graphs", "warm-up", "first generation")
    return sum(PUBLISHED_SECONDS[p] for p in phases)


def warm_seconds() -> float:
    """The whole warm boot in real seconds: no download, cached kernels, the rest as cold."""
    phases = ("create", "start", "load", "compile (cached)", "graphs", "warm-up", "first generation")
    return sum(PUBLISHED_SECONDS[p] for p in phases)


@dataclass
class BootModel:
    model: str
    hub_cache: Path
    sglang_cache: Path
    triton_cache: Path
    in_sandbox: bool
    scale: float

    @classmethod
    def from_environment(cls, model: str, env: Mapping[str, str] = os.environ) -> BootModel:
        home = Path(env.get("HOME") or Path.home())
        hf_home = Path(env.get("HF_HOME") or home / ".cache" / "huggingface")
        return cls(
            model=model,
            hub_cache=Path(env.get("HF_HUB_CACHE") or hf_home / "hub"),
            sglang_cache=Path(env.get("SGLANG_CACHE_DIR") or home / ".cache" / "sglang"),
            triton_cache=Path(env.get("TRITON_CACHE_DIR") or home / ".triton" / "cache"),
            in_sandbox=bool(env.get("DAYTONA_SANDBOX_ID")),
            scale=time_scale(env),
        )

    # --- what is on disk ---

    @property
    def _repo_dir(self) -> Path:
        return self.hub_cache / f"models--{self.model.replace('/', '--')}"

    @property
    def _snapshot_dir(self) -> Path:
        return self._repo_dir / "snapshots" / "main"

    @property
    def _autotune_dir(self) -> Path:
        return self.sglang_cache / "flashinfer" / "autotune" / "0.6.4" / "sm90"

    def weights_present(self) -> bool:
        if Path(self.model).exists():  # a local path: nothing to fetch
            return True
        return self.in_sandbox and (self._snapshot_dir / "config.json").is_file()

    def caches_present(self) -> bool:
        return (
            self.in_sandbox
            and any(self._autotune_dir.glob("*.json"))
            and any(self.triton_cache.glob("*/*.cubin"))
        )

    # --- the phases ---

    def wait(self, phase: str) -> None:
        time.sleep(PUBLISHED_SECONDS[phase] * self.scale)

    def fetch_weights(self, line: Callable[[str], None]) -> None:
        """SGLang's weight lookup: the local snapshot when present, else a download into the cache."""
        if self.in_sandbox and self.weights_present():
            line(f"Found local HF snapshot for {self.model} at {self._snapshot_dir}; skipping download.")
            return
        self.wait("weights")
        if self.in_sandbox:
            self._snapshot_dir.mkdir(parents=True, exist_ok=True)
            (self._snapshot_dir / "config.json").write_text('{"model_type": "stand-in"}\n')
            size = int(WEIGHTS_GB.get(self.model, DEFAULT_WEIGHTS_GB) * 1e9)
            with (self._snapshot_dir / "model-00001-of-00001.safetensors").open("wb") as weights:
                weights.truncate(size)  # sparse: the size without the disk
            (self._repo_dir / "refs").mkdir(exist_ok=True)
            (self._repo_dir / "refs" / "main").write_text("main\n")

    def load_seconds(self) -> float:
        self.wait("load")
        return PUBLISHED_SECONDS["load"]

    def compile_kernels(self, line: Callable[[str], None]) -> None:
        """FlashInfer's autotune (SGLang's model_runner lines): fast from its cache, slow without."""
        cached = self.caches_present()
        cache_file = self._autotune_dir / "0f3a9c2e5b7d1a48.json"
        line(f"Running FlashInfer autotune with cache: {cache_file}")
        self.wait("compile (cached)" if cached else "compile")
        if self.in_sandbox and not cached:
            self._autotune_dir.mkdir(parents=True, exist_ok=True)
            cache_file.write_text("{}\n")
            kernel = self.triton_cache / "3b2f0c"
            kernel.mkdir(parents=True, exist_ok=True)
            (kernel / "fused_moe_kernel.cubin").write_bytes(b"\0" * 1024)
        line("FlashInfer autotune completed.")

    def capture_graphs(self) -> None:
        self.wait("graphs")
