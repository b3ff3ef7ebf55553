"""Command-line interface of pikfix (thin: parse, call the library, report)."""
