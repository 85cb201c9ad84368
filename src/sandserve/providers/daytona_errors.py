"""Talking to the Daytona service: a client configured the SDK's way, and the service's refusals turned into
sandserve's errors, each saying what to do (the API's own sentences kept where the SDK drops them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sandserve.errors import GpuCapacityError, MissingCredentialsError, ProviderError, QuotaExceededError

if TYPE_CHECKING:
    from daytona import Daytona

    from sandserve.spec import ServeSpec

QUOTA_MARKER = "gpu limit exceeded"
#: No runner has the GPUs asked for free (the API's scheduler: "No available runners").
NO_CAPACITY_MARKER = "no available runners"


def connect() -> Daytona:
    """A client configured the SDK's way: DAYTONA_API_KEY / DAYTONA_API_URL / DAYTONA_TARGET, or .env."""
    from sandserve.config import daytona_key

    if not daytona_key().is_set:  # the SDK would refuse too: said without loading it (about a second)
        raise _no_key()
    from daytona import Daytona, DaytonaConfig, DaytonaError

    try:
        return Daytona(DaytonaConfig())
    except DaytonaError as exc:
        raise _no_key() from exc


def _no_key() -> MissingCredentialsError:
    return MissingCredentialsError(
        "A Daytona API key",
        hint="Set DAYTONA_API_KEY (in the environment or in .env), or serve locally with --provider local.",
    )


def translate(exc: Exception, doing: str, spec: ServeSpec | None = None) -> ProviderError:
    from daytona import DaytonaAuthenticationError

    message = str(exc)
    if QUOTA_MARKER in message.lower():
        return QuotaExceededError(message.strip())
    if NO_CAPACITY_MARKER in message.lower() and spec is not None:
        gpus = " or ".join(spec.resources.gpu_types)
        return GpuCapacityError(
            f"Daytona has no {gpus} free for this sandbox ({message.strip()}).",
            hint="Add other GPU types to the list (--gpu, repeat it), ask for fewer (--gpus), or try later.",
        )
    if isinstance(exc, DaytonaAuthenticationError):
        return ProviderError(
            f"Daytona refused the API key while trying to {doing}.",
            hint="Check DAYTONA_API_KEY (the Daytona dashboard issues keys) and DAYTONA_API_URL.",
        )
    refused = _validation_sentences(exc)
    if refused:
        return ProviderError(
            f"Daytona refused the request to {doing}: {refused}",
            hint="This is a bug in what sandserve sent, or a setting the service does not take: report it "
            "with this message (the sentences are the service's own).",
        )
    return ProviderError(
        f"Daytona could not {doing}: {message}",
        hint="Run again; if it persists, check the Daytona dashboard for the sandbox's state.",
    )


def _validation_sentences(exc: Exception) -> str | None:
    """The API's validation failures are a LIST of sentences in ``message``, which the SDK drops (it keeps
    only "Bad Request"); read them from the response body the SDK's error was made from."""
    import json

    cause: BaseException | None = exc
    while cause is not None:
        body = getattr(cause, "body", None)
        if body:
            try:
                message = json.loads(body).get("message")
            except (ValueError, AttributeError):
                message = None
            if isinstance(message, list) and message:
                return "; ".join(str(sentence) for sentence in message)
        cause = cause.__cause__
    return None
