"""crashhp's benchmarks: crashhp against the per-event reload helpers, side by side, in one run.

``python -m benchmarks`` (root) prints the tables of parts 1 (event pipeline), 3 (idle and
start-up) and 4 (scaling); ``--vm`` adds part 2 (the real kernel and the real peer in the QEMU
guest of the system tests). Figures are printed, never asserted: the run exits non-zero only
when something broke (a daemon crash, a lost or failed reload, a harness failure).
"""
