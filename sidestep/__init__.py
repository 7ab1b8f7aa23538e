"""Side-Step: LoRA/LoKR fine-tuning for ACE-Step 1.5."""
__version__ = "0.1.0"
