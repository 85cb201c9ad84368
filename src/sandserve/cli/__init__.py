"""The `sandserve` command: it parses arguments, calls the library and prints; nothing else lives here.

Each module adds its verbs to the one `main` group, which imports a verb's module only when the verb is used
and lists the verbs in `--help` from their one-line helps (``_app.VERBS``), importing none; verbs import the
library inside their body, so that `sandserve --help` stays fast.
"""

from sandserve.cli._app import main

__all__ = ["main"]
