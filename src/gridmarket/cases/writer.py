"""Write a case folder (shared CASE_FORMAT.md) atomically and deterministically.

A case folder is ``case.toml``, ``agents.csv``, ``profiles.csv`` and ``network/`` (plus any
extra files such as ``PROVENANCE.md``). :func:`write_case` writes everything into a
temporary sibling folder and renames it into place only when complete, so a crash never
leaves a half-written case. Floats are rounded to 6 decimals (:func:`fmt`), rows in the
order given, line endings ``\\n``: the same inputs give byte-identical files.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gridmarket.errors import GridmarketError

__all__ = [
    "AGENT_COLUMNS",
    "DECIMALS",
    "Key",
    "Section",
    "fmt",
    "render_toml",
    "csv_text",
    "write_case",
]

#: Column order of ``agents.csv`` (shared CASE_FORMAT.md).
AGENT_COLUMNS: tuple[str, ...] = (
    "name", "kind", "community", "element", "profile", "scale", "a", "b", "c", "flex", "units", "pf",
)

Cell = str | int | float | None


#: CSV floats are rounded to this many decimals (1e-6 kW = 1 mW, 1e-6 currency/kWh).
DECIMALS = 6


def fmt(x: Cell) -> str:
    """Format one CSV cell: ``None`` → empty, floats rounded to :data:`DECIMALS` decimals and
    written in the shortest form (``1.5``, ``0.0087``, ``-0`` → ``0``), else ``str``."""
    if x is None:
        return ""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            msg = f"refusing to write a non-finite number: {x!r}"
            raise GridmarketError(msg)
        s = f"{round(x, DECIMALS):.12g}"
        return "0" if s == "-0" else s
    return str(x)


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """Render rows as CSV text with :func:`fmt` cells and ``\\n`` line endings."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        if len(r) != len(header):
            msg = f"row {r!r} has {len(r)} cells, header has {len(header)}"
            raise GridmarketError(msg)
        w.writerow([fmt(c) for c in r])
    return buf.getvalue()


# ---------------------------------------------------------------------------- TOML
@dataclass(frozen=True)
class Key:
    """One ``key = value`` line of case.toml, with an optional trailing comment."""

    name: str
    value: object
    comment: str = ""


@dataclass(frozen=True)
class Section:
    """One ``[table]`` of case.toml; ``comment`` lines are written above the header."""

    name: str
    keys: Sequence[Key]
    comment: str = ""
    notes: Sequence[str] = field(default=())  #: comment lines written after the keys


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            msg = f"refusing to write a non-finite number to TOML: {v!r}"
            raise GridmarketError(msg)
        s = repr(round(v, 10))
        return s
    if isinstance(v, str):
        escaped = v.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    msg = f"cannot write {type(v).__name__} to TOML: {v!r}"
    raise GridmarketError(msg)


def _comment_lines(text: str) -> list[str]:
    return [("# " + line).rstrip() for line in text.splitlines()]


def render_toml(sections: Sequence[Section], *, header: str = "") -> str:
    """Render case.toml text with comments; the result is checked by parsing it back."""
    lines: list[str] = _comment_lines(header) if header else []
    for sec in sections:
        if lines:
            lines.append("")
        if sec.comment:
            lines.extend(_comment_lines(sec.comment))
        lines.append(f"[{sec.name}]")
        width = max((len(k.name) for k in sec.keys), default=0)
        for k in sec.keys:
            line = f"{k.name.ljust(width)} = {_toml_value(k.value)}"
            if k.comment:
                line += f"  # {k.comment}"
            lines.append(line)
        lines.extend(_comment_lines("\n".join(sec.notes)))
    text = "\n".join(lines) + "\n"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - a bug in this module
        msg = f"internal error: rendered case.toml does not parse: {exc}"
        raise GridmarketError(msg) from exc
    return text


# ---------------------------------------------------------------------------- folder
def _write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        with path.open("w", encoding="utf-8", newline="\n") as f:
            f.write(content)


def _check_relative(name: str) -> None:
    p = Path(name)
    if p.is_absolute() or ".." in p.parts:
        msg = f"case file names must be relative and inside the case folder, got {name!r}"
        raise GridmarketError(msg)


def write_case(
    out: Path,
    *,
    case_toml: str,
    agents: Sequence[Mapping[str, Cell]],
    profiles_header: Sequence[str],
    profiles_rows: Sequence[Sequence[Cell]],
    network: Mapping[str, str | bytes],
    extra: Mapping[str, str | bytes] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a complete case folder at ``out``, atomically.

    Parameters
    ----------
    out : pathlib.Path
        The case folder to create. It must not exist, be an empty folder, or ``overwrite``
        must be true (then the old folder is replaced in one rename).
    case_toml : str
        Text of ``case.toml`` (e.g. from :func:`render_toml`).
    agents : sequence of mapping
        One mapping per agent row, keys from :data:`AGENT_COLUMNS` (missing keys → empty).
    profiles_header, profiles_rows : sequence
        ``profiles.csv``: header (``time`` or ``step`` first) and rows, kW mean over the step.
    network : mapping
        File name (relative to ``network/``) → content.
    extra : mapping, optional
        File name (relative to the case folder) → content, e.g. ``PROVENANCE.md``.
    overwrite : bool
        Replace an existing non-empty ``out``.

    Returns
    -------
    pathlib.Path
        ``out``, absolute.
    """
    out = Path(out).absolute()
    if out.exists():
        if not out.is_dir():
            msg = f"cannot write case to {out}: it exists and is not a folder"
            raise GridmarketError(msg)
        if any(out.iterdir()) and not overwrite:
            msg = f"cannot write case to {out}: the folder exists and is not empty (use overwrite=True)"
            raise GridmarketError(msg)
    for name in [*network, *(extra or {})]:
        _check_relative(name)
    unknown = {k for a in agents for k in a} - set(AGENT_COLUMNS)
    if unknown:
        msg = f"unknown agents.csv columns {sorted(unknown)}; allowed: {list(AGENT_COLUMNS)}"
        raise GridmarketError(msg)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _write(tmp / "case.toml", case_toml)
        _write(tmp / "agents.csv", csv_text(AGENT_COLUMNS, [[a.get(c) for c in AGENT_COLUMNS] for a in agents]))
        _write(tmp / "profiles.csv", csv_text(profiles_header, profiles_rows))
        for name, content in sorted(network.items()):
            _write(tmp / "network" / name, content)
        for name, content in sorted((extra or {}).items()):
            _write(tmp / name, content)
        os.chmod(tmp, 0o755)  # mkdtemp creates 0o700
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            old.rmdir()
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
