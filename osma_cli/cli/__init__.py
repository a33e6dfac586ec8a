"""The command-line interface: parsing and rendering only, no maths.

Each command parses its options, calls one function of the core (``osma_cli.api`` and
friends) and hands the result to a renderer in ``output``. Heavy imports (torch) happen
inside the commands so that ``osma --help`` is instant.
"""
