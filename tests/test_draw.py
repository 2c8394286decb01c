"""cedf.draw: the lecture's graph in Graphviz's DOT language, and its rendering by `dot`.

The DOT text is read back with a small parser (two regular expressions, for
the node and edge lines that cedf.drawing writes), so the tests check the
graph drawn, not the text's layout.
"""
import os
import re
import shutil
import stat
from collections import Counter

import numpy as np
import pytest

import cedf as edf
from cedf.drawing import COLOURS
from helpers import Tanh

NODE = re.compile(r'^\s*(n\d+) \[label="((?:[^"\\]|\\.)*)", fillcolor="([^"]*)", kind="([^"]*)"\];$')
EDGE = re.compile(r"^\s*(n\d+) -> (n\d+);$")


def parse(dot):
    """DOT from cedf.draw -> ({id: (label lines, fill colour, kind)}, [(source id, target id)])."""
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    nodes, edges = {}, []
    for line in dot.splitlines():
        if m := NODE.match(line):
            lines = m[2].replace('\\"', '"').split("\\n")
            nodes[m[1]] = (lines, m[3], m[4])
        elif m := EDGE.match(line):
            edges.append((m[1], m[2]))
    assert all(a in nodes and b in nodes for a, b in edges), "an edge to a node that is not drawn"
    return nodes, edges


def labelled(dot):
    """The graph with each node named by its label's first two lines, "Type [name] | shape".

    The tests give every node a distinct label (named parameters, distinct
    layer widths), so this names the nodes unambiguously.
    """
    nodes, edges = parse(dot)
    names = {key: " | ".join(lines[:2]) for key, (lines, _, _) in nodes.items()}
    assert len(set(names.values())) == len(names), f"labels are not distinct: {sorted(names.values())}"
    return ({names[key]: node for key, node in nodes.items()},
            Counter((names[a], names[b]) for a, b in edges))


def lecture_mlp(batch=5, hidden=lambda a: edf.Sigmoid(a)):
    """The lecture's MLP, 64 -> 32 -> 10, on a batch of 5, one Forward and Backward done."""
    np.random.seed(0)
    x, y = edf.Input(), edf.Input()
    x.value, y.value = np.random.rand(batch, 64), np.arange(batch)
    params_1 = edf.AffineParams(64, 32, name="hidden")
    params_2 = edf.AffineParams(32, 10, name="out")
    h = hidden(edf.Affine(params_1, x))
    p = edf.Softmax(edf.Affine(params_2, h))
    L = edf.CrossEntropyLoss(p, y)
    edf.Forward()
    edf.Backward(L)
    return L


MLP_EDGES = {
    ("Input | 5×64", "Affine | 5×32"),
    ("Parameter hidden.A | 64×32", "Affine | 5×32"),
    ("Parameter hidden.b | 32", "Affine | 5×32"),
    ("Affine | 5×32", "Sigmoid | 5×32"),
    ("Sigmoid | 5×32", "Affine | 5×10"),
    ("Parameter out.A | 32×10", "Affine | 5×10"),
    ("Parameter out.b | 10", "Affine | 5×10"),
    ("Affine | 5×10", "Softmax | 5×10"),
    ("Softmax | 5×10", "CrossEntropyLoss | 5"),
    ("Input | 5", "CrossEntropyLoss | 5"),
}


def test_the_lecture_mlp_has_its_nodes_of_each_kind():
    nodes, _ = parse(edf.draw(lecture_mlp()))
    types = Counter(lines[0].split()[0] for lines, _, _ in nodes.values())
    assert types == {"Input": 2, "Parameter": 4, "Affine": 2, "Sigmoid": 1, "Softmax": 1, "CrossEntropyLoss": 1}
    kinds = Counter(kind for _, _, kind in nodes.values())
    assert kinds == {"input": 2, "parameter": 4, "compute": 5}


