"""Write the app's shipped describe-this-photo vocabulary (resources/vocabulary/default.txt).

Everyday-photo phrases written by hand (scenes, events, documents, photo types …) followed by the 1000
ImageNet-1k classes (names from timm's ImageNetInfo, which ship offline). Run ``python -m training.vocabulary``
after editing the hand-written list; the app reads the file, users edit their own copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

EVERYDAY = {
    "places and scenes": [
        "a beach", "a beach at sunset", "the sea", "a lake", "a river", "a waterfall", "mountains",
        "a snowy mountain", "a forest", "a meadow with flowers", "a desert", "a field", "a park", "a garden",
        "a city street", "a city skyline", "a city at night", "a bridge", "a church", "a castle", "a museum",
        "a market", "a shop", "a restaurant", "a cafe", "a bar", "a kitchen", "a living room", "a bedroom",
        "a bathroom", "an office", "a classroom", "a library", "a stadium", "a swimming pool", "an airport",
        "a train station", "a harbour with boats", "a campsite", "a road trip", "a countryside road",
        "a playground", "a zoo", "a farm", "an amusement park", "a concert stage", "a hotel room",
    ],
    "nature and weather": [
        "a sunset", "a sunrise", "a blue sky with clouds", "a rainbow", "snow", "rain", "fog", "a storm",
        "the moon", "stars at night", "autumn leaves", "spring blossoms", "flowers", "a tree", "grass",
        "rocks", "ice",
    ],
    "people": [
        "a selfie", "a portrait of a person", "a group of friends", "a family photo", "a baby", "a child",
        "children playing", "an old man", "an old woman", "a couple", "a crowd of people", "a person smiling",
        "a person running", "a person swimming", "a person cooking", "a person reading", "a bride and groom",
    ],
    "events and activities": [
        "a birthday party", "a birthday cake with candles", "a wedding", "a graduation", "a christmas tree",
        "fireworks", "a concert", "a football match", "a picnic", "a barbecue", "a hike", "skiing",
        "surfing", "cycling", "a holiday trip", "a dinner with friends", "a camping trip",
    ],
    "animals": [
        "a dog", "a puppy", "a cat", "a kitten", "a bird", "a horse", "a cow", "a sheep", "a fish",
        "a butterfly", "an insect", "a wild animal",
    ],
    "food and drink": [
        "food", "a meal on a plate", "a pizza", "a burger", "a salad", "a cake", "dessert", "bread",
        "fruit", "vegetables", "a cup of coffee", "a glass of wine", "a cocktail", "a bottle of beer",
        "breakfast", "pasta", "sushi", "ice cream",
    ],
    "things": [
        "a car", "a bicycle", "a motorcycle", "a boat", "a train", "an aeroplane", "a bus", "a house",
        "a building", "furniture", "a computer", "a phone", "a book", "toys", "clothes", "shoes", "a painting",
        "a sculpture", "a musical instrument", "a guitar", "a piano", "a clock", "a lamp", "a window", "a door",
    ],
    "documents and screens": [
        "a screenshot", "a screenshot of a phone", "a receipt", "a document", "a page of text",
        "handwriting", "a whiteboard", "a slide from a presentation", "a map", "a ticket", "a business card",
        "a passport", "a chart", "a diagram", "a menu", "a sign", "a poster", "a meme", "a QR code",
    ],
    "kinds of photo": [
        "a black and white photo", "a blurry photo", "a dark photo", "an overexposed photo", "a panorama",
        "a close-up", "an aerial photo", "an underwater photo", "a photo taken at night", "a drawing",
        "a cartoon", "a painting of a landscape", "a logo", "a pattern", "a texture",
    ],
}


def article(name: str) -> str:
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def imagenet_phrases() -> list[str]:
    """"a/an <first WordNet lemma>" of each ImageNet class (the recipe's class names), duplicates dropped."""
    from training.default_model import imagenet_class_names

    seen, out = set(), []
    for desc in imagenet_class_names():
        name = desc.split(",")[0].strip()
        if name.lower() not in seen:
            seen.add(name.lower())
            out.append(article(name))
    return out


def write(path: Path) -> int:
    lines = ["# photosearch describe-this-photo vocabulary: one phrase per line, '#' starts a comment.",
             "# Each phrase is scored as \"a photo of <phrase>\". Edit your own copy from the app (Describe → Edit",
             "# vocabulary) or with `photosearch describe --vocabulary-file`; this file is the shipped default.", ""]
    n = 0
    for section, phrases in EVERYDAY.items():
        lines.append(f"## {section}")
        lines += phrases
        n += len(phrases)
        lines.append("")
    lines.append("## ImageNet-1k classes")
    inet = [p for p in imagenet_phrases() if p not in {q for v in EVERYDAY.values() for q in v}]
    lines += inet
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return n + len(inet)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m training.vocabulary", description=__doc__)
    default = Path(__file__).resolve().parents[1] / "resources" / "vocabulary" / "default.txt"
    ap.add_argument("--out", type=Path, default=default)
    args = ap.parse_args(argv)
    print(f"{write(args.out)} phrases → {args.out}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
