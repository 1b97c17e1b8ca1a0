"""python -m training COMMAND: default (build the shipped model), demo (search held-out photos with it)."""

from __future__ import annotations

import logging
import sys


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    commands = {"default": "training.default_model", "demo": "training.demo"}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(f"usage: python -m training {{{','.join(commands)}}} [options]", file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(commands[sys.argv[1]]).main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
