"""blipexp: experiment-tracked fine-tuning of BLIP image-captioning models."""
import os

# No usage data leaves the machine: MLflow's and the Hugging Face Hub's telemetry are off unless the user
# has set these variables themselves.
for _name, _value in (("MLFLOW_DISABLE_TELEMETRY", "true"), ("HF_HUB_DISABLE_TELEMETRY", "1"), ("DO_NOT_TRACK", "1")):
    os.environ.setdefault(_name, _value)

__version__ = "0.1.0"
