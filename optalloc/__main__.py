"""`python -m optalloc ...`: the same command as `optalloc ...`."""

from .cli import main

main()
