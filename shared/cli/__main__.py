"""`python -m sendrail.cli`: the same as the `sendrail` command."""

from sendrail.cli.main import main

main()
