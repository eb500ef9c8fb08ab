#!/usr/bin/env python3
"""The house in figures (issue 22): the module graph of shared/src (top-level
modules, `crate::` paths outside comments and test modules) with any circle,
production files over 600 lines and functions over 70 (test modules left out).

    python3 scripts/house.py [REPO]
"""
import collections
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")


def production(text):
    return text.split("\n#[cfg(test)]")[0]


def module_graph():
    src = os.path.join(root, "shared/src")
    deps = collections.defaultdict(set)
    for dirpath, _, files in os.walk(src):
        for f in files:
            # A test module in its own file (`mod tests;` under #[cfg(test)]).
            if not f.endswith(".rs") or f == "tests.rs":
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)
            module = rel.split("/")[0].removesuffix(".rs")
            if module == "lib":
                continue
            text = production(open(os.path.join(dirpath, f)).read())
            code = "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))
            for used in re.findall(r"crate::([a-z_]+)", code):
                if used != module:
                    deps[module].add(used)
    return deps


def circles(deps):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in deps.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in list(deps):
        if v not in index:
            visit(v)
    return found


def sizes():
    files, long_fns = [], []
    for base in ("shared/src", "functions"):
        for dirpath, _, names in os.walk(os.path.join(root, base)):
            if "/tests" in dirpath.replace(root, ""):
                continue
            for f in names:
                if not f.endswith(".rs") or f == "tests.rs":
                    continue
                path = os.path.join(dirpath, f)
                lines = production(open(path).read()).split("\n")
                files.append((len(lines), os.path.relpath(path, root)))
                i = 0
                while i < len(lines):
                    m = re.match(r"^(\s*)(pub(\([a-z]+\))? )?(async )?fn ([a-z_0-9]+)", lines[i])
                    # A body, not a trait method's signature.
                    if m and not lines[i].rstrip().endswith(";"):
                        indent, j = m.group(1), i + 1
                        while j < len(lines) and lines[j].rstrip() != indent + "}":
                            if lines[j].rstrip().endswith(";") and lines[j].startswith(indent + ")"):
                                break
                            j += 1
                        if j - i + 1 > 70 and j < len(lines) and lines[j].rstrip() == indent + "}":
                            long_fns.append((j - i + 1, os.path.relpath(path, root), m.group(5)))
                        i = j
                    i += 1
    return [x for x in files if x[0] > 600], long_fns


deps = module_graph()
print("module circles in shared/src:", circles(deps) or "none")
for module in sorted(deps):
    print(f"  {module} -> {', '.join(sorted(deps[module]))}")
big, long_fns = sizes()
print(f"production files over 600 lines: {len(big)}")
for n, p in sorted(big, reverse=True):
    print(f"  {n:5d} {p}")
print(f"functions over 70 lines: {len(long_fns)}")
for n, p, name in sorted(long_fns, reverse=True):
    print(f"  {n:4d} {p} {name}")
