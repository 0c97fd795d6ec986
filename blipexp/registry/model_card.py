"""The model card: a README.md that travels with every registered version and every export.

Written as a Hugging Face Hub model card (YAML front matter, then Markdown), so an exported folder pushed to the Hub
documents itself: base model, data (source, revision, fingerprint, split sizes, skips), the settings that differ
from blipexp's defaults, validation and test metrics, the generation config, and how to load and reproduce it.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from ..data import CaptionData
from ..experiment.presets import PITCH_DATASET
from ..experiment.spec import ExperimentSpec
from ..runtime.environment import device_text
from ..tracking.scores import LoggedScores

SHOWN_METRICS = ("cider", "bleu4", "rougeL", "loss")  # the results table's rows, in this order, where measured


Worst = tuple[str, str, list[str], float]  # (image, caption, references, score)


def render(spec: ExperimentSpec, data: CaptionData, validation: LoggedScores, test: LoggedScores,
           generation: dict[str, Any], git_commit: str = "unknown", worst: list[Worst] = (),
           environment: dict[str, Any] | None = None, run_id: str = "") -> str:
    """The card for a model trained with `spec` on `data`: `validation` and `test` hold the served model's scores
    with their intervals (test empty without a test split), `generation` the settings the served model uses,
    `worst` the test captions that scored lowest, `environment` what its run recorded of the machine and packages
    (environment.json), `run_id` the run that trained it."""
    sections = [
        _front_matter(spec, test.metrics or validation.metrics, "test" if test.metrics else "validation"),
        f"# {spec.registered_model}\n\nBLIP image captioning, fine-tuned with blipexp (experiment "
        f"`{spec.name}`).\n\n**Hypothesis:** {spec.hypothesis or 'not stated'}",
        _model_section(spec),
        _data_section(spec, data),
        _results_section(spec, validation, test, worst),
        _settings_section(spec),
        "## Generation\n\nThe served model (pyfunc, `caption`, `mlflow models serve`) generates with these settings; "
        "a request's `params` override them.\n\n```json\n" + json.dumps(generation, indent=2, sort_keys=True) + "\n```",
        *([_environment_section(environment)] if environment else []),
        _usage_section(spec, git_commit, run_id),
    ]
    return "\n\n".join(sections) + "\n"


def spec_diff(spec: ExperimentSpec) -> dict[str, Any]:
    """The spec's fields whose values differ from blipexp's defaults (the base ExperimentSpec)."""
    return _differing(spec.to_dict(), ExperimentSpec().to_dict())


def _differing(values: dict[str, Any], base: dict[str, Any], skip: set[str] = frozenset()) -> dict[str, Any]:
    """The entries of `values` that `base` lacks or holds otherwise, but those in `skip`."""
    return {key: value for key, value in values.items() if key not in skip and value != base.get(key)}


def _front_matter(spec: ExperimentSpec, scores: dict[str, float], split: str) -> str:
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "image-to-text",
                            "tags": ["blip", "image-captioning", "blipexp"]}
    if _is_hub_id(spec.model):  # a local folder is no Hub base model
        meta["base_model"] = spec.model
    if _is_hub_id(spec.dataset):
        meta["datasets"] = [spec.dataset]
    results = [{"type": name.lower(), "name": f"{split} {name}", "value": round(float(scores[name]), 4)}
               for name in SHOWN_METRICS if name in scores]
    if results:
        meta["model-index"] = [{"name": spec.registered_model, "results": [{
            "task": {"type": "image-to-text", "name": "Image captioning"},
            "dataset": {"name": spec.dataset, "type": spec.dataset, "split": split},
            "metrics": results}]}]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---"


def _is_hub_id(name: str) -> bool:
    """"owner/name" as the Hub spells it, and not a local path of that shape."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", name) is not None and not Path(name).exists()


def _model_section(spec: ExperimentSpec) -> str:
    if spec.is_tiny:
        base = (f"`{spec.model}`: blipexp's offline preset, a small BLIP built from a config and "
                f"{'pretrained on generated outdoor scenes' if spec.model == 'tiny' else 'randomly initialised'}")
    else:
        base = f"`{spec.model}`" + (f" at revision `{spec.model_revision}`" if spec.model_revision else "")
    if spec.adapter == "lora":
        how = (f"LoRA (r={spec.lora_r}, alpha={spec.lora_alpha}, targets `{spec.lora_targets}`), merged into the "
               "weights for serving; the adapter alone is the version's `adapter` artifact")
    elif spec.freeze_vision_encoder:
        how = "text decoder fine-tuned, vision encoder frozen"
    else:
        how = "full fine-tuning"
    return f"## Model\n\n- Base model: {base}\n- Adaptation: {how}\n- Precision asked: `{spec.precision}`"


