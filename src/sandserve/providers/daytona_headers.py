"""The headers of Daytona's preview proxy, apart from the SDK so that naming them costs no import.

The proxy checks the token in ``PREVIEW_TOKEN_HEADER`` (a private preview), counts every request as the
sandbox's activity unless it carries ``SKIP_ACTIVITY_HEADER``, and may answer with an HTML warning page
instead of the server's reply unless it carries ``SKIP_PREVIEW_WARNING_HEADER``.
"""

from __future__ import annotations

PREVIEW_TOKEN_HEADER = "x-daytona-preview-token"
SKIP_PREVIEW_WARNING_HEADER = "X-Daytona-Skip-Preview-Warning"
SKIP_ACTIVITY_HEADER = "X-Daytona-Skip-Last-Activity-Update"
#: What sandserve's own probes add: watching an endpoint keeps no idle sandbox alive, meets no warning page.
PROBE_HEADERS = {SKIP_ACTIVITY_HEADER: "true", SKIP_PREVIEW_WARNING_HEADER: "true"}
