"""`python -m pikfix_cli ...` (used e.g. by `torchrun -m pikfix_cli train ...`)."""

from pikfix_cli.app import main

main()
