"""Using a registered model outside a server: `caption` image files with it (read here and sent as bytes, as a
client would), `export` it as a folder `from_pretrained` loads (with its model card), optionally pushed to the Hub,
and `hf_folder`, that folder downloaded."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from ..tracking import access
from .captioner import ARTIFACT_KEY, CARD_KEY


def caption(model_uri: str, images: list[str]) -> list[str]:
    """Captions for image files, from e.g. `models:/blip-captioner@champion` or `models:/blip-captioner/3`.

    The files are read here, as a client would, and sent as bytes: the model itself reads no paths."""
    missing = [path for path in images if not Path(path).expanduser().is_file()]
    if missing:
        raise ValueError(f"no such image file(s): {', '.join(map(str, missing))}")
    model = _load(model_uri)
    frame = pd.DataFrame({"image": [Path(p).expanduser().read_bytes() for p in images]})
    out = model.predict(frame)
    bad = [f"{path}: {error}" for path, error in zip(images, out["error"]) if error is not None]
    if bad:
        raise ValueError("cannot caption " + "; ".join(bad))
    return [str(text) for text in out["caption"]]


def export(model_uri: str, out_dir: Path, push_to_hub: str | None = None) -> Path:
    """Copy the logged model's HF folder (model + processor) to out_dir; optionally push it to the Hub repo."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty: choose a new folder or empty it first")
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = _downloaded_artifacts(model_uri, Path(tmp))
        shutil.copytree(_hf_folder(artifacts, model_uri), out_dir, dirs_exist_ok=True)
        if CARD_KEY in artifacts:  # versions registered before model cards have none
            shutil.copyfile(artifacts[CARD_KEY], out_dir / "README.md")
    if push_to_hub:
        _push(out_dir, push_to_hub)
    return out_dir


def hf_folder(model_uri: str, dst: Path) -> Path:
    """The logged model's HF folder (model + processor, as from_pretrained loads it), downloaded into `dst`."""
    return _hf_folder(_downloaded_artifacts(model_uri, dst), model_uri)


def _downloaded_artifacts(model_uri: str, dst: Path) -> dict[str, Path]:
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    except MlflowException as exc:
        raise ValueError(f"cannot download {model_uri} ({exc.message}): check the name, version or alias "
                         "with list_models()") from exc
    return _artifacts(local)


def _hf_folder(artifacts: dict[str, Path], model_uri: str) -> Path:
    """The HF folder among a downloaded pyfunc model's artifacts."""
    if ARTIFACT_KEY not in artifacts:
        raise ValueError(f"{model_uri} is not a BlipCaptioner model (no '{ARTIFACT_KEY}' artifact): "
                         "register it with log_and_register")
    return artifacts[ARTIFACT_KEY]


def _artifacts(local: Path) -> dict[str, Path]:
    """Each artifact of a downloaded pyfunc model by key, as its MLmodel file records it."""
    flavor = Model.load(str(local / "MLmodel")).flavors.get("python_function", {})
    return {key: local / entry["path"] for key, entry in (flavor.get("artifacts") or {}).items()}


def _push(folder: Path, repo: str) -> None:
    """Upload the folder (model, processor, model card) to the Hugging Face Hub repo (needs network and a token:
    `hf auth login`)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message="Upload from blipexp export")


def _load(model_uri: str):
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        # a login or permission the server refused is not a wrong name
        raise ValueError(access.refusal(exc) or f"cannot load {model_uri} ({exc.message}): check the name, version "
                         "or alias with list_models()") from exc
