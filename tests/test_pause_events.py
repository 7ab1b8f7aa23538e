"""Pause and resume travel as typed events: every sink takes them, events.jsonl keeps them and
a replay of it rebuilds them; the monitor's state follows them, not log text."""

from __future__ import annotations

from sidestep.engine.events import (LogLine, RunPaused, RunResumed, RunStarted, StepMetrics,
                                    read_events)
from sidestep.engine.sinks import JsonlSink
from sidestep.tui.state import RunState

STARTED = RunStarted(run_dir="r", config={}, device="cpu", precision="fp32", model="m",
                     adapter_type="lora", trainable_params=1, dataset_size=1,
                     steps_per_epoch=1, total_steps=4, total_epochs=1)


def test_state_follows_typed_events_not_log_text():
    state = RunState()
    state.apply(STARTED)
    state.apply(LogLine("paused"))  # text alone changes nothing
    assert state.status == "running"
    state.apply(RunPaused(step=2))
    assert state.status == "paused"
    state.apply(RunResumed(step=2))
    assert state.status == "running"


def test_jsonl_round_trip_and_replay(tmp_path):
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path)
    events = [STARTED, StepMetrics(step=1, epoch=1, loss=0.5, lr=1e-4), RunPaused(step=1),
              LogLine("paused"), RunResumed(step=1), LogLine("resumed")]
    for event in events:
        sink.handle(event)
    sink.close()
    assert read_events(path) == events
    state = RunState.from_run_dir(tmp_path)
    assert state.status == "interrupted" and [t for _, t in state.log][-2:] == \
        ["paused", "resumed"]


def test_other_sinks_ignore_them(tmp_path):
    from sidestep.cli.output import Out
    from sidestep.cli.train_cmd import PlainProgress
    from sidestep.engine.sinks import TensorBoardSink

    tb = TensorBoardSink(tmp_path / "runs", 1)
    plain = PlainProgress(Out(plain=True), 1)
    for sink in (tb, plain):
        sink.handle(RunPaused(step=1))
        sink.handle(RunResumed(step=1))
        sink.close()


def test_a_stopped_run_says_where_it_resumes_in_the_monitors_log(tmp_path):
    """The monitor's last line said "run stopped" and no more; the way on is History's R or
    the command (the run's own mode, read from its run.json)."""
    import json

    from sidestep.engine.events import RunFinished

    (tmp_path / "run.json").write_text(json.dumps({"config": {"mode": "selective"}}))
    ckpt = tmp_path / "checkpoint-step-4"
    state = RunState(run_dir=str(tmp_path), title="r")
    state.apply(RunFinished(status="stopped", step=4, checkpoint_path=str(ckpt)))
    lines = [text for _, text in state.log]
    assert lines[-2] == "run stopped"
    assert lines[-1] == (f"it resumes from checkpoint-step-4: History, then R; or "
                         f"sidestep selective --resume-from {ckpt}")
    done = RunState(run_dir=str(tmp_path), title="r")
    done.apply(RunFinished(status="completed", step=4, checkpoint_path=str(ckpt)))
    assert [text for _, text in done.log] == ["run completed"]
