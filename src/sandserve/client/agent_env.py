"""What an agent tool or SDK needs to reach an endpoint: its environment variables and, where it reads a
file, the lines to put there (``sandserve env --for CLIENT``).

Each client sends auth its own way. The preview token is a custom header (``x-daytona-preview-token``):
Claude Code sends one from ``ANTHROPIC_CUSTOM_HEADERS`` and Codex from ``env_http_headers``, but the plain
OpenAI and Anthropic SDKs and LiteLLM read no header from the environment (``default_headers=`` /
``extra_headers=`` in code). A key (``--auth key``) is a Bearer key, which every one of them sends from the
environment: SGLang's ``--api-key`` (and smg's) reads ``Authorization: Bearer`` only, never ``x-api-key``, so
Claude Code gets it as ``ANTHROPIC_AUTH_TOKEN`` (its ``ANTHROPIC_API_KEY`` goes as ``x-api-key``), and so
does the Anthropic SDK (which sends either as Bearer since 2.x, ``x-api-key`` before).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sandserve.endpoint import Endpoint
from sandserve.errors import SandserveError

CLIENTS = ("claude-code", "codex", "openai", "anthropic", "litellm")
#: Sent where a client insists on some key and the endpoint checks none.
NO_KEY = "EMPTY"


@dataclass
class ClientSettings:
    """``exports``: variables to set; ``config``: lines of the client's own file (``config_path``), if it
    reads one; ``notes``: what the environment alone cannot carry, said plainly."""

    client: str
    exports: dict[str, str] = field(default_factory=dict)
    config_path: str | None = None
    config: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def client_settings(endpoint: Endpoint, client: str) -> ClientSettings:
    if client not in CLIENTS:
        raise SandserveError(
            f"No settings for a client called {client!r}.", hint=f"Choose one of: {', '.join(CLIENTS)}."
        )
    builder = {
        "claude-code": _claude_code,
        "codex": _codex,
        "openai": _openai,
        "anthropic": _anthropic,
        "litellm": _litellm,
    }[client]
    return builder(endpoint, ClientSettings(client))


def _token(endpoint: Endpoint) -> str | None:
    return endpoint.token or None


def _header_note(endpoint: Endpoint, code: str) -> list[str]:
    if not _token(endpoint):
        return []
    return [
        f"This endpoint wants its token in the {endpoint.token_header} header, which this client reads from "
        f"no variable: pass {code} in code (TOKEN is exported), or bring the endpoint up with --auth key "
        "(a Bearer key, which every client sends from its variables)."
    ]


def _claude_code(endpoint: Endpoint, settings: ClientSettings) -> ClientSettings:
    settings.exports = {
        "ANTHROPIC_BASE_URL": endpoint.url,
        "ANTHROPIC_AUTH_TOKEN": endpoint.api_key or NO_KEY,
        "ANTHROPIC_MODEL": endpoint.model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": endpoint.model,
    }
    if token := _token(endpoint):
        settings.exports["ANTHROPIC_CUSTOM_HEADERS"] = f"{endpoint.token_header}: {token}"
    return settings


def _codex(endpoint: Endpoint, settings: ClientSettings) -> ClientSettings:
    # Codex always sends function tools of its own: where /v1/responses takes none (SGLang 0.5.12.post1),
    # it speaks chat completions.
    wire_api = "responses" if endpoint.capabilities().responses_tools else "chat"
    settings.config_path = "~/.codex/config.toml"
    settings.config = [
        f"model = {json.dumps(endpoint.model)}",
        'model_provider = "sandserve"',
        "",
        "[model_providers.sandserve]",
        'name = "sandserve"',
        f"base_url = {json.dumps(endpoint.base_url)}",
        f'wire_api = "{wire_api}"',
    ]
    if endpoint.api_key:
        settings.exports["SANDSERVE_API_KEY"] = endpoint.api_key
        settings.config.append('env_key = "SANDSERVE_API_KEY"')
    if token := _token(endpoint):
        settings.exports["TOKEN"] = token
        settings.config.append(f'env_http_headers = {{ "{endpoint.token_header}" = "TOKEN" }}')
    if wire_api == "chat":
        settings.notes.append(
            "This engine's Responses API takes no function tools, so Codex speaks chat completions."
        )
    return settings


def _openai(endpoint: Endpoint, settings: ClientSettings) -> ClientSettings:
    settings.exports = {
        "OPENAI_BASE_URL": endpoint.base_url,
        "OPENAI_API_KEY": endpoint.api_key or NO_KEY,
        "MODEL": endpoint.model,
    }
    if token := _token(endpoint):
        settings.exports["TOKEN"] = token
    settings.notes = _header_note(
        endpoint, f'default_headers={{"{endpoint.token_header}": os.environ["TOKEN"]}}'
    )
    return settings


def _anthropic(endpoint: Endpoint, settings: ClientSettings) -> ClientSettings:
    settings.exports = {"ANTHROPIC_BASE_URL": endpoint.url, "MODEL": endpoint.model}
    if endpoint.api_key:
        settings.exports["ANTHROPIC_AUTH_TOKEN"] = endpoint.api_key
    else:
        settings.exports["ANTHROPIC_API_KEY"] = NO_KEY
    if token := _token(endpoint):
        settings.exports["TOKEN"] = token
    settings.notes = _header_note(
        endpoint, f'default_headers={{"{endpoint.token_header}": os.environ["TOKEN"]}}'
    )
    return settings


def _litellm(endpoint: Endpoint, settings: ClientSettings) -> ClientSettings:
    settings.exports = {
        "OPENAI_API_BASE": endpoint.base_url,
        "OPENAI_API_KEY": endpoint.api_key or NO_KEY,
        "MODEL": f"openai/{endpoint.model}",
    }
    if token := _token(endpoint):
        settings.exports["TOKEN"] = token
    settings.notes = _header_note(
        endpoint, f'extra_headers={{"{endpoint.token_header}": os.environ["TOKEN"]}}'
    )
    return settings
