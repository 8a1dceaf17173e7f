"""Model families, one file each.

Each family file has its variant table at the top and registers its variants with
:func:`hvit_deploy.registry.register_model` (or :func:`~hvit_deploy.registry.register_spec`). The registry finds
the files by module name (``hvit_deploy.registry.MODELS`` discovers this package on first read), so a new family
needs no edit here, and this package imports nothing itself.
"""
