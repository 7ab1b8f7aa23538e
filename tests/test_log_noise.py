"""What reaches the user's terminal: no colour codes from libraries in plain output or the log
file, no library notice a user cannot act on, and no flood of data-loader warnings."""

from __future__ import annotations

import logging

from conftest import Recorder, train_config
from sidestep import cpu_threads
from sidestep.cli.output import Out
from sidestep.cli.train_cmd import PlainProgress
from sidestep.engine.sinks import EventBus, LogToEvents, PlainFormatter
from sidestep.engine.trainer import Trainer


def _record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_library_log_lines_are_plain_and_quiet_where_they_should_be(capsys):
    rec = Recorder()
    bus = EventBus([rec, PlainProgress(Out(plain=True), every=1)])
    handler = LogToEvents(bus)
    handler.emit(_record("lycoris.utils", logging.WARNING, "\x1b[33mUsing rs_lora\x1b[0m"))
    handler.emit(_record("bitsandbytes.backends.cpu.ops", logging.WARNING,
                         "Failed to load CPU gemm_4bit_forward from kernels-community: No "
                         "module named 'kernels'. Please make sure you already `pip install"))
    bus.close()
    lines = rec.of("log")
    assert lines[0].message == "Using rs_lora" and lines[0].level == "warning"
    assert lines[1].level == "debug"  # kept in the run's log, not shown as a warning
    err = capsys.readouterr().err
    assert "warning: Using rs_lora" in err and "\x1b" not in err and "kernels" not in err
    formatted = PlainFormatter("%(message)s").format(
        _record("lycoris", logging.INFO, "\x1b[1;32mLoKr\x1b[0m ready"))
    assert formatted == "LoKr ready"


def test_lokr_run_writes_no_colour_codes(demo_root, small_tensors, tmp_path):
    out = tmp_path / "run"
    cfg = train_config(demo_root, small_tensors, out, epochs=1, adapter_type="lokr")
    assert Trainer(cfg).run().status == "completed"
    for name in ("sidestep.log", "events.jsonl"):
        text = (out / name).read_text()
        assert "\x1b[" not in text and "\\u001b[" not in text, name


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
