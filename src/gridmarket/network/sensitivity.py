"""Linear sensitivities of voltages, line currents and transformer loadings to the agents'
powers, around the operating point of an OpenDSS power flow (shared MODEL.md,
*Network-aware market*).

Two ways, both three-phase and unbalanced, both from the compiled network itself:

* :func:`ymatrix_sensitivities` (the default): the admittance matrix of the network's
  series and shunt elements (lines, transformers, capacitors, reactors, the source's Norton
  impedance) read from each element's primitive matrix, and the power-conversion elements
  (Loads, PVSystems, Storage, Generators) as constant-power branches. The power-flow
  equations ``Y V + Σ_b c_b conj(S_b / (c_bᵀ V)) = I_source`` are linearised at the solved
  voltages (in ``V`` and ``conj V``: constant power is not holomorphic), giving one sparse
  real system ``M [ΔRe V; ΔIm V] = R Δp``; the rows that are asked for are computed with the
  adjoint ``Mᵀ λ = w`` (one LU, one solve per row), so the cost grows with the active set,
  not with the agents. The loads' own voltage dependence (a non-constant-power model, or a
  load outside its voltage band) is neglected; :func:`perturbed_sensitivities` measures that.
* :func:`perturbed_sensitivities`: one power flow per element and direction (central
  differences of real OpenDSS solves), then the elements are restored.

Units and signs. Columns are the elements of an :class:`~gridmarket.network.ElementSet`;
each column is the derivative with respect to the element's **consumption** in kW (load
reference: a PVSystem producing 1 kW more is a column value times −1), with the element's
reactive power following its dispatch rule (a Load's kvar = kW × its kvar/kW ratio; PV and
Storage at unity power factor), i.e. exactly what a change of the agent's cleared ``P`` or
``S`` does in :meth:`~gridmarket.network.OpenDSSNetwork.run_series`. ``dq`` gives the
derivative with respect to the element's reactive consumption [per kvar] (Y-matrix method
only). Rows: ``"voltage"`` = bus-phase voltage magnitude [pu of the LN base],
``"current"`` = line-phase current magnitude at terminal 1 [A], ``"transformer"`` = loading
``|S_1| / S_1,rated`` of winding 1 [fraction of its normal kVA], as the engine's
``PowerFlowResult.transformer_loading``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from gridmarket.errors import NetworkError
from gridmarket.network.opendss import ElementSet, OpenDSSNetwork

__all__ = [
    "KINDS",
    "GridModel",
    "OperatingPoint",
    "Sensitivity",
    "capture_states",
    "dispatch_q_ratio",
    "grid_model",
    "perturbed_sensitivities",
    "read_operating_point",
    "row_values",
    "ymatrix_sensitivities",
]

#: row kinds and their units: voltage [pu], current [A], transformer loading [fraction]
KINDS = ("voltage", "current", "transformer")
_PC_CLASSES = ("Load", "PVSystem", "Storage", "Generator")
_PHASE_NODES = (1, 2, 3)
_PRODUCING = ("PVSystem", "Generator")  # their run_series kw is produced power
_TINY_V = 1e-3  # |branch voltage| below this [V] is de-energised: no linearised load there


def _cplx(flat: Sequence[float] | np.ndarray) -> np.ndarray:
    """OpenDSS's interleaved (re, im) floats as a complex array."""
    a = np.asarray(flat, dtype=float)
    return a[0::2] + 1j * a[1::2]


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True, eq=False)
class GridModel:
    """What the linearisation needs from a compiled circuit, read once per circuit version.

    Node indices are positions in OpenDSS's Y-node order (``Circuit.YNodeOrder``); ``-1`` is
    ground.

    Attributes
    ----------
    node_names : tuple of str
        ``"bus.node"``, lower case, in Y order.
    base_v : numpy.ndarray
        Line-to-neutral base of each node [V]; 0 when the bus has none.
    y : scipy.sparse.csc_matrix
        (n, n) complex admittance of the network without power-conversion elements [S].
    line_names, line_rows, norm_amps
        ``"line.name.phase"`` conductors, their terminal-1 current rows ``I = line_rows @ V``
        [A], and ampacity [A] (inf = none).
    tx_names, tx_kva, tx_terms
        ``"transformer.name"``, the normal kVA of each winding, and per winding
        ``(nodes, rows)``: the winding's conductor nodes and current rows.
    pc_names : tuple of str
        Power-conversion elements, ``"Class.name"`` (class as OpenDSS spells it, name lower).
    br_a, br_b, br_elem, br_cond, br_share
        Constant-power branches: from node a to node b (``-1`` ground), the element, the
        element's conductor whose current flows in it (``-1``: delta, no own conductor) and
        its share of the element's power.
    """

    node_names: tuple[str, ...]
    base_v: np.ndarray
    y: sp.csc_matrix
    line_names: tuple[str, ...]
    line_rows: sp.csr_matrix
    norm_amps: np.ndarray
    tx_names: tuple[str, ...]
    tx_kva: tuple[np.ndarray, ...]
    tx_terms: tuple[tuple[tuple[np.ndarray, sp.csr_matrix], ...], ...]
    pc_names: tuple[str, ...]
    pc_nodes: tuple[np.ndarray, ...]
    br_a: np.ndarray
    br_b: np.ndarray
    br_elem: np.ndarray
    br_cond: np.ndarray
    br_share: np.ndarray
    key: tuple[Any, ...]

    @property
    def n(self) -> int:
        """Number of Y nodes (ground excluded)."""
        return len(self.node_names)

    def c_matrix(self) -> sp.csr_matrix:
        """(n, n_branches) incidence: +1 at a branch's node a, −1 at node b (ground dropped)."""
        nb = self.br_a.size
        cols = np.arange(nb)
        keep_a, keep_b = self.br_a >= 0, self.br_b >= 0
        rows = np.concatenate([self.br_a[keep_a], self.br_b[keep_b]])
        cc = np.concatenate([cols[keep_a], cols[keep_b]])
        vals = np.concatenate([np.ones(keep_a.sum()), -np.ones(keep_b.sum())])
        return sp.csr_matrix((vals, (rows, cc)), shape=(self.n, nb))

    def tx_loading(self, v: np.ndarray) -> np.ndarray:
        """(n_transformers,) loading of winding 1, ``|S_1| / S_1,rated``, at node voltages ``v`` [fraction];
        (steps, n_transformers) for a block of steps ``v`` (steps, n)."""
        cached = getattr(self, "_tx1", None)
        if cached is None:
            nodes = [t[0][0] for t in self.tx_terms]
            rows = sp.vstack([t[0][1] for t in self.tx_terms]).tocsr() if nodes else sp.csr_matrix((0, self.n))
            owner = np.repeat(np.arange(len(nodes)), [len(x) for x in nodes])
            agg = sp.csr_matrix((np.ones(owner.size), (owner, np.arange(owner.size))), shape=(len(nodes), owner.size))
            kva = np.array([k[0] for k in self.tx_kva]) * 1000.0
            cached = (np.concatenate(nodes) if nodes else np.zeros(0, dtype=np.intp), rows, agg, kva)
            object.__setattr__(self, "_tx1", cached)
        idx, rows, agg, kva = cached
        if v.ndim == 2:
            return (np.abs(agg @ (v[:, idx].T * np.conj(rows @ v.T))) / kva[:, None]).T
        return np.abs(agg @ (v[idx] * np.conj(rows @ v))) / kva

    def index(self) -> dict[tuple[str, str], int]:
        """``(kind, name)`` -> position: node (voltage), conductor (current), transformer."""
        cached: dict[tuple[str, str], int] | None = getattr(self, "_index", None)
        if cached is None:
            cached = {("voltage", n): k for k, n in enumerate(self.node_names)}
            cached.update({("current", n): k for k, n in enumerate(self.line_names)})
            cached.update({("transformer", n): k for k, n in enumerate(self.tx_names)})
            object.__setattr__(self, "_index", cached)
        return cached


