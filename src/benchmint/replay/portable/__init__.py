"""What an exported benchmark carries besides the replay engine (:mod:`benchmint.replay.export`): the runner
(``runner.py``, copied as ``run.py``) and stdlib stand-ins for the third-party libraries the engine uses
(``orjson``, ``msgspec``, ``psutil``), used only where those are not installed. Nothing in benchmint imports
them otherwise."""