def _data_section(spec: ExperimentSpec, data: CaptionData) -> str:
    if spec.dataset == PITCH_DATASET:
        source = f"blipexp's generated football pitch scenes ({spec.pitch_scenes} scenes)"
    else:
        source = f"`{data.source}`" + (f" at revision `{spec.dataset_revision}`" if spec.dataset_revision else "")
    skipped = ", ".join(f"{reason}: {n}" for reason, n in sorted(data.skipped.items())) or "none"
    return (f"## Data\n\n- Source: {source}\n- Fingerprint: `{data.fingerprint}` (content of every image and "
            f"caption used, and the split)\n- Splits ({data.splits}): {len(data.train)} train, "
            f"{len(data.validation)} validation, {len(data.test)} test images\n- Skipped: {skipped}")


def _results_section(spec: ExperimentSpec, validation: LoggedScores, test: LoggedScores, worst: list[Worst]) -> str:
    names = sorted(set(validation.metrics) | set(test.metrics), key=_metric_order)
    rows = [f"| {name} | {_scored(validation, name)} | {_scored(test, name)} |" for name in names]
    head = (f"## Results\n\nObjective: validation `{spec.objective_metric}` ({spec.direction}). The best epoch's "
            "model as it is served, scored on the whole validation split and on the test split, which no choice was "
            "made on; in brackets each score's 95% bootstrap interval over images.\n\n"
            "| metric | validation | test |\n|---|---|---|")
    table = "\n".join([head, *rows]) if rows else head + "\n| (none logged) | | |"
    notes = [f"- {split}: `{scores.signature}`" for split, scores in (("validation", validation), ("test", test))
             if scores.signature]
    if notes:
        table += "\n\nHow the intervals were made (resamples, seed, CIDEr's idf, images):\n" + "\n".join(notes)
    if worst:
        table += ("\n\nThe worst test captions, by their own score:\n\n| image | caption | references | score |\n"
                  "|---|---|---|---|\n" + "\n".join(
                      f"| `{image}` | {_cell(caption)} | {_cell(' / '.join(refs))} | {score:.3f} |"
                      for image, caption, refs, score in worst))
    return table


def _scored(scores: LoggedScores, name: str) -> str:
    value = scores.metrics.get(name)
    if value is None:
        return "-"
    interval = scores.intervals.get(name)
    return f"{value:.4f}" + (f" [{interval.low:.4f}, {interval.high:.4f}]" if interval else "")


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ") or "(empty)"


def _metric_order(name: str) -> tuple[int, str]:
    return (SHOWN_METRICS.index(name) if name in SHOWN_METRICS else len(SHOWN_METRICS), name)


def _settings_section(spec: ExperimentSpec) -> str:
    rows = [f"| `{key}` | `{json.dumps(value, default=str)}` |" for key, value in spec_diff(spec).items()]
    return ("## Training settings\n\nEvery setting that differs from blipexp's defaults (`python -m blipexp show "
            f"{spec.name}` lists them all):\n\n| field | value |\n|---|---|\n" + "\n".join(rows))


def _environment_section(environment: dict[str, Any]) -> str:
    rows = [f"| {name} | {version or 'not installed'} |" for name, version in environment["packages"].items()]
    git = environment["blipexp"]
    dirty = {True: ", with uncommitted changes (the run's artifact `uncommitted.diff`)", False: "", None: ""}
    return ("## Environment\n\nWhat the training run recorded (its artifact `environment.json`):\n\n"
            f"- Python {environment['python']}, blipexp commit `{git['commit']}`{dirty[git.get('dirty')]}\n"
            f"- Device: {device_text(environment)}; torch threads {environment['device']['torch_threads']}; "
            f"precision used `{environment.get('precision_used')}`\n\n| package | version |\n|---|---|\n"
            + "\n".join(rows))


def _usage_section(spec: ExperimentSpec, git_commit: str, run_id: str = "") -> str:
    name = spec.registered_model
    command = " ".join(["python -m blipexp run", spec.name, *(["--tiny"] if spec.is_tiny else []),
                        *(f"--set {shlex.quote(f'{key}={value}')}" for key, value in _overrides(spec).items())])
    rerun = (f"`python -m blipexp rerun {run_id}` (trains again from the run's logged spec and data, then says "
             "whether the scores reproduced); by hand, " if run_id else "")
    prompt = (f"\n\nIt was trained to continue the prompt {spec.prompt!r}: pass it as `text=` to the processor, and "
              "drop it from the front of the generated caption." if spec.prompt else "")
    return f"""## How to use

From the MLflow Model Registry (needs `blipexp` installed):

```python
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model("models:/{name}@champion")
model.predict(pd.DataFrame({{"image": [open("photo.jpg", "rb").read()]}}))  # columns: caption, error
```

From an exported folder (`python -m blipexp export models:/{name}@champion OUT`), with transformers alone:

```python
from transformers import BlipForConditionalGeneration, BlipProcessor
model = BlipForConditionalGeneration.from_pretrained("OUT")
processor = BlipProcessor.from_pretrained("OUT")
```{prompt}

Reproduce: {rerun}`{command}` at blipexp commit `{git_commit}`."""


def _overrides(spec: ExperimentSpec) -> dict[str, Any]:
    """The `--set` values that turn the experiment's own spec into this one (a sweep's searched fields excluded:
    running the sweep again searches them)."""
    base = type(spec)()
    base = base.tiny() if spec.is_tiny else base
    return _differing(spec.params(), base.params(), skip=set(spec.search_space()))
