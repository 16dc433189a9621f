"""``xsam-pipeline image``: run X-SAM on one image, for any of its tasks.

Writes ``STEM_masks.png`` (DAVIS-palette index image, object k has value k), ``STEM_overlay.png`` and
``STEM.json`` (COCO RLE per object, the generated text in generation mode) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from operators.annotate import default_annotator
from operators.errors import IMAGE_READ_ERRORS, InvalidPromptError, PipelineError
from operators.records import Instances
from operators.output_files import open_output, output_errors, write_output
from operators.sinks.palette_png import label_map, save_labels
from pipeline.prompts import parse_prompt
from xsam.tasks import TASKS, parse_generic_query


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("image", help="run X-SAM on one image (VGD, interactive, generic, referring, ...)")
    parser.add_argument("image", type=Path, help="RGB image file")
    parser.add_argument("--checkpoint", required=True, help="X-SAM folder (xsam.convert output), .bin or hub id")
    parser.add_argument("--task", choices=TASKS, default="vgd")
    parser.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="SPEC",
        help="visual prompt for vgd/interactive: point:X,Y[;X,Y] | box:X0,Y0,X1,Y1 | scribble:PNG | mask:PNG",
    )
    parser.add_argument("--text", help="generic: 'ins: a, b; sem: c'; referring/reasoning/chat: the text")
    parser.add_argument("--generate", action="store_true", help="decode an answer greedily (the demo's mode)")
    parser.add_argument("--threshold", type=float, default=0.5, help="minimum instance score (default 0.5)")
    parser.add_argument("--out", type=Path, default=Path("out/image"), help="output folder (default out/image)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from xsam import CheckpointError, XSamPredictor  # torch and transformers load only when the command runs

    image = _read_image(args.image)
    height, width = image.shape[:2]
    prompts = [parse_prompt(spec, i) for i, spec in enumerate(args.prompt)]
    masks = []
    for prompt in prompts:
        try:
            masks.append(prompt.to_mask(height, width))
        except ValueError as exc:
            raise InvalidPromptError(str(args.image), str(exc)) from None
    try:
        predictor = XSamPredictor.from_pretrained(args.checkpoint, device=args.device)
    except (CheckpointError, OSError) as exc:
        raise PipelineError(args.checkpoint, f"cannot load the X-SAM checkpoint: {exc}") from None
    try:
        result = predictor.predict(
            image,
            args.task,
            prompt_masks=masks or None,
            text=args.text,
            generate=args.generate,
            threshold=args.threshold,
        )
    except ValueError as exc:
        raise PipelineError(str(args.image), str(exc)) from None

    instances = Instances.from_masks(result.masks, result.scores, result.labels, height, width)
    instances = instances.with_track_ids(np.arange(1, len(instances) + 1))
    header = {"image": str(args.image), "task": args.task, "text": result.text}
    if args.task == "generic":  # labels index these categories
        header["categories"] = list(parse_generic_query(args.text).categories)
    _write(args.out, args.image.stem, image, instances, header)
    print(f"{len(instances)} object(s) -> {args.out}")
    if result.text is not None:
        print(result.text)
    return 0


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise PipelineError(str(path), "the image does not exist") from None
    except IMAGE_READ_ERRORS as exc:
        raise PipelineError(str(path), f"not a readable image ({exc})") from None


def _write(out: Path, stem: str, image: np.ndarray, instances: Instances, header: dict) -> None:
    with output_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    save_labels(label_map(instances), out / f"{stem}_masks.png")
    overlay_path = out / f"{stem}_overlay.png"
    with output_errors(overlay_path), open_output(overlay_path) as file:
        Image.fromarray(default_annotator().annotate(image, instances)).save(file, format="PNG")
    write_output(out / f"{stem}.json", json.dumps({**header, **_objects(instances)}, indent=2))


def _objects(instances: Instances) -> dict:
    """The video records' objects, keyed for an image: ``id`` (the instance) and ``label`` (the prompt or category)."""
    height, width = instances.shape
    objects = [{"id": o.pop("track_id"), "label": o.pop("prompt_id"), **o} for o in instances.object_dicts()]
    return {"height": height, "width": width, "objects": objects}
