"""Folders the tool writes (results, cases, sweeps): checked before any work, built in a
temporary sibling, and moved into place in one step that never replaces what it did not
agree to replace.

Every folder written through :func:`staged` holds a marker file :data:`MARKER`
(``.gridmarket``, JSON ``{"kind": ..., "version": ...}``). ``overwrite`` replaces only

- an empty folder, or
- a folder holding the marker of the same kind (a folder gridmarket wrote),

and never the working folder, a folder given in ``protect`` (the case folder), an ancestor
of either, the home folder or a filesystem root; a symbolic link is not replaced either.

Use (the same for results, ``new-case`` and anything else that writes a folder)::

    target = check_out_dir(out, kind="case", overwrite=overwrite, protect=[source_dir])
    ...  # validate everything else; nothing has been created or deleted yet
    with staged(target) as tmp:   # a hidden sibling ``.NAME.tmp-XXXX``
        write_files_into(tmp)
    # here ``target.path`` holds the new folder (with its marker); on any exception or
    # interrupt the temporary folder is gone and the old folder is untouched

The final move (:func:`publish`) holds a lock on the parent folder and checks that the path
is still what :func:`check_out_dir` saw (absent, or the very folder it agreed to replace).
If anything else appeared there meanwhile (e.g. a second run to the same ``--out``), that is
left alone and the finished folder is moved beside it (``NAME-new``, ``NAME-new-2``...) with
a :class:`~gridmarket.errors.ResultsError` saying so: two runs to one folder cannot both
succeed.

Signals: :func:`termination_signals_as_interrupts` makes SIGTERM and SIGHUP raise
:class:`Terminated` (a ``KeyboardInterrupt``), so they clean up like Ctrl-C; the creation of
the temporary folder, the final move and the clean-up hold all three signals back until they
are done (:func:`interrupts_deferred`).

Permissions: the folder and its files get the user's umask (``0o777 & ~umask`` for folders,
``0o666 & ~umask`` for files), not the ``0o700``/``0o600`` of temporary files.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridmarket.errors import ResultsError

__all__ = [
    "MARKER",
    "NAME_MAX",
    "RESULTS_WRITTEN_NOTE",
    "OutDir",
    "Terminated",
    "check_out_dir",
    "children_ignore_interrupts",
    "interrupts_deferred",
    "mark_folder",
    "publish",
    "read_marker",
    "staged",
    "termination_signals_as_interrupts",
    "user_umask",
    "write_bytes_atomic",
]

#: name of the marker file in every folder gridmarket writes
MARKER = ".gridmarket"

#: note added to a KeyboardInterrupt that arrived after the folder was complete
RESULTS_WRITTEN_NOTE = "the results were complete before the interrupt:"

#: longest file name most file systems take [bytes]
NAME_MAX = 255

#: the signals that end a run like Ctrl-C
_SIGNALS: tuple[int, ...] = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None),
                                              getattr(signal, "SIGHUP", None)) if s is not None)

_KIND_WORDS = {"results": "results folder", "case": "case folder", "sweep": "sweep folder"}


class Terminated(KeyboardInterrupt):  # noqa: N818 - an interrupt, named like KeyboardInterrupt
    """SIGTERM or SIGHUP, raised like Ctrl-C's KeyboardInterrupt; ``signum`` is the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True)
class OutDir:
    """A folder that :func:`check_out_dir` agreed may be written.

    Attributes
    ----------
    path : Path
        Absolute path (not resolved: a symbolic link in a parent is kept as given).
    kind : str
        ``"results"``, ``"case"``, ``"sweep"``: written into the marker.
    replaces : tuple of int or None
        ``(st_dev, st_ino)`` of the folder that was there and may be replaced; None when the
        path was free.
    what : str
        How messages name the folder (``"results folder"``).
    """

    path: Path
    kind: str
    replaces: tuple[int, int] | None = None
    what: str = field(default="results folder")


