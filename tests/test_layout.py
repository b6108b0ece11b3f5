"""The README's layout section names every module of the package, and nothing that is not there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "variantlab"


def _listed() -> set[str]:
    """Paths (relative to src/variantlab) the README's layout block names: folders end in /."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    found, stack = set(), []  # stack: (indent, folder) of the folders we are inside
    for line in block.splitlines()[2:]:  # after "src/variantlab/"
        if line and not line.startswith(" "):
            break  # benchmarks/, tests/: outside the package
        match = re.match(r"^( +)(\S+)", line)
        if not match or not re.fullmatch(r"[\w.]+/?", match[2]):
            continue
        indent, name = len(match[1]), match[2]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "/".join(folder for _, folder in stack) + ("/" if stack else "") + name.rstrip("/")
        found.add(path + ("/" if name.endswith("/") else ""))
        if name.endswith("/"):
            stack.append((indent, name.rstrip("/")))
    return found


def _tree() -> set[str]:
    paths = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.name == "__init__.py":
            if relative.parent != Path("."):
                paths.add(f"{relative.parent.as_posix()}/")
            continue
        if relative.parts[0] == "cli" and len(relative.parts) > 1:
            continue  # "one thin module per command group": listed as a folder
        paths.add(relative.as_posix())
    return paths


def test_the_readme_layout_matches_the_tree() -> None:
    listed, tree = _listed(), _tree()
    assert not tree - listed, f"modules missing from the README's layout: {sorted(tree - listed)}"
    assert not listed - tree, f"the README's layout names what is not there: {sorted(listed - tree)}"
