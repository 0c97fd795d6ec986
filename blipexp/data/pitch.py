"""The embedded pitch dataset: procedurally drawn football scenes whose captions say exactly what is visible.

Every caption is a function of the drawn scene (team colour, how many players, where the ball is, day or
night), so a model that reads the image can get it right and caption metrics measure real learning. The
scenes are written as a `datasets` imagefolder (images + metadata.jsonl) and loaded through the same code
as a user's folder.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

VERSION = 1  # bump when drawing or captions change: cached folders are keyed by it
SIZE = 128
TEAMS = {"red": (214, 40, 40), "blue": (40, 80, 220), "yellow": (240, 214, 40), "white": (246, 246, 246)}
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
ZONES = ("left", "middle", "right")
PLACES = {"left": "near the left goal", "middle": "in the middle of the pitch", "right": "near the right goal"}
GRASS = {False: (58, 150, 62), True: (24, 64, 34)}  # day, night
LINES = {False: (235, 240, 235), True: (150, 160, 150)}


@dataclass(frozen=True)
class Scene:
    team: str
    players: int
    zone: str
    night: bool

    @property
    def caption(self) -> str:
        subject = f"{COUNT_WORDS[self.players]} {self.team} player" + ("s" if self.players > 1 else "")
        verb = "dribbles" if self.players == 1 else "chase"
        return f"{subject} {verb} the ball {PLACES[self.zone]}" + (" at night" if self.night else "")


def all_captions() -> list[str]:
    """Every caption a pitch scene can have: the words the pretrained tiny tokenizer must know."""
    return [Scene(team, players, zone, night).caption
            for team in TEAMS for players in COUNT_WORDS for zone in ZONES for night in (False, True)]


def random_scene(rng: random.Random) -> Scene:
    return Scene(
        team=rng.choice(sorted(TEAMS)),
        players=rng.randint(1, 3),
        zone=rng.choice(ZONES),
        night=rng.random() < 0.3,
    )


def draw(scene: Scene, rng: random.Random) -> Image.Image:
    """Draw the scene; positions and sizes jitter so no two images are alike."""
    image = Image.new("RGB", (SIZE, SIZE), GRASS[scene.night])
    pen = ImageDraw.Draw(image)
    _draw_pitch(pen, LINES[scene.night])
    ball = _ball_position(scene.zone, rng)
    for _ in range(scene.players):
        draw_player(pen, _near(ball, rng), TEAMS[scene.team], rng)
    r = 3
    pen.ellipse([ball[0] - r, ball[1] - r, ball[0] + r, ball[1] + r], fill=(255, 255, 255), outline=(0, 0, 0))
    return image


def _draw_pitch(pen: ImageDraw.ImageDraw, line: tuple[int, int, int]) -> None:
    m = 6
    pen.rectangle([m, m, SIZE - m, SIZE - m], outline=line)
    pen.line([SIZE // 2, m, SIZE // 2, SIZE - m], fill=line)
    c = SIZE // 2
    pen.ellipse([c - 14, c - 14, c + 14, c + 14], outline=line)
    for x0, x1 in ((m, m + 18), (SIZE - m - 18, SIZE - m)):  # penalty boxes
        pen.rectangle([x0, c - 26, x1, c + 26], outline=line)
    for x0, x1 in ((0, m), (SIZE - m, SIZE - 1)):  # goals
        pen.rectangle([x0, c - 10, x1, c + 10], fill=(250, 250, 250), outline=(90, 90, 90))


def _ball_position(zone: str, rng: random.Random) -> tuple[int, int]:
    third = SIZE // 3
    x_low = {"left": 14, "middle": third + 8, "right": 2 * third + 6}[zone]
    return rng.randint(x_low, x_low + third - 22), rng.randint(24, SIZE - 24)


def _near(ball: tuple[int, int], rng: random.Random) -> tuple[int, int]:
    x = min(max(ball[0] + rng.randint(-22, 22), 10), SIZE - 10)
    y = min(max(ball[1] + rng.randint(-26, 26), 12), SIZE - 12)
    return x, y


def draw_player(pen: ImageDraw.ImageDraw, at: tuple[int, int], shirt: tuple[int, int, int], rng: random.Random) -> None:
    x, y = at
    w, h = rng.randint(4, 5), rng.randint(9, 11)
    pen.rectangle([x - w, y - h // 2, x + w, y + h // 2], fill=shirt, outline=(20, 20, 20))
    pen.ellipse([x - 3, y - h // 2 - 7, x + 3, y - h // 2 - 1], fill=(224, 180, 140))


def scenes(n: int, seed: int) -> list[tuple[Scene, Image.Image]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        scene = random_scene(rng)
        out.append((scene, draw(scene, rng)))
    return out


def write_pitch_dataset(root: Path, n: int, seed: int = 0) -> Path:
    """Write n scenes as an imagefolder under root and return its path; reuse it when already complete.

    The folder is built beside its final path and renamed into place, so an interrupted write never leaves a
    half-written dataset that a later run would load.
    """
    target = Path(root) / f"pitch-v{VERSION}-n{n}-s{seed}"
    if (target / "metadata.jsonl").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pitch-", dir=target.parent))
    try:
        (staging / "images").mkdir()
        rows = []
        for i, (scene, image) in enumerate(scenes(n, seed)):
            name = f"images/{i:05d}.png"
            image.save(staging / name, optimize=False)
            rows.append({"file_name": name, "text": scene.caption})
        with open(staging / "metadata.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        try:
            os.rename(staging, target)
        except OSError:  # another process finished first: its copy is identical
            if not (target / "metadata.jsonl").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
