"""What a verb costs before it does anything: `sandserve --help`, `env` and `ls`, beside bare
`python -c pass`.

    .venv/bin/python bench/bench_startup.py              # 21 rounds
    .venv/bin/python bench/bench_startup.py --rounds 51
    .venv/bin/python bench/bench_startup.py --baseline-src /tmp/old/src   # beside another checkout's src/

Each command is a whole new process, timed from start to exit; the commands take turns inside every round, so
a machine that speeds up or slows down during the run moves them all alike. `env` and `ls` read a ledger with
one live endpoint (a local tiny-model server brought up for the run in a temporary state directory, never your
ledger, and taken down at the end). `ls` is timed twice: into a pipe (plain tab-separated output) and on a
terminal (a pseudo-terminal: the drawn table). Prints the median, min and max of each, and the median's ratio
to bare Python; asserts nothing. With ``--baseline-src``, each sandserve command also runs from that source
tree (put first on PYTHONPATH), in the same rounds, and the ratio of the medians is printed; it runs through a
script shaped as the console script that calls the entry that tree has (``run``, or ``main`` before there
was one), since this environment's console script calls this tree's.

Python's bytecode cache is on for the commands (PYTHONDONTWRITEBYTECODE is removed from their environment),
as for any user after a first run: the warm-up run writes it (without it, every run compiles sandserve's
modules from source again).
"""

from __future__ import annotations

import argparse
import os
import pty
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
SANDSERVE = str(VENV_BIN / "sandserve")
#: The console script, for a source tree whose entry may be ``main`` (older trees) or ``run``.
ANY_ENTRY_SCRIPT = f"""#!{sys.executable}
import sys
import sandserve.cli as cli
if __name__ == "__main__":
    sys.exit(getattr(cli, "run", cli.main)())
"""


def run_once(argv: list[str], env: dict[str, str], *, terminal: bool) -> float:
    """Wall seconds from start to exit of ``argv``, its output into a pipe or onto a pseudo-terminal."""
    if terminal:
        leader, follower = pty.openpty()
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL)
        os.close(follower)
        while True:  # drain the terminal, or a long table would block the child
            try:
                if not os.read(leader, 65536):
                    break
            except OSError:
                break
        returncode = process.wait()
        elapsed = time.perf_counter() - started
        os.close(leader)
    else:
        started = time.perf_counter()
        returncode = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL).returncode
        elapsed = time.perf_counter() - started
    if returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {returncode}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src/ to time beside this one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sandserve-bench-startup-") as state:
        env = {**os.environ, "SANDSERVE_STATE_DIR": state, "COLUMNS": "80"}
        env.pop("DAYTONA_API_KEY", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        up = subprocess.run(
            [SANDSERVE, "up", "--provider", "local", "--model", "tiny", "-q"], env=env, capture_output=True
        )
        if up.returncode != 0:
            raise SystemExit("could not bring the tiny model up:\n" + up.stderr.decode(errors="replace"))
        baseline_script = Path(state) / "bin" / "sandserve"
        if args.baseline_src:
            baseline_script.parent.mkdir()
            baseline_script.write_text(ANY_ENTRY_SCRIPT)
            baseline_script.chmod(0o755)
        try:
            verbs = {
                "sandserve --help": (["--help"], False),
                "sandserve env": (["env"], False),
                "sandserve ls (pipe)": (["ls"], False),
                "sandserve ls (terminal)": (["ls"], True),
            }
            commands = {"python -c pass": ([sys.executable, "-c", "pass"], False, env)}
            for name, (verb, terminal) in verbs.items():
                commands[name] = ([SANDSERVE, *verb], terminal, env)
                if args.baseline_src:
                    baseline_env = {**env, "PYTHONPATH": str(args.baseline_src.resolve())}
                    commands[name + " [baseline]"] = ([str(baseline_script), *verb], terminal, baseline_env)
            for argv, terminal, command_env in commands.values():  # warm the file cache and the bytecode
                run_once(argv, command_env, terminal=terminal)
            times: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(args.rounds):
                for name, (argv, terminal, command_env) in commands.items():
                    times[name].append(run_once(argv, command_env, terminal=terminal))
        finally:
            # --yes: `down --all` asks first; with no terminal to ask on it refuses, and the server stays.
            down = subprocess.run([SANDSERVE, "down", "--all", "--yes"], env=env, capture_output=True)
            if down.returncode != 0:
                print(
                    "could not take the server down:\n" + down.stderr.decode(errors="replace"),
                    file=sys.stderr,
                )

    bare = statistics.median(times["python -c pass"])
    print(f"start-up, {args.rounds} rounds, {os.cpu_count()} cores (seconds: median, min, max)")
    for name, samples in times.items():
        median = statistics.median(samples)
        line = (
            f"  {name:<35} {median:6.3f}  {min(samples):6.3f}  {max(samples):6.3f}"
            f"   x{median / bare:5.1f} bare python   +{median - bare:.3f} s"
        )
        baseline = times.get(name + " [baseline]")
        if baseline:
            line += f"   {median / statistics.median(baseline):.2f} of the baseline"
        print(line)


if __name__ == "__main__":
    main()
