"""Scoring captions: generation-based metrics for the Trainer, validation subsets, scoring a whole split, picking
the best epoch, CIDEr's document frequency, and the table of sample captions."""
from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

import numpy as np

from . import distributed, generation, tracking
from .data.collator import IGNORE_INDEX
from .data.features import Rows, evaluation_dataset
from .data.images import BadImage
from .data.sources import CaptionData, Example
from .metrics import DocumentFrequency, caption_scores, corpus_document_frequency, resolve_cider_df
from .spec import ExperimentSpec
from .trainer import CaptionTrainer

RowsFor = Callable[[str, Sequence[Example]], Rows]  # (split name, examples) -> one input row per example


def compute_metrics_for(tokenizer, references: list[list[str]], document_frequency: DocumentFrequency | None = None,
                        samples: SampleCaptions | None = None):
    """`samples`: handed each evaluation's captions (the per-epoch sample table reuses them: no extra generation)."""
    def compute_metrics(eval_pred) -> dict[str, float]:
        predictions = decode(tokenizer, eval_pred.predictions)
        assert len(predictions) == len(references), (f"{len(predictions)} predictions for {len(references)} "
                                                     "references: evaluation order must match them")
        if samples is not None:
            samples.remember(predictions)
        # an image found unusable while evaluating has every label masked: it is left out of the scores
        usable = (np.asarray(eval_pred.label_ids) != IGNORE_INDEX).any(axis=1)
        kept = [i for i, ok in enumerate(usable) if ok]
        return caption_scores([predictions[i] for i in kept], [references[i] for i in kept], document_frequency)

    return compute_metrics


def decode(tokenizer, token_ids) -> list[str]:
    ids = np.where(np.asarray(token_ids) == IGNORE_INDEX, tokenizer.pad_token_id, token_ids)
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def validation_subset(examples: list[Example], spec: ExperimentSpec) -> list[Example]:
    """The images scored every epoch: all of them, or a fixed random subset of `val_subset` (same every epoch)."""
    if not spec.val_subset or len(examples) <= spec.val_subset:
        return examples
    chosen = sorted(random.Random(spec.split_seed).sample(range(len(examples)), spec.val_subset))
    return [examples[i] for i in chosen]


def best_epoch(history: list[dict[str, float]], spec: ExperimentSpec) -> dict[str, float]:
    """The trained epoch (1 on; 0 is the untrained model) with the best objective, as the spec's direction says."""
    trained = [h for h in history if h["epoch"] >= 1]
    assert trained, "training ran no evaluation"
    pick = max if spec.greater_is_better else min
    return pick(trained, key=lambda h: h[spec.objective_metric])


def evaluate_split(trainer: CaptionTrainer, processor, rows: RowsFor, examples: list[Example], split: str,
                   document_frequency: DocumentFrequency | None) -> dict[str, float]:
    """The current (best) model's metrics on a whole split."""
    if not examples:
        return {}
    dataset, refs = evaluation_dataset(rows(split, examples), examples)
    trainer.compute_metrics = compute_metrics_for(processor.tokenizer, refs, document_frequency)
    trainer.eval_split = split
    metrics = trainer.evaluate(eval_dataset=dataset, metric_key_prefix=split)
    return {k[len(split) + 1:]: float(v) for k, v in metrics.items()
            if k.startswith(f"{split}_") and not k.endswith(("_runtime", "_per_second"))}


def cider_document_frequency(spec: ExperimentSpec, data: CaptionData, n_scored: int,
                             echo: bool) -> DocumentFrequency | None:
    """CIDEr's idf from the training + validation references when the scored set is too small for its own
    (cider_df; one image would score every model 0), else None: pycocoevalcap's own, from the scored set."""
    if resolve_cider_df(spec.cider_df, n_scored) == "split":
        return None
    corpus = [list(e.captions) for e in data.train + data.validation]
    if echo:
        print(f"CIDEr: idf from the references of {len(corpus)} training + validation images (cider_df="
              f"{spec.cider_df}; {n_scored} scored image(s) are too few for their own). cider_coco keeps "
              "pycocoevalcap's value.", flush=True)
    return corpus_document_frequency(corpus)


