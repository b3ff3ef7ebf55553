"""Trained pikfix weights (safetensors) with their model cards; installed as ``pikfix.models``."""
