"""``sandserve env --for CLIENT``: a client's settings as lines a shell can ``eval``."""

from __future__ import annotations

import shlex
import textwrap

from sandserve.client.agent_env import client_settings
from sandserve.endpoint import Endpoint
from sandserve.errors import SandserveError
from sandserve.serve.ledger import Record

#: Clients that speak Anthropic Messages.
MESSAGES_CLIENTS = frozenset({"anthropic", "claude-code"})


def check_route_served(record: Record, client: str) -> None:
    """A fleet behind sglang-router has no /v1/messages: say so before handing out settings that 404."""
    from sandserve.providers.gateway import GATEWAY_PROVIDER

    if client not in MESSAGES_CLIENTS or record.provider != GATEWAY_PROVIDER:
        return
    from sandserve.fleet.model import MESSAGES_GATEWAYS, Fleet

    gateway = Fleet.from_record(record).gateway_name
    if gateway not in MESSAGES_GATEWAYS:
        raise SandserveError(
            f"Fleet {record.id} routes through {gateway}, which does not serve Anthropic Messages "
            "(/v1/messages answers 404 there).",
            hint=f"Bring the fleet up with `sandserve fleet up --gateway smg ...` ({client} needs it), "
            "or use `sandserve env --for openai` with this one.",
        )


def client_lines(endpoint: Endpoint, client: str) -> list[str]:
    """``export`` lines, then the client's file lines and any notes as ``#`` comments (eval skips them)."""
    settings = client_settings(endpoint, client)
    lines = [f"export {name}={shlex.quote(value)}" for name, value in settings.exports.items()]
    if settings.config:
        lines.append(f"# {client} reads these from {settings.config_path}:")
        lines += [f"#   {line}" if line else "#" for line in settings.config]
    for note in settings.notes:  # comment lines short enough for an 80-column terminal
        lines += textwrap.wrap(
            note, 78, initial_indent="# note: ", subsequent_indent="#   ", break_on_hyphens=False
        )
    return lines
