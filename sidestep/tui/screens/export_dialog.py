"""The export dialog of a history run: format, output path, normalize-alpha and replace. It
dismisses with the choice (a dict of ``export_adapter``'s arguments) or None when cancelled;
the history screen runs the export off the UI thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Footer, Input, Label, Select, Static

from sidestep.tui.widgets.text_input import TextInput

FORMATS = (("ComfyUI: one .safetensors file", "comfyui"),
           ("acestep.cpp: one .safetensors file", "acestep-cpp"),
           ("PEFT: an adapter folder", "peft"))


def default_output(run_path: Path, fmt: str, source: str = "") -> str:
    """Next to the run: <run>/export/<run-name>[-<source>]-<format>.safetensors (a folder for
    PEFT); ``source`` names what is exported when it is not the final adapter (best, a
    checkpoint)."""
    name = "-".join(p for p in (Path(run_path).name, source, fmt) if p)
    return str(Path(run_path) / "export" / (name if fmt == "peft" else name + ".safetensors"))


def export_source(run) -> tuple[str, str] | None:
    """(adapter folder, its name in the output) of a History run: its final adapter; a run
    stopped before writing one, its best adapter, else its newest checkpoint; None when it
    has none of them."""
    if run.adapter_path:
        return run.adapter_path, ""
    if run.best_adapter:
        return run.best_adapter, "best"
    if run.latest_checkpoint is not None:
        return str(run.latest_checkpoint), run.latest_checkpoint.name.removeprefix("checkpoint-")
    return None


class ExportDialog(ModalScreen[Any]):
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "ok", "Export")]

    def __init__(self, run_path: Path, adapter: str, kind: str = "", source: str = ""):
        super().__init__(classes="dialog-screen")
        self.run_path = Path(run_path)
        self.adapter = adapter
        self.source = source  # "" (the final adapter), "best", "step-37", ...
        self.kind = kind

    def compose(self) -> ComposeResult:
        from sidestep.config.paths import short
        # the dialog's own keys: the footer underneath showed the screen's, which do nothing here
        yield Footer()

        with Vertical(classes="dialog export-dialog"):
            yield Label(f"Export {self.run_path.name}", classes="dialog-title")
            yield Static(f"adapter: {short(self.adapter)}"
                         + (f" ({self.kind})" if self.kind else ""),
                         classes="dialog-hint", markup=False)
            yield Label("Format")
            # compact widgets: the whole dialog fits an 80x24 terminal
            yield Select(FORMATS, value="comfyui", allow_blank=False, id="export-format",
                         compact=True)
            yield Label("Output")
            yield TextInput(default_output(self.run_path, "comfyui", self.source),
                            id="export-output", compact=True)
            yield Checkbox("Normalize alpha: alpha = rank, each scale folded into the weights",
                           id="export-normalize", compact=True)
            yield Checkbox("Replace an existing output (--force)", id="export-force",
                           compact=True)
            yield Static("", id="export-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Export", id="ok", variant="primary", action="screen.ok")
                yield Button("Cancel", id="cancel", action="screen.cancel")

    def on_mount(self) -> None:
        self.query_one("#export-format", Select).focus()

    @on(Select.Changed, "#export-format")
    def _format_changed(self, event: Select.Changed) -> None:
        """A path still at another format's default follows the format; a typed one stays."""
        field = self.query_one("#export-output", Input)
        defaults = {default_output(self.run_path, f, self.source) for _, f in FORMATS}
        if field.value in defaults and event.value in {f for _, f in FORMATS}:
            field.value = default_output(self.run_path, str(event.value), self.source)

    def action_ok(self) -> None:
        output = self.query_one("#export-output", Input).value.strip()
        if not output:
            self.query_one("#export-error", Static).update(
                "name the output: a .safetensors file (a folder for PEFT)")
            return
        path = Path(output).expanduser()
        self.dismiss({"fmt": str(self.query_one("#export-format", Select).value),
                      "output": str(path),
                      # the run's own export/ folder is made for it; any other must exist
                      "make_folder": path.parent == Path(self.run_path) / "export",
                      "normalize_alpha": self.query_one("#export-normalize", Checkbox).value,
                      "force": self.query_one("#export-force", Checkbox).value})

    def action_cancel(self) -> None:
        self.dismiss(None)
