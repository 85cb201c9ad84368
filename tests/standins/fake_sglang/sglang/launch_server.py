"""``python -m sglang.launch_server ...``: the SGLang stand-in, started the way SGLang is."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # tests/, home of the standins package

from standins._sglang_hardware import refusal
from standins.sglang_server import main

if __name__ == "__main__":
    dies = refusal(sys.argv[1:], os.environ)  # the machine's GPUs do not suit it: it dies as SGLang does
    if dies:
        sys.stderr.write(dies)
        sys.exit(1)
    sys.exit(main())
