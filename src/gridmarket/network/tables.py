"""Reading the compiled circuit: buses, lines, transformers, the bus graph
(:class:`~gridmarket.topology.Topology`) and the node / line-conductor layout the series are
read with. Layer 2 of :class:`~gridmarket.network.OpenDSSNetwork` (see :mod:`.core`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gridmarket.errors import NetworkError
from gridmarket.network._dss import _PHASE_NODES, KM_PER_LINE_UNIT, _bus_of, _dss_errors
from gridmarket.network.core import CircuitCore
from gridmarket.network.results import _Layout, _TxMatrix
from gridmarket.topology import Edge, Topology

__all__ = ["CircuitTables"]


class CircuitTables(CircuitCore):
    """Tables and graph of the circuit, each read once per circuit version."""

    def _layout(self) -> _Layout:
        if self._layout_cache is None or self._layout_cache.version != self._version:
            self._layout_cache = self._build_layout()
        return self._layout_cache

    def _build_layout(self) -> _Layout:
        """Node order, pu bases and the sparse line-current matrix of the present circuit."""
        self._sync()
        with _dss_errors("cannot read the circuit layout"):
            y_order = [n.lower() for n in self._dss.Circuit.YNodeOrder()]
            kv_base = self.buses["kv_base"]
            node_y, inv_base, names = [], [], []
            for k, node in enumerate(y_order):
                bus, _, ph = node.rpartition(".")
                base = float(kv_base.get(bus, 0.0))
                if base > 0 and ph.isdigit() and int(ph) in _PHASE_NODES:
                    names.append(node)
                    node_y.append(k + 1)
                    inv_base.append(1.0 / (base * 1000.0))
            key = (self._topology_version, tuple(y_order))
            if self._imatrix_cache is not None and self._imatrix_cache[0] == key:
                matrix, cond_names, amps, tx = self._imatrix_cache[1]  # only loads/PV were added
            else:
                matrix, cond_names, amps = self._line_current_matrix(len(y_order))
                tx = self._transformer_matrix(len(y_order))
                self._imatrix_cache = (key, (matrix, cond_names, amps, tx))
        return _Layout(version=self._version, node_names=names, node_y=np.array(node_y, dtype=np.intp),
                       inv_base_v=np.array(inv_base), n_y=len(y_order), i_matrix=matrix,
                       line_phase_names=cond_names, norm_amps=amps, tx=tx)

    def _transformer_matrix(self, n_y: int) -> _TxMatrix:
        """Rows of each enabled transformer's Y_prim for its winding-1 conductors, with the
        conductors' nodes, so that winding 1's complex power follows from the node voltages."""
        rows: list[int] = []
        cols: list[int] = []
        vals: list[complex] = []
        v_index: list[int] = []
        owner: list[int] = []
        names: list[str] = []
        kva: list[float] = []
        tx = self._dss.Transformers
        i = tx.First()
        while i:
            el = self._dss.CktElement
            if el.Enabled():
                ncond = int(el.NumConductors())
                nterm = int(el.NumTerminals())
                yprim = np.asarray(el.YPrim(), dtype=float)
                yprim = (yprim[0::2] + 1j * yprim[1::2]).reshape(nterm * ncond, nterm * ncond)
                noderef = np.asarray(el.NodeRef(), dtype=np.intp)
                tx.Wdg(1)
                rating = float(tx.kVA())
                k = len(names)
                names.append(f"transformer.{tx.Name().lower()}")
                kva.append(rating if rating > 0 else np.inf)
                for c in range(ncond):
                    r = len(v_index)
                    rows.extend([r] * noderef.size)
                    cols.extend(noderef.tolist())
                    vals.extend(yprim[c].tolist())
                    v_index.append(int(noderef[c]))
                    owner.append(k)
            i = tx.Next()
        n_c = len(v_index)
        matrix = sp.csr_matrix((np.array(vals, dtype=np.complex128), (rows, cols)), shape=(n_c, n_y + 1))
        agg = sp.csr_matrix((np.ones(n_c), (np.array(owner, dtype=np.intp), np.arange(n_c))),
                            shape=(len(names), n_c))
        return _TxMatrix(i_matrix=matrix, v_index=np.array(v_index, dtype=np.intp), agg=agg, names=names,
                         kva=np.array(kva, dtype=float))

    @property
    def transformers(self) -> pd.DataFrame:
        """Enabled transformers of the circuit.

        Index: ``"transformer.name"``, lower case. Columns: ``bus1``, ``bus2`` (buses of
        windings 1 and 2, without nodes), ``phases``, ``windings``, ``kva`` (normal rating of
        winding 1 [kVA]; the loading of :class:`PowerFlowResult` is relative to it),
        ``kv1``, ``kv2`` (rated winding voltages [kV]).
        """
        frame: pd.DataFrame = self._cached("transformers", self._read_transformers, topology=True)
        return frame.copy()

    def _read_transformers(self) -> pd.DataFrame:
        rows = []
        with _dss_errors("cannot read transformers"):
            tx = self._dss.Transformers
            i = tx.First()
            while i:
                el = self._dss.CktElement
                if el.Enabled():
                    buses = [_bus_of(b) for b in el.BusNames()]
                    nw = int(tx.NumWindings())
                    tx.Wdg(1)
                    kva, kv1 = float(tx.kVA()), float(tx.kV())
                    kv2 = np.nan
                    if nw >= 2:
                        tx.Wdg(2)
                        kv2 = float(tx.kV())
                    rows.append((f"transformer.{tx.Name().lower()}", buses[0], buses[1] if len(buses) > 1 else "",
                                 int(el.NumPhases()), nw, kva, kv1, kv2))
                i = tx.Next()
        cols = ["transformer", "bus1", "bus2", "phases", "windings", "kva", "kv1", "kv2"]
        return pd.DataFrame(rows, columns=cols).set_index("transformer")

    def _line_current_matrix(self, n_y: int) -> tuple[sp.csr_matrix, list[str], np.ndarray]:
        """Rows of each enabled line's Y_prim for its terminal-1 phase conductors."""
        rows, cols, vals = [], [], []
        names: list[str] = []
        amps: list[float] = []
        lines = self._dss.Lines
        i = lines.First()
        while i:
            el = self._dss.CktElement
            if el.Enabled():
                ncond = el.NumConductors()
                nphase = lines.Phases()
                yprim = np.asarray(el.YPrim(), dtype=float)
                yprim = (yprim[0::2] + 1j * yprim[1::2]).reshape(2 * ncond, 2 * ncond)
                noderef = np.asarray(el.NodeRef(), dtype=np.intp)
                order = el.NodeOrder()
                norm = float(lines.NormAmps())
                for c in range(nphase):
                    r = len(names)
                    rows.extend([r] * noderef.size)
                    cols.extend(noderef.tolist())
                    vals.extend(yprim[c].tolist())
                    names.append(f"line.{lines.Name().lower()}.{order[c]}")
                    amps.append(norm if norm > 0 else np.inf)
            i = lines.Next()
        matrix = sp.csr_matrix((np.array(vals, dtype=np.complex128), (rows, cols)),
                               shape=(len(names), n_y + 1))
        return matrix, names, np.array(amps)

    @property
    def node_names(self) -> list[str]:
        """``"bus.phase"`` names, lower case, in the column order of ``v_pu``."""
        return list(self._layout().node_names)

    @property
    def buses(self) -> pd.DataFrame:
        """Buses of the circuit.

        Index: lower-case bus name. Columns: ``kv_base`` (line-to-neutral base [kV], 0 when
        none), ``x``, ``y`` (coordinates, NaN when absent), ``n_nodes``.
        """
        return self._cached("buses", self._read_buses).copy()

    def _read_buses(self) -> pd.DataFrame:
        self._sync()
        rows = []
        with _dss_errors("cannot read buses"):
            circ, bus = self._dss.Circuit, self._dss.Bus
            for k in range(circ.NumBuses()):
                circ.SetActiveBusi(k)
                has_xy = bool(bus.Coorddefined())
                rows.append((bus.Name().lower(), float(bus.kVBase()),
                             float(bus.X()) if has_xy else np.nan,
                             float(bus.Y()) if has_xy else np.nan, int(bus.NumNodes())))
        df = pd.DataFrame(rows, columns=["bus", "kv_base", "x", "y", "n_nodes"]).set_index("bus")
        return df

    @property
    def lines(self) -> pd.DataFrame:
        """Enabled lines of the circuit.

        Index: ``"line.name"``, lower case. Columns: ``bus1``, ``bus2`` (bus names without
        nodes), ``phases``, ``norm_amps`` [A], ``emerg_amps`` [A].
        """
        return self._cached("lines", self._read_lines, topology=True).copy()

    def _read_lines(self) -> pd.DataFrame:
        rows = []
        with _dss_errors("cannot read lines"):
            lines = self._dss.Lines
            i = lines.First()
            while i:
                if self._dss.CktElement.Enabled():
                    km = float(lines.Length()) * KM_PER_LINE_UNIT.get(int(lines.Units()), 1.0)
                    rows.append((f"line.{lines.Name().lower()}", _bus_of(lines.Bus1()),
                                 _bus_of(lines.Bus2()), int(lines.Phases()),
                                 float(lines.NormAmps()), float(lines.EmergAmps()), max(km, 0.0),
                                 bool(lines.IsSwitch())))
                i = lines.Next()
        cols = ["line", "bus1", "bus2", "phases", "norm_amps", "emerg_amps", "length_km", "switch"]
        return pd.DataFrame(rows, columns=cols).set_index("line")

    @property
    def source_bus(self) -> str:
        """Bus of the circuit's first voltage source (the feeder head), lower case."""
        with _dss_errors("cannot read the source bus"):
            self._dss.Vsources.First()
            return _bus_of(str(self._dss.CktElement.BusNames()[0]))

    @property
    def topology(self) -> Topology:
        """The bus graph of the enabled series elements (:class:`~gridmarket.topology.Topology`):
        lines (with their length [km]; ``switch=yes`` lines as switches), transformers and other
        power-delivery elements (0 km), seen from :attr:`source_bus`."""
        topo: Topology = self._cached("topology", self._read_topology, topology=True)
        return topo

    def _read_topology(self) -> Topology:
        lines = self._cached("lines", self._read_lines, topology=True)
        edges = [Edge(str(name), b1, b2, float(km), "switch" if sw else "line")
                 for name, b1, b2, km, sw in zip(lines.index, lines["bus1"], lines["bus2"],
                                                 lines["length_km"], lines["switch"], strict=True)]
        with _dss_errors("cannot read the circuit topology"):
            pde = self._dss.PDElements
            i = pde.First()
            while i:
                el = self._dss.CktElement
                cls, _, nm = str(el.Name()).partition(".")
                if cls.lower() != "line" and el.Enabled() and el.NumTerminals() >= 2:
                    ends = list(dict.fromkeys(_bus_of(b) for b in el.BusNames()))
                    kind = "transformer" if cls.lower() == "transformer" else "line"
                    name = f"{cls.lower()}.{nm.lower()}"
                    edges.extend(Edge(name, a, b, 0.0, kind)
                                 for k, a in enumerate(ends) for b in ends[k + 1:])
                i = pde.Next()
        return Topology(edges, self.source_bus, buses=self.buses.index)

    def bus_distance(self, src: str) -> dict[str, int]:
        """Hops (lines, transformers, other series elements) from ``src`` to every reachable bus.

        Parameters
        ----------
        src : str
            Bus name, nodes allowed (``"busx.1.2"``); case-insensitive.

        Returns
        -------
        dict
            Lower-case bus name -> number of series elements on the shortest path
            (``src`` itself is 0). Buses not connected to ``src`` are absent.
        """
        topo = self.topology
        if src not in topo:
            msg = f"bus {src!r} not found in {self.master.name}"
            raise NetworkError(msg)
        return topo.hops(src)

    def downstream_bus(self, line: str) -> str:
        """The bus of ``line`` farther from the source (:meth:`Topology.downstream_bus
        <gridmarket.topology.Topology.downstream_bus>`: more hops, whatever order it is written in).

        ``line`` may be ``"line.x"``, ``"x"``, a conductor name from a violation table,
        ``"line.x.2"``, or another series element such as ``"transformer.tx1"`` (its
        secondary side).

        Raises
        ------
        NetworkError
            If the element does not exist.
        """
        try:
            return self.topology.downstream_bus(line)
        except KeyError:
            msg = f"line {line!r} not found in {self.master.name}"
            raise NetworkError(msg) from None

    def downstream_buses(self) -> dict[str, str]:
        """Downstream bus of every enabled line and transformer: ``{"line.x": bus,
        "transformer.t": bus}`` (see :meth:`downstream_bus`), the bus a current or transformer
        violation counts for."""
        return {k: v for k, v in self.topology.downstream_buses().items()
                if k.startswith(("line.", "transformer."))}
