"""What a model takes in GPU memory, for the fit check: a preset carries it; any other Hugging Face model is
read from the Hub (its files' sizes from the API, its layer shapes from ``config.json``) and kept in the
cache directory, so a second plan of the same model asks nothing. ``HF_ENDPOINT`` points it at a mirror, as
it points every Hugging Face client.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sandserve.paths import cache_dir
from sandserve.presets import Footprint, find_preset
from sandserve.spec import ServeSpec

CACHE_FILE = "model-footprints.json"
#: Checkpoint files that are the weights (the first kind a repo has is counted, never both).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def footprint_of(spec: ServeSpec) -> tuple[Footprint | None, str]:
    """The model's footprint and where it came from; None and the reason when it cannot be known."""
    preset = find_preset(spec.preset) if spec.preset else None
    if preset is not None and preset.footprint is not None and preset.model == spec.model:
        return preset.footprint, f"the {preset.name} preset"
    if spec.model.count("/") != 1 or spec.model.startswith((".", "/", "~")):
        return None, f"{spec.model} is not a Hugging Face id"
    cache = cache_dir() / CACHE_FILE
    known = _read(cache)
    if spec.model in known:
        return _footprint(known[spec.model]), "the Hugging Face API (cached)"
    try:
        found = _from_the_hub(spec.model, spec.hf_token)
    except Exception as exc:  # unreachable, gated, no such repo: the preflight says which; this is advice
        return None, f"could not read its size from Hugging Face ({type(exc).__name__})"
    if found["weights_bytes"] <= 0:
        return None, f"{spec.model} lists no weight files on Hugging Face"
    _write(cache, {**known, spec.model: found})
    return _footprint(found), "the Hugging Face API"


def _from_the_hub(model: str, token: str | None) -> dict[str, Any]:
    from huggingface_hub import HfApi, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    endpoint = os.environ.get("HF_ENDPOINT") or None
    info = HfApi(endpoint=endpoint).model_info(model, files_metadata=True, token=token or False)
    sizes: dict[str, int] = {}
    for sibling in info.siblings or []:
        for suffix in WEIGHT_SUFFIXES:
            if sibling.rfilename.endswith(suffix) and sibling.size:
                sizes[suffix] = sizes.get(suffix, 0) + sibling.size
    weights = next((sizes[suffix] for suffix in WEIGHT_SUFFIXES if suffix in sizes), 0)
    # config.json read directly: hf_hub_download would write it into the user's Hugging Face cache.
    url = hf_hub_url(model, "config.json", endpoint=endpoint)
    response = get_session().get(url, headers=build_hf_headers(token=token or False), timeout=30)
    hf_raise_for_status(response)
    kv, context = _shapes(response.json())
    return {"weights_bytes": weights, "kv_bytes_per_token": kv, "context_tokens": context}


def _shapes(config: dict[str, Any]) -> tuple[int | None, int | None]:
    """K and V bytes per token (16-bit, every layer) and the context window, from a transformers config (a
    multimodal one keeps its language model's under ``text_config``)."""
    text = config.get("text_config") or config
    layers = text.get("num_hidden_layers")
    heads = text.get("num_attention_heads")
    kv_heads = text.get("num_key_value_heads") or heads
    hidden = text.get("hidden_size")
    head_dim = text.get("head_dim") or (hidden // heads if isinstance(hidden, int) and heads else None)
    context = text.get("max_position_embeddings")
    if not (isinstance(layers, int) and isinstance(kv_heads, int) and isinstance(head_dim, int)):
        return None, context if isinstance(context, int) else None
    return layers * kv_heads * head_dim * 2 * 2, context if isinstance(context, int) else None


def _footprint(data: dict[str, Any]) -> Footprint:
    return Footprint(int(data["weights_bytes"]), data.get("kv_bytes_per_token"), data.get("context_tokens"))


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict[str, Any]) -> None:
    """Written whole and renamed into place: a reader never sees half a file."""
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        partial.write_text(json.dumps(data, indent=1, sort_keys=True))
        partial.replace(path)
    except OSError:
        partial.unlink(missing_ok=True)  # a cache that cannot be written is asked again next time
