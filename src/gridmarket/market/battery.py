"""The market's batteries in one place (shared MODEL.md, *Batteries*, *Terminal state of charge*).

One :class:`Batteries` object per case holds everything the QP builder
(:mod:`gridmarket.market.build`), the fast path (:mod:`gridmarket.market.fast`) and the
welfare and price read-out (:mod:`gridmarket.market.prices`) need to know about batteries:

* the *gains* of the stored-energy change ``ΔE = g_ch S_ch − g_dis S_dis`` [kWh]:
  ``g_ch = η_ch``, ``g_dis = 1/η_dis`` (physical model) or both 1 (paper model);
* the SoC recursion ``SoC_t = keep·SoC_{t−1} + ΔE_t / cap`` with ``keep = 1 − λ_sd``;
* the rate limits (12)–(13) ``S_ch ≤ min(P_rated Δt, λ_ch cap)``, ``S_dis ≤ min(P_rated Δt,
  λ_dis cap)`` [kWh per step] and, in the paper model, the headroom rules (10)–(11);
* the SoC band of every step: ``[soc_min, soc_max]``, narrowed near the end of the run when
  ``[battery] terminal_soc = "cyclic"`` (see :func:`terminal_band`);
* the charge and discharge limits of one step given the SoC before it (:meth:`Batteries.limits`);
* the welfare terms ``v·ΔE − c_deg (S_ch + S_dis) − a (S_ch − S_dis)²`` [currency].

Units: energies [kWh per step], SoC [fraction of capacity], prices [currency/kWh]. Sign:
``S = S_ch − S_dis > 0`` is charging (the battery draws from its community).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gridmarket.case.model import BatterySpec
from gridmarket.enums import BatteryModel, TerminalSoc
from gridmarket.errors import MarketError

__all__ = ["BAND_MARGIN", "Batteries", "StepLimits", "make_batteries", "terminal_band"]

#: the band of step t is computed with rate limits smaller by this [fraction of capacity per
#: step], so a SoC a solver leaves a hair (< 1e-9) outside the band can still reach the target
BAND_MARGIN = 1e-9


@dataclass(frozen=True)
class StepLimits:
    """Charge and discharge limits of one step given the SoC before it [kWh], shape (rows, n_b).

    ``lb_ch ≤ S_ch ≤ ub_ch`` when the battery charges, ``lb_dis ≤ S_dis ≤ ub_dis`` when it
    discharges (a battery never does both in one step, see :mod:`gridmarket.market.fast`).
    ``lb_ch > 0`` is a charge forced by the lower SoC bound of the step, ``lb_dis > 0`` a
    discharge forced by its upper bound (only the terminal band can force one: self-discharge
    alone never lifts SoC); ``ub_ch < 0`` then (the battery cannot charge at all).
    """

    lb_ch: np.ndarray
    ub_ch: np.ndarray
    lb_dis: np.ndarray
    ub_dis: np.ndarray


@dataclass(frozen=True)
class Batteries:
    """The batteries of a case in market order, with everything the market needs of them.

    Attributes
    ----------
    model : BatteryModel
        ``physical`` (eq. 9') or ``paper`` (eq. 9, headroom rules 10–11).
    names : tuple of str
        Battery agent names.
    cap_kwh : ndarray, shape (n_b,)
        Capacity ``units·unit_kwh`` [kWh].
    sch_max, sdis_max : ndarray, shape (n_b,)
        Rate limits ``min(P_rated Δt, λ_ch cap)``, ``min(P_rated Δt, λ_dis cap)`` [kWh per step].
    a : ndarray, shape (n_b,)
        Quadratic cost on ``S`` [currency/kWh²] (``[battery].a`` plus the agent's own ``a``).
    soc_init : ndarray, shape (n_b,)
        SoC before step 0 of this market call [fraction].
    soc_target : ndarray, shape (n_b,)
        SoC every battery must end the run at when cyclic [fraction].
    band_lo, band_hi : ndarray, shape (steps, n_b)
        SoC allowed at the end of each step [fraction]: ``[soc_min, soc_max]`` (free), narrowed
        near the run's end to the SoC from which ``soc_target`` stays reachable (cyclic).
    """

    model: BatteryModel
    terminal: TerminalSoc
    names: tuple[str, ...]
    cap_kwh: np.ndarray
    sch_max: np.ndarray
    sdis_max: np.ndarray
    a: np.ndarray
    soc_init: np.ndarray
    soc_target: np.ndarray
    soc_min: float
    soc_max: float
    eff_charge: float
    eff_discharge: float
    keep: float  #: 1 − λ_sd, the share of stored energy left after one step
    cdeg: float  #: c_deg [currency/kWh of throughput]
    steps_after: int  #: steps of the run after this market's last step (cyclic target at the run's end)
    band_lo: np.ndarray
    band_hi: np.ndarray

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def g_ch(self) -> float:
        """Stored energy per kWh charged: ``η_ch`` (physical) or 1 (paper)."""
        return float(self.eff_charge) if self.model is BatteryModel.PHYSICAL else 1.0

    @property
    def g_dis(self) -> float:
        """Stored energy per kWh discharged: ``1/η_dis`` (physical) or 1 (paper)."""
        return 1.0 / float(self.eff_discharge) if self.model is BatteryModel.PHYSICAL else 1.0

    @property
    def paper(self) -> bool:
        return self.model is BatteryModel.PAPER

    @property
    def cyclic(self) -> bool:
        return self.terminal is TerminalSoc.CYCLIC

    # ------------------------------------------------------------------ energy and SoC

    def delta_e(self, sch: np.ndarray, sdis: np.ndarray) -> np.ndarray:
        """Stored-energy change ``ΔE = g_ch S_ch − g_dis S_dis`` [kWh], any leading shape."""
        return self.g_ch * sch - self.g_dis * sdis

    def soc_after(self, soc0: np.ndarray, sch: np.ndarray, sdis: np.ndarray) -> np.ndarray:
        """SoC after one step [fraction] from the SoC before it and the step's charge/discharge [kWh]."""
        return self.keep * soc0 + (self.g_ch * sch - self.g_dis * sdis) / self.cap_kwh

    def stored_kwh(self, soc: np.ndarray) -> np.ndarray:
        """Stored energy [kWh] of SoC ``soc`` [fraction]."""
        return soc * self.cap_kwh

    # ------------------------------------------------------------------ limits of one step

    def band(self, steps: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        """SoC band ``(lo, hi)`` [fraction] at the end of ``steps`` (global indices), (rows, n_b) each."""
        return self.band_lo[steps], self.band_hi[steps]

    def limits(self, soc0: np.ndarray, steps: np.ndarray | slice) -> StepLimits:
        """Charge and discharge limits [kWh] of ``steps`` given the SoC ``soc0`` (rows, n_b) before each.

        ``keep·SoC₀ + ΔE/cap`` must end in the step's band with only one of ``S_ch``, ``S_dis``
        non-zero, within the rate limits (12)–(13); the paper model adds its headroom rules
        (10) ``η_ch S_ch ≤ (soc_max − SoC₀) cap`` and (11) ``η_dis S_dis ≤ (SoC₀ − soc_min) cap``.
        """
        lo, hi = self.band(steps)
        cap = self.cap_kwh
        e_hi = (hi - self.keep * soc0) * cap  # room up to the band's top [kWh of stored energy]
        e_lo = (lo - self.keep * soc0) * cap  # < 0: room down to its bottom
        ub_ch = np.minimum(self.sch_max, e_hi / self.g_ch)
        ub_dis = np.minimum(self.sdis_max, -e_lo / self.g_dis)
        if self.paper:
            ub_ch = np.minimum(ub_ch, (self.soc_max - soc0) * cap / self.eff_charge)
            ub_dis = np.minimum(ub_dis, (soc0 - self.soc_min) * cap / self.eff_discharge)
        lb_ch = np.maximum(0.0, e_lo / self.g_ch)
        lb_dis = np.maximum(0.0, -e_hi / self.g_dis)
        return StepLimits(lb_ch, ub_ch, lb_dis, np.maximum(ub_dis, 0.0))

    # ------------------------------------------------------------------ welfare

    def thresholds(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Marginal value of charging and cost of discharging ``(θ_ch, θ_dis)`` [currency/kWh]
        at the value ``v`` of stored energy: ``θ_ch = g_ch v − c_deg``, ``θ_dis = g_dis v + c_deg``."""
        return self.g_ch * value - self.cdeg, self.g_dis * value + self.cdeg

    def operating_cost(self, sch: np.ndarray, sdis: np.ndarray) -> np.ndarray:
        """``c_deg (S_ch + S_dis) + a (S_ch − S_dis)²`` [currency]: throughput degradation and
        the quadratic cost, the battery welfare terms that are not the value of stored energy."""
        return self.cdeg * (sch + sdis) + self.a * (sch - sdis) ** 2

    def welfare(self, vfac: np.ndarray, sch: np.ndarray, sdis: np.ndarray) -> np.ndarray:
        """Battery welfare ``v δ ΔE − c_deg (S_ch + S_dis) − a (S_ch − S_dis)²`` [currency],
        ``vfac = v δ`` the value applied to a kWh stored in the step."""
        return vfac * self.delta_e(sch, sdis) - self.operating_cost(sch, sdis)


def terminal_band(*, steps: int, steps_after: int, target: np.ndarray, up: np.ndarray, down: np.ndarray,
                  keep: float, soc_min: float, soc_max: float, paper_eff: tuple[float, float] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """SoC band [fraction] at the end of every step from which ``target`` is reachable at the
    end of the run, (steps, n_b) each.

    With ``r`` steps left after a step (``r = steps − 1 − t + steps_after``), the band ``B_r``
    holds the SoC from which some feasible schedule ends at ``target`` after those ``r``
    steps: ``B_0 = {target}`` and, one step earlier, ``s ∈ B_{r+1}`` iff the SoC reachable in
    one step from ``s``, ``[keep·s − down, keep·s + up] ∩ [soc_min, soc_max]``, meets ``B_r``:

        ``U_{r+1} = min(soc_max, (U_r + down)/keep)``,  ``L_{r+1} = max(soc_min, (L_r − up)/keep)``

    (``up = g_ch S̄_ch/cap``, ``down = g_dis S̄_dis/cap``; the paper model's headroom rules add
    ``U_{r+1} ≤ (soc_max/η_ch − L_r)/(1/η_ch − keep)`` and ``L_{r+1} ≥ (soc_min/η_dis − U_r)/(1/η_dis −
    keep)``). The rates are taken :data:`BAND_MARGIN` smaller, so the band of each step lies a
    hair inside the truly reachable set. The SoC of a step in ``B_r`` can always reach ``B_{r−1}``
    in the next step: the market stays feasible to the end, whatever prices come.

    Raises
    ------
    MarketError
        The band is empty (e.g. no charge rate to make up self-discharge).
    """
    n_b = len(target)
    lo = np.full((steps, n_b), soc_min)
    hi = np.full((steps, n_b), soc_max)
    if not steps or not n_b:
        return lo, hi
    up = np.maximum(up - BAND_MARGIN, 0.0)
    down = np.maximum(down - BAND_MARGIN, 0.0)
    L = np.asarray(target, dtype=float).copy()
    U = L.copy()
    r = 0
    last = steps - 1 + steps_after  # steps left after step 0
    while True:
        t = steps - 1 - (r - steps_after)  # the step with r steps left after it
        if 0 <= t < steps:
            lo[t], hi[t] = L, U
        if r >= last or (np.all(L <= soc_min) and np.all(U >= soc_max)):
            break
        Un = np.minimum(soc_max, (U + down) / keep)
        Ln = np.maximum(soc_min, (L - up) / keep)
        if paper_eff is not None:
            eta_c, eta_d = paper_eff
            Un = np.minimum(Un, (soc_max / eta_c - L) / (1.0 / eta_c - keep)) if 1.0 / eta_c > keep else Un
            Ln = np.maximum(Ln, (soc_min / eta_d - U) / (1.0 / eta_d - keep)) if 1.0 / eta_d > keep else Ln
        L, U = Ln, Un
        r += 1
        if np.any(L > U):
            msg = ("terminal_soc = 'cyclic' cannot be met: no schedule within the rate limits brings the"
                   f" batteries back to their initial SoC over {r} step(s); use [battery] terminal_soc = 'free'")
            raise MarketError(msg, group="Battery-terminal-soc")
    return lo, hi


def make_batteries(spec: BatterySpec, model: BatteryModel, *, names: tuple[str, ...], units: np.ndarray,
                   a_agent: np.ndarray, soc_init: np.ndarray, soc_target: np.ndarray, steps: int,
                   steps_after: int, step_hours: float) -> Batteries:
    """The :class:`Batteries` of a case from ``[battery]`` and the battery agents' units and ``a``.

    ``soc_init`` is the SoC before step 0 of this market call, ``soc_target`` the SoC the run
    must end at when ``spec.terminal_soc`` is cyclic, ``steps_after`` the steps of the run
    after this call's last step [fraction, fraction, steps].
    """
    cap = units * spec.unit_kwh
    p_rated = units * spec.unit_kw
    sch_max = np.minimum(p_rated * step_hours, spec.rate_charge * cap)
    sdis_max = np.minimum(p_rated * step_hours, spec.rate_discharge * cap)
    terminal = TerminalSoc(spec.terminal_soc)
    keep = 1.0 - float(spec.self_discharge)
    lo = float(spec.soc_min)
    hi = float(spec.soc_max)
    b = Batteries(
        model=model, terminal=terminal, names=names, cap_kwh=cap, sch_max=sch_max, sdis_max=sdis_max,
        a=a_agent + float(spec.a), soc_init=soc_init, soc_target=soc_target, soc_min=lo, soc_max=hi,
        eff_charge=float(spec.eff_charge), eff_discharge=float(spec.eff_discharge), keep=keep,
        cdeg=float(spec.degradation_cost), steps_after=int(steps_after),
        band_lo=np.full((steps, len(names)), lo), band_hi=np.full((steps, len(names)), hi))
    if terminal is not TerminalSoc.CYCLIC or not len(names) or not steps:
        return b
    ok = (cap > 0) & np.isfinite(cap) & (0 < b.eff_charge <= 1) & (0 < b.eff_discharge <= 1) & (0 < keep <= 1)
    if not np.all(ok) or not lo <= hi:
        return b  # validation names these inputs; no band on nonsense
    safe = np.where(cap > 0, cap, 1.0)
    band_lo, band_hi = terminal_band(
        steps=steps, steps_after=int(steps_after), target=np.clip(soc_target, lo, hi), up=b.g_ch * sch_max / safe,
        down=b.g_dis * sdis_max / safe, keep=keep, soc_min=lo, soc_max=hi,
        paper_eff=(b.eff_charge, b.eff_discharge) if model is BatteryModel.PAPER else None)
    return replace(b, band_lo=band_lo, band_hi=band_hi)
