"""One module per trigger kind (a ``when`` value); :mod:`.base` is what a kind is.

:mod:`processor.engine.triggers.registry` lists them.
"""
