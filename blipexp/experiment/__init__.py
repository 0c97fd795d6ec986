"""What a user writes and what a spec is checked against: ExperimentSpec and its fields, search spaces, the
Trainer arguments a spec passes through, the catalog of experiment files. Imports only runtime."""
