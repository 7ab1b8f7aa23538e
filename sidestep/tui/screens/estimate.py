"""The estimate screen (``E``): which attention modules the user's songs pull on hardest.

Settings go through a dialog checked by the CLI's ``resolve``; the estimate runs in the App's
``estimate`` worker and reaches this screen as typed messages carrying the engine's events.
The ranking shows as bars; the top K (an input, or ``+``/``-``) re-selects at once without
running again. Save writes the module config ``sidestep selective`` trains; "Train selective"
opens the form on it. ``CompareScreen`` sets two saved estimates side by side, as
``sidestep compare-configs`` does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import (Button, DataTable, Footer, Header, Input, Label, ProgressBar,
                             Static)

from sidestep.config.plural import counted
from sidestep.engine.describe import fmt_duration
from sidestep.tui.messages import EstimateFinished, EstimateProgress
from sidestep.tui.widgets.fields import is_field_widget
from sidestep.tui.widgets.ranking import RankingChart, legend, selection_line
from sidestep.tui.widgets.text_input import TextInput

# The dialog's fields, and what carries over from the last training form besides them.
DIALOG = ("checkpoint_dir", "model_variant", "dataset_dir", "estimate_batches", "top_k",
          "granularity", "seed", "batch_size", "num_workers", "device")
CARRIED = DIALOG + ("base_model", "precision")


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


TOP_K = Binding.Group("Top K", compact=True)


class EstimateScreen(Screen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("r,R", "run", "Run…", key_display="R"),
        Binding("c,C", "cancel", "Cancel", key_display="C"),
        Binding("w,W", "save", "Save", key_display="W"),
        Binding("t,T", "train", "Train selective", key_display="T"),
        Binding("m,M", "compare", "Compare…", key_display="M"),
        # one footer entry, "+- Top K": the keys that change K were only in Help
        Binding("plus,equals_sign", "top_k(1)", "Top K +1", key_display="+", group=TOP_K),
        Binding("minus", "top_k(-1)", "Top K -1", key_display="-", group=TOP_K),
    ]

    def __init__(self, explicit: dict[str, Any] | None = None, *, ask: bool = True):
        super().__init__()
        self.explicit = dict(explicit or {})
        self.ask = ask              # False: a snapshot feeds it a result by hand
        self.values: dict[str, Any] = {}    # the settings the dialog shows next
        self.config = None          # the resolved config of the estimate last started
        self.result = None          # engine.estimate.EstimateResult shown
        # the config and settings that made the ranking shown (a later run may be cancelled)
        self.result_config = None
        self.result_values: dict[str, Any] = {}
        self.k = 0
        self.running = False
        self.cancelling = False
        self.last_event = None
        self.saved: tuple[Path, int] | None = None  # the file this result went to, and its K

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="est-body"):
            yield Static("no estimate yet: R chooses the model and songs and runs one",
                         id="est-settings", markup=False)
            yield Static("", id="est-status", markup=False)
            yield ProgressBar(id="est-bar", show_eta=False)
            yield Static("", id="est-legend")
            with VerticalScroll(id="est-chart-box"):
                yield RankingChart(id="est-chart")
            with Horizontal(id="est-k-row"):
                yield Label("Top K ", classes="est-label")
                # plain text: an integer Input dropped the '.' of "2.5" and took 25
                yield TextInput("", id="est-k", compact=True,
                                tooltip="how many to select (+/- change it)")
                yield Static("", id="est-selection", markup=False)
            with Horizontal(id="est-save-row"):
                yield Label("Save to ", classes="est-label")
                yield TextInput("", id="est-output", compact=True, select_on_focus=False,
                                placeholder="the module config JSON to write")
                yield Static("", id="est-saved", markup=False)
        with Horizontal(id="est-actions"):
            yield Button("Run… (R)", id="est-run", variant="primary", compact=True,
                         action="screen.run")
            yield Button("Cancel (C)", id="est-cancel", variant="error", compact=True,
                         action="screen.cancel", disabled=True)
            yield Button("Save (W)", id="est-save", compact=True, action="screen.save",
                         disabled=True)
            yield Button("Train selective (T)", id="est-train", variant="success",
                         compact=True, action="screen.train", disabled=True)
            yield Button("Compare… (M)", id="est-compare", compact=True,
                         action="screen.compare")
            yield Button("Back", id="est-back", compact=True, action="screen.back")
        yield Footer()

    def on_mount(self) -> None:
        self.values = self.initial_values()
        self.query_one("#est-chart-box").focus()
        self.query_one("#est-bar", ProgressBar).display = False  # until there is progress
        for row in ("#est-k-row", "#est-save-row"):  # until there is a ranking to pick from
            self.query_one(row).display = False
        kept = getattr(self.app, "last_estimate", None)
        if kept is not None and not self.explicit:  # back from the form: the same ranking
            self.values, self.config = dict(kept["values"]), kept["config"]
            self.show_result(kept["result"])
            self.result_values = dict(kept["result_values"])
            self.saved = kept["saved"]
            if self.saved:
                self.query_one("#est-output", Input).value = str(self.saved[0])
            self.set_k(kept["k"])
            self._update_buttons()
        elif self.ask:
            self.action_run()

    def on_unmount(self) -> None:
        if self.running:  # its result would reach a closed screen: stop spending the GPU
            self.app.cancel_estimate()
        if self.result is not None:  # E shows it again after a visit to the form
            self.app.last_estimate = {"result": self.result, "config": self.result_config,
                                      "values": self.values, "saved": self.saved, "k": self.k,
                                      "result_values": self.result_values}

    def initial_values(self) -> dict[str, Any]:
        """The last training form's model and songs, else the app's folders; the caller's
        values win."""
        app = self.app
        values: dict[str, Any] = {"checkpoint_dir": str(app.checkpoint_root())}
        demo_tensors = app.demo_dir / "tensors"
        if app.demo and demo_tensors.is_dir():
            values["dataset_dir"] = str(demo_tensors)
        elif app.settings.dataset_root:
            values["dataset_dir"] = app.settings.dataset_root
        last = app.last_form_values() or {}
        values.update({k: _plain(last[k]) for k in CARRIED if last.get(k) not in (None, "")})
        values.update(self.explicit)
        return values

    # -- running -------------------------------------------------------------------------------
    def action_run(self) -> None:
        from sidestep.tui.screens.settings_dialog import SettingsDialog

        if self.running:
            self.notify("an estimate is running: cancel it first (C)", severity="warning")
            return
        if self.result is not None:  # the K chosen here since (+/-, typed) is the one to keep
            self.values["top_k"] = self.k
        fixed = {k: v for k, v in self.values.items() if k not in DIALOG}
        dialog = SettingsDialog(
            "estimate", "Estimate module sensitivity", DIALOG, values=self.values, fixed=fixed,
            ok_label="Start",
            note="runs the training objective forward and backward over a few batches and "
                 "ranks every attention projection by how hard the songs pull on it; "
                 "nothing is trained or written until you save")
        self.app.push_screen(dialog, self._start)

    def _start(self, config) -> None:
        if config is None:
            return
        self.values.update({k: _plain(getattr(config, k)) for k in CARRIED
                            if getattr(config, k, None) is not None})
        if not self.app.start_estimate(config, self):
            return
        self.config = config
        self.running, self.cancelling = True, False
        self.last_event = None
        self.query_one("#est-settings", Static).update(self.settings_line())
        self._status(f"starting on {config.device} ...")
        bar = self.query_one("#est-bar", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self._update_buttons()

    def settings_line(self) -> str:
        c, r = self.config, self.result
        if c is not None:
            batches = c.estimate_batches or "auto"
            return (f"{c.model_variant} · {c.dataset_dir} · {batches} batches of "
                    f"{c.batch_size} · seed {c.seed} · {c.granularity}s · {c.device}")
        if r is not None:
            return f"{r.model} · {r.dataset} · {r.batches} batches · seed {r.seed} · " \
                   f"{r.granularity}s"
        return ""

    def _status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#est-status", Static)
        status.update(text)
        status.set_class(error, "status-error")

    def on_estimate_progress(self, message: EstimateProgress) -> None:
        e = self.last_event = message.event
        if e.phase == "load":
            self._status(e.message)
        elif e.phase == "batch":
            self.query_one("#est-bar", ProgressBar).update(total=e.total, progress=e.done)
            if not self.cancelling:
                self._status(f"batch {e.done}/{e.total} · {fmt_duration(e.eta_s)} left")

    def on_estimate_finished(self, message: EstimateFinished) -> None:
        self.running = self.cancelling = False
        result = message.result
        if message.error or result.cancelled:
            # the bar goes (it went on pulsing after a failure; the previous ranking's full bar
            # read as this run finished), and the header names the ranking still shown
            self.query_one("#est-bar", ProgressBar).display = False
            if self.result is not None:
                self.config = self.result_config
                self.query_one("#est-settings", Static).update(
                    "shown: the previous estimate · " + self.settings_line())
        if message.error:
            self._status(f"the estimate could not run: {message.error}", error=True)
            self.app.show_error("Estimate could not run", message.error,
                                "Fix the settings (R) and run it again.")
        elif result.cancelled:
            self._status(f"cancelled after {counted(result.batches, 'batch', 'batches')}: nothing "
                         "ranked"
                         + ("; the ranking below is the previous one" if self.result else ""))
        else:
            self.show_result(result)
        self._update_buttons()

    def show_result(self, result) -> None:
        """Show a finished estimate (a snapshot calls this through EstimateFinished too)."""
        from sidestep.engine.estimate import default_output

        self.result = result
        self.result_config, self.result_values = self.config, dict(self.values)
        self.saved = None
        for row in ("#est-k-row", "#est-save-row"):
            self.query_one(row).display = True
        self.k = max(1, min(result.top_k, len(result.ranking)))
        asked = self.k_problem(str(result.top_k))  # a K from the dialog this ranking cannot give
        bar = self.query_one("#est-bar", ProgressBar)
        bar.update(total=max(result.batches, 1), progress=result.batches)
        bar.display = True
        self.query_one("#est-settings", Static).update(self.settings_line())
        self._status(f"ranked {len(result.ranking)} {result.granularity}s from "
                     f"{counted(result.batches, 'batch', 'batches')} in {result.seconds:.1f} s "
                     "(score: mean squared "
                     "gradient, the largest = 1)")
        colours = self.query_one(RankingChart).colours()
        self.query_one("#est-legend", Static).update(legend(colours, result.granularity))
        output = self.query_one("#est-output", Input)
        # the name the CLI gives: the variant as the user named it (turbo), else the folder
        variant = getattr(self.config, "model_variant", None) or result.model
        # the demo keeps its files in its own folder, not in wherever the app was started
        folder = self.app.demo_dir if self.app.demo and self.app.demo_dir.is_dir() else "."
        output.value = str(default_output(variant, result.granularity, folder))
        self._show_k(sync_input=True)
        if asked:  # shown as asked and refused, not quietly clamped
            box = self.query_one("#est-k", Input)
            with box.prevent(Input.Changed):
                box.value = str(result.top_k)
            self._show_k_problem(asked)
        self.query_one("#est-chart-box").focus()

    # -- top K ---------------------------------------------------------------------------------
    def _show_k(self, sync_input: bool = False) -> None:
        r = self.result
        self.query_one(RankingChart).show(r.ranking, self.k)
        self.query_one("#est-selection", Static).update(
            "  " + selection_line(r.ranking, self.k, r.granularity))
        if sync_input:
            box = self.query_one("#est-k", Input)
            with box.prevent(Input.Changed):
                box.value = str(self.k)
            box.remove_class("est-bad")
        self._show_saved()

    def set_k(self, k: int) -> None:
        if self.result is None:
            return
        self.k = max(1, min(k, len(self.result.ranking)))
        self._show_k(sync_input=True)

    def action_top_k(self, step: int) -> None:
        self.set_k(self.k + step)

    def k_problem(self, text: str) -> str | None:
        """Why ``text`` is not a usable Top K for this ranking, or None."""
        n = len(self.result.ranking)
        unit = self.result.granularity + "s"
        text = text.strip()
        try:
            k = int(text)
        except ValueError:
            return (f"Top K must be a whole number from 1 to {n}" + (f", not '{text}'" if text
                                                                      else ""))
        if k < 1:
            return f"Top K {k} selects nothing: give 1 to {n}"
        if k > n:
            return f"Top K {k} is more than the {n} {unit} ranked: give 1 to {n}"
        return None

    def _show_k_problem(self, problem: str) -> None:
        self.query_one("#est-k", Input).add_class("est-bad")
        self.query_one("#est-selection", Static).update("  " + problem)

    @on(Input.Changed, "#est-k")
    def k_typed(self, event: Input.Changed) -> None:
        if self.result is None:
            return
        problem = self.k_problem(event.value)
        event.input.set_class(bool(problem), "est-bad")
        if problem:  # K stays what it was until the field holds one; Save/Train refuse
            self._show_k_problem(problem)
            return
        self.k = int(event.value.strip())
        self._show_k()

    def _refuse_bad_k(self) -> bool:
        """A Top K field that holds no usable K: nothing is saved or trained with the K
        shown before (the user sees their own value in the field)."""
        if self.result is None:
            return False
        problem = self.k_problem(self.query_one("#est-k", Input).value)
        if problem:
            self._show_k_problem(problem)
            self.app.show_error("Top K", problem, "Fix Top K (or use +/-), then save again.")
            return True
        return False

    @on(Input.Submitted, "#est-k")
    def k_submitted(self) -> None:
        self.query_one("#est-chart-box").focus()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """+/- while a text field has focus are typed there, not K: dimmed in the footer,
        as the App dims its letters (App.check_action)."""
        if action == "top_k" and is_field_widget(self.focused):
            return None
        return True

    # -- saving and training -------------------------------------------------------------------
    def _output_path(self) -> Path | None:
        text = self.query_one("#est-output", Input).value.strip()
        return Path(os.path.expanduser(text)) if text else None

    def _show_saved(self) -> None:
        saved, path = self.saved, self._output_path()
        text = ""
        if self.result is not None:
            text = "  not saved" if saved is None or saved[0] != path else \
                f"  saved with top {saved[1]}" + (" (K changed since)" if saved[1] != self.k
                                                  else "")
        self.query_one("#est-saved", Static).update(text)

    @on(Input.Changed, "#est-output")
    def output_typed(self) -> None:
        self._show_saved()

    def action_save(self, then=None) -> None:
        """Write the module config with the current K; ``then(path)`` once written. A file
        this screen did not write for this result is replaced only when the user says so."""
        from sidestep.data.paths import output_file_problem
        from sidestep.tui.screens.dialogs import ConfirmScreen

        if self.result is None:
            self.notify("nothing to save yet: run an estimate first (R)", severity="warning")
            return
        if self._refuse_bad_k():
            return
        path = self._output_path()
        if path is None:
            self.app.show_error("Cannot save", "Give the file to write in 'Save to'.")
            return
        problem = output_file_problem(path, "Save to:", "estimate.json")
        if problem:
            self.app.show_error("Cannot save", problem)
            return
        k = self.k
        if path.exists() and self.saved != (path, k):
            # also a file this screen wrote, with another K: Train selective after a stray
            # '-' rewrote it unasked
            def answer(choice: str | None) -> None:
                if choice == "replace":
                    self._write(path, k, then)

            held = f" (it holds top {self.saved[1]})" if self.saved and self.saved[0] == path \
                else ""
            self.app.push_screen(ConfirmScreen(
                "Replace the file?", f"{path} exists{held}. Replace it with this estimate "
                f"(top {k})?", [("replace", "Replace", "error"), ("cancel", "Cancel",
                                                                   "primary")]), answer)
            return
        self._write(path, k, then)

    def _write(self, path: Path, k: int, then) -> None:
        from sidestep.engine.estimate import write_result

        try:
            write_result(self.result, path, top_k=k)
        except OSError as exc:
            self.app.show_error("Cannot save", f"{path}: {exc.strerror or exc}")
            return
        self.saved = (path, k)
        self._show_saved()
        self.notify(f"wrote {path} (top {k})")
        if then is not None:
            then(path)

    def action_train(self) -> None:
        if self.result is None:
            self.notify("run an estimate first (R)", severity="warning")
            return
        if self._refuse_bad_k():
            return
        if self.saved and self.saved == (self._output_path(), self.k):
            self._train(self.saved[0])
        else:  # the form trains from a file: write this one first
            self.action_save(then=self._train)

    def _train(self, path: Path) -> None:
        values = self.app.last_form_typed()  # the epochs, rate, ... chosen there
        values.update({k: self.result_values[k] for k in ("checkpoint_dir", "model_variant",
                                                          "base_model", "dataset_dir", "seed")
                       if k in self.result_values})
        if self.config is None and self.result is not None:  # a result fed by hand
            values.update(model_variant=self.result.model, dataset_dir=self.result.dataset)
        values["module_config"] = str(path)
        self.app.action_new_training("selective", values)

    # -- elsewhere -----------------------------------------------------------------------------
    def action_cancel(self) -> None:
        if not self.running or self.cancelling:
            return
        self.cancelling = True
        self.app.cancel_estimate()
        self._status("cancelling after this batch ...")
        self._update_buttons()

    def action_compare(self) -> None:
        first = str(self.saved[0]) if self.saved else ""
        if not first and self.result is not None:
            self.notify("save this estimate (W) to compare it with another",
                        severity="information")
        self.app.push_screen(CompareScreen([first, ""]))

    def action_back(self) -> None:
        """Leaving stops a running estimate (its result is kept only here): asked first, as
        the form asks before its edits are dropped; Keep running has focus."""
        if not self.running:
            self.app.action_dashboard()
            return
        from sidestep.tui.screens.dialogs import ConfirmScreen

        def answer(choice: str | None) -> None:
            if choice == "leave" and self.running:
                self.notify("the estimate stops after this batch; nothing was saved")
                self.app.action_dashboard()
            elif choice == "leave":  # it ended while the question was up
                self.app.action_dashboard()

        self.app.push_screen(ConfirmScreen(
            "Stop the estimate?", "Leaving this screen stops the running estimate, and its "
            "ranking so far is not kept.", [("leave", "Stop and leave", "error"),
                                           ("stay", "Keep running", "primary")]), answer)

    def _update_buttons(self) -> None:
        has = self.result is not None
        self.query_one("#est-run", Button).disabled = self.running
        self.query_one("#est-cancel", Button).disabled = not self.running or self.cancelling
        self.query_one("#est-save", Button).disabled = not has
        self.query_one("#est-train", Button).disabled = not has


class CompareScreen(Screen):
    """Two saved estimates side by side: each module's rank/score in each file, and how far
    their picks overlap and their rankings agree (``sidestep compare-configs``)."""

    BINDINGS = [Binding("escape", "back", "Back"), Binding("ctrl+r", "compare", "Compare")]

    def __init__(self, paths: list[str] | None = None):
        super().__init__()
        self.paths = list(paths or []) + ["", ""]
        self.result: dict | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("Compare module configs", id="cmp-title")
        for i, name in enumerate(("A", "B")):
            with Horizontal(classes="cmp-row"):
                yield Label(f"File {name} ", classes="est-label")
                yield TextInput(self.paths[i], id=f"cmp-{name.lower()}", compact=True,
                                select_on_focus=False,
                                placeholder="a JSON file written by the estimate (Save)")
        yield Static("", id="cmp-pairs", markup=False)
        yield DataTable(id="cmp-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="cmp-actions"):
            yield Button("Compare (ctrl+r)", id="cmp-go", variant="primary", compact=True,
                         action="screen.compare")
            yield Button("Back", id="cmp-back", compact=True, action="screen.back")
        yield Footer()

    def on_mount(self) -> None:
        boxes = [self.query_one("#cmp-a", Input), self.query_one("#cmp-b", Input)]
        (boxes[0] if not boxes[0].value else boxes[1]).focus()
        if all(b.value.strip() for b in boxes):
            self.action_compare()

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "cmp-a" and not self.query_one("#cmp-b", Input).value.strip():
            self.query_one("#cmp-b", Input).focus()
        else:
            self.action_compare()

    def action_compare(self) -> None:
        from sidestep.engine.module_config import (ModuleConfigError, compare,
                                                   load_module_config, pair_line)
        from sidestep.tui.widgets.tables import fill_table

        paths = [self.query_one(f"#cmp-{n}", Input).value.strip() for n in "ab"]
        pairs = self.query_one("#cmp-pairs", Static)
        table = self.query_one("#cmp-table", DataTable)
        self.result = None
        if not all(paths):
            self._problem("give two saved estimate files (A and B)")
            table.clear(columns=True)
            return
        try:  # two small JSON files: read here, like the CLI
            result = compare([load_module_config(os.path.expanduser(p)) for p in paths])
        except ModuleConfigError as exc:
            self._problem(str(exc))
            table.clear(columns=True)
            return
        self.result = result
        pairs.set_class(False, "status-error")
        pairs.update("\n".join(pair_line(p, result["granularity"]) for p in result["pairs"]))
        names = [f["name"] for f in result["files"]]
        rows = [[row["name"], *("-" if rank is None else f"{rank} / {score:.3f}"
                                for rank, score in zip(row["ranks"], row["scores"]))]
                for row in result["modules"]]
        fill_table(table, [result["granularity"], *(f"{n}: rank / score" for n in names)],
                   rows)

    def _problem(self, text: str) -> None:
        from sidestep.tui.wording import in_app_words

        pairs = self.query_one("#cmp-pairs", Static)
        pairs.update(in_app_words(text))
        pairs.set_class(True, "status-error")

    def action_back(self) -> None:
        self.app.pop_screen()
