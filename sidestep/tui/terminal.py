"""A Linux terminal driver that survives its terminal going away (SIGHUP: a closed tmux pane, a
dropped SSH session).

Textual writes the screen from a writer thread fed by a bounded queue. On a hung-up tty every
write fails with EIO: the stock writer thread dies on the first one, the queue fills, and the UI
thread blocks forever on its next write (while leaving application mode, for instance), so the
process never exits and ignores later signals. Here the output file drops writes once the
terminal is gone, the writer thread keeps draining, and leaving application mode does not touch
the terminal at all.
"""

from __future__ import annotations

from typing import IO

from textual.drivers import linux_driver
from textual.drivers.linux_driver import LinuxDriver

from sidestep.devnull import send_to_devnull


class TerminalOut:
    """The driver's output file: passes writes through until the terminal is gone, then drops
    them (a failed write means it is gone: a blocking tty write fails only on hang-up)."""

    def __init__(self, file: IO[str]):
        self._file = file
        self.dead = False

    def write(self, text: str) -> int:
        if not self.dead:
            try:
                return self._file.write(text)
            except (OSError, ValueError):
                self.dead = True
        return len(text)

    def flush(self) -> None:
        if not self.dead:
            try:
                self._file.flush()
            except (OSError, ValueError):
                self.dead = True

    def fileno(self) -> int:
        return self._file.fileno()

    def isatty(self) -> bool:
        return True


class HangupSafeDriver(LinuxDriver):
    def __init__(self, app, **kwargs) -> None:
        super().__init__(app, **kwargs)
        self._file = self.out = TerminalOut(self._file)

    @property
    def terminal_dead(self) -> bool:
        return self.out.dead

    def terminal_gone(self) -> None:
        """The terminal hung up: drop all further output and end the input thread (which would
        otherwise spin: a hung-up tty always reads as ready, with nothing to read)."""
        self.out.dead = True
        self.exit_event.set()

    def run_input_thread(self) -> None:
        from sidestep.tui.escape_keys import SplitEscapeParser

        # the stock input loop makes its parser by this module-level name; ours reads an Esc
        # that arrives with the next key as two keys (escape_keys.py)
        linux_driver.XTermParser = SplitEscapeParser
        try:
            super().run_input_thread()
        except OSError:
            # The tty went away under the read (EIO): input is over, not an app failure. With
            # no SIGHUP to say so (a terminal that was not the session's), act as on one.
            self.out.dead = True
            on_hangup = getattr(self._app, "_on_stop_signal", None)
            if on_hangup is not None:
                try:
                    self._app.call_from_thread(on_hangup, "SIGHUP")
                except Exception:
                    pass

    def stop_application_mode(self) -> None:
        if self.out.dead:
            # Nothing to restore; writes and tcsetattr on a dead tty only fail or block.
            self.disable_input()
            return
        super().stop_application_mode()


def silence_std_streams() -> None:
    """Once the terminal is gone, late output (the interpreter's final flush of stdout, a
    warning) neither fails nor changes the exit code."""
    send_to_devnull(1, 2)
