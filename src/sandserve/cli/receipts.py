"""How a boot receipt reads: each step's time, the change against the last boot of the spec, the slowest."""

from __future__ import annotations

from sandserve.serve.receipt import BootReceipt, differences, seconds_text


def receipt_lines(receipt: BootReceipt, previous: BootReceipt | None = None) -> list[str]:
    """Lines of at most 80 columns (the why and the slowest step wrap at word boundaries)."""
    changes = differences(receipt, previous)
    head = f"boot receipt: {receipt.origin}, {seconds_text(receipt.total)} from `up` to the first generation"
    lines = [head]
    why = receipt.why.removeprefix(f"{receipt.origin}: ")
    lines += wrapped(why, indent="  ")
    notes = {"weights": "on disk: no download", "compile": "caches restored: no compile"}
    for step in receipt.steps:
        change = changes.get(step.phase)
        delta = f"  {change:+7.1f} s" if change is not None else ""
        note = f"  ({notes[step.phase]})" if step.phase in receipt.restored and step.phase in notes else ""
        lines.append(f"  {step.phase:<17} {step.seconds:>7.1f} s{delta}{note}")
    if previous is not None:
        skipped = [step.phase for step in previous.steps if receipt.seconds(step.phase) is None]
        for phase in skipped:
            lines.append(f"  {phase:<17} {'skipped':>10}  {changes[phase]:+.1f} s")
        when = f"the last boot of this spec ({previous.origin}, {seconds_text(previous.total)})"
        lines += wrapped(f"{changes['total']:+.1f} s against {when}", indent="  ")
    slowest = receipt.slowest()
    if slowest:
        lines += wrapped(f"slowest: {slowest}", indent="  ")
    return lines


def wrapped(text: str, *, indent: str = "", width: int = 80) -> list[str]:
    """``text`` in lines of at most ``width`` columns, broken between words."""
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent + "  ")
