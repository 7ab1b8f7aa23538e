#!/usr/bin/env python3
"""Thin launcher: ``python sidestep_tui.py [--demo]`` starts the Side-Step terminal app."""

import sys

from sidestep.launch import main

if __name__ == "__main__":
    sys.exit(main())
