"""What a server of ours answers when a request lacks the credential it needs: a 401 shaped as OpenAI's API
shapes one (``{"error": {"message", "type", "param", "code"}}``), which the OpenAI SDK raises as
``AuthenticationError`` carrying the message, and a message that names the credential and where it goes."""

from __future__ import annotations

from typing import Any, Literal

Credential = Literal["token", "key"]

#: Each credential: what it is, where it goes, the variable `sandserve env` exports it in, its error code.
_CREDENTIALS: dict[str, tuple[str, str, str, str]] = {
    "token": ("the endpoint's token", "in the {header} header", "TOKEN", "preview_token"),
    "key": ("the API key", "as 'Authorization: Bearer KEY'", "OPENAI_API_KEY", "api_key"),
}


def auth_error_body(credential: Credential, *, sent: bool, token_header: str = "") -> dict[str, Any]:
    """The JSON body of the 401: ``sent`` says whether a (wrong) value came, or none at all; ``token_header``
    is the header the token goes in."""
    name, where, variable, code = _CREDENTIALS[credential]
    where = where.format(header=token_header)
    if sent:
        message = f"Unauthorized: {name} sent {where} is not this endpoint's."
    else:
        message = f"Unauthorized: {name} is missing: send it {where}."
    message += f" It is {variable} in what `sandserve env` exports."
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": f"invalid_{code}" if sent else f"missing_{code}",
        }
    }
