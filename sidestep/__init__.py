"""Side-Step: LoRA, DoRA, LoKR and LoHA fine-tuning for ACE-Step 1.5."""
__version__ = "0.1.0"
