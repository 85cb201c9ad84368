"""One TLS context per process for httpx's clients and one-off calls.

httpx builds a new context for every client (and every ``httpx.get``) made without one, reading the whole CA
bundle each time: about 20 ms of CPU, paid twice per boot by `up` and once per request by the one-off calls.
The context is httpx's own default (certifi's bundle, or SSL_CERT_FILE/SSL_CERT_DIR), made once.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl


@cache
def tls_context() -> ssl.SSLContext:
    import httpx

    return httpx.create_ssl_context()
