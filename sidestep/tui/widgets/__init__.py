"""Widgets of the Side-Step app."""
