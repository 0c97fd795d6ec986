"""`caption` and `export`: a registered model's captions of image files, and its from_pretrained folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import tracking
from ..serving.use import caption, export
from .args import home_of


def cmd_caption(args: argparse.Namespace) -> int:
    tracking.configure(home_of(args))
    for image, text in zip(args.images, caption(args.model_uri, args.images)):
        print(f"{image}\t{text}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    tracking.configure(home_of(args))
    out = export(args.model_uri, Path(args.out_dir), push_to_hub=args.push_to_hub)
    print(f"exported to {out}: BlipForConditionalGeneration.from_pretrained({str(out)!r}) loads it")
    return 0
