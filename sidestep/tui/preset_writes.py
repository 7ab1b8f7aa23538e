"""Writing presets from the app: a preset or file that exists is replaced only after asking
(the form's Save… and the Presets screen's Save form replaced one without a word), and a
local preset that hides a global or built-in one says so."""

from __future__ import annotations

from typing import Any, Callable

from sidestep.config.presets import PresetError, PresetExists, PresetStore, sanitize_name


class WouldHide(PresetExists):
    """A new local preset would hide a global or built-in one of the same name."""

    def __init__(self, message: str, path, kinds: str):
        super().__init__(message, path)
        self.kinds = kinds


def write_asking(app, write: Callable[[bool], Any], done: Callable[[Any], None],
                 failed_title: str = "Preset not saved",
                 refused: Callable[[str], None] | None = None) -> None:
    """``write(overwrite)``; when it finds its target taken, ask, then ``write(True)``.
    ``done(result)`` after a write; errors show in a dialog, or go to ``refused(message)``
    (a prompt reopened with the user's path), as does declining to replace."""
    from sidestep.tui.screens.dialogs import ConfirmScreen

    def attempt(overwrite: bool) -> None:
        try:
            result = write(overwrite)
        except WouldHide as exc:
            app.push_screen(ConfirmScreen(f"Hide the {exc.kinds} preset?", str(exc), [
                ("replace", "Save and hide it", "error"), ("cancel", "Cancel", "primary")]),
                lambda choice: choice == "replace" and attempt(True))
            return
        except PresetExists as exc:
            taken = exc.path  # (``exc`` is gone once the except block ends)

            def answer(choice: str) -> None:
                if choice == "replace":
                    attempt(True)
                elif refused is not None:
                    refused(f"{taken} already exists and was kept; choose another path")

            app.push_screen(ConfirmScreen(
                "Replace it?", f"{taken} already exists. Replace it?",
                [("replace", "Replace", "error"), ("cancel", "Cancel", "primary")]), answer)
            return
        except (PresetError, OSError) as exc:
            if refused is not None:
                refused(str(exc))
            else:
                app.show_error(failed_title, str(exc))
            return
        done(result)

    attempt(False)


def save_preset(app, name: str, values: dict, description: str,
                then: Callable[[], None] = lambda: None) -> None:
    """Save a local preset from the form's values, asking before replacing one."""
    store = PresetStore()

    def saved(path) -> None:
        hidden = store.hidden_by(path.stem)
        named = f" as '{path.stem}'" if path.stem != name.strip() else ""
        if hidden:
            app.notify(f"saved preset{named} to {path}; it hides the {' and '.join(hidden)} "
                       f"preset of that name", severity="warning", timeout=8)
        else:
            app.notify(f"saved preset{named} to {path}")
        then()

    def write(overwrite: bool):
        clean = sanitize_name(name)
        target = store.dirs["local"] / f"{clean}.json"
        hidden = [] if overwrite or target.exists() else store.hidden_by(clean)
        if hidden:  # every form that loads that name would get this one: ask first
            kinds = " and a ".join("built-in" if h == "builtin" else h for h in hidden)
            raise WouldHide(f"'{clean}' is a {kinds} preset. Saving yours "
                            f"as {target} hides it: every form that loads '{clean}' gets "
                            "yours instead. Save it anyway?", target, kinds)
        return store.save(name, values, description, overwrite=overwrite)

    write_asking(app, write, saved)
