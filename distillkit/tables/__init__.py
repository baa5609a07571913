"""Paper tables: definitions (experiments/tables/*.yaml), job plans, launching and rendering.

`python -m distillkit.tables.reproduce table=<name> scale=paper|smoke launcher=...` (what
`make reproduce-table` runs) launches the missing jobs of a table and renders results/<name>.md.
"""
