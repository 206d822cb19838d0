"""What a ``.pt2`` (``torch.export``) archive must look like before srn-port lets PyTorch
open it: nothing in it may run code.

``torch.export.load`` is not safe on a file from a stranger. It unpickles with
``weights_only=False`` weights and constants marked ``use_pickle``, custom and opaque
objects, and sample inputs that fail a safe load; it loads AOTInductor shared libraries
(``data/aotinductor/``); it falls back to an older zip layout whose state dict is unpickled
the same way; it evaluates the graph's symbolic shapes with ``sympy.sympify`` (``eval``);
it ``exec``-s the program's ``guards_code``; and ``ExportedProgram.module()`` generates
Python code from the graph, with parameter names written into it and every node's target
looked up by name. The checks below close each of these, by allow-list rather than
deny-list (docs/security.md):

- the archive holds only the entries of the layout that ``torch.export.save`` writes for a
  program without custom objects (weights, tensor constants, the program JSON, sample
  inputs, extra text files, the format markers), stored uncompressed;
- no weight or constant is a pickle, and no constant is a custom or opaque object;
- every string of the program JSON is a plain name, except the few fields that carry
  expressions, which must parse (with :mod:`ast`, which runs nothing) to the small grammar
  that torch writes: sympy constructors with literal arguments (``expr_str``), and integer
  arithmetic on input sizes (``guards_code``); a few free-text fields (stack traces, module
  paths) only may not hold control characters;
- every graph node calls an operator on :data:`ALLOWED_TARGETS`: the pure tensor and
  integer operators that srn-port's exports are made of.

The sample inputs must also load with ``torch.load(weights_only=True)``; that needs torch,
so :mod:`srn_port.api.deploy` checks it. This module needs no torch: it reads the records
through a callable.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Callable, Iterable, List

from .errors import ModelFileError

#: Fixed entries of a program archive (relative to its root folder); only ``models/model.json``
#: and ``data/sample_inputs/model.pt`` are required beyond the markers.
_FIXED_RECORDS = {
    "archive_format", "archive_version", "byteorder", ".data/version",
    ".data/serialization_id", "models/model.json", "data/sample_inputs/model.pt",
    "data/weights/model_weights_config.json", "data/constants/model_constants_config.json",
}
_RECORD_PATTERNS = re.compile(r"data/weights/weight_\d+|data/constants/tensor_\d+"
                              r"|extra/[A-Za-z0-9_.-]+")
_REQUIRED = ("archive_format", "models/model.json", "data/sample_inputs/model.pt",
             "data/weights/model_weights_config.json",
             "data/constants/model_constants_config.json")
#: Entries of the older zip layout (torch <= 2.7), which torch.export.load unpickles unsafely.
_LEGACY = {"version", "serialized_exported_program.json", "serialized_state_dict.pt",
           "serialized_constants.pt", "serialized_example_inputs.pt",
           "serialized_state_dict.json", "serialized_constants.json"}

#: Graph operators a program may call: every operator of srn-port's color, gray and lstm
#: exports (full and finest-only, torch 2.13), and the pure tensor/integer operators that
#: other torch versions use for the same computations. None reads or writes files, runs
#: code or calls out of the process.
_ATEN = {
    "_assert_tensor_metadata.default", "_assert_scalar.default", "add.Tensor", "add_.Tensor",
    "add.Scalar", "arange.default", "arange.start", "arange.start_step", "cat.default",
    "ceil.default", "clamp.default", "clamp.Tensor", "clamp_min.default", "clamp_max.default",
    "clone.default", "contiguous.default", "conv2d.default", "conv_transpose2d.input",
    "convolution.default", "detach.default", "div.Tensor", "div.Scalar", "div.Tensor_mode",
    "expand.default", "floor.default", "floor_divide.default", "full.default",
    "index.Tensor", "index_select.default", "maximum.default", "minimum.default",
    "mul.Tensor", "mul.Scalar", "mul_.Tensor", "new_zeros.default", "new_full.default",
    "pad.default", "constant_pad_nd.default", "permute.default", "relu.default",
    "relu_.default", "reshape.default", "round.default", "rsub.Scalar", "select.int",
    "sigmoid.default", "slice.Tensor", "split.Tensor", "split_with_sizes.default",
    "squeeze.dim", "sub.Tensor", "sub_.Tensor", "sym_size.int", "tanh.default",
    "to.dtype", "_to_copy.default", "unsqueeze.default", "view.default", "zeros.default",
    "zeros_like.default", "where.self", "lt.Scalar", "ge.Scalar",
}
ALLOWED_TARGETS = frozenset(
    {f"torch.ops.aten.{op}" for op in _ATEN}
    | {f"_operator.{op}" for op in ("add", "sub", "mul", "neg", "floordiv", "mod", "truediv",
                                    "getitem", "eq", "ne", "lt", "le", "gt", "ge", "and_",
                                    "or_", "not_", "pos")}
    | {"torch.sym_max", "torch.sym_min", "torch.sym_not", "torch.sym_float", "torch.sym_int"})

#: A plain name: identifiers, dotted module paths, numbers, torch's ``ns:name`` forms.
_PLAIN = re.compile(r"[A-Za-z0-9_.:@+\-]*\Z")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SYMBOL = re.compile(r"[a-z]+[0-9]+\Z")
#: Fields whose text is stored and shown, never parsed as code: any printable text.
_FREE_TEXT = {"stack_trace", "nn_module_stack", "torch_fn"}
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
#: Bounds on one expression (torch writes guards of a few KB; srn-port's longest is ~3 KB).
_MAX_EXPR = 65536
_MAX_INT = 2 ** 63

#: sympy constructors that torch's srepr strings use (and that compute nothing large:
#: powers are left out, so no literal can ask for an exponentially large number).
_SYMPY_CALLS = {
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Max", "Min", "Mod", "Abs",
    "floor", "ceiling", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan",
    "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality", "And", "Or",
    "Not", "BooleanTrue", "BooleanFalse",
    # torch.utils._sympy.functions, as torch's deserializer names them
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "IntTrueDiv", "FloatTrueDiv", "TruncToFloat", "TruncToInt",
    "RoundToInt", "ToFloat", "Identity",
}
_SYMPY_NAMES = {"true", "false", "oo"}
_ARITH = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod, ast.Div)
_COMPARE = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)


class _Refused(Exception):
    pass


def _literal(node: ast.AST) -> None:
    value = node.value
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if abs(value) >= _MAX_INT:
            raise _Refused(f"an integer literal of {len(str(value))} digits")
        return
    if isinstance(value, float):
        return
    if isinstance(value, str) and _IDENT.match(value):
        return
    raise _Refused(f"the literal {str(value)[:40]!r}")


def _check_sympy(node: ast.AST) -> None:
    """``Add(Mul(Integer(16), Symbol('s8', positive=True, integer=True)), Integer(-1))``."""
    if isinstance(node, ast.Expression):
        return _check_sympy(node.body)
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _SYMPY_CALLS:
            raise _Refused(f"a call of {ast.unparse(node.func)[:40]!r}")
        for arg in node.args:
            _check_sympy(arg)
        for kw in node.keywords:
            if kw.arg is None or not _IDENT.match(kw.arg) or not (
                    isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, bool)):
                raise _Refused("a keyword argument that is not name=True/False")
        return
    if isinstance(node, ast.Constant):
        return _literal(node)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _check_sympy(node.operand)
    if isinstance(node, ast.BinOp) and isinstance(node.op, _ARITH):
        _check_sympy(node.left)
        return _check_sympy(node.right)
    if isinstance(node, ast.Name) and (node.id in _SYMPY_NAMES or _SYMBOL.match(node.id)):
        return
    raise _Refused(f"a {type(node).__name__} ({ast.unparse(node)[:40]!r})")


def _check_guard(node: ast.AST, symbols: bool = False) -> None:
    """``(L['x'].size()[2] % 16) == 0``, ``max(0, 3 + (-1)*(L['x'].size()[2] // 4)) >= 5``:
    integer arithmetic, comparisons and max/min over input sizes. With ``symbols``, bare
    symbol names (``16*s8``) instead of input sizes."""
    rec = lambda n: _check_guard(n, symbols)  # noqa: E731
    if isinstance(node, ast.Expression):
        return rec(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            raise _Refused(f"the string {node.value[:40]!r}")
        return _literal(node)
    if isinstance(node, ast.BoolOp):
        for v in node.values:
            rec(v)
        return
    if isinstance(node, ast.Compare) and all(isinstance(op, _COMPARE) for op in node.ops):
        for v in (node.left, *node.comparators):
            rec(v)
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        return rec(node.operand)
    if isinstance(node, ast.BinOp) and isinstance(node.op, _ARITH):
        rec(node.left)
        return rec(node.right)
    if isinstance(node, ast.Call) and not node.keywords:
        if isinstance(node.func, ast.Name) and node.func.id in ("max", "min") and node.args:
            for arg in node.args:
                rec(arg)
            return
        # L['x'].size()
        if (not symbols and not node.args and isinstance(node.func, ast.Attribute)
                and node.func.attr == "size" and _is_input(node.func.value)):
            return
    if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Call)
            and isinstance(node.slice, ast.Constant) and type(node.slice.value) is int):
        # L['x'].size()[2]
        return rec(node.value)
    if symbols and isinstance(node, ast.Name) and _SYMBOL.match(node.id):
        return
    raise _Refused(f"a {type(node).__name__} ({ast.unparse(node)[:40]!r})")


def _is_input(node: ast.AST) -> bool:
    """``L['x']``: a program input by its (identifier) name."""
    return (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
            and node.value.id == "L" and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str) and bool(_IDENT.match(node.slice.value)))


def _parse(text: str, check, what: str, **kw) -> None:
    if len(text) > _MAX_EXPR:
        raise _Refused(f"{what} of {len(text)} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _Refused(f"{what} that is not an expression: {text[:60]!r}") from None
    try:
        check(tree, **kw)
    except RecursionError:
        raise _Refused(f"{what} nested too deeply") from None
    except _Refused as exc:
        raise _Refused(f"{what} {text[:60]!r} containing {exc}") from None


def _check_spec(text: str) -> None:
    """A pytree spec (``in_spec``/``out_spec``): JSON naming only builtin containers."""
    try:
        spec = json.loads(text)
    except ValueError:
        raise _Refused("a tree spec that is not JSON") from None

    def walk(o):
        if isinstance(o, dict):
            t = o.get("type")
            if t not in (None, "builtins.tuple", "builtins.list", "builtins.dict",
                         "collections.OrderedDict"):
                raise _Refused(f"a tree spec of type {str(t)[:60]!r}")
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
        elif isinstance(o, str) and _CONTROL.search(o):
            raise _Refused("a tree spec with control characters")
    walk(spec)


def _check_program(program) -> None:
    """Every string of the program JSON (keys included) against its field's rule, and every
    graph node's target against :data:`ALLOWED_TARGETS`."""
    def walk(o, key=None, parent=None):
        if isinstance(o, dict):
            if "target" in o and "inputs" in o and "outputs" in o:  # a graph node
                target = o["target"]
                if target not in ALLOWED_TARGETS:
                    raise _Refused(f"a graph node calling {str(target)[:80]!r}, which is not "
                                   f"one of the tensor operators srn-port's exports use")
            for k, v in o.items():
                if not isinstance(k, str):
                    raise _Refused("a non-string key")
                if key == "range_constraints":
                    _parse(k, _check_guard, "a shape range", symbols=True)
                elif not _PLAIN.match(k):
                    raise _Refused(f"the key {k[:60]!r}")
                walk(v, k, o)
        elif isinstance(o, list):
            for v in o:
                walk(v, key, parent)
        elif isinstance(o, str):
            if key == "expr_str":
                _parse(o, _check_sympy, "a symbolic shape")
            elif key == "guards_code":
                _parse(o, _check_guard, "a guard")
            elif key in ("in_spec", "out_spec"):
                _check_spec(o)
            elif key in _FREE_TEXT:
                if _CONTROL.search(o):
                    raise _Refused(f"control characters in its {key}")
            elif not _PLAIN.match(o):
                raise _Refused(f"the {key} {o[:60]!r}")
        elif not (o is None or isinstance(o, (bool, int, float))):
            raise _Refused(f"a value of type {type(o).__name__}")

    if not isinstance(program, dict):
        raise _Refused("a program that is not a JSON object")
    graph = program.get("graph_module", {}).get("graph", {})
    if graph.get("custom_obj_values"):
        raise _Refused("custom objects (TorchScript classes, unpickled when loaded)")
    walk(program)


def _check_payload_config(text: str, kind: str, prefix: str) -> None:
    try:
        config = json.loads(text)
    except ValueError:
        raise _Refused(f"a {kind} configuration that is not JSON") from None
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise _Refused(f"a {kind} configuration without a 'config' table")
    for name, meta in entries.items():
        if not isinstance(name, str) or not _PLAIN.match(name):
            raise _Refused(f"the {kind} name {str(name)[:60]!r}")
        if not isinstance(meta, dict):
            raise _Refused(f"the {kind} '{name}' without a description")
        if meta.get("use_pickle") is not False:
            raise _Refused(f"the {kind} '{name}' stored as a pickle (which torch unpickles "
                           f"with weights_only=False: it can run any code)")
        path_name = meta.get("path_name")
        if not isinstance(path_name, str) or not re.fullmatch(prefix + r"\d+", path_name):
            raise _Refused(f"the {kind} '{name}' stored as {str(path_name)[:60]!r} (only plain "
                           f"tensors, '{prefix}N', are accepted; custom and opaque objects "
                           f"are unpickled when loaded)")
        if not isinstance(meta.get("tensor_meta"), dict):
            raise _Refused(f"the {kind} '{name}' without tensor metadata")


def check_pt2_archive(path, records: Iterable[str], read: Callable[[str], bytes],
                      zip_names: Iterable[str], compressed: List[str]) -> bytes:
    """Refuse (:class:`ModelFileError`) a ``.pt2`` archive with anything that would run code
    when ``torch.export.load`` opens it (see the module docstring). ``records``/``read``:
    the entries as PyTorch's own zip reader sees them (relative to the archive's root);
    ``zip_names``/``compressed``: as Python's zipfile sees them (the reader of torch's
    fallback path). Returns the sample inputs' bytes, which the caller must load safely."""
    path = Path(path)
    records = list(records)
    try:
        for name in zip_names:
            if name.rsplit("/", 1)[-1] in _LEGACY and "/" not in name.strip("/"):
                raise _Refused(f"the entry '{name}' of torch's older zip layout, whose "
                               f"state is unpickled with weights_only=False")
        if compressed:
            raise _Refused(f"compressed entries ('{compressed[0]}'); torch.export.save "
                           f"stores every entry uncompressed")
        for name in records:
            if name.startswith("data/aotinductor/"):
                raise _Refused(f"AOTInductor compiled code ('{name}'), a shared library "
                               f"that would be loaded into this process")
            if name not in _FIXED_RECORDS and not _RECORD_PATTERNS.fullmatch(name):
                raise _Refused(f"the entry '{name[:80]}', which is not part of a program "
                               f"written by torch.export.save")
        missing = [r for r in _REQUIRED if r not in records]
        if missing:
            raise _Refused(f"no '{missing[0]}' entry")
        if read("archive_format") != b"pt2":
            raise _Refused("an archive_format other than 'pt2'")
        _check_payload_config(read("data/weights/model_weights_config.json").decode(),
                              "weight", "weight_")
        _check_payload_config(read("data/constants/model_constants_config.json").decode(),
                              "constant", "tensor_")
        try:
            program = json.loads(read("models/model.json").decode())
        except (ValueError, UnicodeDecodeError):
            raise _Refused("a program (models/model.json) that is not JSON") from None
        _check_program(program)
        for name in records:
            if name.startswith("extra/"):
                read(name).decode()  # text only; torch decodes it the same way
    except _Refused as exc:
        raise ModelFileError(
            f"'{path}' is refused: it holds {exc}. Opening it with torch.export.load could "
            f"run code from the file, and srn-port never runs code from a model file. A .pt2 "
            f"written by srn-port export holds none of this: export the model again from its "
            f"weights (srn-port export WEIGHTS model.pt2), or use the converted weights "
            f"(.safetensors/.pt) themselves.") from None
    except UnicodeDecodeError:
        raise ModelFileError(f"'{path}' is refused: an entry that must be text is not "
                             f"UTF-8. Export the model again with srn-port export.") from None
    return read("data/sample_inputs/model.pt")
