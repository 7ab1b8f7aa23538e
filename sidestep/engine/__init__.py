"""The training engine: plain Python, no UI. ``Trainer(config, sinks, control).run()``."""

from sidestep.engine.control import Control
from sidestep.engine.events import (CheckpointSaved, EpochEnded, Event, LogLine, Problem,
                                    RunFinished, RunStarted, StepMetrics)

__all__ = ["CheckpointSaved", "Control", "EpochEnded", "Event", "LogLine", "Problem",
           "RunFinished", "RunStarted", "StepMetrics", "Trainer"]


def __getattr__(name):  # Trainer pulls in torch; import it only when asked for
    if name == "Trainer":
        from sidestep.engine.trainer import Trainer

        return Trainer
    raise AttributeError(name)
