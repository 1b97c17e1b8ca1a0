"""python -m training COMMAND:

    train --config FILE   train a model from a YAML/TOML config (training/recipes/); torchrun for several GPUs
    export RUN_DIR        write a run's model where the app lists it
    data check ...        check a captioned-image dataset (or a class folder) before training
    default               build the shipped model (resources/models/default) and its report
    demo                  search the held-out Tux Paint photos with the shipped model
"""

from __future__ import annotations

import logging
import os
import sys

COMMANDS = {"train": "training.train", "export": "training.export", "data": None,
            "default": "training.default_model", "demo": "training.demo"}


def main() -> int:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    import importlib

    if sys.argv[1] == "data":
        if len(sys.argv) < 3 or sys.argv[2] != "check":
            print("usage: python -m training data check FMT ANNOTATIONS [IMAGES] [options]", file=sys.stderr)
            return 2
        from training.data.captions import main_check

        return main_check(sys.argv[3:])
    return importlib.import_module(COMMANDS[sys.argv[1]]).main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
