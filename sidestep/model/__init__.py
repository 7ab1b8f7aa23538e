"""ACE-Step 1.5 model: our implementation, state-dict compatible with the real checkpoints.

The names below load on first use (PEP 562): ``sidestep.model.checkpoints`` lists models from
their ``config.json`` files, and the app's dashboard does that at start-up, where importing
torch through this package (3.5 s of CPU) would hold the GIL while the first frame is drawn.
"""

from importlib import import_module

_WHERE = {"AceStepModel": "acestep", "build_acestep": "acestep", "init_weights": "acestep",
          "AceStepConfig": "config", "ModelConfigError": "config",
          "CheckpointError": "loading", "load_acestep": "loading",
          "read_model_config": "loading"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
