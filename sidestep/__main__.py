"""``python -m sidestep``: the headless CLI."""

from sidestep.cli import entry

if __name__ == "__main__":
    entry()
