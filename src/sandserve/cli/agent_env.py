"""``sandserve env --for CLIENT``: a client's settings as lines a shell can ``eval``."""

from __future__ import annotations

import shlex

from sandserve.client.agent_env import client_settings
from sandserve.endpoint import Endpoint


def client_lines(endpoint: Endpoint, client: str) -> list[str]:
    """``export`` lines, then the client's file lines and any notes as ``#`` comments (eval skips them)."""
    settings = client_settings(endpoint, client)
    lines = [f"export {name}={shlex.quote(value)}" for name, value in settings.exports.items()]
    if settings.config:
        lines.append(f"# {client} reads these from {settings.config_path}:")
        lines += [f"#   {line}" if line else "#" for line in settings.config]
    lines += [f"# note: {note}" for note in settings.notes]
    return lines
