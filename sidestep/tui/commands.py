"""The command palette (ctrl+p): every screen and run action, by name."""

from __future__ import annotations

from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider


class SideStepCommands(Provider):
    """Command palette entries for every screen and run action."""

    def _commands(self) -> list[tuple[str, Any, str]]:
        app = self.app
        return [
            ("Dashboard", app.action_dashboard, "quick actions, recent runs, models"),
            ("New training (fixed)", lambda: app.action_new_training("fixed"),
             "corrected training: logit-normal timesteps, CFG dropout"),
            ("New training (vanilla)", lambda: app.action_new_training("vanilla"),
             "original discrete-timestep training, no CFG dropout"),
            ("Monitor", app.action_monitor, "the current run's progress and charts"),
            ("Dataset browser", app.action_dataset,
             "check audio and .pt files, build dataset.json, preprocess"),
            ("Estimate module sensitivity", app.action_estimate,
             "rank attention modules on your data, save the JSON, train selective"),
            ("New training (selective)", lambda: app.action_new_training("selective"),
             "train only the modules a module config (from the estimate) lists"),
            ("Compare module configs", app.action_compare_configs,
             "the modules two saved estimates pick, overlap and rank correlation"),
            ("History", app.action_history, "past runs, curves, resume"),
            ("Presets", app.action_presets, "list, load, save, import, export presets"),
            ("Settings", app.action_settings, "folders, theme, refresh rate"),
            ("Help", app.action_help, "keys and how runs work"),
            *(self._run_commands() if app.active_target() is not None else []),
            ("Quit", app.action_request_quit, "leave Side-Step"),
        ]

    def _run_commands(self) -> list[tuple[str, Any, str]]:
        """Offered only while a run is active: with none they did nothing, without a word."""
        app = self.app
        return [
            ("Pause training", app.action_pause_run, "pause at the next micro-batch"),
            ("Resume training", app.action_resume_run, "continue a paused run"),
            ("Save checkpoint now", app.action_save_now, "write checkpoint-step-N"),
            ("Stop and save", app.action_stop_run, "stop the run with a checkpoint"),
        ]

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
