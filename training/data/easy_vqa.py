"""easy-VQA (PyPI ``easy-vqa``): 64x64 synthetic images of one coloured shape, turned into captions.

easy-VQA ships questions and answers only, so each image's colour and shape are inferred from its Q/A pairs:
"what color is the triangle?" -> blue (colour, and the shape named in the question), "what is the blue shape?" ->
rectangle, and yes/no questions such as "is there not a red shape?" -> no (a red shape is present); answers denying
presence eliminate candidates. Captions are "a {colour} {shape}"; when only one is known the caption says what is
known ("a red shape" / "a circle", about 10% of images); images with neither, or with contradictory answers, are
skipped (under 1%). Checked against the pixels: the inferred colours match the drawn palette colour exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path

from training.data.tuxpaint import CaptionedImage

logger = logging.getLogger(__name__)

SHAPES = frozenset({"circle", "rectangle", "triangle"})
_YES_NO = frozenset({"yes", "no"})
_NEGATIONS = frozenset({"not", "no"})


class _Conflict(ValueError):
    """Answers about one image contradict each other."""


def _infer_attributes(qa: list[tuple[str, str]], colours: frozenset[str]) -> tuple[str | None, str | None]:
    """(colour, shape) of one image from its (question, answer) pairs; None where unknown.

    Positive facts come from open answers and from yes/no answers that affirm presence; answers that deny presence
    ("is there a red shape?" -> no) eliminate candidates, which settles a value when exactly one candidate is left.
    """
    vocab = {"colour": colours, "shape": SHAPES}
    facts: dict[str, str] = {}
    absent: dict[str, set[str]] = {"colour": set(), "shape": set()}
    for question, answer in qa:
        words = question.lower().rstrip("?").split()
        named = [(kind, w) for w in words for kind in vocab if w in vocab[kind]]
        if answer in _YES_NO:
            if (answer == "yes") == bool(_NEGATIONS.intersection(words)):
                if len(named) == 1:  # "no red shape" rules out red; "no red circle" alone rules out nothing
                    absent[named[0][0]].add(named[0][1])
                continue
            found = named
        elif answer in colours or answer in SHAPES:
            found = [("colour" if answer in colours else "shape", answer), *named]
        else:
            continue
        for kind, value in found:
            if facts.setdefault(kind, value) != value:
                raise _Conflict(f"{kind}: {facts[kind]} vs {value}")
    for kind, values in vocab.items():
        if facts.get(kind) in absent[kind]:
            raise _Conflict(f"{kind} {facts[kind]} is both present and absent")
        left = values - absent[kind]
        if kind not in facts and len(left) == 1:
            facts[kind] = next(iter(left))
    return facts.get("colour"), facts.get("shape")


def caption_for(colour: str | None, shape: str | None) -> str | None:
    """"a red circle", "a red shape", "a circle", or None when nothing is known."""
    if colour is None and shape is None:
        return None
    return " ".join(["a", *([colour] if colour else []), shape or "shape"])


def load_easy_vqa_captions(split: str = "train", limit: int | None = None) -> list[CaptionedImage]:
    """One caption per easy-VQA image of ``split`` ("train"/"test"), sorted by image id; ``limit`` keeps the first."""
    import easy_vqa  # optional dependency: imported here so the other data sources work without it

    if split == "train":
        questions, paths = easy_vqa.get_train_questions(), easy_vqa.get_train_image_paths()
    elif split == "test":
        questions, paths = easy_vqa.get_test_questions(), easy_vqa.get_test_image_paths()
    else:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    colours = frozenset(easy_vqa.get_answers()) - SHAPES - _YES_NO
    qa_by_image: dict[int, list[tuple[str, str]]] = {}
    for text, answer, image_id in zip(*questions, strict=True):
        qa_by_image.setdefault(image_id, []).append((text, answer))

    items: list[CaptionedImage] = []
    partial = skipped = 0
    for image_id in sorted(paths):
        if limit is not None and len(items) >= limit:
            break
        try:
            colour, shape = _infer_attributes(qa_by_image.get(image_id, []), colours)
        except _Conflict as exc:
            logger.warning("easy-vqa %s image %d skipped: contradictory answers (%s)", split, image_id, exc)
            skipped += 1
            continue
        caption = caption_for(colour, shape)
        if caption is None:
            skipped += 1
            continue
        partial += colour is None or shape is None
        items.append(CaptionedImage(path=Path(paths[image_id]), captions=(caption,), group=split))
    logger.info("easy-vqa %s: %d captioned images (%d with colour or shape unknown), %d skipped", split, len(items),
                partial, skipped)
    return items