def _model_key(net: OpenDSSNetwork) -> tuple[Any, ...]:
    d = net.dss
    # the engine's version is bumped by every command (an edited line keeps the node order)
    return (id(net), getattr(net, "_version", None), tuple(d.Circuit.YNodeOrder()), d.Circuit.NumCktElements())


def grid_model(net: OpenDSSNetwork, cache: GridModel | None = None) -> GridModel:
    """The :class:`GridModel` of ``net``: ``cache``, or the one read last for ``net``, when the
    circuit has not changed since (same commands, node order and element count); else read anew.

    The network must have been solved since its last change (the engine does that when it
    is built and on every power flow).
    """
    key = _model_key(net)
    if cache is None:
        cache = _MODELS.get(net)
    if cache is not None and cache.key == key:
        return cache
    model = _read_model(net, key)
    _MODELS[net] = model
    return model


#: the last model read of each network (rebuilt when its node order or element count changes)
_MODELS: weakref.WeakKeyDictionary[OpenDSSNetwork, GridModel] = weakref.WeakKeyDictionary()


def _read_model(net: OpenDSSNetwork, key: tuple[Any, ...]) -> GridModel:
    """Read the :class:`GridModel` of ``net`` from OpenDSS: per enabled PD element and voltage
    source its node references and primitive matrix (one walk; the indices are built for all
    elements at once afterwards), the buses' voltage bases from the engine's bus table."""
    d = net.dss
    try:
        names = tuple(s.lower() for s in key[2])  # the key holds the Y node order
        n = len(names)
        kv_base = net.buses["kv_base"]
        bus_of = [s.rpartition(".")[0] for s in names]
        base_v = kv_base.reindex(bus_of).fillna(0.0).to_numpy(dtype=float) * 1000.0
        refs: list[np.ndarray] = []
        prims: list[np.ndarray] = []
        lines: list[tuple[int, str, list[str], int, float]] = []  # element, name, node order, phases, amps
        txs: list[tuple[int, str, int, int]] = []  # element, name, conductors, terminals
        for api in (d.PDElements, d.Vsources):  # an Isource has no admittance
            i = api.First()
            while i:
                el = d.CktElement
                if el.Enabled():
                    e = len(refs)
                    refs.append(np.asarray(el.NodeRef(), dtype=np.intp) - 1)
                    prims.append(np.asarray(el.YPrim(), dtype=float))
                    cls, _, nm = el.Name().partition(".")
                    low = cls.lower()
                    if low == "line":
                        lines.append((e, nm.lower(), el.NodeOrder(), int(el.NumPhases()), float(el.NormalAmps())))
                    elif low == "transformer":
                        txs.append((e, nm.lower(), int(el.NumConductors()), int(el.NumTerminals())))
                i = api.Next()
        kva_of: dict[str, np.ndarray] = {}
        i = d.Transformers.First()
        while i:
            nw = int(d.Transformers.NumWindings())
            kv = np.empty(nw)
            for w in range(nw):
                d.Transformers.Wdg(w + 1)
                kv[w] = float(d.Transformers.kVA())
            kva_of[f"transformer.{d.Transformers.Name().lower()}"] = kv
            i = d.Transformers.Next()
        # every entry of every primitive matrix, (element's conductor i, conductor j) row-major
        size = np.array([r.size for r in refs], dtype=np.intp)
        ref_all = np.concatenate(refs)
        first = np.concatenate([[0], np.cumsum(size)[:-1]])  # each element's first conductor
        ent = size * size
        e_of = np.repeat(np.arange(size.size), ent)  # element of each entry
        local = np.arange(int(ent.sum())) - np.repeat(np.cumsum(ent) - ent, ent)  # entry within its element
        ci, cj = local // size[e_of], local % size[e_of]
        yr_, yc_ = ref_all[first[e_of] + ci], ref_all[first[e_of] + cj]
        flat = np.concatenate(prims)
        yv_ = flat[0::2] + 1j * flat[1::2]
        live = (yr_ >= 0) & (yc_ >= 0)  # the grounded entries dropped
        y = sp.csc_matrix((yv_[live], (yr_[live], yc_[live])), shape=(n, n))
        # lines: the phase conductors' current rows at terminal 1, rows c < phases of the primitive matrix
        line_names: list[str] = []
        amps: list[float] = []
        row_of = np.full(size.size, -1, dtype=np.intp)  # first current row of each line element
        nph_of = np.zeros(size.size, dtype=np.intp)
        for e, nm, order, nph, na in lines:
            row_of[e], nph_of[e] = len(line_names), nph
            line_names.extend(f"line.{nm}.{order[c]}" for c in range(nph))
            amps.extend([na if na > 0 else np.inf] * nph)
        on = (row_of[e_of] >= 0) & (ci < nph_of[e_of]) & (yc_ >= 0)
        line_rows = sp.csr_matrix((yv_[on], (row_of[e_of[on]] + ci[on], yc_[on])), shape=(len(line_names), n))
        tx_names: list[str] = []
        tx_terms: list[tuple[tuple[np.ndarray, sp.csr_matrix], ...]] = []
        for e, nm, ncond, nterm in txs:
            ref = refs[e]
            yprim = _cplx(prims[e]).reshape(ref.size, ref.size)
            terms = []
            for w in range(nterm):
                sl = slice(w * ncond, (w + 1) * ncond)
                keep = ref[sl] >= 0
                # the winding's conductor currents as rows over the whole Y
                terms.append((ref[sl][keep], _scatter_rows(yprim[sl][keep], ref, n)))
            tx_names.append(f"transformer.{nm}")
            tx_terms.append(tuple(terms))
        tx_kva = [kva_of[t] for t in tx_names]
        pc_names, pc_nodes, br = _pc_branches(net)
    except NetworkError:
        raise
    except Exception as exc:  # an OpenDSS error while reading: name it
        msg = f"cannot read the network's admittance model from {net.master.name}: {exc}"
        raise NetworkError(msg) from exc
    return GridModel(node_names=names, base_v=base_v, y=y, line_names=tuple(line_names), line_rows=line_rows,
                     norm_amps=np.array(amps), tx_names=tuple(tx_names), tx_kva=tuple(tx_kva),
                     tx_terms=tuple(tx_terms), pc_names=pc_names, pc_nodes=pc_nodes,
                     br_a=br[0], br_b=br[1], br_elem=br[2], br_cond=br[3], br_share=br[4].astype(float),
                     key=key)


