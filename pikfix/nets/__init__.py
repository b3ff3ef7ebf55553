"""The three Pik-Fix sub-nets (paper section 3), one module each, and their building blocks."""
