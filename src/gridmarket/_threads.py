"""One BLAS thread for the command line, set before numpy is first imported.

The market's fast path multiplies many small dense matrices per step; OpenBLAS spreads each of
them over every core, which costs more in thread hand-over than it saves (measured on a year of
the Costa Rica case: 0.35 s against 0.23 s of CPU per 720 steps), and a sweep already runs one
worker per core. Only the ``gridmarket`` command imports this module, and only where the user
has not chosen (``OPENBLAS_NUM_THREADS`` already set wins); importing gridmarket as a library
changes nothing.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
