"""No import cycle among tfprobe's modules, counting the imports inside functions (the lazy ones) too."""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_graph(package="tfprobe"):
    """`{module: {tfprobe modules it imports anywhere in its source}}`."""
    files = {}
    for folder, _, names in os.walk(os.path.join(REPO, package)):
        for name in names:
            if name.endswith(".py"):
                parts = os.path.relpath(os.path.join(folder, name[:-3]), REPO).split(os.sep)
                files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = os.path.join(folder, name)
    graph = {}
    for module, path in files.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = {f"{node.module}.{a.name}" for a in node.names} & files.keys()
                targets.update(subs or {node.module})  # `from tfprobe import metadata` imports tfprobe.metadata
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def _cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_tfprobe_has_no_import_cycle():
    graph = _import_graph()
    assert "tfprobe.metadata" in graph["tfprobe.logs.writer"]  # the graph is read
    assert _cycles(graph) == []
