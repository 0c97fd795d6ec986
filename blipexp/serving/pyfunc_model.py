"""The code MLflow logs as each registered model's pyfunc (models-from-code): loading a model runs this file, which
imports blipexp's BlipCaptioner, instead of unpickling an object, so no pickled code executes.

registry.log_and_register passes this file's path as `python_model`; MLflow copies it into the logged model.
"""
import mlflow.models

from blipexp.serving import BlipCaptioner

mlflow.models.set_model(BlipCaptioner())
