"""Cold boot against warm boot: `up` of gpt-oss-20b twice on the stand-ins, the first cold (captured at
`down`), the second from its golden snapshot, each boot's receipt side by side with the same phase model in
real seconds (the published figures in tests/standins/sglang_boot_model.py) and the guide's 5 minutes.

The stand-ins: the real `daytona` SDK and sandserve's own `up`/`down` against the Daytona stand-in, whose
sandboxes run the SGLang stand-in; its boot phases take the published seconds times SCALE, skipping the
download when the weights are in the sandbox and the compile when the kernel caches are. The sandbox's
create takes the model's create time times SCALE too (the stand-in's three image states, two snapshot
ones). Nothing here ran on a GPU: the real-seconds column is a model, and says so.

    .venv/bin/python bench/bench_warm_boot.py --scale 0.01

Its last line reads `warm boot: cold <N> s, warm <M> s (modeled)`: the model's totals in real seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from standins.sglang_boot_model import (
    PUBLISHED_SECONDS,
    SOURCES,
    TIME_SCALE_ENV,
    cold_seconds,
    warm_seconds,
)

GUIDE_SECONDS = 300.0
STEPS = ("create", "start", "weights", "load", "compile", "graphs", "warm-up", "first generation")


def boot_twice(scale: float) -> tuple[object, object]:
    """The receipts of a cold `up` (then `down`, which captures) and a warm one, on the stand-ins."""
    from conftest import FAKE_SGLANG
    from standins.daytona_api import DaytonaStandin

    from sandserve.providers import get_provider
    from sandserve.providers.daytona import DaytonaProvider
    from sandserve.providers.local import free_port
    from sandserve.serve import lifecycle
    from sandserve.serve.ledger import Registry
    from sandserve.serve.resolve import resolve_spec

    receipts = []

    class Events(lifecycle.BootEvents):
        def status(self, message):  # type: ignore[no-untyped-def]
            if os.environ.get("BENCH_TRACE"):
                print(f"{time.perf_counter():.2f} {message[:70]}")

        def receipt(self, receipt, previous):  # type: ignore[no-untyped-def]
            receipts.append(receipt)

    # Phases are read from the log at each poll: poll often enough to tell them apart.
    DaytonaProvider.poll_interval = 0.02
    create_step = PUBLISHED_SECONDS["create"] * scale / 3
    with DaytonaStandin(
        extra_env={
            "PYTHONPATH": str(FAKE_SGLANG),
            "SANDSERVE_FAKE_SGLANG_LOG_STEP": "0",
            "SANDSERVE_FAKE_SGLANG_WARMUP_SECONDS": str(PUBLISHED_SECONDS["warm-up"] * scale),
            TIME_SCALE_ENV: str(scale),
        },
        path_prepend=[Path(sys.executable).parent],
        state_step_seconds=create_step,
        max_snapshot_size_gb=40.0,
    ) as api:
        os.environ.update(DAYTONA_API_KEY=api.api_key, DAYTONA_API_URL=api.url)
        spec = resolve_spec("gpt-oss-20b", provider="daytona", port=free_port())
        # The SDK's client and the Hugging Face check, made once before the first boot (which would
        # otherwise pay for their imports alone).
        get_provider("daytona").preflight(spec)
        registry = Registry()
        for _ in range(2):
            endpoint = lifecycle.up(spec, events=Events(), registry=registry)
            lifecycle.down(registry.get(endpoint.id), registry)
    return receipts[0], receipts[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.01, help="stand-in seconds per published second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        for name in [n for n in os.environ if n.startswith(("DAYTONA_", "HF_"))]:
            del os.environ[name]
        os.environ.update(SANDSERVE_STATE_DIR=state, HF_ENDPOINT="http://127.0.0.1:9")
        os.chdir(state)  # the SDK reads .env from the working directory
        cold, warm = boot_twice(args.scale)

    modeled_cold = {step: PUBLISHED_SECONDS[step] for step in STEPS}
    modeled_warm = {**modeled_cold, "weights": 0.0, "compile": PUBLISHED_SECONDS["compile (cached)"]}
    print(f"gpt-oss-20b on one H100, stand-in phases at {args.scale:g} x the published seconds")
    print(f"{'step':<17} {'stand-in cold':>13} {'stand-in warm':>13} {'model cold':>11} {'model warm':>11}")
    for step in STEPS:
        print(
            f"{step:<17} {cold.seconds(step) or 0:>11.2f} s {warm.seconds(step) or 0:>11.2f} s "  # type: ignore[attr-defined]
            f"{modeled_cold[step]:>9.1f} s {modeled_warm[step]:>9.1f} s"
        )
    print(
        f"{'total':<17} {cold.total:>11.2f} s {warm.total:>11.2f} s "  # type: ignore[attr-defined]
        f"{sum(modeled_cold.values()):>9.1f} s {sum(modeled_warm.values()):>9.1f} s"
    )
    print(f"the guide's cold boot: about {GUIDE_SECONDS:.0f} s; the goal for a warm one: 60 s or less")
    print(f"stand-in receipts: cold restored {sorted(cold.restored)}, warm restored {sorted(warm.restored)}")  # type: ignore[attr-defined]
    print(f"  cold slowest: {cold.slowest()}")  # type: ignore[attr-defined]
    print(f"  warm slowest: {warm.slowest()}")  # type: ignore[attr-defined]
    print("sources of the model:")
    for step, source in SOURCES.items():
        print(f"  {step}: {source}")
    print(f"warm boot: cold {cold_seconds():.0f} s, warm {warm_seconds():.0f} s (modeled)")


if __name__ == "__main__":
    main()
