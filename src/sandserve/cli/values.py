"""Checked CLI values: every number, path and file is validated before anything starts (exit 2, clear
words)."""

from __future__ import annotations

import ipaddress
import math
from pathlib import Path
from typing import Any

import click


class Seconds(click.ParamType[float, Any]):
    """A positive, finite number of seconds (no 0, no -5, no nan, no inf)."""

    name = "seconds"

    def __init__(self, maximum: float = 7 * 86_400) -> None:
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or seconds <= 0:
            self.fail(f"{value!r} must be a positive number of seconds", param, ctx)
        if seconds > self.maximum:
            self.fail(f"{value!r} is more than {self.maximum:g} s", param, ctx)
        return seconds


class Number(click.ParamType[float, Any]):
    """A finite float in [minimum, maximum]."""

    name = "number"

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or not self.minimum <= number <= self.maximum:
            self.fail(f"{value!r} must be between {self.minimum:g} and {self.maximum:g}", param, ctx)
        return number


class SloText(click.ParamType[str, Any]):
    """Service-level objectives (``ttft=800,tpot=80,e2e=5000``), checked whole: at least one objective, each
    named once, each a positive finite number of milliseconds. The text is kept (the library parses it)."""

    name = "slo"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from sandserve.errors import ConfigError
        from sandserve.observe.metrics import parse_slo

        try:
            parse_slo(str(value))
        except ConfigError as exc:
            from sandserve.cli.program import runnable

            self.fail(runnable(f"{exc.message} {exc.hint or ''}".strip()), param, ctx)
        return str(value)


PORT = click.IntRange(1, 65535)
SECONDS = Seconds()
#: A context window: at least one token, at most what any model has today (10 M).
CONTEXT_LENGTH = click.IntRange(1, 10_000_000)
TEMPERATURE = Number(0.0, 2.0)
SLO = SloText()


def read_text_file(path: str | Path, option: str) -> str:
    """A UTF-8 text file's content, or a clear usage error (exit 2) for one that is not UTF-8 or
    unreadable."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint=option) from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(
            f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8",
            param_hint=option,
        ) from exc


#: Flags with which an engine is told where to listen.
_BIND_FLAGS = ("--host", "--bind", "--listen", "--ip")


def bind_widening(engine_args: tuple[str, ...]) -> str | None:
    """The address an engine flag would make the server listen on, if that is not loopback; else None."""
    engine_args = tuple(word for arg in engine_args for word in arg.split())  # "--host 0.0.0.0" as one arg
    for index, arg in enumerate(engine_args):
        name, eq, value = arg.partition("=")
        if name not in _BIND_FLAGS:
            continue
        if not eq:
            value = engine_args[index + 1] if index + 1 < len(engine_args) else ""
        address = value.strip("[]")
        if address == "localhost":
            continue
        try:
            if ipaddress.ip_address(address).is_loopback:
                continue
        except ValueError:
            pass
        return value or "(no address)"
    return None


def gpu_options(command: Any) -> Any:
    """``--gpu TYPE`` (repeat: a preference list) and ``--gpus N``, as `up` and `fleet up` take them."""
    command = click.option(
        "--gpus",
        "gpu_count",
        type=click.IntRange(1, 8),
        metavar="N",
        help="GPUs per sandbox, all of one type; the model is split over them (SGLang --tp-size N). "
        "Default: the preset's (1 for most).",
    )(command)
    return click.option(
        "--gpu",
        "gpus",
        multiple=True,
        metavar="TYPE",
        help="GPU type in order of preference (repeat): H100, H200, B200, B300, RTX-PRO-6000, RTX-4090, "
        "RTX-5090, MI355X (any case; _ or -). Default: the preset's, else H100, then RTX-PRO-6000. A list "
        "of NVIDIA and AMD types is one create per vendor, each with its own image.",
    )(command)
