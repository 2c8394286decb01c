"""Drawing a computation graph as the lecture does: input, parameter and compute nodes in three colours.

`draw(loss)` returns the graph that `loss` depends on in Graphviz's DOT
language (a `Drawing`: a str that a notebook shows as the picture, when
Graphviz is installed, and as the DOT text otherwise): one box per node, labelled with its type and the shape of its value
(and, on request, the norms of its value and gradient), an arrow from each
node to each node that reads it. With `path`, the Graphviz program ``dot``
renders it to PNG or SVG.

Edges are found from the nodes' attributes, so a node written by a user (a
`CompNode` subclass keeping its inputs as attributes, as the lecture's do)
is drawn like cedf's own.
"""
import os
import shutil
import subprocess

import numpy as np

from .nodes import Input, Parameter, inputs_of, upstream

#: Fill colours of the three kinds of node.
COLOURS = {"input": "#a6cee3", "parameter": "#fdbf6f", "compute": "#b2df8a"}


def _kind(node):
    if isinstance(node, Input):
        return "input"
    if isinstance(node, Parameter):
        return "parameter"
    return "compute"


def _label(node, values):
    value = getattr(node, "value", None)
    shape = "×".join(map(str, np.shape(value))) if value is not None else "no value"
    name = getattr(node, "name", None)
    lines = [type(node).__name__ + (f" {name}" if name else ""), shape or "scalar"]
    if values:
        for what in ("value", "grad"):
            arr = getattr(node, what, None)
            if arr is not None:
                lines.append(f"|{what}| = {np.linalg.norm(np.asarray(arr, dtype=np.float64)):.4g}")
    return "\\n".join(line.replace('"', '\\"') for line in lines)


def to_dot(loss, values=False):
    """The DOT source of the graph that `loss` depends on."""
    order = upstream(loss)
    seen = {id(node): f"n{i}" for i, node in enumerate(order)}
    lines = ["digraph cedf {", "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
    for node in reversed(order):
        lines.append(f'  {seen[id(node)]} [label="{_label(node, values)}", '
                     f'fillcolor="{COLOURS[_kind(node)]}", kind="{_kind(node)}"];')
    for node in reversed(order):
        for source in inputs_of(node):
            lines.append(f"  {seen[id(source)]} -> {seen[id(node)]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


class Drawing(str):
    """The DOT source of a graph, as a str; in a notebook, the picture (SVG) when Graphviz's `dot` is installed,
    else the DOT text."""

    def _repr_svg_(self):
        program = shutil.which("dot")
        if program is None:
            return None   # Jupyter then shows the text (_repr_pretty_)
        run = subprocess.run([program, "-Tsvg"], input=self.encode(), capture_output=True)
        return run.stdout.decode() if run.returncode == 0 else None

    def _repr_pretty_(self, printer, cycle):
        printer.text(str(self))


def draw(loss, path=None, values=False):
    """The DOT source of `loss`'s graph (a `Drawing`); with `path` (.png or .svg), also rendered there by Graphviz.

    Rendering needs Graphviz's ``dot`` program (https://graphviz.org/download/;
    ``apt install graphviz``, ``brew install graphviz`` or ``conda install graphviz``).
    """
    dot = Drawing(to_dot(loss, values))
    if path is None:
        return dot
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lstrip(".").lower()
    if fmt not in ("png", "svg"):
        raise ValueError(f"draw: path must end in .png or .svg, got {path!r}")
    program = shutil.which("dot")
    if program is None:
        raise RuntimeError("draw: rendering needs Graphviz's `dot` program, which is not on PATH; install it "
                           "(apt install graphviz, brew install graphviz, conda install graphviz, or "
                           "https://graphviz.org/download/), or use the DOT text that draw(loss) returns")
    run = subprocess.run([program, f"-T{fmt}", "-o", path], input=dot.encode(), capture_output=True)
    if run.returncode != 0:
        raise RuntimeError(f"draw: Graphviz's dot failed (exit {run.returncode}): "
                           f"{run.stderr.decode(errors='replace').strip()}")
    return dot
