"""The core's import arrows point one way (imports inside functions included): the model and rewrite registries
never import the modules that fill them, and the recipes sit between the rewrite passes and ``rewrite()``."""
from __future__ import annotations

import grimp
import pytest


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("hvit_deploy")


@pytest.mark.parametrize("importer,imported", [
    ("hvit_deploy.registry", "hvit_deploy.models"),       # discovered by module name, never imported
    ("hvit_deploy.registry", "hvit_deploy.preprocess"),
    ("hvit_deploy.models", "hvit_deploy.preprocess"),
    ("hvit_deploy.rewrites", "hvit_deploy.rewriting"),    # no compatibility __getattr__ any more
    ("hvit_deploy.rewrites", "hvit_deploy.recipes"),
    ("hvit_deploy.recipes", "hvit_deploy.rewriting"),
    ("hvit_deploy.testing", "hvit_deploy.rewriting"),     # siblings: testing builds on recipes and rewrites
    ("hvit_deploy.preprocess", "hvit_deploy.models"),
    ("hvit_deploy.factory", "hvit_deploy.models"),
])
def test_no_upward_import(graph, importer, imported):
    chain = graph.find_shortest_chains(importer=importer, imported=imported, as_packages=True)
    assert not chain, f"{importer} imports {imported}: " + " | ".join(" -> ".join(c) for c in chain)


def test_rewrites_has_no_rewrite_shim():
    import hvit_deploy.rewrites as rewrites

    assert not hasattr(rewrites, "rewrite") and not hasattr(rewrites, "BACKENDS")
