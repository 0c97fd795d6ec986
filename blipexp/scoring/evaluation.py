"""Scoring captions: generation-based metrics for the Trainer's epochs, validation subsets, picking the best epoch,
CIDEr's document frequency, scoring a whole split as the model is served (per image, with intervals). A trial's
tables of sample captions are training/samples.py's; a run's logged final scores, tracking/scores.py's."""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.collator import IGNORE_INDEX, SKIP_KEYS, CaptionCollator
from ..data.features import PixelRows, Rows, SkipTally, evaluation_dataset
from ..data.sources import CaptionData, Example
from ..experiment.spec import ExperimentSpec
from ..model import generation
from ..runtime import interrupts
from . import evidence
from .metrics import (
    DocumentFrequency,
    ImageScores,
    caption_scores,
    corpus_document_frequency,
    resolve_cider_df,
    score_images,
)

RowsFor = Callable[[str, Sequence[Example]], Rows]  # (split name, examples) -> one input row per example


def compute_metrics_for(tokenizer, references: list[list[str]], document_frequency: DocumentFrequency | None = None,
                        remember: Callable[[list[str]], None] | None = None):
    """`remember`: handed each evaluation's captions (the per-epoch sample table reuses them: no extra
    generation)."""
    def compute_metrics(eval_pred) -> dict[str, float]:
        predictions = decode(tokenizer, eval_pred.predictions)
        assert len(predictions) == len(references), (f"{len(predictions)} predictions for {len(references)} "
                                                     "references: evaluation order must match them")
        if remember is not None:
            remember(predictions)
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


def cider_document_frequency(spec: ExperimentSpec, data: CaptionData, n_scored: int,
                             echo: bool = False) -> DocumentFrequency | None:
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


# --------------------------------------------------------------------------- a split scored as the model is served


@dataclass
class SplitScores:
    """A model's captions of one split and their scores, per image and for the whole split."""

    split: str
    keys: list[str]  # the scored images, in order (an image found unusable is left out)
    predictions: list[str]
    references: list[list[str]]
    metrics: dict[str, float]  # the caption metrics, and "loss" (teacher-forced on each image's first reference)
    images: ImageScores
    idf: str  # where CIDEr's idf came from: "corpus" (training + validation references) or "split" (itself)

    def intervals(self, resamples: int, seed: int) -> dict[str, evidence.Interval]:
        return evidence.intervals(self.images, resamples, seed)

    def signature(self, resamples: int, seed: int) -> str:
        return evidence.signature(resamples, seed, self.idf, len(self.keys))

    def paired(self, other: SplitScores, resamples: int, seed: int) -> dict[str, evidence.Difference]:
        """`other` (B) against these scores (A), per caption metric, on the images both scored, matched by key (an
        image one scoring could not read is left out of both). ValueError when they share no image."""
        position = {key: i for i, key in enumerate(other.keys)}
        mine = [i for i, key in enumerate(self.keys) if key in position]
        if not mine:
            raise ValueError(f"a paired comparison needs both models scored on the same images: the {len(self.keys)} "
                             f"and {len(other.keys)} scored {self.split} images share none")
        theirs = [position[self.keys[i]] for i in mine]
        return evidence.paired(self.images.subset(mine), other.images.subset(theirs), resamples, seed)

    def table(self) -> dict[str, list]:
        """One row per image (`per_image/<split>.json`): key, caption, references and its scores; sorted by a score
        in the MLflow UI, it shows the worst captions."""
        return {"image": list(self.keys), "prediction": list(self.predictions),
                "references": [list(refs) for refs in self.references], **self.images.rows()}

    @classmethod
    def from_table(cls, columns: dict[str, list], split: str, metrics: dict[str, float], idf: str) -> "SplitScores":
        """The scores `table` wrote, read back (e.g. from a run's `per_image/<split>.json`)."""
        return cls(split=split, keys=columns["image"], predictions=columns["prediction"],
                   references=columns["references"], metrics=metrics, images=ImageScores.from_rows(columns), idf=idf)

    def worst(self, metric: str, count: int = 3) -> list[tuple[str, str, list[str], float]]:
        """(key, caption, references, score) of the `count` images scoring lowest on `metric` (a per-image mean
        metric, else CIDEr), lowest first."""
        metric = metric if metric in self.images.means else "cider"
        column = self.images.means[metric]
        order = np.argsort(column, kind="stable")[:count]
        return [(self.keys[i], self.predictions[i], self.references[i], float(column[i])) for i in order]

    def to_json(self) -> dict[str, Any]:
        return {"split": self.split, "keys": self.keys, "predictions": self.predictions, "references": self.references,
                "metrics": self.metrics, "per_image": self.images.rows(), "idf": self.idf}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "SplitScores":
        return cls(split=value["split"], keys=value["keys"], predictions=value["predictions"],
                   references=value["references"], metrics=value["metrics"],
                   images=ImageScores.from_rows(value["per_image"]), idf=value["idf"])


