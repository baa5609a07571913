"""Hydra plugin: every positive integer is an `ipc` config-group choice (`ipc=7`, `ipc=range(1,4)`).

IPC stays a config group so `optional tuned: ${method}_${dataset}_ipc${ipc}` composes the
published per-setting values inside Hydra (and `--cfg job` shows them); this config source
answers `ipc/<N>` for any N >= 1 instead of one YAML file per value.
"""
