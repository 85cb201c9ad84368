"""How much of a GPU SGLang gives to weights and KV cache (``mem_fraction_static``), as its own server
arguments decide it (sglang 0.5.12.post1, ``server_args.py``: ``_handle_gpu_memory_settings``).

The rest of the GPU is kept for activations and CUDA graphs: 512 MiB of constant metadata, 1.5 MiB per token
of a prefill chunk, 2 MiB per CUDA-graph batch size, 1 GiB per 8 tensor-parallel ranks, 8 MiB per
piecewise-graph capture size; at least 10 GiB on a GPU of more than 60 GiB. The chunk and graph sizes
default by the GPU's memory, as SGLang picks them.
"""

from __future__ import annotations

from collections.abc import Sequence

MIB = 2**20


def flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in ``args`` (``--flag V`` or ``--flag=V``; the last one wins)."""
    value = None
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def static_memory_bytes(gpu_mib: int, tp_size: int, extra_args: Sequence[str]) -> int:
    """Bytes of one GPU that SGLang gives to weights and KV cache together."""
    return int(gpu_mib * static_fraction(gpu_mib, tp_size, extra_args) * MIB)


def static_fraction(gpu_mib: int, tp_size: int, extra_args: Sequence[str]) -> float:
    given = flag_value(extra_args, "--mem-fraction-static")
    if given is not None:
        return float(given)
    chunk, graph_bs = _defaults_for(gpu_mib, tp_size)
    chunk = int(flag_value(extra_args, "--chunked-prefill-size") or chunk)
    graph_bs = int(flag_value(extra_args, "--cuda-graph-max-bs") or graph_bs)
    reserved = 512 + max(chunk, 2048) * 1.5 + graph_bs * 2 + tp_size / 8 * 1024
    reserved += len(_piecewise_capture_sizes(chunk)) * 8
    if gpu_mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    return round((gpu_mib - reserved) / gpu_mib, 3)


def _defaults_for(gpu_mib: int, tp_size: int) -> tuple[int, int]:
    """SGLang's chunked_prefill_size and cuda_graph_max_bs for a GPU of this size."""
    if gpu_mib < 20 * 1024:
        return 2048, 8
    if gpu_mib < 35 * 1024:
        return 2048, 24 if tp_size < 4 else 80
    if gpu_mib < 60 * 1024:
        return 4096, 32 if tp_size < 4 else 160
    if gpu_mib < 160 * 1024:
        return 8192, 256 if tp_size < 4 else 512
    return 16384, 512


def _piecewise_capture_sizes(max_tokens: int) -> list[int]:
    sizes = [
        *range(4, 33, 4),
        *range(48, 257, 16),
        *range(288, 513, 32),
        *range(576, 1025, 64),
        *range(1280, 4097, 256),
        *range(4608, max_tokens + 1, 512),
    ]
    return [size for size in sizes if size <= max_tokens]
