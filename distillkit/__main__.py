"""`python -m distillkit [overrides]`: the `distillkit` command, for launchers that start a
module (`torchrun --nproc_per_node=N -m distillkit ...`, `srun python -m distillkit ...`)."""

from distillkit.cli.distill import main

if __name__ == "__main__":
    main()
