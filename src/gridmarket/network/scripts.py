"""Reading an OpenDSS master before OpenDSS does: the tree of ``Redirect``/``Compile``d scripts
(a cycle, which crashes OpenDSS, becomes a clear :class:`~gridmarket.errors.NetworkError`), the
commands that need a desktop (``Show``, ``Plot``...) and the quoting of a path in a command.

Pure Python on the script text; no OpenDSS here. The reading follows OpenDSS's own rules: a
command name is case-insensitive; ``!`` and ``//`` start a comment (whole line or inline), and
``/* ... */`` at the start of a line a block comment; a file name may be quoted with ``"``,
``'``, ``()``, ``[]`` or ``{}``; a relative path is relative to the folder of the script that
names it; a name that is not a file is tried with ``.dss`` appended. A ``Redirect`` whose file
does not exist is left to OpenDSS, whose message names it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from gridmarket.errors import NetworkError

__all__ = ["DESKTOP_COMMANDS", "ScriptScan", "dss_quote", "scan_scripts"]

#: commands that open a window or an editor in OpenDSS's desktop program
DESKTOP_COMMANDS = ("show", "plot", "visualize", "doscmd")
_INCLUDE = ("redirect", "compile")
_QUOTES = (('"', '"'), ("'", "'"), ("(", ")"), ("[", "]"), ("{", "}"))
_WORD = re.compile(r"[A-Za-z_]+")
_MAX_FILES = 100_000  # a guard: scanning stops (and OpenDSS takes over) beyond this many scripts


@dataclass
class ScriptScan:
    """What :func:`scan_scripts` found.

    Attributes
    ----------
    files : list of pathlib.Path
        Every script reached, master first (each once).
    desktop : list of str
        ``"file:line: command"`` for each command that needs a desktop (``Show``, ``Plot``...).
    """

    files: list[Path] = field(default_factory=list)
    desktop: list[str] = field(default_factory=list)


def dss_quote(path: str | Path) -> str:
    """``path`` quoted for an OpenDSS command, with the first of ``" ' () [] {}`` whose closing
    character it does not contain (a ``"`` in a path must not end the name early).

    Raises
    ------
    NetworkError
        The path holds every closing quote character.
    """
    text = str(path)
    for left, right in _QUOTES:
        if right not in text:
            return f"{left}{text}{right}"
    msg = f"path {text!r} holds every OpenDSS quote character (\" ' ) ] }}); rename it to compile it"
    raise NetworkError(msg)


def _strip_comment(line: str) -> str:
    """The line without an inline ``!`` or ``//`` comment (outside quotes)."""
    if "!" not in line and "//" not in line:  # most lines: no per-character scan
        return line
    closing = None
    for k, ch in enumerate(line):
        if closing is not None:
            if ch == closing:
                closing = None
            continue
        for left, right in _QUOTES:
            if ch == left:
                closing = right
                break
        else:
            if ch == "!" or line.startswith("//", k):
                return line[:k]
    return line


def _argument(rest: str) -> str:
    """The first argument of a command (a file name), its quotes removed."""
    rest = rest.strip()
    if not rest:
        return ""
    for left, right in _QUOTES:
        if rest.startswith(left):
            end = rest.find(right, 1)
            return rest[1:end] if end > 0 else rest[1:]
    token = re.split(r"[\s,]", rest, maxsplit=1)[0]
    if "=" in token:  # "Redirect file=x.dss"
        key, _, value = token.partition("=")
        if key.lower() == "file":
            return _argument(value + rest[len(token):]) if value else ""
    return token


def _resolve(name: str, folder: Path) -> Path | None:
    """The file a Redirect/Compile of ``name`` in a script of ``folder`` reads, or None when
    there is none (OpenDSS then says so).

    Raises
    ------
    NetworkError
        ``name`` is a device, a pipe or another special file (OpenDSS would read it forever).
    """
    if not name:
        return None
    base = Path(name).expanduser()
    if not base.is_absolute():
        base = folder / base
    for cand in (base, base.with_name(base.name + ".dss")):
        try:
            if cand.is_file():
                return cand.resolve()
            if cand.exists() and not cand.is_dir():
                msg = f"{cand} is not a regular file; OpenDSS cannot read a script from it"
                raise NetworkError(msg)
        except OSError:
            return None
    return None


def _commands(path: Path) -> list[tuple[int, str, str]]:
    """``(line number, command word lower case, rest of the line)`` of a script."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []  # OpenDSS will say what is wrong with it
    out = []
    in_block = False
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if in_block:
            if "*/" in line:
                in_block = False
            continue
        if line.startswith("/*"):
            in_block = "*/" not in line[2:]
            continue
        line = _strip_comment(line).strip()
        if not line or line.startswith("~"):
            continue
        m = _WORD.match(line)
        if m:
            out.append((no, m.group(0).lower(), line[m.end():]))
    return out


def scan_scripts(master: str | Path) -> ScriptScan:
    """Follow the ``Redirect``/``Compile`` tree of ``master`` and refuse a cycle.

    Returns
    -------
    ScriptScan
        The scripts reached and the desktop commands found.

    Raises
    ------
    NetworkError
        A script redirects (directly or through others) to a script that is still being read,
        e.g. a master that redirects itself or A -> B -> A; the message names the chain of files
        and the line that closes it.
    """
    root = Path(master).expanduser().resolve()
    scan = ScriptScan()
    done: set[Path] = set()  # scripts whose whole tree was read without a cycle
    # depth-first walk with an explicit stack: (path, its commands, next command index)
    stack: list[tuple[Path, list[tuple[int, str, str]], int]] = [(root, _commands(root), 0)]
    on_stack = {root}
    scan.files.append(root)
    while stack:
        path, cmds, k = stack[-1]
        if k >= len(cmds):
            stack.pop()
            on_stack.discard(path)
            done.add(path)
            continue
        stack[-1] = (path, cmds, k + 1)
        no, word, rest = cmds[k]
        if word in DESKTOP_COMMANDS:
            scan.desktop.append(f"{path.name}:{no}: {word} {rest.strip()}".rstrip())
            continue
        if word not in _INCLUDE:
            continue
        try:
            target = _resolve(_argument(rest), path.parent)
        except NetworkError as exc:
            msg = f"{path.name}, line {no}: {word} {rest.strip()}: {exc}"
            raise NetworkError(msg) from None
        if target is None or target in done:
            continue
        if target in on_stack:
            chain = [p for p, _, _ in stack]
            chain = chain[chain.index(target):] + [target]
            names = " -> ".join(str(p) for p in chain)
            msg = (f"OpenDSS scripts {word} each other in a cycle: {names} "
                   f"({path.name}, line {no}: {word} {rest.strip()}); OpenDSS would crash on it")
            raise NetworkError(msg)
        if len(scan.files) >= _MAX_FILES:
            break
        scan.files.append(target)
        on_stack.add(target)
        stack.append((target, _commands(target), 0))
    return scan
