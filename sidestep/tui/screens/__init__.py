"""Screens of the Side-Step app."""
