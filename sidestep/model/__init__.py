"""ACE-Step 1.5 model: our implementation, state-dict compatible with the real checkpoints.

Importing this package imports torch; the CLI and the app import it only when work starts.
"""

from sidestep.model.acestep import AceStepModel, build_acestep, init_weights
from sidestep.model.config import AceStepConfig, ModelConfigError
from sidestep.model.loading import CheckpointError, load_acestep, read_model_config

__all__ = ["AceStepConfig", "AceStepModel", "CheckpointError", "ModelConfigError",
           "build_acestep", "init_weights", "load_acestep", "read_model_config"]
