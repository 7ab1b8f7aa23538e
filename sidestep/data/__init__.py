"""Datasets: audio decoding, dataset.json, preprocessing to tensors, and the training dataset."""