def test_three_kinds_in_three_colours():
    nodes, _ = parse(edf.draw(lecture_mlp()))
    assert len(set(COLOURS.values())) == 3
    for lines, colour, kind in nodes.values():
        assert colour == COLOURS[kind], lines
    assert {colour for _, colour, _ in nodes.values()} == set(COLOURS.values())


def test_labels_give_the_type_name_and_shape():
    nodes, _ = labelled(edf.draw(lecture_mlp()))
    assert set(nodes) == {name for edge in MLP_EDGES for name in edge}
    assert all(len(lines) == 2 for lines, _, _ in nodes.values())   # no norms unless asked


def test_before_forward_compute_nodes_have_no_value():
    x, y = edf.Input(), edf.Input()
    x.value = np.zeros((3, 4))
    L = edf.CrossEntropyLoss(edf.Softmax(edf.Affine(edf.AffineParams(4, 2), x)), y)
    nodes, _ = parse(edf.draw(L))
    assert sorted(tuple(lines) for lines, _, _ in nodes.values()) == [
        ("Affine", "no value"), ("CrossEntropyLoss", "no value"), ("Input", "3×4"), ("Input", "no value"),
        ("Parameter", "2"), ("Parameter", "4×2"), ("Softmax", "no value")]


def test_edges_go_from_each_input_to_the_node_that_reads_it():
    _, edges = labelled(edf.draw(lecture_mlp()))
    assert edges == Counter(MLP_EDGES)   # each once


def test_values_adds_the_norms_of_value_and_grad():
    L = lecture_mlp()
    nodes, _ = labelled(edf.draw(L, values=True))
    A = edf.Parameters[0]
    assert nodes["Parameter hidden.A | 64×32"][0][2:] == [f"|value| = {np.linalg.norm(A.value):.4g}",
                                                         f"|grad| = {np.linalg.norm(A.grad):.4g}"]
    assert nodes["CrossEntropyLoss | 5"][0][2:] == [f"|value| = {np.linalg.norm(L.value):.4g}",
                                                    f"|grad| = {np.linalg.norm(L.grad):.4g}"]
    x_lines = nodes["Input | 5×64"][0]
    assert len(x_lines) == 3 and x_lines[2].startswith("|value| = ")   # an Input has no gradient
    for lines, _, kind in nodes.values():
        assert lines[2].startswith("|value| = ")
        assert kind == "input" or lines[3].startswith("|grad| = ")


def test_a_users_node_is_drawn_with_its_edges():
    L = lecture_mlp(hidden=Tanh)   # tests/helpers.py's Tanh, written as in the lecture
    nodes, edges = labelled(edf.draw(L))
    assert nodes["Tanh | 5×32"][2] == "compute"
    assert edges["Affine | 5×32", "Tanh | 5×32"] == 1
    assert edges["Tanh | 5×32", "Affine | 5×10"] == 1
    assert "Sigmoid | 5×32" not in nodes
    assert sum(edges.values()) == len(MLP_EDGES)


def test_nodes_the_loss_does_not_depend_on_are_not_drawn():
    L = lecture_mlp()
    before = edf.draw(L)
    unused = edf.Input()
    unused.value = np.zeros((5, 7))
    edf.Sigmoid(edf.Affine(edf.AffineParams(7, 3, name="unused"), unused))   # a second head
    edf.Softmax(edf.CompNodes[2])                                         # reads the graph, feeds nothing
    edf.Forward()
    assert len(edf.CompNodes) == 5 + 3
    assert edf.draw(L) == before


# Rendering with Graphviz's `dot`.

FAKE_DOT = """#!/bin/sh
# A stand-in for Graphviz's dot: note the arguments, copy stdin to the -o file.
echo "$@" > "$(dirname "$0")/arguments"
while [ $# -gt 0 ]; do
    if [ "$1" = "-o" ]; then out="$2"; fi
    shift
done
cat > "$out"
"""


