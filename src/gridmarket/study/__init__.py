"""The study loop: market -> power flow -> limits -> battery placement (MODEL.md stages I-VII)."""

from gridmarket.study.loop import Iteration, StudyResult, check_network, dispatch_kw, run_study

__all__ = ["Iteration", "StudyResult", "check_network", "dispatch_kw", "run_study"]
