"""Generate CustomResourceDefinitions from the pydantic API types (`pynchy crds`)."""

from pynchy.crdgen.crd import build_crd, render_crds, write_crds
from pynchy.crdgen.schema import structural_schema

__all__ = ["build_crd", "render_crds", "structural_schema", "write_crds"]
