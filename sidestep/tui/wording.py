"""Messages shared with the command line, in the app's words: a setting's flag becomes the
label of the field that sets it ("set --checkpoint-dir to ..." names a flag the app has no
place for)."""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1)
def _labels() -> dict[str, str]:
    from sidestep.config import schema

    out = {}
    for s in schema.SETTINGS:
        if s.kind == "bool":  # "--force" reads better than a label in "pass --force"
            continue
        for flag in s.flags:
            if flag.startswith("--"):
                out[flag] = s.label
    return out


_FLAG = re.compile(r"--[a-z][a-z0-9-]*")


# Whole phrases that name a command or a flag the app has a place for instead.
PHRASES = {
    "(`sidestep preprocess` or the --preprocess flag)":
        "(Dataset browser → Preprocess)",
    # engine/module_config.py's fixes
    "write it again with `sidestep estimate`": "write it again on the Estimate screen (E, "
                                               "then Save)",
    "written by `sidestep estimate`": "written by the Estimate screen (E, then Save)",
    "`sidestep estimate` writes one": "the Estimate screen (E) writes one",
    "run `sidestep estimate` on this model": "run an estimate on this model (E)",
    # "Keep running after I quit" (schema's detach): the app lists and controls such runs
    "apart from this terminal, print its folder and return (control it with "
    "`sidestep runs/stop/pause/attach`).":
        "apart from the app, so it goes on training after you quit; the dashboard lists it "
        "and Enter there attaches the monitor (space pauses, C saves, X stops). From a "
        "terminal: `sidestep runs/stop/pause/attach`.",
}


def in_app_words(text: str) -> str:
    """``text`` with each setting's --flag replaced by its field's label in quotes (the
    flags of switches and unknown flags stay), and the PHRASES in the app's words."""
    for cli, app in PHRASES.items():
        text = text.replace(cli, app)
    labels = _labels()
    return _FLAG.sub(lambda m: f"'{labels[m.group(0)]}'" if m.group(0) in labels
                     else m.group(0), text)
