"""The study loop: market -> power flow -> limits -> battery placement (MODEL.md stages I-VII)."""

from gridmarket.study.loop import (
    Iteration,
    StudyProgress,
    StudyResult,
    check_network,
    dispatch_kw,
    run_study,
)
from gridmarket.study.run import run_to_folder

__all__ = ["Iteration", "StudyProgress", "StudyResult", "check_network", "dispatch_kw", "run_study",
           "run_to_folder"]
