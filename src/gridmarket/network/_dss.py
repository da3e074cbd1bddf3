"""Low-level OpenDSS plumbing shared by the engine's modules: the DSS C-API constants, batches
of element pointers, turning OpenDSS exceptions into :class:`~gridmarket.errors.NetworkError`,
and bus-name parsing. Nothing here knows about the market.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import opendssdirect as _odd

from gridmarket.errors import NetworkError
from gridmarket.network.scripts import dss_quote, scan_scripts

_DSSException: type[Exception] = _odd.DSSException
_SETTER_AVOID_FULL_RECALC = 0x2  # DSS C-API SetterFlags_AvoidFullRecalc
_BATCH_SET = 0  # DSS C-API BatchOperation_Set
_MODE_SNAPSHOT, _MODE_YEARLY = 0, 2  # DSS C-API SolveModes
_DEENERGISED_PU = 1e-3  # |V| below this [pu] marks a node as not energised (NaN in v_pu)
_PHASE_NODES = (1, 2, 3)  # node numbers treated as phase conductors; higher ones are neutrals
#: OpenDSS line length units (``Lines.Units``) -> km; 0 ("none") is read as km
KM_PER_LINE_UNIT = {0: 1.0, 1: 1.609344, 2: 0.3048, 3: 1.0, 4: 1e-3, 5: 0.3048e-3, 6: 0.0254e-3, 7: 1e-5, 8: 1e-6}


def new_context() -> Any:
    """A private OpenDSS engine context (:func:`opendssdirect.NewContext`).

    OpenDSS's desktop features are off (process-wide settings of DSS C-API): no editor is
    opened by ``Show``, no form or plot window, no ``DOScmd``. The process's working directory
    is kept (creating a context changes it).
    """
    cwd = os.getcwd()
    try:
        ctx = _odd.NewContext()  # DSS C-API changes the working directory here
        ctx.Basic.AllowEditor(False)
        ctx.Basic.AllowForms(False)
        ctx.Basic.AllowDOScmd(False)
    finally:
        os.chdir(cwd)
    return ctx


def compile_master(ctx: Any, path: Path, out_dir: Path) -> None:
    """Compile the master script ``path`` into ``ctx`` with OpenDSS's output in ``out_dir``.

    The scripts are read first (:func:`~gridmarket.network.scripts.scan_scripts`): a
    ``Redirect``/``Compile`` cycle is refused before OpenDSS sees it, and each command that
    needs a desktop (``Show``, ``Plot``) gets a :class:`UserWarning` (OpenDSS then writes its
    output into ``out_dir`` and opens nothing). The circuit is built by ``Clear``, the data
    path set to ``out_dir``, then ``Redirect`` of the master: unlike ``Compile``, this leaves
    the data path where trace files (``RegControl debugtrace``), ``Export`` and monitors write
    in ``out_dir`` instead of the feeder's folder. The process's working directory is restored
    (OpenDSS changes it while it reads each script).

    Raises
    ------
    NetworkError
        A cycle, an OpenDSS error (with OpenDSS's message, file and line), or no circuit.
    """
    scan = scan_scripts(path)
    for where in scan.desktop:
        warnings.warn(f"{where}: needs OpenDSS's desktop program; its output goes to a private "
                      "folder and nothing is shown", UserWarning, stacklevel=3)
    cwd = os.getcwd()
    try:
        with _dss_errors(f"cannot compile OpenDSS master {str(path)!r}"):
            ctx.Text.Command("Clear")
            ctx.Basic.DataPath(str(out_dir))
            ctx.Text.Command(f"Redirect {dss_quote(path)}")
            if ctx.Basic.NumCircuits() == 0:
                msg = f"OpenDSS master {str(path)!r} defines no circuit (no 'New Circuit')"
                raise NetworkError(msg)
    except UnicodeDecodeError as exc:  # OpenDSS's message quoted bytes that are not text
        names = ", ".join(p.name for p in scan.files[:5]) + (", ..." if len(scan.files) > 5 else "")
        msg = (f"cannot compile OpenDSS master {str(path)!r}: OpenDSS stopped on bytes that are not "
               f"text in one of its scripts ({names})")
        raise NetworkError(msg) from exc
    finally:
        os.chdir(cwd)


def private_folder() -> Path:
    """A new private temporary folder for one OpenDSS context's output files."""
    return Path(tempfile.mkdtemp(prefix="gridmarket-dss-"))


#: signals that end a command (gridmarket.outdir turns them into exceptions)
_ENDING_SIGNALS = {getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)}


def remove_folder(path: Path | None) -> None:
    """Remove a folder made by :func:`private_folder` (errors ignored).

    It also runs as a finalizer, where an exception cannot propagate: a Ctrl-C or SIGTERM that
    arrived meanwhile would be printed as "Exception ignored" and lost, and the folder left. So
    the ending signals wait (blocked in this thread) until the folder is gone; they are
    delivered when unblocked, to the code that runs next.
    """
    if path is None:
        return
    blocked = threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask")
    if blocked:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _ENDING_SIGNALS)
    try:
        shutil.rmtree(path, ignore_errors=True)
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _Batch:
    """A DSS C-API batch: pointers to a fixed list of elements of one class.

    ``set(prop, values)`` writes one float property of all elements in a single C call.
    """

    def __init__(self, ctx: Any, cls: str, indices: np.ndarray) -> None:
        self._ctx = ctx  # keeps the DSS context alive as long as the batch
        lib, ffi = ctx.dss_lib, ctx.dss_ffi
        self._lib = lib
        self._ffi = ffi
        self.size = len(indices)
        idx = np.ascontiguousarray(indices, dtype=np.int32)
        result = ffi.new("void***")
        dims = ffi.new("int32_t[4]")
        lib.Batch_CreateByIndexS(result, dims, cls.encode(), ffi.cast("int32_t*", idx.ctypes.data),
                                 self.size)
        if int(dims[0]) != self.size:
            lib.Batch_Dispose(result[0])
            msg = f"OpenDSS returned {int(dims[0])} of {self.size} {cls} elements for a batch"
            raise NetworkError(msg)
        self._ptr = ffi.gc(result[0], lib.Batch_Dispose) if self.size else result[0]

    def set(self, prop: bytes, values: np.ndarray, *, flags: int = _SETTER_AVOID_FULL_RECALC
            ) -> None:
        """Set float property ``prop`` of every element; ``values`` float64, C-contiguous.

        ``flags=0`` makes OpenDSS fully recalculate the elements (needed for limits such as
        ``vminpu``); the default skips that, as the classic ``Loads.kW`` setter does.
        """
        if self.size:
            self._lib.Batch_Float64ArrayS(self._ptr, self.size, prop, _BATCH_SET,
                                          self._ffi.cast("double*", values.ctypes.data), flags)



@contextmanager
def _dss_errors(what: str) -> Iterator[None]:
    """Turn an OpenDSS exception into a :class:`NetworkError` that starts with ``what``."""
    try:
        yield
    except NetworkError:
        raise
    except _DSSException as exc:
        msg = f"{what}: OpenDSS error {exc}"
        raise NetworkError(msg) from exc



def _bus_of(spec: str) -> str:
    """Bus name of a ``bus.node.node`` spec, lower case."""
    return spec.split(".", 1)[0].lower()

