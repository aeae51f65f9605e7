"""The architecture, enforced: library layers import only downward, never in a circle.

Layers, lowest first: nas -> zoo -> export -> quantization -> profiling -> cli (the commands).
Every import counts, including those inside functions, since a lazy import is still a dependency.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAYERS = ['nas', 'zoo', 'export', 'quantization', 'profiling', 'cli']
MAX_LINES = 400
# A module over MAX_LINES must say here why its one job needs the room.
LONG_MODULES = {}


def _modules():
    for package in LAYERS:
        for path in sorted((ROOT / package).glob('*.py')):
            name = package if path.stem == '__init__' else '%s.%s' % (package, path.stem)
            yield name, path


def _imports(name, path):
    """Project modules imported anywhere in the file, as dotted names."""
    package = name.split('.')[0]
    is_package = path.stem == '__init__'
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split('.') if is_package else name.split('.')[:-1]
                base = base[:len(base) - node.level + 1]
                module = '.'.join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update('%s.%s' % (module, alias.name) for alias in node.names)
    known = dict(_modules())
    return {m for m in found if m in known and m != name and m.split('.')[0] in LAYERS
            and not (m == package and is_package)}


def _graph():
    return {name: _imports(name, path) for name, path in _modules()}


def test_imports_only_go_down():
    upward = []
    for module, targets in _graph().items():
        own = LAYERS.index(module.split('.')[0])
        upward += ['%s imports %s' % (module, t) for t in sorted(targets)
                   if LAYERS.index(t.split('.')[0]) > own]
    assert not upward, '\n'.join(upward)


def _cycle(graph):
    """One import cycle as a list of modules, or None (depth-first search, colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 'open':
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 'done'
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle():
    # a package's __init__ re-exporting its modules is not a cycle of behaviour: leave it out
    graph = {m: {t for t in ts if '.' in t} for m, ts in _graph().items() if '.' in m}
    cycle = _cycle(graph)
    assert cycle is None, ' -> '.join(cycle)


def test_cycle_finder_can_fail():
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None


def test_nothing_imports_the_commands():
    offenders = ['%s imports %s' % (m, t) for m, ts in _graph().items()
                 if not m.startswith('cli') for t in ts if t.startswith('cli')]
    assert not offenders, '\n'.join(offenders)


def test_only_commands_import_click():
    offenders = [name for name, path in _modules() if not name.startswith('cli')
                 and any(isinstance(n, (ast.Import, ast.ImportFrom))
                         and 'click' in ([a.name for a in n.names] if isinstance(n, ast.Import)
                                         else [n.module])
                         for n in ast.walk(ast.parse(path.read_text())))]
    assert not offenders, offenders


@pytest.mark.parametrize('name,path', list(_modules()), ids=lambda v: str(v))
def test_library_modules_stay_small(name, path):
    lines = len(path.read_text().splitlines())
    if name in LONG_MODULES:
        return
    assert lines <= MAX_LINES, '%s has %d lines (limit %d)' % (path.name, lines, MAX_LINES)
