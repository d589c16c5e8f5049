"""`python -m streamapp.cli ...`: the same command line as `streamapp ...`."""

from streamapp.cli import main

# faust's autodiscovery imports every module of the package, this one too: run only as `-m`
if __name__ == "__main__":
    main()
