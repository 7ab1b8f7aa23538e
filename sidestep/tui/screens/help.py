"""Help: keys and where things are."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Markdown

HELP = """\
# Side-Step

Fine-tune ACE-Step 1.5 on your songs with LoRA or DoRA (PEFT), LoKR or LoHA (LyCORIS)
adapters.

## Keys (either case on every screen; not while a field, list, select or checkbox has focus)

| key | does |
| --- | --- |
| `F` | new training, fixed (corrected) mode |
| `V` | new training, vanilla mode |
| `D` | dashboard |
| `P` | dataset browser: check audio and .pt files, build dataset.json, preprocess |
| `E` | estimate: rank attention modules on your songs, save them, train selective |
| `H` | run history |
| `S` | settings |
| `?` | this help |
| `Q` | quit (asks first while a run is active) |
| `ctrl+q` | quit, from anywhere |
| `ctrl+p` | command palette: every screen and action |

In the training form: `ctrl+s` starts, `F3` reviews first, `F2` switches Basic/Advanced,
`Tab` moves between fields. In the monitor: `space` pauses or resumes, `C` saves a checkpoint
now, `X` stops and saves, `L` toggles a log-scale loss axis, `G` shows the whole log; with
audio samples, `[`/`]` choose one and `Y` copies its `scp` line.
In History: `enter`/`O` opens a run's curves, `R` resumes it, `X` exports its adapter for
ComfyUI, acestep.cpp or PEFT, `[`/`]` choose among its audio samples.
In the dataset browser: `B` builds dataset.json, `P` preprocesses, `T` trains on the folder's
`.pt` files, `ctrl+r` scans again; the folder field completes paths (→ accepts).
A screen's own key wins over the same letter above (the browser's `P` preprocesses).
In the estimate screen: `R` chooses the settings and runs, `C` cancels, `+`/`-` (or the Top K
field) change the selection at once, `W` saves the module config, `T` trains selective on it
(saving first), `M` compares two saved estimates.

## How a run works

The form builds the same configuration as `sidestep fixed …` on the command line. A run keeps
going when you leave the monitor; the dashboard leads back to it. Stopping saves a checkpoint;
History → Resume continues from the newest complete one. If the SSH session drops (SIGHUP) or
the app receives SIGTERM during its own run, it stops and saves before it exits.

"Keep running after I quit" (Advanced → Run control) starts the run as a process of its own;
the dashboard lists runs live in any process, and enter attaches the monitor to one (space, `C`
and `X` act on it). Quitting leaves such runs training (`sidestep attach DIR` follows one).

Each run folder holds `run.json`, `events.jsonl`, TensorBoard logs in `runs/`, checkpoints,
`final/adapter/`, `best/adapter/` (the epoch with the lowest validation loss, or without a
validation split the lowest training loss averaged over 5 epochs; `best/best.json` says which) and
`sidestep.log`; with samples every N epochs, `samples/epoch-N.wav`.
"""


class HelpScreen(Screen):
    BINDINGS = [Binding("escape", "close", "Close")]

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="help-body"):
            yield Markdown(HELP)
        yield Footer()

    def action_close(self) -> None:
        self.app.action_dashboard()
