"""What `ls`, `status`, `logs` and the plan show of an endpoint: every secret masked unless asked for.

An endpoint's secrets are its API key, the header values it sends (a preview token), and, for a signed URL,
the URL itself (its token is the credential). `env` prints them on purpose; `--show-secrets` shows them.
The masking patterns are loaded only when something is masked: `ls` of endpoints without a signed URL needs
none of them.
"""

from __future__ import annotations

from typing import Any


def endpoint_secrets(endpoint: Any) -> set[str]:
    if endpoint is None:
        return set()
    values = {endpoint.api_key or "", *endpoint.headers.values()}
    return {value for value in values if value and len(value) >= 4}


def shown_url(endpoint: Any, *, show_secrets: bool = False) -> str | None:
    if endpoint is None:
        return None
    if show_secrets or endpoint.auth != "signed":
        return str(endpoint.url)
    from sandserve.masking import mask_signed_url

    return mask_signed_url(endpoint.url)


def shown_text(text: str | None, endpoint: Any, *, show_secrets: bool = False) -> str | None:
    """A log or an error message with the endpoint's secrets and anything named like a key masked."""
    if text is None or show_secrets:
        return text
    from sandserve.masking import mask_text

    return mask_text(text, endpoint_secrets(endpoint))


def masked_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan with secret-named env values and secret flags masked (the engine masks what it knows too)."""
    from sandserve.masking import MASK, mask_argv, mask_env, mask_text

    shown = dict(plan)
    if isinstance(shown.get("env"), dict):
        shown["env"] = mask_env(shown["env"])
    if isinstance(shown.get("command"), str):
        import shlex

        try:
            argv = mask_argv(shlex.split(shown["command"]))
            shown["command"] = " ".join(arg if arg == MASK else shlex.quote(arg) for arg in argv)
        except ValueError:
            shown["command"] = mask_text(shown["command"])
    return shown
