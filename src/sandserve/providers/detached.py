"""The process object of a local server: apart from the local provider so that reading the ledger (`ls`,
`status`), which loads that provider, does not import subprocess."""

from __future__ import annotations

import subprocess


class DetachedServer(subprocess.Popen[bytes]):
    """A server meant to outlive this process (``up`` returns, the server serves): the object may be dropped
    while it runs (another process may stop it: ``sandserve down``), which is no leak. Dropped, it reaps the
    server if it has ended, so no zombie is left, and says nothing if it still runs."""

    def __del__(self) -> None:
        # No module globals here: at interpreter exit they may already be gone (``contextlib`` is None).
        try:
            self.poll()
        except Exception:
            pass