@pytest.fixture
def fake_dot(tmp_path, monkeypatch):
    """A fake `dot` first on PATH; returns the file where it notes its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "dot"
    program.write_text(FAKE_DOT)
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bin_dir / "arguments"


@pytest.mark.skipif(os.name != "posix", reason="the fake dot is a shell script")
@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_draw_renders_with_dot(fake_dot, tmp_path, fmt):
    L = lecture_mlp()
    path = tmp_path / f"graph.{fmt}"
    dot = edf.draw(L, path)
    assert dot == edf.draw(L)
    assert path.read_text() == dot   # what dot was given
    arguments = fake_dot.read_text().split()
    assert f"-T{fmt}" in arguments
    assert arguments[arguments.index("-o") + 1] == str(path)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_draw_renders_a_png_with_graphviz(tmp_path):
    path = tmp_path / "graph.png"
    edf.draw(lecture_mlp(), path)
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 1000


def test_draw_without_dot_says_to_install_graphviz(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    path = tmp_path / "graph.png"
    with pytest.raises(RuntimeError, match="(?i)graphviz"):
        edf.draw(lecture_mlp(), path)
    assert not path.exists()


@pytest.mark.skipif(os.name != "posix", reason="the fake dot is a shell script")
@pytest.mark.parametrize("name", ["graph.jpg", "graph", "graph.dot"])
def test_draw_rejects_other_formats(fake_dot, tmp_path, name):
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        edf.draw(lecture_mlp(), tmp_path / name)
    assert not fake_dot.exists()   # dot never ran
    assert not (tmp_path / name).exists()


class Sum(edf.CompNode):
    """A user's node reading a list of inputs, and keeping a node class as a setting."""

    def __init__(self, xs):
        edf.CompNodes.append(self)
        self.xs = list(xs)
        self.kind = edf.Sigmoid   # a class, not a node: not drawn

    def forward(self):
        self.value = sum(np.asarray(x.value) for x in self.xs)

    def backward(self):
        for x in self.xs:
            x.addgrad(self.grad)


def test_inputs_kept_in_a_list_are_drawn_and_classes_are_not_nodes():
    a, b = edf.Input(name="a"), edf.Input(name="b")
    a.value, b.value = np.ones((2, 3)), np.ones((2, 3))
    s = Sum([a, b])
    edf.Forward()
    nodes, edges = labelled(edf.draw(s))
    assert sorted(nodes) == ["Input a | 2×3", "Input b | 2×3", "Sum | 2×3"]
    assert edges == Counter({("Input a | 2×3", "Sum | 2×3"): 1, ("Input b | 2×3", "Sum | 2×3"): 1})


@pytest.mark.skipif(os.name != "posix", reason="the fake dot is a shell script")
def test_a_failing_dot_reports_graphvizs_message(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "dot"
    program.write_text("#!/bin/sh\necho 'Error: syntax error in line 3' >&2\nexit 1\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    with pytest.raises(RuntimeError, match="dot failed .*syntax error in line 3"):
        edf.draw(lecture_mlp(), tmp_path / "graph.png")


SVG_DOT = """#!/bin/sh
# A stand-in for Graphviz's dot asked for SVG on stdout: the arguments, and how many lines it was given.
echo "<svg><!-- $@ --><text>$(wc -l)</text></svg>"
"""


@pytest.mark.skipif(os.name != "posix", reason="the fake dot is a shell script")
def test_a_notebook_shows_the_drawing_as_svg_when_graphviz_is_there(tmp_path, monkeypatch):
    L = lecture_mlp()
    drawing = edf.draw(L)
    assert isinstance(drawing, str) and drawing == edf.drawing.to_dot(L)   # still the DOT text
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dot").write_text(SVG_DOT)
    (bin_dir / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    assert drawing._repr_svg_() == f"<svg><!-- -Tsvg --><text>{drawing.count(chr(10))}</text></svg>\n"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))   # no Graphviz: no SVG, and the text shows instead
    assert drawing._repr_svg_() is None

    class Printer:
        def text(self, text):
            self.shown = text
    printer = Printer()
    drawing._repr_pretty_(printer, False)
    assert printer.shown == str(drawing) and printer.shown.startswith("digraph cedf {")
