"""``python -m benchmint ...``: the command line (as under ``torchrun ... -m benchmint replay TRACE``)."""

from benchmint.cli.main import run

if __name__ == "__main__":
    run()
