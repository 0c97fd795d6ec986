"""One trial: the recipe from a spec and data to a trained, scored and logged model (train.py; its setup: setup.py,
what its run records: records.py, its sample-caption tables: samples.py), the Trainer as blipexp runs it, its
callbacks, and resuming an interrupted run. Imports runtime, experiment, data, model, scoring, tracking."""
