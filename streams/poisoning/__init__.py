"""The poisoning guard: screening of training records before retraining (see ``guard``).

Import from the modules (``streams.poisoning.guard``, ``.trusted``): the package
itself imports nothing, so that sampling a trusted set (``driftline reference
build``) does not load the guard's checks and river with them (about 1.2 s).
"""
