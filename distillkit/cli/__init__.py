"""The programs: one module per command, each with a `main(argv)` (pyproject's scripts).

Every command goes through `_common`: argv for Hydra, the host allocator, and its one error
boundary (a user error as one line and exit 2, a non-finite loss exit 3, a bug its traceback
and exit 1; `distillkit -m` records failed jobs and exits 1 listing them). The library below
holds no programs.
"""
