"""Loading third-party parts without their noise on the user's terminal.

bitsandbytes is kept out of imports that do not need it (PEFT, LyCORIS, transformers all import
it when installed, which costs memory and, on a CPU, prints a warning about missing kernels);
``quiet_loading`` also turns off the libraries' progress bars and a known deprecation note
while a VAE or text encoder loads (a CLI command's output is its own lines; in the app they
would land on the screen).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
import warnings

BNB = "bitsandbytes"
BNB_LOCK = threading.RLock()  # one hiding at a time, and no real import of it meanwhile


@contextlib.contextmanager
def bitsandbytes_hidden():
    """bitsandbytes out of sight for the imports (and PEFT calls) inside.

    PEFT imports it whenever it is installed (``peft/helpers.py``: ``try: import bitsandbytes``;
    ``peft.import_utils.is_bnb_available``: ``importlib.util.find_spec``, cached), and so does
    LyCORIS (``lycoris/utils/quant.py``), only to wrap quantized base layers, which Side-Step
    never trains. It costs ~45 MiB and ~570 modules (its backends pull in torch._inductor and
    networkx). A ``None`` in ``sys.modules`` makes ``import`` raise ImportError and ``find_spec``
    return None, the "not installed" path of both libraries; PEFT's cached checks are read
    meanwhile, so they keep saying False after the entry is gone and a later
    ``import bitsandbytes`` (the ``adamw8bit`` optimizer, ``load_bitsandbytes``) works.
    Once bitsandbytes is loaded there is nothing to save and nothing is hidden."""
    with BNB_LOCK:
        if BNB in sys.modules:
            yield
            return
        sys.modules[BNB] = None  # type: ignore[assignment]
        try:
            yield
            peft_checks = sys.modules.get("peft.import_utils")
            for name in ("is_bnb_available", "is_bnb_4bit_available"):
                check = getattr(peft_checks, name, None)
                if check is not None:
                    check()  # lru_cache'd by PEFT: False from now on in this process
        finally:
            if BNB in sys.modules and sys.modules[BNB] is None:
                del sys.modules[BNB]


@contextlib.contextmanager
def quiet_loading(*libraries: str):
    """bitsandbytes hidden, ``libraries``' (``"transformers"``, ``"diffusers"``) progress bars
    off, and torch's ``weight_norm`` deprecation (diffusers' Oobleck VAE) silenced, inside."""
    restore = []
    with bitsandbytes_hidden(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        try:
            for name in libraries:
                logging_ = importlib.import_module(f"{name}.utils.logging")
                if logging_.is_progress_bar_enabled():
                    logging_.disable_progress_bar()
                    restore.append(logging_.enable_progress_bar)
            yield
        finally:
            for enable in restore:
                enable()
