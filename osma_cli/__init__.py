"""osma: open-set model attribution of AI-generated images.

The core (everything here except ``osma_cli.cli``) imports without typer or rich, so it
can be used as a library and in pipelines.
"""

__version__ = "0.1.0"
