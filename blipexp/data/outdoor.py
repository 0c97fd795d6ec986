"""The pretraining corpus of the tiny model: people in coloured shirts on a beach, a street or a park lawn.

It shares the pitch scenes' visual concepts (shirt colours, how many people, left / middle / right, day or
night, the same figure drawing), so a model pretrained on it has image features and words that carry over to
the pitch set. Its scenes (no pitch lines, no goals, no ball, other grounds) and its caption style ("people
stand on the left of the beach") differ, so fine-tuning on the pitch set still has something to learn.
Generated in memory: the corpus is only used to build the pretrained model, never written as a dataset.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from .pitch import SIZE, draw_player

VERSION = 1  # bump when drawing or captions change: the pretrained model's recipe hash includes it
SHIRTS = {"red": (214, 40, 40), "blue": (40, 80, 220), "yellow": (240, 214, 40), "white": (246, 246, 246),
          "green": (30, 170, 60), "black": (25, 25, 25), "orange": (245, 140, 20), "purple": (140, 50, 170)}
COUNT_WORDS = {1: "a", 2: "two", 3: "three", 4: "four"}
SIDES = {"left": "on the left of", "middle": "in the middle of", "right": "on the right of"}
GROUNDS = {  # (day, night) colours
    "beach": ((226, 206, 150), (96, 88, 64)),
    "street": ((120, 120, 124), (48, 48, 54)),
    "park": ((90, 170, 80), (30, 70, 40)),
}
NIGHT_SHARE = 0.3


@dataclass(frozen=True)
class Scene:
    shirt: str
    people: int
    side: str
    ground: str
    night: bool

    @property
    def caption(self) -> str:
        who = "person stands" if self.people == 1 else "people stand"
        subject = f"{COUNT_WORDS[self.people]} {self.shirt} {who}"
        return f"{subject} {SIDES[self.side]} the {self.ground}" + (" at night" if self.night else "")


def random_scene(rng: random.Random) -> Scene:
    return Scene(shirt=rng.choice(sorted(SHIRTS)), people=rng.randint(1, 4), side=rng.choice(sorted(SIDES)),
                 ground=rng.choice(sorted(GROUNDS)), night=rng.random() < NIGHT_SHARE)


def all_captions() -> list[str]:
    """Every caption the corpus can produce: the words the tiny tokenizer must know."""
    return [Scene(*values).caption for values in itertools.product(SHIRTS, COUNT_WORDS, SIDES, GROUNDS, (False, True))]


def draw(scene: Scene, rng: random.Random) -> Image.Image:
    """The ground, a few props of its kind, and the people grouped on their side; everything jitters."""
    image = Image.new("RGB", (SIZE, SIZE), GROUNDS[scene.ground][scene.night])
    pen = ImageDraw.Draw(image)
    _draw_props(pen, scene, rng)
    third = SIZE // 3
    x_low = {"left": 12, "middle": third + 8, "right": 2 * third + 4}[scene.side]
    centre = rng.randint(x_low, x_low + third - 20), rng.randint(24, SIZE - 24)
    for _ in range(scene.people):
        at = (min(max(centre[0] + rng.randint(-16, 16), 10), SIZE - 10),
              min(max(centre[1] + rng.randint(-26, 26), 12), SIZE - 12))
        draw_player(pen, at, SHIRTS[scene.shirt], rng)
    return image


def _draw_props(pen: ImageDraw.ImageDraw, scene: Scene, rng: random.Random) -> None:
    """Waves on the beach, lane marks on the street, bushes in the park: what tells the grounds apart."""
    dim = 0.5 if scene.night else 1.0
    shade = lambda rgb: tuple(int(c * dim) for c in rgb)  # noqa: E731
    if scene.ground == "beach":
        pen.rectangle([0, 0, SIZE, rng.randint(10, 18)], fill=shade((40, 110, 200)))
    elif scene.ground == "street":
        y = rng.randint(SIZE // 2 - 8, SIZE // 2 + 8)
        for x in range(rng.randint(0, 10), SIZE, 24):
            pen.rectangle([x, y, x + 12, y + 2], fill=shade((230, 230, 230)))
    else:
        for _ in range(rng.randint(2, 4)):
            x, y = rng.randint(0, SIZE), rng.choice((rng.randint(0, 14), rng.randint(SIZE - 14, SIZE)))
            pen.ellipse([x - 7, y - 7, x + 7, y + 7], fill=shade((20, 100, 30)))


def scenes(n: int, seed: int) -> list[tuple[Scene, Image.Image]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        scene = random_scene(rng)
        out.append((scene, draw(scene, rng)))
    return out
