#!/usr/bin/env python3
"""Syntax check of Bicep files with the tree-sitter Bicep grammar.

Usage: parse_bicep.py FILE_OR_DIR...
Exit 1 if any file has an ERROR or MISSING node (each is printed with its position).
This is a syntax check only: undefined names and type errors are not caught offline.

tree-sitter-bicep 1.1 (and checkov's Bicep parser) predate the `extension` statement that the
Microsoft Graph Bicep extension requires (`extension microsoftGraphV1`). `mask_extensions` blanks
exactly that statement, keeping byte offsets and line numbers, and reports where it did so; every
other line is parsed as written. custom_checks.py checks the statement is present where needed.
"""
import re
import sys
from pathlib import Path

import tree_sitter
import tree_sitter_bicep

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_bicep.language()))

# `extension <alias>` on a line of its own (Bicep's form for extensions named in bicepconfig.json).
EXTENSION_RE = re.compile(rb"^[ \t]*extension[ \t]+[A-Za-z_][A-Za-z0-9_]*[ \t]*(//[^\n]*)?$", re.M)


def mask_extensions(source: bytes):
    """Return (masked source, [1-based line numbers masked])."""
    lines = []

    def blank(m):
        lines.append(source.count(b"\n", 0, m.start()) + 1)
        return b" " * (m.end() - m.start())

    return EXTENSION_RE.sub(blank, source), lines


def parse(source: bytes):
    """Parse Bicep source (extension statements masked); return the tree."""
    return PARSER.parse(mask_extensions(source)[0])


def problems(source: bytes):
    """Yield (line, column, kind, snippet) for every ERROR or MISSING node."""
    stack = [parse(source).root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            row, col = node.start_point
            kind = "MISSING " + node.type if node.is_missing else "ERROR"
            snippet = source[node.start_byte:node.end_byte][:60].decode(errors="replace")
            yield row + 1, col + 1, kind, snippet
        elif node.has_error:
            stack.extend(reversed(node.children))


def bicep_files(args):
    for arg in args:
        path = Path(arg)
        yield from sorted(path.rglob("*.bicep")) if path.is_dir() else [path]


def main(args) -> int:
    files = list(bicep_files(args))
    if not files:
        print("parse_bicep: no .bicep files found", file=sys.stderr)
        return 1
    failed = 0
    for path in files:
        source = path.read_bytes()
        for line in mask_extensions(source)[1]:
            print(f"{path}:{line}: note: `extension` statement not known to tree-sitter-bicep 1.1; masked")
        found = list(problems(source))
        for line, col, kind, snippet in found:
            print(f"{path}:{line}:{col}: {kind}: {snippet!r}")
        failed += bool(found)
    print(f"parse_bicep: {len(files)} file(s), {failed} with syntax errors")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
