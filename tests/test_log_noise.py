"""What reaches the user's terminal: no library printing around our output, no library notice
a user cannot act on, and no flood of data-loader warnings."""

from __future__ import annotations

import logging

from conftest import Recorder, train_config
from sidestep import cpu_threads
from sidestep.cli import main
from sidestep.cli.output import Out
from sidestep.cli.train_cmd import PlainProgress
from sidestep.engine.sinks import EventBus, LogToEvents
from sidestep.engine.trainer import Trainer


def _record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_a_library_notice_nobody_can_act_on_stays_in_the_log(capsys):
    rec = Recorder()
    bus = EventBus([rec, PlainProgress(Out(plain=True), every=1)])
    handler = LogToEvents(bus)
    handler.emit(_record("bitsandbytes.backends.cpu.ops", logging.WARNING,
                         "Failed to load CPU gemm_4bit_forward from kernels-community: No "
                         "module named 'kernels'. Please make sure you already `pip install"))
    handler.emit(_record("peft.tuners", logging.WARNING, "a warning that matters"))
    bus.close()
    assert [line.level for line in rec.of("log")] == ["debug", "warning"]
    err = capsys.readouterr().err
    assert "kernels" not in err and "warning: a warning that matters" in err


def test_lokr_plain_output_has_no_colour_codes(demo_root, small_tensors, tmp_path, capsys):
    """LyCORIS printed its own coloured lines straight to stdout, around our log: now its
    records go through the run's logging (the log file keeps them)."""
    out = tmp_path / "run"
    code = main(["--plain", "-y", "fixed", "--checkpoint-dir", str(demo_root / "checkpoints"),
                 "--dataset-dir", str(small_tensors), "--output-dir", str(out), "--epochs", "1",
                 "--device", "cpu", "--num-workers", "0", "--adapter-type", "lokr",
                 "--lokr-linear-dim", "4", "--lokr-linear-alpha", "8"])
    assert code == 0
    shown = capsys.readouterr()
    assert "\x1b[" not in shown.out + shown.err
    assert "LyCORIS" not in shown.out  # its info lines are not the user's progress
    assert "LyCORIS: create LyCORIS" in (out / "sidestep.log").read_text()


def test_data_loader_workers_are_capped_at_the_usable_cores(demo_root, small_tensors,
                                                            tmp_path):
    rec = Recorder()
    cfg = train_config(demo_root, small_tensors, tmp_path / "run", epochs=1, num_workers=64)
    trainer = Trainer(cfg, [rec])
    trainer.setup()
    assert trainer.loader.num_workers == cpu_threads.usable_cores()
    trainer.control.request_stop("test")
    trainer.run()
    said = [e.message for e in rec.of("log") if "data-loader workers" in e.message]
    assert len(said) == 1 and "instead of 64" in said[0]
