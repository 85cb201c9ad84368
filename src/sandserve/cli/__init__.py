"""The `sandserve` command: it parses arguments, calls the library and prints; nothing else lives here.

Each module adds its verbs to the one `main` group, which imports a verb's module only when the verb is used
and lists the verbs in `--help` from their one-line helps (``_app.VERBS``), importing none; verbs import the
library inside their body, so that `sandserve --help` stays fast.
"""

import gc

# Importing click makes tens of thousands of objects and no garbage: the collector, paused meanwhile, would
# only walk them (about 1.3 ms of every start). It runs again as before once the import is done.
_collecting = gc.isenabled()
gc.disable()
try:
    from sandserve.cli._app import main, run
finally:
    if _collecting:
        gc.enable()

__all__ = ["main", "run"]
