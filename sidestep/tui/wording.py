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
}


def in_app_words(text: str) -> str:
    """``text`` with each setting's --flag replaced by its field's label in quotes (the
    flags of switches and unknown flags stay), and the PHRASES in the app's words."""
    for cli, app in PHRASES.items():
        text = text.replace(cli, app)
    labels = _labels()
    return _FLAG.sub(lambda m: f"'{labels[m.group(0)]}'" if m.group(0) in labels
                     else m.group(0), text)
