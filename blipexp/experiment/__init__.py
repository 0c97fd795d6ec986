"""What a user writes and what a spec is checked against: ExperimentSpec (spec.py) with its fields' parsing
(fields.py), presets (presets.py) and checks (validation.py), search spaces, the Trainer arguments a spec passes
through, the caption metrics' names and directions (metric_keys.py), the catalog of experiment files. Imports only
runtime."""
