"""The PySide6 desktop app. Widgets render and call services; work runs in worker threads."""
