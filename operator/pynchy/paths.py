"""Where a Pynchy checkout keeps the files the package uses (crds/, tools/kube/, tools/node/)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO_ROOT / "crds"
KUBE_TOOLS_DIR = REPO_ROOT / "tools" / "kube"
NODE_TOOLS_DIR = REPO_ROOT / "tools" / "node"
