"""The `sandserve` command: it parses arguments, calls the library and prints; nothing else lives here.

Each module adds its verbs to the one `main` group; verbs import the library inside their body, so that
`sandserve --help` stays fast.
"""

from sandserve.cli import colocated, fleet, getting_started, serve, use, work  # noqa: F401 - importing them registers their verbs
from sandserve.cli import observe as _observe  # noqa: F401 - registers top, bench
from sandserve.cli._app import main

__all__ = ["main"]
