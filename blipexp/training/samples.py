"""A trial's tables of sample captions: the per-epoch table that shows the captions evolve while it trains
(`SampleCaptions`, an epoch listener) and the final model's captions of the first validation images
(`log_samples`), written to the trial's run through tracking.Run."""
from __future__ import annotations

import time
from collections.abc import Sequence

from .. import tracking
from ..data.images import BadImage
from ..data.sources import CaptionData, Example
from ..experiment.spec import ExperimentSpec
from ..model import generation
from ..runtime import distributed
from ..scoring.evaluation import SplitScores


def log_samples(run: tracking.Run, data: CaptionData, validation: SplitScores, count: int) -> None:
    """A table of the first `count` validation images with the final model's caption next to the references
    (`val_samples.json`): the final validation's own captions, the pictures decoded again for the table."""
    position = {key: i for i, key in enumerate(validation.keys)}
    shown = [(e, image) for _, e, image in _usable_images(data, data.validation, count) if e.key in position]
    if not shown:
        return
    run.table(
        data={
            "image": [image for _, image in shown],
            "key": [e.key for e, _ in shown],
            "prediction": [validation.predictions[position[e.key]] for e, _ in shown],
            "references": [" | ".join(e.captions) for e, _ in shown],
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
