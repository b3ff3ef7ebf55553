"""pikfix: restore and colorize old photographs guided by colour reference photos (Pik-Fix)."""

__version__ = "0.1.0"
