"""Counts read as English in every message that has one ("1 epochs", "after 1 batches")."""

from sidestep.config.plural import counted


def test_counted():
    assert counted(1, "epoch") == "1 epoch" and counted(10, "epoch") == "10 epochs"
    assert counted(1, "batch", "batches") == "1 batch"
    assert counted(2, "batch", "batches") == "2 batches"
    assert counted(0, "error") == "0 errors"
