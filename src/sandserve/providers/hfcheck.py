"""Before a GPU is paid for: can the server download the model at all?

`huggingface_hub`'s own auth check (``GET {endpoint}/api/models/{repo}/auth-check`` with the token the server
will get) tells a gated repo without access from a missing one. Hugging Face unreachable (offline, a proxy) is
a warning, never a refusal: the sandbox may well reach it when this machine does not. ``HF_ENDPOINT`` points
the check at a mirror, as it points every Hugging Face client.
"""

from __future__ import annotations

import os
from pathlib import Path

from sandserve.errors import ModelRepoError


def looks_like_repo_id(model: str) -> bool:
    """An ``org/name`` id, not a local path or a file name."""
    return model.count("/") == 1 and not model.startswith((".", "/", "~")) and not Path(model).exists()


def check_model_repo(model: str, token: str | None) -> str | None:
    """Raise ModelRepoError when ``model`` is gated without access or does not exist; return a warning when
    the check could not be made; None when the repo is there and readable."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        HfApi(endpoint=endpoint).auth_check(model, token=token or False)
    except GatedRepoError:
        who = "your token has" if token else "no Hugging Face token is set, so the server has"
        raise ModelRepoError(
            f"{model} is a gated repo and {who} no access to it: the server could not download it.",
            hint=f"Accept its terms on https://huggingface.co/{model}, then set HF_TOKEN (or run "
            "`hf auth login`) with a token of that account.",
        ) from None
    except RepositoryNotFoundError:
        private = "" if token else " (or private: no Hugging Face token is set)"
        raise ModelRepoError(
            f"{model} does not exist on Hugging Face{private}.",
            hint="Check the id (org/name, as on huggingface.co), or `sandserve presets` for known models.",
        ) from None
    except Exception as exc:  # unreachable, a proxy, a server error: the check is advice, not a gate
        return (
            f"could not check {model} on Hugging Face ({type(exc).__name__}); going ahead without the check"
        )
    return None
