"""Secrets are never shown: one mask for every value that must not reach a screen, a log or a plan."""

from __future__ import annotations

MASK = "****"


def mask_secrets(text: str, secrets: frozenset[str] | set[str] | list[str]) -> str:
    """``text`` with every occurrence of each secret value replaced by the mask."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text
