"""Save now while paused: the engine, blocked in the pause, saves at once and keeps waiting."""

from __future__ import annotations

import threading
import time

from conftest import Recorder, train_config
from sidestep.engine.control import Control


def test_save_now_while_paused_saves_at_once(demo_root, small_tensors, tmp_path):
    from sidestep.engine.trainer import Trainer

    control = Control()
    rec = Recorder()
    paused = threading.Event()

    class PauseAtStep2:
        def handle(self, event):
            if event.type == "step" and event.step == 2:
                control.pause()
            if event.type == "log" and event.message == "paused":
                paused.set()

        def close(self):
            pass

    out = tmp_path / "run"
    cfg = train_config(demo_root, small_tensors, out, epochs=3, save_every=100)
    trainer = Trainer(cfg, [rec, PauseAtStep2()], control)
    thread = threading.Thread(target=trainer.run, daemon=True)
    thread.start()
    try:
        assert paused.wait(240)
        time.sleep(0.5)  # well inside the engine's wait
        assert not list(out.glob("checkpoint-step-*"))
        control.save_now()
        deadline = time.monotonic() + 5
        while not list(out.glob("checkpoint-step-*/COMPLETE")) and time.monotonic() < deadline:
            time.sleep(0.05)
        saved = list(out.glob("checkpoint-step-*/COMPLETE"))
        assert saved, "no checkpoint within 5 s of save-now while paused"
        step = rec.of("step")[-1].step
        assert saved[0].parent.name == f"checkpoint-step-{step}"
        assert control.paused and thread.is_alive()
        # the event follows the files through the event bus's own thread
        while not rec.of("checkpoint") and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        assert [e.step for e in rec.of("checkpoint") if e.kind == "step"] == [step]
        steps_while_paused = len(rec.of("step"))
        time.sleep(0.5)
        assert len(rec.of("step")) == steps_while_paused  # still paused after the save
    finally:
        control.resume()
        thread.join(300)
    assert not thread.is_alive()
    assert rec.of("run_finished")[-1].status == "completed"
    # the request was served during the pause, not again after the resume
    assert [e.step for e in rec.of("checkpoint") if e.kind == "step"] == [step]
    assert [e.message for e in rec.of("log") if e.message in ("paused", "resumed")] == \
        ["paused", "resumed"]


def test_control_wait_wakes_on_save_and_resume():
    control = Control()
    control.pause()
    saves = []
    done = threading.Event()

    def wait():
        control.wait_while_paused(poll=60, on_save=lambda: saves.append(time.monotonic()))
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    time.sleep(0.1)
    asked = time.monotonic()
    control.save_now()
    deadline = time.monotonic() + 2
    while not saves and time.monotonic() < deadline:
        time.sleep(0.01)
    assert saves and saves[0] - asked < 1.0
    assert not done.is_set()
    control.resume()
    assert done.wait(2)
    assert not control.take_save_request()
