"""Settings read the way the Daytona SDK reads them, with where each value came from.

Precedence: the process environment, then `.env.local`, then `.env`, both in the CURRENT directory only (never
a parent: a stray file higher up must not turn a local demo into a paid GPU run). Nothing is copied into
``os.environ``. ``DAYTONA_API_URL`` is taken from the process environment only, as the SDK does: a file in the
working directory must never decide where the API key is sent.

Hugging Face: ``HF_TOKEN`` from the environment or the dotenv files, else the token ``hf auth login`` saved
(``huggingface_hub.get_token()``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DOTENV_FILES = (".env.local", ".env")
#: Where a credential goes: never from a file in the working directory.
PROCESS_ENV_ONLY = frozenset({"DAYTONA_API_URL", "DAYTONA_SERVER_URL"})
#: The region the guide serves in (the GPU region); used only when DAYTONA_TARGET is not set.
DEFAULT_TARGET = "us-east-1"

ENVIRONMENT = "environment"
DEFAULT = "default"
SAVED_LOGIN = "saved login (hf auth login)"


@dataclass(frozen=True)
class Setting:
    name: str
    value: str | None
    source: str
    """``environment``, ``.env.local``, ``.env``, ``saved login (...)``, ``default`` or ``unset``."""

    @property
    def is_set(self) -> bool:
        return bool(self.value)


def _dotenv(name: str, folder: Path) -> dict[str, str]:
    path = folder / name
    if not path.is_file():
        return {}
    from dotenv import dotenv_values  # here: without the file, `ls` never pays for python-dotenv

    return {key: value for key, value in dotenv_values(path).items() if value is not None}


def setting(name: str, *, default: str | None = None, folder: Path | None = None) -> Setting:
    """``name`` from the process environment, else `.env.local`, else `.env` (current folder only)."""
    value = os.environ.get(name)
    if value:
        return Setting(name, value, ENVIRONMENT)
    if name not in PROCESS_ENV_ONLY:
        where = folder or Path.cwd()
        for file_name in DOTENV_FILES:
            value = _dotenv(file_name, where).get(name)
            if value:
                return Setting(name, value, file_name)
    if default is not None:
        return Setting(name, default, DEFAULT)
    return Setting(name, None, "unset")


def daytona_key() -> Setting:
    """The Daytona credential the SDK would use: an API key, else a JWT."""
    key = setting("DAYTONA_API_KEY")
    return key if key.is_set else setting("DAYTONA_JWT_TOKEN")


def daytona_target() -> Setting:
    return setting("DAYTONA_TARGET", default=DEFAULT_TARGET)


def daytona_api_url() -> Setting:
    return setting("DAYTONA_API_URL", default="https://app.daytona.io/api")


def hf_token() -> Setting:
    """HF_TOKEN (environment or dotenv), else the token a `hf auth login` saved; never printed."""
    token = setting("HF_TOKEN")
    if token.is_set:
        return token
    try:
        from huggingface_hub import get_token
    except ImportError:  # pragma: no cover - a dependency
        return token
    saved = get_token()
    return Setting("HF_TOKEN", saved, SAVED_LOGIN) if saved else token


def gpu_hour_price() -> float | None:
    """What one GPU hour costs the user (SANDSERVE_GPU_HOUR_PRICE), for `ls` to show spend so far."""
    value = setting("SANDSERVE_GPU_HOUR_PRICE").value
    if not value:
        return None
    try:
        price = float(value)
    except ValueError:
        return None
    return price if price >= 0 else None


@dataclass(frozen=True)
class Limit:
    value: float
    source: str


def snapshot_limit_gb() -> Limit | None:
    """The largest snapshot the organisation may hold (SANDSERVE_SNAPSHOT_LIMIT_GB), checked before a
    capture; None when unset: the hosted service's limit is not published (the open-source default is 20 GB),
    so the capture is tried and the service's refusal, if any, reported."""
    from sandserve.errors import ConfigError

    chosen = setting("SANDSERVE_SNAPSHOT_LIMIT_GB")
    if not chosen.is_set:
        return None
    try:
        value = float(chosen.value or "")
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(
            f"SANDSERVE_SNAPSHOT_LIMIT_GB={chosen.value!r} is not a size in GB.",
            hint="Set it to your organisation's snapshot size limit, e.g. SANDSERVE_SNAPSHOT_LIMIT_GB=50.",
        )
    return Limit(value, f"SANDSERVE_SNAPSHOT_LIMIT_GB from {chosen.source}")
