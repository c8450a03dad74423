"""The models the sweeper serves and the one TorchServe handler that serves them.

Nothing here imports TorchServe, so the in-process baseline and the tests can use the
same code without a server. ``models.py`` and ``handler.py`` are also copied into every
model archive (see ``sweeper.archive``), where they run as top-level modules.
"""