def user_umask() -> int:
    """The process's umask (read without changing it for longer than two calls)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of ``folder`` (``{"kind": ..., "version": ...}``), or None when there is no
    valid one."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("kind"), str) else None


def _noun(kind: str) -> str:
    """How "cannot write ... to PATH" names a folder of ``kind``: ``results``, ``the case``."""
    return "results" if kind == "results" else f"the {kind}"


def _protected(path: Path, protect: Iterable[Path], protect_what: str) -> str | None:
    """Why ``path`` (resolved) must never be replaced, or None."""
    real = path.resolve()
    if real == Path(real.anchor) or os.path.ismount(real):
        return "it is a filesystem root"
    try:
        home = Path.home().resolve()
    except (RuntimeError, KeyError):  # pragma: no cover - no home folder known
        home = None
    if home is not None and (real == home or real in home.parents):
        return "it is your home folder" if real == home else f"it holds your home folder {home}"
    cwd = Path.cwd().resolve()
    if real == cwd:
        return "it is the current working folder"
    if real in cwd.parents:
        return f"it holds the current working folder {cwd}"
    for p in protect:
        q = Path(p).expanduser().resolve()
        if real == q:
            return f"it is the {protect_what}"
        if real in q.parents:
            return f"it holds the {protect_what} {q}"
    return None


def check_out_dir(out: str | Path, *, kind: str = "results", overwrite: bool = False,
                  protect: Iterable[Path] = (), protect_what: str = "case folder",
                  option: str = "--out") -> OutDir:
    """Check that the folder ``out`` may be written; create and delete nothing.

    Parameters
    ----------
    out : str or Path
        The folder to write. An empty string is refused (an unset variable in a script).
    kind : str
        What the folder will hold: ``"results"``, ``"case"`` or ``"sweep"``; an existing
        folder is replaced only when its marker names the same kind (or it is empty).
    overwrite : bool
        Allow replacing an existing folder (at the final move, never here).
    protect : iterable of Path
        Folders that must survive, with their ancestors (the case folder of a run, the
        source folder of ``new-case``). The working folder, the home folder and filesystem
        roots are always protected.
    protect_what : str
        How messages name the folders of ``protect`` (``"case folder"``).
    option : str
        The command-line option that names the folder, for messages.

    Returns
    -------
    OutDir
        Pass it to :func:`staged`.

    Raises
    ------
    ResultsError
        One line naming the folder and what is wrong: empty, name too long, a protected
        folder, a file or link in the way, exists without ``overwrite``, not written by
        gridmarket, parent not writable.
    """
    what = _KIND_WORDS.get(kind, f"{kind} folder")
    if isinstance(out, str) and not out.strip():
        msg = f"{option} is empty: give the {what} to write (an unset variable in a script?)"
        raise ResultsError(msg)
    path = Path(out).expanduser().absolute()
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            msg = (f"cannot write the {what}: the name {part[:40]!r}... in {option} is"
                   f" {len(os.fsencode(part))} bytes long; file names may have at most {NAME_MAX} bytes")
            raise ResultsError(msg)
    if len(os.fsencode(str(path))) > 4000:
        msg = f"cannot write the {what} {str(path)[:60]}...: the path is {len(os.fsencode(str(path)))} bytes long"
        raise ResultsError(msg)
    replaces: tuple[int, int] | None = None
    if os.path.lexists(path):
        why = _protected(path, protect, protect_what)
        if why is not None:
            msg = f"refusing to write the {what} to {path}: {why}; choose another {option}"
            raise ResultsError(msg)
        if path.is_symlink():
            msg = f"{what} {path} is a symbolic link; choose another {option} (the link is never replaced)"
            raise ResultsError(msg)
        if not path.is_dir():
            msg = f"{what.split()[0]} path {path} exists and is not a folder"
            raise ResultsError(msg)
        try:
            empty = not any(path.iterdir())
        except OSError as exc:
            msg = f"cannot write the {what} {path}: {exc.strerror or exc}"
            raise ResultsError(msg) from exc
        if not empty:
            if not overwrite and kind == "results":
                msg = f"{what} {path} already exists; pass --overwrite to replace it"
                raise ResultsError(msg)
            if not overwrite:
                msg = f"cannot write {_noun(kind)} to {path}: it exists and is not an empty folder; pass --overwrite" \
                      " to replace it"
                raise ResultsError(msg)
            marker = read_marker(path)
            if marker is None:
                msg = (f"refusing to replace {path}: it is not empty and was not written by gridmarket (no"
                       f" {MARKER} marker in it); choose another {option} or remove it yourself")
                raise ResultsError(msg)
            if marker["kind"] != kind:
                have = _KIND_WORDS.get(marker["kind"], f"{marker['kind']} folder")
                msg = f"refusing to replace {path}: it is a {have} written by gridmarket, not a {what}"
                raise ResultsError(msg)
        st = os.lstat(path)
        replaces = (st.st_dev, st.st_ino)
    probe = path.parent
    while not probe.exists():
        probe = probe.parent
    noun = _noun(kind)
    if not probe.is_dir():
        msg = f"cannot write {noun} to {path}: {probe} is a file, not a folder"
        raise ResultsError(msg)
    if not os.access(probe, os.W_OK | os.X_OK):
        msg = f"cannot write {noun} to {path}: {probe} is not writable"
        raise ResultsError(msg)
    return OutDir(path=path, kind=kind, replaces=replaces, what=what)


# --------------------------------------------------------------------------- signals


#: the signal of the last :class:`Terminated` raised (libraries such as click may swallow the
#: exception itself and keep only "interrupted"); reset by whoever installs the handlers
LAST_TERMINATION: list[int] = []


#: where an exception cannot propagate: it would be printed as "Exception ignored" and the
#: interrupt lost (OpenDSS's C callbacks into Python, finalizers); (file suffix, function)
_NO_RAISE_FRAMES = (("dss_python_backend/events.py", ""), ("dss/_cffi_api_util.py", ""),
                    ("weakref.py", "__call__"))
#: seconds after which a signal that landed in such a frame is delivered again
_REDELIVER_S = 0.02


def _in_no_raise_frame(frame: Any) -> bool:
    """Whether ``frame`` or one of its callers is a frame an exception cannot leave."""
    depth = 0
    while frame is not None and depth < 64:
        path = frame.f_code.co_filename.replace("\\", "/")
        for suffix, func in _NO_RAISE_FRAMES:
            if path.endswith(suffix) and (not func or frame.f_code.co_name == func):
                return True
        frame, depth = frame.f_back, depth + 1
    return False


def _later(signum: int) -> None:
    """Send ``signum`` to this process again shortly, from a helper thread."""
    timer = threading.Timer(_REDELIVER_S, os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()


def _raise_terminated(signum: int, frame: Any) -> None:
    if _in_no_raise_frame(frame):  # not here: the exception would be swallowed
        _later(signum)
        return
    LAST_TERMINATION[:] = [signum]
    raise Terminated(signum)


def _raise_interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C as Python's own handler, except inside a frame an exception cannot leave."""
    if _in_no_raise_frame(frame):
        _later(signum)
        return
    raise KeyboardInterrupt