def _scatter_rows(block: np.ndarray, ref: np.ndarray, n: int) -> sp.csr_matrix:
    """Rows of a primitive matrix (columns = the element's conductors) as rows over the Y nodes."""
    keep = ref >= 0
    b = block[:, keep]
    r = np.repeat(np.arange(b.shape[0]), b.shape[1])
    c = np.tile(ref[keep], b.shape[0])
    return sp.csr_matrix((b.reshape(-1), (r, c)), shape=(b.shape[0], n))


def _enabled_pc_elements(d: Any) -> Iterator[tuple[str, Any]]:
    """``(class, active CktElement)`` for every enabled power-conversion element, class by class
    in :data:`_PC_CLASSES` order: the one order the branches are built and read in."""
    for cls in _PC_CLASSES:
        d.Circuit.SetActiveClass(cls)
        if d.ActiveClass.Count() == 0:
            continue
        i = d.ActiveClass.First()
        while i:
            el = d.CktElement
            if el.Enabled():
                yield cls, el
            i = d.ActiveClass.Next()


def _pc_branches(net: OpenDSSNetwork) -> tuple[tuple[str, ...], tuple[np.ndarray, ...], list[np.ndarray]]:
    """Power-conversion elements and their constant-power branches (see :class:`GridModel`)."""
    d = net.dss
    names: list[str] = []
    nodes: list[np.ndarray] = []
    a: list[int] = []
    b: list[int] = []
    e: list[int] = []
    cond: list[int] = []
    share: list[float] = []
    for cls, el in _enabled_pc_elements(d):
        ref = np.asarray(el.NodeRef(), dtype=np.intp) - 1
        nph, ncond = int(el.NumPhases()), int(el.NumConductors())
        k = len(names)
        names.append(f"{cls}.{el.Name().partition('.')[2].lower()}")
        nodes.append(ref)
        if ncond == nph + 1 or nph == 1:  # wye (phases to the last conductor), or 1-phase
            pairs = [(c, ncond - 1, c) for c in range(nph)]
        else:  # delta: phase c to phase c+1 (c = 0..nph-1, a ring for 3 phases)
            pairs = [(c, (c + 1) % nph, -1) for c in range(nph if nph > 2 else 1)]
        for ca, cb, cc in pairs:
            a.append(int(ref[ca]))
            b.append(int(ref[cb]))
            e.append(k)
            cond.append(cc)
            share.append(1.0 / len(pairs))
    br = [np.array(x, dtype=np.intp) for x in (a, b, e, cond)] + [np.array(share)]
    return tuple(names), tuple(nodes), br


