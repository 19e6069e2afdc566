"""The local backend: Lightning fine-tuning (full, LoRA, QLoRA) on this machine's CPU or GPUs."""
