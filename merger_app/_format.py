"""Numbers for people: sizes, parameter counts, durations, dtype names.

Kept out of the Qt modules so the table, status bar and progress panel say things the
same way, and so the wording is tested without a display.
"""

from __future__ import annotations

import math
import re
from typing import Any

from core.errors import MergerError

_SIZE_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")
_COUNT_UNITS = ("", "K", "M", "B", "T")


def human_bytes(n: int | float | None) -> str:
    """1500 → '1.5 KB' (powers of 1000, as the CLI and the shard-size box read them)."""
    if n is None:
        return ""
    n = float(n)
    if n < 1000:
        return f"{int(n)} B"
    exp = min(int(math.log(n, 1000)), len(_SIZE_UNITS) - 1)
    value = n / 1000**exp
    return f"{value:.1f} {_SIZE_UNITS[exp]}" if value < 100 else f"{value:.0f} {_SIZE_UNITS[exp]}"


def human_count(n: int | None) -> str:
    """7_241_732_096 → '7.24B' (parameter counts, as model cards write them)."""
    if n is None:
        return ""
    if n < 1000:
        return str(int(n))
    exp = min(int(math.log10(n) // 3), len(_COUNT_UNITS) - 1)
    value = n / 1000**exp
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:.{digits}f}{_COUNT_UNITS[exp]}"


def human_duration(seconds: float | None) -> str:
    """75.4 → '1:15'; 3725 → '1:02:05'; None → '–'."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def remaining_seconds(elapsed: float, fraction: float) -> float | None:
    """Linear estimate of the time left; None until there is enough progress to say."""
    if fraction <= 0.01 or elapsed <= 0.0:
        return None
    return max(0.0, elapsed * (1.0 - fraction) / fraction)


def dtype_name(dtype: Any) -> str:
    """torch.float16 → 'float16' without importing torch here (its str starts 'torch.')."""
    text = str(dtype)
    return text.removeprefix("torch.")


def format_value(value: Any) -> str:
    """A parameter value as a table cell shows it: 0.5, true, or a compact list."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def summary_line(text: str, limit: int = 120, *, keep: int = 0) -> str:
    """The first line of `text`, cut to about `limit` characters; '…' when more follows.

    For labels that must stay short however long the message (the hint beside Save and
    Merge): the cut prefers the start of a parenthesis, where core's messages put their
    reasons, then a space, but never falls in the first `keep` characters
    (what to do, when it comes first). The full text belongs in a tooltip or the log.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    limit = max(limit, keep + 1)
    if len(first) <= limit:
        return first + (" …" if len(lines) > 1 else "")
    head = first[:limit]
    cut = head[: limit - 1]
    for sep in (" (", " "):
        at = head.rfind(sep)
        if at >= max(limit // 2, keep):
            cut = head[:at]
            break
    return cut.rstrip(" ,;:") + "…"


def error_text(reason: str, remedy: str = "") -> str:
    """A user error as the window says it: what is wrong, then what to do, as sentences.

    Built from the error's fields (`reason_and_remedy`), not from core's one-line
    `str(error)`, so the window can order and cut the two parts as each place needs."""
    if not remedy:
        return reason
    return f"{_sentence(reason)} {_sentence(remedy[:1].upper() + remedy[1:])}"


def reason_and_remedy(exc: Exception) -> tuple[str, str]:
    """(what is wrong, with the file and tensor; what to do, '' if it says nothing) of a
    `core.errors.MergerError`, for the window to arrange. An error of another kind stays
    whole, as the reason."""
    if isinstance(exc, MergerError):
        return exc.reason, exc.hint or ""
    return str(exc), ""


def user_text(exc: Exception) -> str:
    """A user error's whole text as the window shows it (`error_text` of its parts)."""
    return error_text(*reason_and_remedy(exc))


def remedy_first(reason: str, remedy: str = "") -> str:
    """What to do, then why: for a line that may be cut (the hint), so that what is cut
    is the reason (whole in the tooltip, the log and the error box), not the remedy."""
    if not remedy:
        return reason
    return f"{_sentence(remedy[:1].upper() + remedy[1:])} Why: {reason}"


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


_LONG_PATH = re.compile(r"(?<![\w.])(?:~|/)[^\s'\"()]*/([^\s/'\"()]+)")


def shorten_paths(text: str, longest: int = 32) -> str:
    """Absolute paths longer than `longest` characters cut to …/name: in a one-line
    hint the reason after a long path ("does not exist") matters more than its folders."""

    def cut(match: re.Match) -> str:
        whole = match.group(0)
        return whole if len(whole) <= longest else f"…/{match.group(1)}"

    return _LONG_PATH.sub(cut, text)


def aligns_then_interpolates(spec: Any) -> bool:
    """A Re-Basin method: B is aligned to A, then lambda goes from A (0) to that B (1)."""
    return bool(spec.needs.arch) and any(p.name == "lambda" for p in spec.params)


LAMBDA_ENDS = "0 = A, 1 = B aligned to A"


def lambda_outcome(spec: Any, value: float) -> str:
    """What a Re-Basin merge wrote, by its lambda ('' for other methods): λ = 1, 'align
    only', is B aligned to A (the same function as B), not a mix."""
    if not aligns_then_interpolates(spec) or not isinstance(value, int | float):
        return ""
    if value == 1:
        return "λ = 1: B aligned to A"
    if value == 0:
        return "λ = 0: A"
    return f"λ = {value:g}, between A (0) and B aligned to A (1)"
