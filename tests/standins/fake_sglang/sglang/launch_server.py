"""``python -m sglang.launch_server ...``: the SGLang stand-in, started the way SGLang is."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # tests/, home of the standins package

from standins.sglang_server import main

if __name__ == "__main__":
    sys.exit(main())
