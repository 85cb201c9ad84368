"""Secrets are never shown: one mask for every value that must not reach a screen, a log or a plan.

Three kinds of secret reach text sandserve prints: values it knows (an endpoint's API key, a preview token),
values it can recognise by their name (``--env OPENAI_API_KEY=...``, ``--api-key X`` among engine flags, a
``token=`` query parameter), and the token a signed preview URL carries in its path or host name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

MASK = "****"

#: Words that make a name (of an environment variable, a flag, a query parameter) a secret's name, as one
#: part of it: HF_TOKEN, OPENAI_API_KEY, --api-key, X-Daytona-Preview-Token; not --max-total-tokens.
SECRET_WORDS = frozenset(
    {"token", "key", "apikey", "secret", "password", "passwd", "pwd", "credential", "credentials"}
    | {"signature", "authorization", "bearer", "jwt"}
)
_NAME_PARTS = re.compile(r"[^a-z0-9]+")
#: ``api_key='...'`` / ``"api_key": "..."`` / ``--api-key X`` inside free text (SGLang logs its server_args).
_TEXT_ASSIGNMENT = re.compile(
    r"""(?P<name>[\w-]*(?:api[_-]?key|token|secret|password)[\w-]*)(?P<sep>['"]?\s*[:=]\s*['"]?|\s+)"""
    r"""(?P<value>[^\s'",)}]{4,})""",
    re.IGNORECASE,
)
#: The ``{port}-{token}`` part of a signed preview URL (in its host name or its path).
_SIGNED_PART = re.compile(
    r"(?<=[/.])(?P<port>\d{1,5})-(?P<token>[A-Za-z0-9_]{12,}[A-Za-z0-9_-]*)(?=[/.?#]|$)"
)


def is_secret_name(name: str) -> bool:
    """Whether a variable, flag or parameter named so holds a secret (HF_TOKEN, OPENAI_API_KEY,
    --api-key...)."""
    return any(part in SECRET_WORDS for part in _NAME_PARTS.split(name.lower()))


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret value replaced by the mask."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def mask_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment with the values of secret-named variables masked."""
    return {name: (MASK if value and is_secret_name(name) else value) for name, value in env.items()}


def mask_argv(argv: Sequence[str]) -> list[str]:
    """A command line with the value of every secret-named flag masked (``--api-key X``, ``--token=X``)."""
    masked: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            masked.append(MASK)
            hide_next = False
            continue
        if arg.startswith("-"):
            name, eq, value = arg.partition("=")
            if is_secret_name(name):
                if eq:
                    masked.append(f"{name}={MASK}" if value else arg)
                else:
                    hide_next = True
                    masked.append(arg)
                continue
        masked.append(arg)
    return masked


def mask_signed_url(url: str) -> str:
    """A signed preview URL with its token masked (the URL itself is the credential)."""
    return _SIGNED_PART.sub(lambda m: f"{m.group('port')}-{MASK}", url)


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Free text (a log, an error) with known secret values and ``name=value`` secrets masked."""
    text = mask_secrets(text, secrets)

    def masked(match: re.Match[str]) -> str:
        if match.group("value") == MASK or not is_secret_name(match.group("name")):
            return match.group(0)  # max_tokens=2048 is no secret
        return f"{match.group('name')}{match.group('sep')}{MASK}"

    return _TEXT_ASSIGNMENT.sub(masked, text)
