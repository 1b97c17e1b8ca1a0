"""The frozen app's entry script (PyInstaller needs a script, not a console-scripts entry point)."""

import sys

from photosearch.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
