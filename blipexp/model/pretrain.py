"""The pretrained tiny BLIP that `--tiny` fine-tunes: built once offline, cached, reused.

Real users fine-tune a pretrained captioner; a tiny model from random weights behaves unlike that (a frozen
random encoder gives random features, and useful learning rates are far higher). So the tiny preset is the
tiny architecture pretrained on a generated corpus of other scenes (`data.outdoor`), with a vocabulary that
covers that corpus and the pitch set. It is built the first time it is needed (seconds to about a minute on
two cores), saved with `save_pretrained` under `<home>/cache/pretrained/<recipe hash>/` (or under the folder
BLIPEXP_PRETRAINED_CACHE names, e.g. one cache shared by many homes), and rebuilt only when RECIPE changes.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import BlipForConditionalGeneration, BlipProcessor, get_linear_schedule_with_warmup

from ..data import outdoor, pitch
from ..data.collator import CaptionCollator
from ..runtime import progress
from ..runtime.locks import file_lock
from .tiny import TINY_IMAGE_SIZE, TINY_VISION_LAYERS, build_tiny_model, build_tiny_processor

CACHE_VARIABLE = "BLIPEXP_PRETRAINED_CACHE"  # a folder of pretrained builds that replaces <home>/cache/pretrained


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the pretrained weights; its digest names the cache folder."""

    corpus_version: int = outdoor.VERSION  # how the corpus is drawn and captioned
    images: int = 2000  # generated corpus scenes
    steps: int = 360  # optimizer steps (about 6 passes over the corpus)
    batch_size: int = 32
    learning_rate: float = 2e-3  # AdamW peak, linear warm-up (5%) and decay
    max_tokens: int = 24  # caption truncation
    seed: int = 0  # corpus drawing, model init and batch order
    image_size: int = TINY_IMAGE_SIZE  # the architecture (modeling.tiny_config): pixels per side
    vision_layers: int = TINY_VISION_LAYERS  # and the vision encoder's depth

    def vocabulary(self) -> list[str]:
        """Captions whose words the tokenizer knows: the corpus' and the pitch set's (so fine-tuning on it needs no
        new words; a user's folder may still add some, see modeling.extend_vocabulary)."""
        return outdoor.all_captions() + pitch.all_captions()

    def architecture(self) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
        """The untrained model and its processor."""
        processor = build_tiny_processor(self.vocabulary(), image_size=self.image_size)
        return build_tiny_model(processor, seed=self.seed, vision_layers=self.vision_layers), processor

    def digest(self) -> str:
        return _digest(self)


@functools.cache  # once per recipe and process: it builds the model (40 ms here), and every --tiny run or trial asks
def _digest(recipe: Recipe) -> str:
    model, processor = recipe.architecture()
    config = model.config.to_dict()
    config.pop("transformers_version", None)  # an upgrade alone does not change the weights
    parts = {"recipe": asdict(recipe), "vocabulary": sorted(processor.tokenizer.get_vocab()), "config": config}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


RECIPE = Recipe()


def cache_root(home: Path) -> Path:
    shared = os.environ.get(CACHE_VARIABLE, "").strip()
    return Path(shared).expanduser() if shared else Path(home) / "cache" / "pretrained"


def pretrained_tiny(home: Path, recipe: Recipe = RECIPE, echo: bool = True) -> Path:
    """The folder of the pretrained tiny model and processor, built first if it is not cached yet.

    Parallel workers wait on one lock per recipe, so one builds and the others load its result; the build is
    written beside its final folder and renamed into place, so a killed build never leaves half a model.
    """
    root = cache_root(home)
    digest = recipe.digest()
    target = root / digest
    if (target / "recipe.json").is_file():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the pretrained-model cache {root} ({exc.strerror}): pass --home DIR (or set "
                         f"{CACHE_VARIABLE}) to a writable folder") from exc
    with file_lock(root / f"{digest}.lock"):
        if (target / "recipe.json").is_file():  # another worker built it while this one waited
            return target
        for stale in root.glob(f".{digest}-*"):  # a killed build's leftovers (we hold the lock: no one else builds)
            shutil.rmtree(stale, ignore_errors=True)
        if echo:
            print(f"Pretraining the tiny BLIP once ({recipe.steps} steps on {recipe.images} generated scenes); "
                  f"cached in {target}", flush=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=root))
        try:
            model, processor = build(recipe, echo)
            model.save_pretrained(staging)
            processor.save_pretrained(staging)
            (staging / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2) + "\n")  # written last
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def load_pretrained_tiny(home: Path, echo: bool = True) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    folder = pretrained_tiny(home, echo=echo)
    return BlipForConditionalGeneration.from_pretrained(folder), BlipProcessor.from_pretrained(folder)


def build(recipe: Recipe, echo: bool) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    """Train the tiny model from random weights on the generated corpus (captioning loss, whole model)."""
    model, processor = recipe.architecture()
    drawn = outdoor.scenes(recipe.images, seed=recipe.seed)
    pixels = processor.image_processor([image for _, image in drawn], return_tensors="pt")["pixel_values"]
    captions = [scene.caption for scene, _ in drawn]
    collate = CaptionCollator(processor.tokenizer, model.config.text_config.bos_token_id, recipe.max_tokens)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, recipe.steps // 20), recipe.steps)
    order = _batch_order(len(drawn), recipe)
    model.train()
    with torch.random.fork_rng(), progress.bar("pretraining the tiny BLIP", recipe.steps, "step", show=echo) as bar:
        torch.manual_seed(recipe.seed)  # dropout
        for indices in order:
            batch = collate([{"pixel_values": pixels[i], "caption": captions[i]} for i in indices])
            loss = model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                         attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return model, processor


def _batch_order(n: int, recipe: Recipe) -> list[list[int]]:
    """`steps` batches from seeded shuffles of the corpus, epoch after epoch."""
    rng, batches, pool = random.Random(recipe.seed), [], []
    while len(batches) < recipe.steps:
        while len(pool) < recipe.batch_size:
            pool += rng.sample(range(n), n)
        batches.append(pool[:recipe.batch_size])
        pool = pool[recipe.batch_size:]
    return batches
