"""`python -m bench.core`: see `bench.core.measure`."""

from bench.core.measure import main

main()
