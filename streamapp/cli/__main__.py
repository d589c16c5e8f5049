"""`python -m streamapp.cli ...`: the same command line as `streamapp ...`."""

from streamapp.cli import main

main()