def score_split(model, processor, data: CaptionData, examples: Sequence[Example], split: str, spec: ExperimentSpec,
                settings: dict[str, Any], workers: int = 0, skips: SkipTally | None = None) -> SplitScores:
    """Caption and score `examples` as the served model does: pixels through the whole model in its own precision
    (fp32 as loaded; never cached features or a training autocast), decoded with `settings`. Also the
    teacher-forced loss on each image's first reference. CIDEr's idf as cider_df says for this split's size.
    Images unusable since the first look are left out (and counted in `skips`)."""
    import torch
    from torch.utils.data import DataLoader

    dataset, _ = evaluation_dataset(PixelRows(data, examples, processor.image_processor), examples)
    collator = CaptionCollator(processor.tokenizer, model.config.text_config.bos_token_id, spec.max_caption_tokens,
                               prompt=str(settings.get("prompt", "")))
    loader = DataLoader(dataset, batch_size=spec.eval_batch_size, collate_fn=collator, num_workers=workers)
    model.eval()
    kept, predictions, loss_sum, loss_items = [], [], 0.0, 0
    with torch.no_grad():
        for start, batch in zip(range(0, len(examples), spec.eval_batch_size), loader):
            interrupts.check()  # between batches: a safe point to stop at
            if skips is not None:
                skips.add(split, *(batch[key] for key in SKIP_KEYS))
            batch = {k: v.to(model.device) for k, v in batch.items() if k not in SKIP_KEYS}
            usable = (batch["labels"] != IGNORE_INDEX).any(dim=1)
            if not usable.any():
                continue
            inputs = {k: v[usable] for k, v in batch.items()}
            loss_sum += float(model(**inputs).loss) * int(usable.sum())
            loss_items += int(usable.sum())
            predictions += generation.captions(model, processor.tokenizer, inputs["pixel_values"], settings)
            kept += [examples[start + i] for i in torch.nonzero(usable).flatten().tolist()]
    if not kept:
        raise ValueError(f"no image of the {split} split could be read (all {len(examples)} changed since the "
                         "first look): re-run to check the data again")
    document_frequency = cider_document_frequency(spec, data, len(kept))
    references = [list(e.captions) for e in kept]
    metrics, images = score_images(predictions, references, document_frequency)
    return SplitScores(split=split, keys=[e.key for e in kept], predictions=predictions, references=references,
                       metrics={**metrics, "loss": loss_sum / loss_items}, images=images,
                       idf="corpus" if document_frequency else "split")


def intervals_note(intervals: dict[str, evidence.Interval], signature: str, images: int) -> str:
    """How a split's intervals were made, or why it has none."""
    if intervals:
        return f"95% intervals over images ({signature})"
    return evidence.too_few(images) or "no intervals (bootstrap_resamples=0)"


def format_scores(metrics: dict[str, float], intervals: dict[str, evidence.Interval]) -> str:
    return "  ".join(f"{key} {value:.4f}" + (f" {intervals[key]}" if key in intervals else "")
                     for key, value in metrics.items()) or "-"
