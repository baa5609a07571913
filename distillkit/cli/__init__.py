"""The programs: one module per command, each with a `main(argv)` (pyproject's scripts).

Every command goes through `_common.command`: argv for Hydra, the host allocator, user errors as
one line and exit 2, non-finite losses as exit 3. The library below holds no programs.
"""
