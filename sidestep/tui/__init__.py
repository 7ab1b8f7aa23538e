"""The Side-Step terminal app (Textual). Imports the engine API only; torch loads when a run
starts, not at start-up."""