@contextmanager
def termination_signals_as_interrupts() -> Iterator[None]:
    """Inside the block SIGTERM and SIGHUP raise :class:`Terminated` (a KeyboardInterrupt),
    so they clean up as Ctrl-C does; the previous handlers come back at its end. Outside the
    main thread the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    LAST_TERMINATION.clear()
    for s in _SIGNALS[1:]:
        with suppress(OSError, ValueError):
            previous[s] = signal.signal(s, _raise_terminated)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold back SIGINT, SIGTERM and SIGHUP inside the block and deliver the first at its end.

    Used around the creation of the temporary folder, the final move and the clean-up, so
    that an interrupt cannot leave half a move or a stray temporary folder. Outside the main
    thread (where handlers cannot be set) the block runs as is; a signal whose handler was
    not set from Python is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, Any]] = []
    previous: dict[int, Any] = {}
    for s in _SIGNALS:
        h = signal.getsignal(s)
        if h is None:
            continue
        previous[s] = signal.signal(s, lambda signum, frame: pending.append((signum, frame)))
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if pending:
            signum, frame = pending[0]
            handler = previous.get(signum)
            if callable(handler):
                handler(signum, frame)  # Python's default SIGINT handler raises KeyboardInterrupt
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


@contextmanager
def children_ignore_interrupts() -> Iterator[None]:
    """Processes started inside the block ignore Ctrl-C (SIGINT) and SIGHUP.

    Ctrl-C in a terminal reaches every process of the foreground group: worker processes
    (a Dask cluster's nannies and workers) would each print a KeyboardInterrupt traceback.
    With the signals ignored when they start (an ignored signal stays ignored across
    ``exec``, and Python then installs no handler of its own), only this process sees them
    and stops the workers in its clean-up. During the block this process ignores them too,
    so keep it to the start of the processes. Outside the main thread it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for s in (signal.SIGINT, getattr(signal, "SIGHUP", None)):
        if s is not None and signal.getsignal(s) is not None:
            previous[s] = signal.signal(s, signal.SIG_IGN)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------- the move


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, failing with FileExistsError when ``dst`` exists (Linux
    ``renameat2(RENAME_NOREPLACE)``; elsewhere a check under the caller's lock, then rename,
    which at worst replaces an empty folder)."""
    fn = getattr(_libc(), "renameat2", None) if _libc() is not None else None
    if fn is not None:
        at_fdcwd, rename_noreplace = -100, 1
        if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), str(dst))
        if code not in (errno.EINVAL, errno.ENOSYS):  # not supported here: fall through
            raise OSError(code, os.strerror(code), str(src))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


_LIBC: list[Any] = []


def _libc() -> Any:
    if not _LIBC:
        try:
            lib = ctypes.CDLL(None, use_errno=True)
            if hasattr(lib, "renameat2"):
                lib.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_uint]
                lib.renameat2.restype = ctypes.c_int
        except OSError:  # pragma: no cover - no C library to load
            lib = None
        _LIBC.append(lib)
    return _LIBC[0]


@contextmanager
def _parent_lock(parent: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the parent folder (no lock file left behind) while moving."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    try:
        fd = os.open(parent, os.O_RDONLY)
    except OSError:  # a folder that cannot be opened for reading: the no-replace rename still holds
        yield
        return
    try:
        with suppress(OSError):  # a file system without locks: the no-replace rename still holds
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fix_modes(root: Path) -> None:
    """Give ``root`` and everything in it the user's umask (temporary files are 0o600/0o700)."""
    mask = user_umask()
    dmode, fmode = 0o777 & ~mask, 0o666 & ~mask
    os.chmod(root, dmode)
    for base, dirs, files in os.walk(root):
        for d in dirs:
            os.chmod(os.path.join(base, d), dmode)
        for f in files:
            p = os.path.join(base, f)
            if not os.path.islink(p):
                os.chmod(p, fmode)


def _beside(path: Path, tmp: Path) -> Path:
    """Move ``tmp`` to the first free ``NAME-new``, ``NAME-new-2``, ... beside ``path``."""
    for k in range(1, 1000):
        cand = path.with_name(f"{path.name}-new" + ("" if k == 1 else f"-{k}"))
        try:
            _rename_noreplace(tmp, cand)
        except FileExistsError:
            continue
        return cand
    raise ResultsError(f"no free name beside {path} for the finished folder {tmp}")  # pragma: no cover


def _replaceable(folder: Path, kind: str) -> bool:
    """``folder`` is empty or holds gridmarket's marker of ``kind``."""
    try:
        if not any(folder.iterdir()):
            return True
    except OSError:
        return False
    marker = read_marker(folder)
    return marker is not None and marker["kind"] == kind


def mark_folder(folder: Path, kind: str) -> None:
    """Write the marker of a folder gridmarket wrote (``{"kind": kind, "version": ...}``), so that
    a later ``--overwrite`` may replace it. :func:`publish` does this for every staged folder."""
    (Path(folder) / MARKER).write_text(json.dumps({"kind": kind, "version": _version()}) + "\n",
                                       encoding="utf-8")


#: every folder :func:`publish` moved into place in this process, in order (the CLI clears it
#: per command: an interrupt after the move is reported as "the results were complete")
PUBLISHED: list[Path] = []


def publish(tmp: Path, target: OutDir) -> Path:
    """Move the complete folder ``tmp`` to ``target.path`` (call inside :func:`interrupts_deferred`).

    Writes the marker and the umask's modes first. Replaces only the folder
    :func:`check_out_dir` agreed to replace, and only if it is still the same folder;
    otherwise moves ``tmp`` beside the path and raises.

    Raises
    ------
    ResultsError
        The path changed since the check (another run?); names where the finished folder is.
    """
    out = target.path
    mark_folder(tmp, target.kind)
    _fix_modes(tmp)
    with _parent_lock(out.parent):
        try:
            st = os.lstat(out)
            now: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            now = None
        if now is not None and not out.is_symlink() and now == target.replaces and not _replaceable(out, target.kind):
            where = _beside(out, tmp)
            msg = (f"{out} changed while gridmarket was writing it (files that are not gridmarket's were put in"
                   f" it); it was left as it is and the finished {target.what} is in {where}")
            raise ResultsError(msg)
        if now is not None and (now != target.replaces or out.is_symlink()):
            where = _beside(out, tmp)
            how = "appeared" if target.replaces is None else "was replaced"
            msg = (f"{out} {how} while gridmarket was writing it (another run to the same folder?); it was"
                   f" left as it is and the finished {target.what} is in {where}")
            raise ResultsError(msg)
        if now is None:
            try:
                _rename_noreplace(tmp, out)
            except FileExistsError:
                where = _beside(out, tmp)
                msg = (f"{out} appeared while gridmarket was writing it (another run to the same folder?);"
                       f" it was left as it is and the finished {target.what} is in {where}")
                raise ResultsError(msg) from None
            PUBLISHED.append(out)
            return out
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        _rename_noreplace(out, old)
        try:
            _rename_noreplace(tmp, out)
        except BaseException:
            _rename_noreplace(old, out)
            raise
        PUBLISHED.append(out)
        shutil.rmtree(old, ignore_errors=True)
    return out


def _version() -> str:
    from gridmarket import __version__

    return __version__


@contextmanager
def staged(target: OutDir) -> Iterator[Path]:
    """A temporary sibling folder of ``target.path`` to fill; published when the block ends
    normally, removed (with any parent folders created for it) when it raises.

    A KeyboardInterrupt held back during the final move gets the note
    ``RESULTS_WRITTEN_NOTE <path>``: the folder is complete.
    """
    out = target.path
    created: list[Path] = []
    tmp: Path | None = None
    committed = False
    try:
        with interrupts_deferred():
            for parent in reversed(out.parents):
                if not parent.exists():
                    parent.mkdir()
                    created.append(parent)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        yield tmp
        try:
            with interrupts_deferred():
                publish(tmp, target)
                committed = True
        except KeyboardInterrupt as exc:
            if committed:
                exc.add_note(f"{RESULTS_WRITTEN_NOTE} {out}")
            raise
    except BaseException as exc:
        if not committed:
            with interrupts_deferred():
                if tmp is not None and tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
                for parent in reversed(created):
                    with suppress(OSError):  # not empty: something else was put there meanwhile
                        parent.rmdir()
        if isinstance(exc, OSError) and not isinstance(exc, ResultsError):
            msg = f"cannot write {_noun(target.kind)} to {out}: "
            msg += f"{exc.strerror or exc}"
            if exc.filename:
                msg += f" ({exc.filename})"
            raise ResultsError(msg) from exc
        raise


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write one file whole or not at all: ``payload`` goes to a temporary file beside ``path``,
    which is then moved into place (a reader never sees half a file). The file gets the
    user's umask."""
    with interrupts_deferred():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            os.fchmod(fh.fileno(), 0o666 & ~user_umask())
        os.replace(tmp, path)
    except BaseException:
        with interrupts_deferred():
            Path(tmp).unlink(missing_ok=True)
        raise
