"""``--demo`` in the app: build the tiny model and dataset on first use (a worker named
``demo-build``; the App's worker handler opens the form when it succeeds), then open the form
set up to train on them."""

from __future__ import annotations

import shutil
from pathlib import Path

DEMO_BUILD = "demo-build"  # the worker's name, which the App dispatches on


def start_demo(app) -> None:
    from sidestep.demo import demo_complete

    if demo_complete(app.demo_dir):
        open_demo_form(app)
        return
    from sidestep.tui.screens.demo_setup import DemoSetupScreen

    screen = DemoSetupScreen(id="demo-setup-screen")
    app.goto(screen)
    demo_dir = app.demo_dir

    def progress(msg: str) -> None:
        app.call_from_thread(screen.add_line, msg)

    app.run_worker(lambda: build_demo(demo_dir, progress), thread=True, group="demo",
                   exit_on_error=False, name=DEMO_BUILD)


def build_demo(demo_dir: Path, progress) -> None:
    from sidestep.demo import make_demo

    if demo_dir.exists():  # an interrupted earlier attempt
        shutil.rmtree(demo_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(demo_dir / "tensors", ignore_errors=True)
        shutil.rmtree(demo_dir / "audio", ignore_errors=True)
    make_demo(demo_dir, progress=progress)


def open_demo_form(app, mode: str = "fixed") -> None:
    from sidestep.tui.form_model import fresh_run_dir

    explicit = {"checkpoint_dir": str(app.demo_dir / "checkpoints"),
                "model_variant": "turbo", "dataset_dir": str(app.demo_dir / "tensors"),
                "output_dir": fresh_run_dir(app.demo_runs_root(), "demo"),
                "num_workers": 0}
    app.action_new_training(mode, explicit, preset="quick_test")
