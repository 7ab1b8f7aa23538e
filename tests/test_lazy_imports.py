"""Imports only where used: PEFT and LyCORIS would import bitsandbytes (~45 MiB, ~570 modules)
whenever it is installed; a run loads it only for the ``adamw8bit`` optimizer
(``sidestep.engine.adapters.import_peft``). Each test trains in a fresh interpreter, so what an
earlier test imported cannot hide or fake the result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# phases: (name, training overrides); after each, what is loaded and how the run ended
CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from conftest import train_config
from sidestep.engine.trainer import Trainer

demo, tensors, out = (__import__("pathlib").Path(a) for a in sys.argv[2:5])
report = []
for name, overrides in json.loads(sys.argv[5]):
    cfg = train_config(demo, tensors, out / name, epochs=1, **overrides)
    trainer = Trainer(cfg, [])
    result = trainer.run()
    report.append({"phase": name, "status": result.status, "error": result.error,
                   "bnb": "bitsandbytes" in sys.modules and sys.modules["bitsandbytes"] is not None,
                   "peft": "peft" in sys.modules, "lycoris": "lycoris" in sys.modules,
                   "optimizer": type(getattr(trainer.optimizer, "optimizer",
                                             trainer.optimizer)).__name__})
print("REPORT " + json.dumps(report))
"""


def _train(demo_root, tensors, out: Path, phases: list) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(TESTS), str(demo_root),
                           str(tensors), str(out), json.dumps(phases)],
                          capture_output=True, text=True, timeout=600)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    report = json.loads(lines[-1].removeprefix("REPORT "))
    for phase in report:
        assert phase["status"] == "completed", phase
    return report


def test_bitsandbytes_loads_only_for_adamw8bit(demo_root, small_tensors, tmp_path):
    """In one process: a LoRA run (PEFT imported with bitsandbytes hidden) and a LoKR run never
    load it; an adamw8bit run after them does, and its 8-bit optimizer trains."""
    lora, lokr, eight = _train(demo_root, small_tensors, tmp_path,
                               [("lora", {}), ("lokr", {"adapter_type": "lokr"}),
                                ("adamw8bit", {"optimizer_type": "adamw8bit"})])
    # the LoRA run saved (PEFT's state dict and save_pretrained) with PEFT loaded
    assert lora["peft"] and not lora["bnb"] and lora["optimizer"] == "AdamW"
    assert lokr["lycoris"] and not lokr["bnb"]
    assert eight["bnb"] and eight["optimizer"] == "AdamW8bit"
