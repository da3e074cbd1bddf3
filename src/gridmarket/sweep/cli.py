"""Plain function behind ``gridmarket sweep`` (``new-case`` and ``calibrate``: :mod:`gridmarket.cli_cases`).

It takes the command line's options as arguments, does the work and returns the text to print
and the exit status; the typer wiring lives in :mod:`gridmarket.cli`. Errors the user can cause
are raised as :class:`~gridmarket.errors.GridmarketError` (the CLI prints them, exit status 2).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SOME_FAILED", "CommandResult", "sweep_command"]

#: exit status of ``gridmarket sweep`` when it finished but some scenarios failed
SOME_FAILED = 3


@dataclass(frozen=True)
class CommandResult:
    """What a command prints (``text``) and its exit status.

    Exit statuses: 0 everything ran; :data:`SOME_FAILED` (3) the sweep finished but some
    scenarios failed (listed in ``text``). Input errors are raised as GridmarketError (the CLI's
    status 2) and bugs as other exceptions (status 1), as for every command.
    """

    text: str
    exit_code: int = 0
    path: Path | None = None
    warnings: tuple[str, ...] = ()  #: printed by the CLI as ``warning: ...`` lines


def sweep_command(case: str | Path, sweep_toml: str | Path, out: str | Path, *, scheduler: str | None = None,
                  workers: int | None = None, overwrite: bool = False,
                  progress: Callable[[str, int, int], None] | None = None, report: bool | None = None
                  ) -> CommandResult:
    """``gridmarket sweep CASE SWEEP.toml --out OUT [--scheduler ADDR|serial] [--workers N] [--overwrite]``.

    Returns
    -------
    CommandResult
        A summary (scenarios ok / failed / reused, the best scenario, where the files are) and
        exit status 0 when every scenario finished, :data:`SOME_FAILED` when some failed (their
        errors listed).
    """
    from gridmarket.sweep.run import run_sweep

    table = run_sweep(case, sweep_toml, out, scheduler=scheduler, n_workers=workers, progress=progress,
                      overwrite=overwrite, report=report)
    ok = table[table["status"] == "ok"]
    failed = table[table["status"] != "ok"]
    out_path = Path(out).expanduser().resolve()
    lines = [f"{len(table)} scenario(s): {len(ok)} ok ({int(ok['cached'].sum())} reused), {len(failed)} failed"]
    if len(ok):
        best = ok.sort_values(["violations_best", "welfare_best"], ascending=[True, False], kind="stable").iloc[0]
        summary = out_path / str(best["results"]) / "summary.json"  # the currency of the welfare
        currency = json.loads(summary.read_text()).get("currency", "") if summary.is_file() else ""
        lines.append(f"fewest violations: {best['scenario']} ({int(best['violations_best'])} violations, "
                     f"welfare {best['welfare_best']:,.2f} {currency}".rstrip()
                     + f", {int(best['battery_units'])} SBU(s))")
    for _, r in failed.iterrows():
        lines.append(f"  failed {r['scenario']}: {r['error']}")
    lines.append(f"table: {out_path / 'sweep.csv'}; page: {out_path / 'sweep.html'}")
    return CommandResult(text="\n".join(lines), exit_code=SOME_FAILED if len(failed) else 0, path=out_path)
