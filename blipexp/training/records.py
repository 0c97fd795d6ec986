"""What a trial's run records about how it was made, besides its scores: the data (sizes, skips, the MLflow
dataset entity and the data manifest), the environment, the precision and why, the feature cache, images found
unusable while training."""
from __future__ import annotations

from pathlib import Path

from .. import tracking
from ..data import manifest
from ..data.features import SkipTally
from ..data.sources import CaptionData
from ..experiment.presets import PITCH_DATASET
from ..experiment.spec import ExperimentSpec
from ..model import precision
from ..model.feature_cache import FeatureCache
from ..runtime import environment


def log_data_summary(run: tracking.Run, data: CaptionData, train_pairs: int, epoch_val_images: int) -> None:
    run.params({
        "data_source": data.source,
        "data_train_images": len(data.train),
        "data_train_pairs": train_pairs,
        "data_val_images": len(data.validation),
        "data_val_images_per_epoch": epoch_val_images,
        "data_test_images": len(data.test),
    })
    run.metrics({"data_total_samples": data.total,
                 **{f"data_skipped_{reason}": n for reason, n in sorted(data.skipped.items())}})
    if data.warnings:
        run.tags({"data_warnings": " | ".join(data.warnings)})


def log_environment(run: tracking.Run, precision_used: str) -> None:
    """What the numbers may depend on besides spec and data: environment.json, the `env_*` params, and the diff of
    a dirty checkout (uncommitted.diff)."""
    git = environment.checkout()
    recorded = environment.current(precision_used, git)
    run.dict(recorded, environment.ARTIFACT)
    run.params(environment.params(recorded))
    if git.diff:
        run.text(git.diff, environment.DIFF_ARTIFACT)


def log_precision(run: tracking.Run, chosen: precision.Choice) -> None:
    """What the run trained in and why; the probe's figures when `auto` measured them."""
    run.params({"precision_used": chosen.precision, "precision_reason": chosen.reason})
    if chosen.gflops:
        run.metrics({f"precision_probe_{name}_gflops": value for name, value in chosen.gflops.items()})


def log_dataset(run: tracking.Run, data: CaptionData, spec: ExperimentSpec) -> None:
    """The data as an MLflow dataset entity (the UI's "Datasets used"): source and revision, the fingerprint as its
    digest, split sizes and skip counts as its profile; and their manifest (per image: content, captions, split)."""
    if spec.dataset == PITCH_DATASET:
        kind, source = "generated", {"generator": "blipexp pitch scenes", "scenes": spec.pitch_scenes,
                                     "folder": data.source}
    elif Path(data.source).is_dir():
        kind, source = "local", {"uri": Path(data.source).as_uri()}
    else:
        kind, source = "hugging_face", {"path": data.source, "revision": spec.dataset_revision,
                                        "split": spec.dataset_split}
    profile = {"train_images": len(data.train), "validation_images": len(data.validation),
               "test_images": len(data.test), "total_samples": data.total, "splits": data.splits,
               "skipped": dict(sorted(data.skipped.items()))}
    run.dataset(name=spec.dataset if kind != "local" else Path(data.source).name, digest=data.fingerprint,
                source_type=kind, source=source, profile=profile, context="train")
    run.text(manifest.as_text(manifest.build(data)), manifest.ARTIFACT)  # what changed, should the data change


def log_skips(run: tracking.Run, skips: SkipTally, echo: bool) -> None:
    """Images that were fine at the first look but not when read for training or evaluation."""
    counts = skips.counts()
    if not counts:
        return
    run.metrics({f"data_skipped_during_run_{reason}": n for reason, n in sorted(counts.items())})
    if echo:
        listed = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))
        print(f"  skipped while training/evaluating (changed since the first look): {listed}", flush=True)


def log_cache(run: tracking.Run, cache: FeatureCache) -> None:
    run.params({f"vision_cache_{r.split}": "hit" if r.hit else "computed" for r in cache.reports})
    run.metrics({"vision_cache_mb": sum(r.megabytes for r in cache.reports),
                 "vision_cache_seconds": sum(r.seconds for r in cache.reports)})