# --------------------------------------------------------------------------- operating point


@dataclass(frozen=True, eq=False)
class OperatingPoint:
    """A solved state: complex node voltages [V] (Y order) and the complex power each
    constant-power branch consumes [VA]."""

    v: np.ndarray
    s_branch: np.ndarray


def read_operating_point(net: OpenDSSNetwork, model: GridModel) -> OperatingPoint:
    """The operating point of the network's last solve (voltages and element currents)."""
    d = net.dss
    v = _cplx(d.Circuit.YNodeVArray())
    if v.size != model.n:
        msg = "the circuit changed since its GridModel was read; read it again"
        raise NetworkError(msg)
    # every conductor current of every element, in the order _pc_branches read them in
    flat = [np.asarray(el.Currents(), dtype=float) for _, el in _enabled_pc_elements(d)]
    if len(flat) != len(model.pc_names):
        msg = "the circuit's power-conversion elements changed since its GridModel was read; read it again"
        raise NetworkError(msg)
    if not flat:
        return OperatingPoint(v=v, s_branch=np.zeros(0, dtype=complex))
    cur = _cplx(np.concatenate(flat))
    first = np.concatenate([[0], np.cumsum([f.size // 2 for f in flat])[:-1]])  # each element's first conductor
    vg = np.concatenate([v, [0.0]])  # index -1 = ground
    elem, cond = model.br_elem, model.br_cond
    u = vg[model.br_a] - vg[model.br_b]
    # wye: branch voltage times its conductor's current; delta (an element with a branch without
    # its own conductor): the element's total power, shared equally among its branches
    delta = np.bincount(elem, weights=(cond < 0).astype(float), minlength=len(flat)) > 0
    s = np.empty(elem.size, dtype=complex)
    wye = ~delta[elem]
    s[wye] = u[wye] * np.conj(cur[first[elem[wye]] + cond[wye]])
    if np.any(~wye):
        nodes = model.pc_nodes
        owner = np.repeat(np.arange(len(flat)), [x.size for x in nodes])
        at = np.concatenate([first[k] + np.arange(x.size) for k, x in enumerate(nodes)])
        terms = vg[np.concatenate(nodes)] * np.conj(cur[at])
        tot = (np.bincount(owner, weights=terms.real, minlength=len(flat))
               + 1j * np.bincount(owner, weights=terms.imag, minlength=len(flat)))
        s[~wye] = tot[elem[~wye]] * model.br_share[~wye]
    return OperatingPoint(v=v, s_branch=s)


def capture_states(net: OpenDSSNetwork, model: GridModel, *, powers: bool = True
                   ) -> tuple[list[OperatingPoint | np.ndarray], Any]:
    """A ``progress`` callback for :meth:`OpenDSSNetwork.run_series` that records the
    operating point of every step solved (``powers=False``: the complex voltages only).

    Returns ``(store, callback)``; ``store[t]`` is filled when step ``t`` is solved.
    """
    store: list[OperatingPoint | np.ndarray] = []

    def cb(t: int) -> None:
        store.append(read_operating_point(net, model) if powers else _cplx(net.dss.Circuit.YNodeVArray()))

    return store, cb


# --------------------------------------------------------------------------- rows


def _row_weights(model: GridModel, v: np.ndarray, rows: Sequence[tuple[str, str]],
                 pos: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Values of the rows at ``v`` and the (2n, R) real weights ``w`` with
    ``Δrow = wᵀ [ΔRe V; ΔIm V]`` (first order), Fortran-ordered; with ``pos``, row ``k`` of
    ``w`` is put at ``pos[k]`` (the order of :func:`_jacobian_pattern`)."""
    idx = model.index()
    n = model.n
    nr = len(rows)
    w = np.zeros((2 * n, nr), order="F")
    at = np.arange(2 * n) if pos is None else pos
    ar, ai = at[:n], at[n:]  # where Re V and Im V of each node go
    val = np.empty(nr)
    ks = np.empty(nr, dtype=np.intp)
    for r, key in enumerate(rows):
        hit = idx.get(key)
        if hit is None:
            msg = f"{key[0]} row {key[1]!r} is not in the network"
            raise NetworkError(msg)
        ks[r] = hit
    kinds = np.array([kind for kind, _ in rows], dtype=object)
    # voltage rows: |V_k| / base, weights V_k / (|V_k| base) at node k
    rv = np.flatnonzero(kinds == "voltage")
    if rv.size:
        kv = ks[rv]
        base = model.base_v[kv]
        mag = np.abs(v[kv])
        val[rv] = mag / base
        live = mag > 0
        g = v[kv[live]] / (mag[live] * base[live])
        w[ar[kv[live]], rv[live]] = g.real
        w[ai[kv[live]], rv[live]] = g.imag
    # current rows: |I| with I = row @ V, weights conj(I)/|I| times the row
    rc = np.flatnonzero(kinds == "current")
    if rc.size:
        sub_rows = model.line_rows[ks[rc]]
        cur = sub_rows @ v
        sub = sub_rows.tocoo()
        mag = np.abs(cur)
        val[rc] = mag
        c = np.where(mag > 0, np.conj(cur) / np.where(mag > 0, mag, 1.0), 0.0)
        g = c[sub.row] * sub.data
        r_of = rc[sub.row]
        np.add.at(w, (ar[sub.col], r_of), g.real)
        np.add.at(w, (ai[sub.col], r_of), -g.imag)
    for r in np.flatnonzero(kinds == "transformer").tolist():
        k = int(ks[r])
        nodes, yrows = model.tx_terms[k][0]  # winding 1, as the engine's transformer_loading
        kva_va = model.tx_kva[k][0] * 1000.0
        cur = yrows @ v
        s = complex(np.sum(v[nodes] * np.conj(cur)))
        val[r] = abs(s) / kva_va
        if abs(s) > 0:
            av = np.zeros(n, dtype=complex)
            np.add.at(av, nodes, np.conj(cur))
            bv = np.asarray(yrows.conj().T @ v[nodes]).ravel()
            sb = np.conj(s)
            w[ar, r] = (sb * (av + bv)).real / (abs(s) * kva_va)
            w[ai, r] = -(sb * (av - bv)).imag / (abs(s) * kva_va)
    return val, w


def row_values(model: GridModel, v: np.ndarray, rows: Sequence[tuple[str, str]]) -> np.ndarray:
    """Exact (non-linear) values of ``rows`` at complex node voltages ``v`` (pu, A, fraction)."""
    return _row_weights(model, v, rows)[0]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Sensitivity:
    """Sensitivities of some rows to the elements' powers at one operating point.

    Attributes
    ----------
    rows : tuple of (kind, name)
        ``kind`` in :data:`KINDS`; ``name`` ``"bus.phase"``, ``"line.name.phase"`` or
        ``"transformer.name"``.
    value : numpy.ndarray
        (R,) the rows at the operating point [pu, A, fraction].
    dp : numpy.ndarray
        (R, n_elements): d row / d (element's consumption, kW) with its kvar following its
        dispatch rule [pu/kW, A/kW, 1/kW].
    dq : numpy.ndarray or None
        (R, n_elements): d row / d (element's reactive consumption, kvar); None when not computed.
    elements : tuple of str
        Column labels (the ElementSet's names).
    method : str
        ``"ymatrix"`` or ``"perturbed"``.
    """

    rows: tuple[tuple[str, str], ...]
    value: np.ndarray
    dp: np.ndarray
    dq: np.ndarray | None
    elements: tuple[str, ...]
    method: str


def dispatch_q_ratio(net: OpenDSSNetwork, elements: ElementSet, pf: np.ndarray | None = None) -> np.ndarray:
    """kvar/kW each element gets from :meth:`OpenDSSNetwork.run_series` [-].

    Loads: from ``pf`` where it is finite (lagging), else the element's own ratio as defined;
    Generators: their own ratio; PVSystems and Storage: 0 (unity power factor).
    """
    out = np.zeros(len(elements))
    own = getattr(net, "_own_q_ratio", None)
    for k, name in enumerate(elements.names):
        cls, _, nm = name.partition(".")
        if cls not in ("Load", "Generator"):
            continue
        if cls == "Load" and pf is not None and np.isfinite(pf[k]):
            out[k] = float(np.sqrt(1.0 / pf[k] ** 2 - 1.0))
        elif own is None:  # pragma: no cover - an engine without the ratio it dispatches with
            msg = f"{name}: the engine does not say which kvar/kW ratio it dispatches this element with"
            raise NetworkError(msg)
        else:
            out[k] = float(own(cls, nm))
    return out


#: SuperLU's threshold for keeping a diagonal pivot (scipy's default 1.0 is strict partial
#: pivoting): the linearised power-flow matrix is dominated by its admittance diagonal, so a
#: diagonal at least this fraction of its column's largest entry is kept and the fill-reducing
#: order computed once per model stays the one used (measured: 30 % fewer LU entries on the
#: Costa Rica feeder, the same solutions to 1e-11). The factor runs with small supernodes
#: (``relax=4, panel_size=4``: 10-20 % faster than SuperLU's defaults on feeders, measured).
_PIVOT_THRESH = 0.01


@dataclass(frozen=True, eq=False)
class _Pattern:
    """The CSC structure of the **transposed** real linearised power-flow matrix ``Mᵀ`` of
    :func:`_jacobian`, symmetrically permuted into a fill-reducing order, read once per model.

    ``indices``, ``indptr``: the structure; ``data_y``: the admittance matrix's fixed part of
    ``data``; per branch entry its place in ``data`` (``where``), its branch (``bk``), its sign
    in ``C D Cᵀ`` (``sg``) and which of the real blocks it is in (``part``: 0 takes Re β, 1 Im β,
    2 −Re β); ``pos``: the position of each unknown (``[Re V; Im V]`` index) in that order.
    """

    indices: np.ndarray
    indptr: np.ndarray
    data_y: np.ndarray
    where: np.ndarray
    bk: np.ndarray
    sg: np.ndarray
    part: np.ndarray
    pos: np.ndarray


def _fill_order(rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """A fill-reducing symmetric order of a sparse pattern (SuperLU's minimum degree on
    ``A + Aᵀ`` with its elimination-tree postorder), from the pattern alone: it is factored once
    with ones off the diagonal and a dominant diagonal, so no pivot leaves the diagonal.
    Returns ``order`` with ``order[i]`` = the index placed at position ``i``."""
    s = sp.csc_matrix((np.ones(rows.size), (rows, cols)), shape=(size, size))
    s.sum_duplicates()
    s.data[:] = 1.0
    s = (s + sp.diags(np.asarray(abs(s).sum(axis=0)).ravel() + 1.0)).tocsc()
    return np.argsort(spla.splu(s, permc_spec="MMD_AT_PLUS_A").perm_c)


def _jacobian_pattern(model: GridModel) -> _Pattern:
    """The :class:`_Pattern` of ``model``, read once per model.

    Every node-level entry (i, j) of the Y matrix or of a branch's ``C D Cᵀ`` is a 2×2 block of
    ``M`` (rows i and n + i, columns j and n + j), so the structure is built on the nodes: their
    fill-reducing order, each node's Re and Im unknowns next to each other in it."""
    cached: _Pattern | None = getattr(model, "_jac", None)
    if cached is not None:
        return cached
    n = model.n
    y = model.y.tocoo()
    # C D Cᵀ entries of each branch: (a, a) +d, (b, b) +d, (a, b) −d, (b, a) −d (ground dropped)
    nb = model.br_a.size
    k = np.arange(nb)
    p = np.concatenate([model.br_a, model.br_b, model.br_a, model.br_b])
    q = np.concatenate([model.br_a, model.br_b, model.br_b, model.br_a])
    bk = np.concatenate([k, k, k, k])
    sg = np.concatenate([np.ones(2 * nb), -np.ones(2 * nb)])
    keep = (p >= 0) & (q >= 0)
    p, q, bk, sg = p[keep], q[keep], bk[keep], sg[keep]
    # node entries of M (row i, column j): the Y matrix's, then the branches'; Mᵀ has them at (j, i)
    mi = np.concatenate([y.row, p]).astype(np.int64)
    mj = np.concatenate([y.col, q]).astype(np.int64)
    order = _fill_order(mj, mi, n)
    npos = np.empty(n, dtype=np.int64)
    npos[order] = np.arange(n)
    col, row = npos[mi], npos[mj]  # of Mᵀ, in the order
    keys, slot = np.unique(col * n + row, return_inverse=True)
    nptr = np.searchsorted(keys // n, np.arange(n + 1))
    cnt = np.diff(nptr)
    # Mᵀ on the unknowns: node column c gives columns 2c (Re) and 2c + 1 (Im), each with rows
    # 2r, 2r + 1 for every node row r of c: entry (bi, bj) of the block of node slot s sits at
    # 4·nptr[c] + 2·bi·cnt[c] + 2·(s − nptr[c]) + bj
    c_of = keys // n
    r_of = keys % n
    indptr = np.empty(2 * n + 1, dtype=np.int64)
    indptr[0:-1:2] = 4 * nptr[:-1]
    indptr[1::2] = 4 * nptr[:-1] + 2 * cnt
    indptr[-1] = 4 * keys.size
    k_in = np.arange(keys.size) - nptr[c_of]
    indices = np.empty(4 * keys.size, dtype=np.int64)
    for bi in (0, 1):
        for bj in (0, 1):
            indices[4 * nptr[c_of] + 2 * bi * cnt[c_of] + 2 * k_in + bj] = 2 * r_of + bj

    def place(s: np.ndarray, bi: int, bj: int) -> np.ndarray:
        c = c_of[s]
        return 4 * nptr[c] + 2 * bi * cnt[c] + 2 * (s - nptr[c]) + bj

    ny = y.row.size
    sy, sb = slot[:ny], slot[ny:]
    yr, yi = np.real(y.data), np.imag(y.data)
    # Y blocks of M: [[Yr, −Yi], [Yi, Yr]] (bi: M's row half, bj: its column half)
    at_y = np.concatenate([place(sy, bi, bj) for bi, bj in ((0, 0), (0, 1), (1, 0), (1, 1))])
    data_y = np.bincount(at_y, weights=np.concatenate([yr, -yi, yi, yr]), minlength=4 * keys.size)
    # B = −C D Cᵀ in the blocks [[Br, Bi], [Bi, −Br]] of M: part 0 takes Re β, 1 Im β, 2 −Re β
    where = np.concatenate([place(sb, bi, bj) for bi, bj in ((0, 0), (0, 1), (1, 0), (1, 1))])
    part = np.repeat(np.array([0, 1, 1, 2]), sb.size)
    pos = np.empty(2 * n, dtype=np.int64)
    pos[:n] = 2 * npos
    pos[n:] = 2 * npos + 1
    cached = _Pattern(indices=indices.astype(np.int32), indptr=indptr.astype(np.int32), data_y=data_y,
                      where=where, bk=np.tile(bk, 4), sg=np.tile(sg, 4), part=part, pos=pos)
    object.__setattr__(model, "_jac", cached)
    return cached


def _jacobian(model: GridModel, op: OperatingPoint) -> tuple[Any, np.ndarray]:
    """LU of the transposed real linearised power-flow matrix (in the order of
    :func:`_jacobian_pattern`) and each branch's voltage.

    The matrix is ``M = [[Yr + Br, −Yi + Bi], [Yi + Bi, Yr − Br]]`` with ``B = −C diag(d) Cᵀ``,
    ``d_b = conj(S_b) / conj(u_b)²`` of each live constant-power branch; its structure and order
    are read once per model, each step only fills in the numbers. ``Mᵀ`` is factored (the
    adjoint solves then run forward, measured faster than SuperLU's transposed solve)."""
    n = model.n
    vg = np.concatenate([op.v, [0.0]])
    u = vg[model.br_a] - vg[model.br_b]
    live = np.abs(u) > _TINY_V
    dcoef = np.zeros(u.size, dtype=complex)
    dcoef[live] = np.conj(op.s_branch[live]) / np.conj(u[live]) ** 2
    pat = _jacobian_pattern(model)
    beta = -pat.sg * dcoef[pat.bk]
    w = np.where(pat.part == 0, beta.real, np.where(pat.part == 1, beta.imag, -beta.real))
    data = pat.data_y + np.bincount(pat.where, weights=w, minlength=pat.data_y.size)
    m = sp.csc_matrix((data, pat.indices, pat.indptr), shape=(2 * n, 2 * n))
    try:
        lu = spla.splu(m, permc_spec="NATURAL", diag_pivot_thresh=_PIVOT_THRESH, relax=4, panel_size=4)
    except RuntimeError as exc:
        msg = f"the linearised power flow of {n} nodes is singular (a node without a path to the source?): {exc}"
        raise NetworkError(msg) from exc
    return lu, np.where(live, u, np.inf)


def _injections(model: GridModel, elements: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """Where the constant-power branches of ``elements`` inject, once per model and element list:
    ``(branches, at, agg)``, the branches' indices, their (4, n_branches) positions in the
    solution order of :func:`_jacobian_pattern` (rows: Re and Im of node a, Re and Im of node b;
    ``-1`` for ground, whose value is 0) and the (n_elements, n_branches) sum over each
    element's branches."""
    cache: dict[tuple[str, ...], Any] | None = getattr(model, "_inj", None)
    if cache is None:
        cache = {}
        object.__setattr__(model, "_inj", cache)
    hit = cache.get(elements)
    if hit is not None:
        return hit
    pos = {nm: k for k, nm in enumerate(model.pc_names)}
    missing = [e for e in elements if e not in pos]
    if missing:
        msg = f"{len(missing)} element(s) are not power-conversion elements of the network: {', '.join(missing[:5])}"
        raise NetworkError(msg)
    ne = len(elements)
    col_of = np.full(len(model.pc_names), -1)
    col_of[[pos[e] for e in elements]] = np.arange(ne)
    bcol = col_of[model.br_elem]
    sel = np.flatnonzero(bcol >= 0)
    n, at_of = model.n, _jacobian_pattern(model).pos
    at = np.full((4, sel.size), -1, dtype=np.intp)
    for j, nodes in enumerate((model.br_a[sel], model.br_b[sel])):
        live = nodes >= 0
        at[2 * j, live] = at_of[nodes[live]]
        at[2 * j + 1, live] = at_of[nodes[live] + n]
    agg = sp.csr_matrix((np.ones(sel.size), (bcol[sel], np.arange(sel.size))), shape=(ne, sel.size))
    if len(cache) >= 8:  # element lists of earlier studies on this network
        cache.clear()
    cache[elements] = (sel, at, agg)
    return sel, at, agg


def ymatrix_sensitivities(model: GridModel, op: OperatingPoint, elements: Sequence[str],
                          rows: Sequence[tuple[str, str]], q_ratio: np.ndarray | None = None
                          ) -> Sensitivity:
    """Sensitivities of ``rows`` to ``elements`` by the linearised power-flow equations.

    Parameters
    ----------
    model : GridModel
        :func:`grid_model` of the network.
    op : OperatingPoint
        :func:`read_operating_point` (or :func:`capture_states`) of the step.
    elements : sequence of str
        ``"Class.name"`` as in an ElementSet (canonical: class as OpenDSS spells it, name lower).
    rows : sequence of (kind, name)
        See :class:`Sensitivity`.
    q_ratio : numpy.ndarray, optional
        (n_elements,) kvar/kW of each element's dispatch (:func:`dispatch_q_ratio`); 0 if absent.
    """
    rows = tuple(rows)
    elements = tuple(elements)
    sel, at, agg = _injections(model, elements)
    ne = len(elements)
    val, w = _row_weights(model, op.v, rows, _jacobian_pattern(model).pos)
    if not rows:
        return Sensitivity(rows, val, np.zeros((0, ne)), np.zeros((0, ne)), elements, "ymatrix")
    lu, u = _jacobian(model, op)
    # adjoint: Mᵀ λ = w, one solve per row (cheaper than one per element and power as long as
    # there are fewer rows than elements; measured faster even with more); λ in the solution order
    lam = lu.solve(w)  # (2n, R)
    at_lam = np.where((at >= 0)[:, :, None], lam[at], 0.0)  # (4, branches, R), ground 0
    d_re = at_lam[0] - at_lam[2]  # Re λ_a − Re λ_b
    d_im = at_lam[1] - at_lam[3]
    # consuming dS on branch b injects −c_b conj(dS)/conj(u_b) [A per VA]: per kW (conj(1 kW) =
    # 1000 VA) ``coef`` below, per kvar −j·coef; a row moves by Re(conj(coef)·(λ_a − λ_b)) per kW
    # and by −Im(conj(coef)·(λ_a − λ_b)) per kvar, with λ = Re λ + j Im λ
    coef = -1000.0 * model.br_share[sel] / np.conj(u[sel])
    cr, ci = coef.real[:, None], coef.imag[:, None]
    dp = np.asarray(agg @ (cr * d_re + ci * d_im)).T
    dq = np.asarray(agg @ (ci * d_re - cr * d_im)).T
    if q_ratio is not None:
        dp = dp + dq * np.asarray(q_ratio, dtype=float)[None, :]
    return Sensitivity(rows=rows, value=val, dp=dp, dq=dq, elements=elements, method="ymatrix")


def _room(net: OpenDSSNetwork, elements: ElementSet, kw: np.ndarray, step_kw: float
          ) -> tuple[np.ndarray, np.ndarray]:
    """How far each element's ``kw`` may move up and down (at most ``step_kw``; 0 when
    less than half of it is left before the element's rating or zero PV output)."""
    ne = len(elements)
    up = np.full(ne, np.inf)
    down = np.full(ne, np.inf)
    ratings = getattr(net, "_ratings", {})  # batteries created by add_battery: kW rating
    d = net.dss
    for k, name in enumerate(elements.names):
        cls, _, nm = name.partition(".")
        if cls == "PVSystem":
            d.PVsystems.Name(nm)
            up[k] = min(float(d.PVsystems.Pmpp()), float(d.PVsystems.kVARated())) - kw[k]
            down[k] = kw[k]
        elif cls == "Storage":
            d.Text.Command(f"? Storage.{nm}.kWrated")
            r = float(d.Text.Result())
            up[k], down[k] = r - kw[k], r + kw[k]
        elif name in ratings:
            up[k], down[k] = ratings[name] - kw[k], ratings[name] + kw[k]
    hi = np.minimum(step_kw, up)
    lo = np.minimum(step_kw, down)
    hi[hi < 0.5 * step_kw] = 0.0
    lo[lo < 0.5 * step_kw] = 0.0
    if np.any((hi == 0) & (lo == 0)):
        k = int(np.argmax((hi == 0) & (lo == 0)))
        msg = f"{elements.names[k]}: no room to perturb its power by {step_kw} kW within its rating"
        raise NetworkError(msg)
    return hi, lo


def perturbed_sensitivities(net: OpenDSSNetwork, elements: ElementSet, kw: np.ndarray,
                            rows: Sequence[tuple[str, str]], *, model: GridModel | None = None,
                            pf: np.ndarray | None = None, step_kw: float = 0.5) -> Sensitivity:
    """Sensitivities by central differences of OpenDSS power flows.

    Solves the step ``kw`` (n_elements,) [kW, run_series convention] once, then with each
    element's consumption moved by ±``step_kw`` (one-sided, away from zero output, for a
    PVSystem producing less than ``step_kw``), and finally ``kw`` again, so the network is
    left at the operating point. ``pf`` as for ``run_series``.
    """
    rows = tuple(rows)
    model = grid_model(net, model)
    kw = np.asarray(kw, dtype=float).reshape(-1)
    ne = len(elements)
    cls = elements.classes
    sign = np.array([-1.0 if c in _PRODUCING else 1.0 for c in cls])  # consumption = sign · kw
    hi, lo = _room(net, elements, kw, step_kw)
    plan = [kw]
    for k in range(ne):
        for dk in (hi[k], -lo[k]):
            if dk != 0:
                x = kw.copy()
                x[k] += dk
                plan.append(x)
    plan.append(kw)
    store, cb = capture_states(net, model, powers=False)
    net.run_series(elements, np.array(plan), pf=None if pf is None else np.broadcast_to(pf, (len(plan), ne)),
                   progress=cb)
    vals = np.array([row_values(model, np.asarray(v), rows) for v in store]).T  # (R, len(plan))
    dp = np.empty((len(rows), ne))
    j = 1
    for k in range(ne):
        up = down = vals[:, 0]
        if hi[k]:
            up = vals[:, j]
            j += 1
        if lo[k]:
            down = vals[:, j]
            j += 1
        dp[:, k] = (up - down) / (hi[k] + lo[k])
    dp *= sign[None, :]
    return Sensitivity(rows=rows, value=vals[:, 0], dp=dp, dq=None, elements=tuple(elements.names),
                       method="perturbed")