def log_samples(run: tracking.Run, model, processor, data: CaptionData, spec: ExperimentSpec) -> None:
    """A table of validation images with the best model's caption next to the references."""
    shown = _usable_images(data, data.validation, spec.sample_captions)
    if not shown:
        return
    run.table(
        data={
            "image": [image for _, _, image in shown],
            "key": [e.key for _, e, _ in shown],
            "prediction": caption_images(model, processor, [image for _, _, image in shown], spec),
            "references": [" | ".join(e.captions) for _, e, _ in shown],
        },
        artifact_file="val_samples.json",
    )


def caption_images(model, processor, images: list, spec: ExperimentSpec) -> list[str]:
    """The model's captions for a few images, decoded as the spec says."""
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    model.eval()
    return generation.captions(model, processor.tokenizer, pixels.to(model.device), generation.settings(spec))


def _usable_images(data: CaptionData, examples: Sequence[Example], count: int) -> list[tuple[int, Example, object]]:
    """(position in examples, example, decoded image) of the first `count` examples whose image still decodes."""
    shown = []
    for position, example in enumerate(examples):
        if len(shown) == count:
            break
        try:
            shown.append((position, example, data.image(example)))
        except BadImage:  # unusable since the first look: counted by the evaluation, not shown
            continue
    return shown


class SampleCaptions:
    """The per-epoch table of sample captions (`val_samples_by_epoch.json`): the same first `sample_captions`
    images of the per-epoch validation set at every epoch, 0 (untrained) included, one row per image and epoch
    (image, key, epoch, prediction, references), appended as training goes so the UI shows the captions evolve.

    The captions are the epoch's own evaluation's (handed over by compute_metrics): no extra generation, except
    for epoch 0 when its scores were reused from an earlier trial (then only these few images are captioned).

    The first epoch's rows are written at once (they store the pictures); later rows at most every
    tracking.WRITE_EVERY_SECONDS, and by `flush` when training ends, pruned or not. A write costs about 0.05 s
    against a tiny epoch's 0.4 s (BENCHMARKS.md); on BLIP-base, where an epoch takes minutes, every epoch is still
    written as it ends."""

    ARTIFACT = "val_samples_by_epoch.json"

    def __init__(self, data: CaptionData, examples: Sequence[Example], spec: ExperimentSpec, model, processor):
        self.shown = _usable_images(data, examples, spec.sample_captions)
        self.spec, self.model, self.processor = spec, model, processor
        self._captions: list[str] | None = None  # the latest evaluation's, for the shown images
        # the image cells the first table write stored: later epochs point at the same files (an image costs two
        # files and most of a write: 0.09 s against 0.02 s per epoch for 8 images, measured here)
        self._image_cells: list | None = None
        self._pending: list[tuple[int, list[str]]] = []  # (epoch, captions) not written yet
        self._written = 0.0  # perf_counter of the last write

    def remember(self, predictions: list[str]) -> None:
        """An evaluation's captions of every per-epoch validation image, in evaluation order."""
        self._captions = [predictions[position] for position, _, _ in self.shown]

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """An EpochListener: add this epoch's rows to the table of the active run (main process only)."""
        captions, self._captions = self._captions, None
        if not self.shown or tracking.Run.active() is None or not distributed.is_main_process():
            return
        if captions is None:  # epoch 0's scores were reused, so nothing was generated for it here
            captions = caption_images(self.model, self.processor, [image for _, _, image in self.shown], self.spec)
        self._pending.append((epoch, captions))
        if self._image_cells is None or time.perf_counter() - self._written >= tracking.WRITE_EVERY_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the rows not written yet, in one write."""
        run = tracking.Run.active()
        if not self._pending or run is None:
            return
        pending, self._pending = self._pending, []
        assert self._image_cells is not None or len(pending) == 1, "the pictures are stored by one epoch's write"
        images = self._image_cells or [image for _, _, image in self.shown]
        run.table(
            data={
                "image": images * len(pending),
                "key": [e.key for _, e, _ in self.shown] * len(pending),
                "epoch": [epoch for epoch, _ in pending for _ in self.shown],
                "prediction": [caption for _, captions in pending for caption in captions],
                "references": [" | ".join(e.captions) for _, e, _ in self.shown] * len(pending),
            },
            artifact_file=self.ARTIFACT,
        )
        self._written = time.perf_counter()
        if self._image_cells is None:
            self._image_cells = run.table_cells(self.ARTIFACT, "image")[-len(self.shown):]
