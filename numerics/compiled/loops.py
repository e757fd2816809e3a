"""Whole fixed-step trajectories in one compiled loop, and small-d kernels as scalar loops.

``fixed_step_source`` prints the GD / RK4 loop that also records the loss and every conserved
quantity at each recorded row (no second pass over the rows, no Python per step or row);
``adaptive_source`` the adaptive Dormand–Prince 8(5,3) loop of ``integrate`` (SciPy's DOP853:
its step-size control and its dense output at the requested times), recording likewise.

At small d a product of two 4×4 matrices costs less than the call into BLAS and the allocation
of its result, so ``lower`` rewrites a generated kernel (``codegen._generate``'s loss, grad and
conserved quantities) into one that allocates nothing: every matrix it computes goes to a
slice of a work array allocated once per trajectory, written by explicit loops —

    a product         C_ij = Σ_l A_il B_lj,
    a sum of words    one pass, C_ij = Σ_k a_k (W_k)_ij (scalars and transposes folded in),
    traces            tr X = Σ_i X_ii,   ⟨A, B⟩ = Σ_ij A_ij B_ij,
    Dg(Y)             U diag(v) Uᵀ with v_j = c_j Σ_i U_ij (Y U)_ij (``codegen.eigdiag``);

views (parameter blocks, transposes, task draws) stay views and scalar statements are kept.
The shapes come from evaluating each statement once with NumPy on stand-in arrays of the
model's sizes, so whatever the model, every statement built from these operations is lowered;
a statement of another form leaves the trajectory on the array kernels (``lower`` returns
None). The loop order of each sum is the plain one (BLAS may add in another order: the values
agree to rounding).
"""

from __future__ import annotations

import ast

import numpy as np

__all__ = ["SMALL", "lower", "fixed_step_source", "adaptive_source"]

SMALL = 8       # spaces of at most this size: products as scalar loops (BLAS above)
KERNELS = ("loss", "grad", "conserved")    # the kernels a trajectory calls (and ``lower`` lowers)


class _Unsupported(Exception):
    """A statement ``lower`` has no loop form for."""


def _is_view(node: ast.AST) -> bool:
    """Whether an expression only selects entries (names, slices, ``.T``, ``reshape``,
    ``np.ascontiguousarray``): its value is a view, not a computation."""
    if isinstance(node, (ast.Name, ast.Constant, ast.Slice, ast.Tuple)):
        return all(_is_view(n) for n in ast.iter_child_nodes(node)
                   if not isinstance(n, ast.expr_context))
    if isinstance(node, ast.Attribute):
        return node.attr in ("T", "shape") and _is_view(node.value)
    if isinstance(node, ast.Subscript):
        return _is_view(node.value) and not isinstance(node.slice, ast.BinOp)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "reshape":             # its arguments are sizes
            return _is_view(node.func.value)
        return node.func.attr == "ascontiguousarray" and all(map(_is_view, node.args))
    return False


class _Strip(ast.NodeTransformer):
    """``np.ascontiguousarray(X)`` → ``X`` (the loops index a view in place)."""

    def visit_Call(self, node):
        self.generic_visit(node)
        if isinstance(node.func, ast.Attribute) and node.func.attr == "ascontiguousarray":
            return node.args[0]
        return node


def _call_name(node: ast.AST) -> str | None:
    """"np.sum" / "_eigdiag" / … of a call, else None."""
    if not isinstance(node, ast.Call):
        return None
    return ast.unparse(node.func)


class _Lowering:
    """Prints one kernel's statements as loops over work-array slices (``lower``)."""

    def __init__(self, ns: dict):
        self.ns = ns                   # stand-in values of the names, statement by statement
        self.lines: list[str] = []
        self.indent = "    "
        self.slots = 0                 # work-array slices used
        self.side = 1                  # the largest matrix side seen (the slices' size)
        self.fresh = 0
        self.outputs: list[str] = []   # arrays the caller passes in (``np.zeros`` in the source)
        self.memo: dict = {}

    # --- values and names ------------------------------------------------------------------
    def value(self, node: ast.AST):
        """The stand-in value of an expression (once per node and statement: the names it
        reads are not reassigned within a statement)."""
        key = id(node)
        if key not in self.memo:
            if not hasattr(node, "lineno"):             # built here, not parsed
                ast.fix_missing_locations(node)
            value = eval(compile(ast.Expression(node), "<lower>", "eval"), self.ns)
            self.memo[key] = (node, value)               # the node kept: its id stays its own
        return self.memo[key][1]

    def is_matrix(self, node: ast.AST) -> bool:
        value = self.value(node)
        return isinstance(value, np.ndarray) and value.ndim == 2

    def shape(self, node: ast.AST) -> tuple:
        shape = self.value(node).shape
        self.side = max(self.side, *shape)
        return shape

    def emit(self, line: str) -> None:
        self.lines.append(self.indent + line)

    def name(self, prefix: str) -> str:
        self.fresh += 1
        return f"_{prefix}{self.fresh}"

    def slot(self, target: str) -> str:
        self.emit(f"{target} = work[{self.slots}]")
        self.slots += 1
        return target

    # --- matrices ----------------------------------------------------------------------------
    def leaf(self, node: ast.AST) -> ast.AST:
        """``node`` as a name (or a transpose of one) the loops can index: a computed operand
        goes to a work slice first."""
        if isinstance(node, ast.Name):
            return node
        if isinstance(node, ast.Attribute) and node.attr == "T":
            return ast.Attribute(self.leaf(node.value), "T", ast.Load())
        if _is_view(node):
            target = self.name("v")
            self.emit(f"{target} = {ast.unparse(_Strip().visit(_copy(node)))}")
            self.ns[target] = self.value(node)
            return ast.Name(target, ast.Load())
        target = self.name("w")
        self.matrix_into(target, node, fresh=True)
        self.ns[target] = self.value(node)
        return ast.Name(target, ast.Load())

    def entry(self, node: ast.AST, i: str, j: str) -> str:
        """The code of entry (i, j) of a matrix expression; what it needs first (products,
        scalars) is printed before."""
        if isinstance(node, ast.Name):
            return f"{node.id}[{i}, {j}]"
        if isinstance(node, ast.Attribute) and node.attr == "T":
            return self.entry(node.value, j, i)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
            matrices = [x for x in (node.left, node.right) if self.is_matrix(x)]
            if len({self.shape(x) for x in matrices}) > 1:
                raise _Unsupported(ast.unparse(node))        # broadcasting
            sides = [self.entry(x, i, j) if x in matrices else self.scalar(x)
                     for x in (node.left, node.right)]
            op = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}[type(node.op)]
            return f"({sides[0]} {op} {sides[1]})"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return f"(-{self.entry(node.operand, i, j)})"
        if _call_name(node) == "np.eye":
            return f"(1.0 if {i} == {j} else 0.0)"
        if _call_name(node) == "np.ascontiguousarray":
            return self.entry(node.args[0], i, j)
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult)
                or _call_name(node) == "_eigdiag" or _is_view(node)):
            return self.entry(self.leaf(node), i, j)         # computed (or selected) first
        raise _Unsupported(ast.unparse(node))

    def matrix_into(self, target: str, node: ast.AST, fresh: bool, op: str = "=") -> None:
        """target (op)= the matrix expression ``node`` (``fresh``: ``target`` is a new work
        slice)."""
        if op == "=" and isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            return self.product(target, node, fresh)
        if op == "=" and _call_name(node) == "_eigdiag":
            return self.eigdiag(target, node, fresh)
        rows, cols = self.shape(node)
        if not fresh and self.shape(ast.Name(target, ast.Load())) != (rows, cols):
            raise _Unsupported(ast.unparse(node))            # broadcasting
        body = self.entry(node, "_i", "_j")
        if fresh:
            self.slot(target)
        self.emit(f"for _i in range({rows}):")
        self.emit(f"    for _j in range({cols}):")
        self.emit(f"        {target}[_i, _j] {op} {body}")

    def product(self, target: str, node: ast.BinOp, fresh: bool) -> None:
        left, right = self.leaf(node.left), self.leaf(node.right)
        (rows, inner), (_, cols) = self.shape(left), self.shape(right)
        a, b = self.entry(left, "_i", "_l"), self.entry(right, "_l", "_j")
        if fresh:
            self.slot(target)
        self.emit(f"for _i in range({rows}):")
        self.emit(f"    for _j in range({cols}):")
        self.emit("        _acc = 0.0")
        self.emit(f"        for _l in range({inner}):")
        self.emit(f"            _acc += {a} * {b}")
        self.emit(f"        {target}[_i, _j] = _acc")

    def eigdiag(self, target: str, node: ast.Call, fresh: bool) -> None:
        """Dg(Y) = U diag(v) Uᵀ, v_j = c_j Σ_i U_ij (Y U)_ij (``codegen.eigdiag``)."""
        Y, U, c = node.args
        Y, U = self.leaf(Y), self.leaf(U)
        n = self.shape(U)[0]
        y, u = self.entry(Y, "_i", "_l"), lambda i, j: self.entry(U, i, j)
        c = ast.unparse(c)
        v = self.name("d")
        self.emit(f"{v} = work[{self.slots}][0]")
        self.slots += 1
        self.emit(f"for _j in range({n}):")
        self.emit("    _acc = 0.0")
        self.emit(f"    for _i in range({n}):")
        self.emit("        _row = 0.0")
        self.emit(f"        for _l in range({n}):")
        self.emit(f"            _row += {y} * {u('_l', '_j')}")
        self.emit(f"        _acc += {u('_i', '_j')} * _row")
        self.emit(f"    {v}[_j] = {c}[_j] * _acc")
        if fresh:
            self.slot(target)
        self.emit(f"for _i in range({n}):")
        self.emit(f"    for _j in range({n}):")
        self.emit("        _acc = 0.0")
        self.emit(f"        for _l in range({n}):")
        self.emit(f"            _acc += {u('_i', '_l')} * {v}[_l] * {u('_j', '_l')}")
        self.emit(f"        {target}[_i, _j] = _acc")

    # --- scalars -----------------------------------------------------------------------------
    def reduce(self, node: ast.Call) -> str:
        """np.sum(X), np.trace(X) or np.dot(A.ravel(), B.ravel()) as a loop; its name."""
        kind = _call_name(node)
        if kind == "np.dot":
            flat = [a.func.value for a in node.args if _call_name(a) is not None
                    and isinstance(a.func, ast.Attribute) and a.func.attr == "ravel"]
            if len(flat) != 2:
                raise _Unsupported(ast.unparse(node))
            X = ast.BinOp(flat[0], ast.Mult(), flat[1])
        else:
            X = node.args[0]
        if len(node.args) != (2 if kind == "np.dot" else 1) or node.keywords:
            raise _Unsupported(ast.unparse(node))
        rows, cols = self.shape(X)
        total = self.name("s")
        if kind == "np.trace":
            body = self.entry(X, "_i", "_i")
            self.emit(f"{total} = 0.0")
            self.emit(f"for _i in range({min(rows, cols)}):")
            self.emit(f"    {total} += {body}")
            return total
        body = self.entry(X, "_i", "_j")
        self.emit(f"{total} = 0.0")
        self.emit(f"for _i in range({rows}):")
        self.emit(f"    for _j in range({cols}):")
        self.emit(f"        {total} += {body}")
        return total

    def scalar_code(self, node: ast.AST) -> str:
        """A scalar expression with its sums, traces and inner products as loops."""
        lowering = self

        class Reduce(ast.NodeTransformer):
            def visit_Call(self, call):
                if _call_name(call) in ("np.sum", "np.trace", "np.dot"):
                    return ast.Name(lowering.reduce(call), ast.Load())
                self.generic_visit(call)
                return call

        return ast.unparse(Reduce().visit(_copy(node)))

    def scalar(self, node: ast.AST) -> str:
        """A scalar operand of an element-wise loop: a name or constant as it is, anything
        else computed once before the loop."""
        if isinstance(node, (ast.Name, ast.Constant)):
            return ast.unparse(node)
        code = self.scalar_code(node)
        name = self.name("a")
        self.emit(f"{name} = {code}")
        return name

    # --- statements --------------------------------------------------------------------------
    def statement(self, stmt: ast.stmt) -> None:
        self.memo = {}
        if isinstance(stmt, ast.For):
            self.emit(f"for {ast.unparse(stmt.target)} in {ast.unparse(stmt.iter)}:")
            self.ns[ast.unparse(stmt.target)] = 0        # the stand-in: the first draw
            outer, self.indent = self.indent, self.indent + "    "
            for inner in stmt.body:
                self.statement(inner)
            self.indent = outer
            if stmt.orelse:
                raise _Unsupported("for … else")
            return
        if isinstance(stmt, ast.Return):
            self.emit(ast.unparse(stmt))
            return
        self.lower_statement(stmt)
        exec(compile(ast.Module([stmt], []), "<lower>", "exec"), self.ns)

    def lower_statement(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
                and isinstance(stmt.targets[0], ast.Subscript) \
                and isinstance(stmt.targets[0].value, ast.Name) \
                and self.is_matrix(stmt.targets[0].value):
            # the first write of a gradient block (the array kernel's ``out`` is not
            # initialised; the loop kernel's is zeroed): an accumulation, a zero fill nothing
            # (an entry of a vector, such as a conserved quantity, stays a scalar statement)
            if isinstance(stmt.value, ast.Constant) and stmt.value.value == 0:
                return
            stmt = ast.AugAssign(ast.Name(stmt.targets[0].value.id, ast.Store()), ast.Add(),
                                 stmt.value)
        if isinstance(stmt, ast.Expr) and _call_name(stmt.value) == "np.multiply":
            a, b, out = stmt.value.args
            self.matrix_into(self.leaf(out).id, ast.BinOp(a, ast.Mult(), b), fresh=False)
            return
        if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name) \
                and self.is_matrix(ast.Name(stmt.target.id, ast.Load())):
            if not isinstance(stmt.op, (ast.Add, ast.Sub)):
                raise _Unsupported(ast.unparse(stmt))
            op = "+=" if isinstance(stmt.op, ast.Add) else "-="
            self.matrix_into(stmt.target.id, stmt.value, fresh=False, op=op) \
                if self.is_matrix(stmt.value) else self.broadcast(stmt.target.id, stmt.value, op)
            return
        if isinstance(stmt, (ast.Assign, ast.AugAssign)):
            value = self.value(stmt.value)
            single = isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
                and isinstance(stmt.targets[0], ast.Name)
            if isinstance(value, np.ndarray) and single \
                    and _call_name(stmt.value) in ("np.zeros", "np.empty"):
                out = stmt.targets[0].id                 # an output: passed in, zeroed here
                self.outputs.append(out)
                self.emit(f"for _i in range({out}.shape[0]):")
                self.emit(f"    {out}[_i] = 0.0")
                return
            if isinstance(value, np.ndarray) and _is_view(stmt.value):
                self.emit(ast.unparse(_Strip().visit(_copy(stmt))))
                return
            if isinstance(value, np.ndarray) and value.ndim == 2 and single:
                self.matrix_into(stmt.targets[0].id, stmt.value, fresh=True)
                return
            if not isinstance(value, np.ndarray):
                code = self.scalar_code(stmt.value)
                if isinstance(stmt, ast.Assign):
                    self.emit(" = ".join([*map(ast.unparse, stmt.targets), code]))
                else:
                    op = ast.unparse(ast.BinOp(ast.Name("a"), stmt.op, ast.Name("b")))[2]
                    self.emit(f"{ast.unparse(stmt.target)} {op}= {code}")
                return
        raise _Unsupported(ast.unparse(stmt))

    def broadcast(self, target: str, node: ast.AST, op: str) -> None:
        rows, cols = self.shape(ast.Name(target, ast.Load()))
        value = self.scalar(node)
        self.emit(f"for _i in range({rows}):")
        self.emit(f"    for _j in range({cols}):")
        self.emit(f"        {target}[_i, _j] {op} {value}")


def _copy(node: ast.AST) -> ast.AST:
    return ast.parse(ast.unparse(node)).body[0] if isinstance(node, ast.stmt) \
        else ast.parse(ast.unparse(node), mode="eval").body


def lower(source: str, args: dict, helpers: dict) -> tuple[str, int, int] | None:
    """The small-d loop form of a generated module's trajectory kernels: for each of
    ``KERNELS`` it defines, a kernel ``loop_<name>`` that takes the work array after θ (and the
    output vector of ``grad`` and ``conserved`` before it) and allocates nothing.

    Parameters
    ----------
    source : str
        The generated module (``codegen._generate``).
    args : dict
        Stand-in arguments of the kernels ({argument name: value}) at the model's sizes.
    helpers : dict
        Names the source calls besides NumPy (``_eigdiag``).

    Returns
    -------
    tuple or None
        (source of the loop kernels, number of work slices, their side) — None when a
        statement has no loop form (``codegen`` lowers only models whose spaces are at most
        ``SMALL``).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.compiled.loops import lower
    >>> source = ("def loss(theta, A):\\n    m0 = A @ A.T\\n    s1 = np.sum(m0 * m0)\\n"
    ...           "    return s1\\n")
    >>> code, slots, side = lower(source, {"A": np.ones((2, 3))}, {})
    >>> print(code.rstrip())
    def loop_loss(theta, work, A):
        m0 = work[0]
        for _i in range(2):
            for _j in range(2):
                _acc = 0.0
                for _l in range(3):
                    _acc += A[_i, _l] * A[_j, _l]
                m0[_i, _j] = _acc
        _s1 = 0.0
        for _i in range(2):
            for _j in range(2):
                _s1 += (m0[_i, _j] * m0[_i, _j])
        s1 = _s1
        return s1
    >>> (slots, side)                  # one 3 × 3 work slice (m0 is 2 × 2 in its corner)
    (1, 3)
    >>> lower(source.replace("A @ A.T", "np.exp(A @ A.T)"), {"A": np.ones((2, 3))},
    ...       {}) is None                     # a call with no loop form: the array kernels
    True
    """
    tree = ast.parse(source)
    defs = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    names = [n for n in defs if n in KERNELS]
    out, slots, side = [], 0, 1
    for name in names:
        fn = defs[name]
        params = [a.arg for a in fn.args.args]
        lowering = _Lowering({"np": np, **helpers, **args})
        try:
            for stmt in fn.body:
                lowering.statement(stmt)
        except _Unsupported:
            return None
        slots, side = max(slots, lowering.slots), max(side, lowering.side)
        head = [params[0], *lowering.outputs, "work", *params[1:]]
        out += [f"def loop_{name}({', '.join(head)}):", *lowering.lines, ""]
    return "\n".join(out) + "\n", max(slots, 1), side


DATA = "Lambda, Sigma_w, U, c, tasks, task_weights, dims, consts"   # the kernels' data args


def _observe(point: str, row: str, loops: bool, indent: str) -> list[str]:
    """The lines recording the loss and the conserved quantities at ``point`` into the row
    ``row`` (an open index such as ``"seen[row"``), with the loop kernels (``conserved``
    writes into the row) or the array ones."""
    if loops:
        return [f"{indent}{row}, 0] = loop_loss({point}, work, k, *data)",
                f"{indent}loop_conserved({point}, {row}, 1:], work, k, *data)"]
    return [f"{indent}{row}, 0] = loss({point}, k, *data)",
            f"{indent}{row}, 1:] = conserved({point}, k, *data)"]


def fixed_step_source(name: str, conserved: int, runaway: float, loops: bool,
                      work: tuple = (1, 1, 1)) -> str:
    """The source of a fixed-step loop ``name(theta0, h, steps, every, rk4, <data>)`` →
    (rows, observed, steps done): θ ← θ − h∇L (GD) or the classical RK4 step of dθ/dt = −∇L,
    ``steps`` times, with θ, the loss and the ``conserved`` quantities recorded every
    ``every`` steps; it stops at the first step whose θ is not finite or exceeds ``runaway``
    in magnitude (the rows recorded before it are returned). With ``loops`` it calls the
    ``loop_*`` kernels of ``lower`` on buffers allocated once, and steps entry by entry;
    otherwise the array kernels, a step by whole-array operations. Both do the same floating-
    point operations in the same order (a GD step is θ + h·(−∇L)).

    Parameters
    ----------
    name : str
        The function's name.
    conserved : int
        Number of conserved quantities (the kernel ``conserved``'s values).
    runaway : float
        The bound on |θ| (``limits.RUNAWAY``).
    loops : bool
        Call the allocation-free loop kernels.
    work : tuple
        The work array's shape (``lower``'s slices and side).

    Returns
    -------
    str

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.compiled.loops import fixed_step_source
    >>> kernels = ("def loss(theta, k, *data):\\n    return 0.5 * np.sum(theta * theta)\\n"
    ...            "def grad(theta, k, *data):\\n    return theta.copy()\\n"
    ...            "def conserved(theta, k, *data):\\n    return np.empty(0)\\n")
    >>> ns = {"np": np}
    >>> exec(kernels + fixed_step_source("fixed_step", 0, 1e100, False), ns)
    >>> rows, seen, done = ns["fixed_step"](np.ones(2), 0.5, 4, 2, False, None, *[None] * 8)
    >>> rows[:, 0], seen[:, 0], done               # θ halves each step; L = θ·θ / 2
    (array([1.    , 0.25  , 0.0625]), array([1.        , 0.0625    , 0.00390625]), 4)
    """
    def record(row: str, at: str) -> list[str]:
        return [f"{at}out[{row}] = theta"] + _observe("theta", f"seen[{row}", loops,
                                                      at)

    lines = [f"def {name}(theta0, h, steps, every, rk4, k, {DATA}):",
             "    out = np.empty((steps // every + 1, theta0.size))",
             f"    seen = np.empty((steps // every + 1, {1 + conserved}))",
             "    theta = theta0.copy()",
             f"    data = ({DATA})"]
    if loops:
        lines += [f"    work = np.empty({tuple(work)})",
                  "    size = theta0.size",
                  "    k1, k2, k3, k4, probe = (np.empty(size), np.empty(size), np.empty(size),"
                  " np.empty(size), np.empty(size))"]
    lines += record("0", "    ") + ["    for n in range(1, steps + 1):"]
    if loops:
        grad = lambda at, g: f"loop_grad({at}, {g}, work, k, *data)"  # noqa: E731
        lines += [
            f"        {grad('theta', 'k1')}",
            "        if rk4:",
            "            for p in range(size):",
            "                probe[p] = theta[p] + 0.5 * h * -k1[p]",
            f"            {grad('probe', 'k2')}",
            "            for p in range(size):",
            "                probe[p] = theta[p] + 0.5 * h * -k2[p]",
            f"            {grad('probe', 'k3')}",
            "            for p in range(size):",
            "                probe[p] = theta[p] + h * -k3[p]",
            f"            {grad('probe', 'k4')}",
            "            for p in range(size):",
            "                theta[p] = theta[p] + h / 6.0 * (-k1[p] + 2.0 * -k2[p] + 2.0 * -k3[p]"
            " + -k4[p])",
            "        else:",
            "            for p in range(size):",
            "                theta[p] = theta[p] + h * -k1[p]",
            "        finite = True",
            "        for p in range(size):",
            f"            finite = finite and abs(theta[p]) < {runaway!r}"]
    else:
        lines += [
            "        k1 = -grad(theta, k, *data)",
            "        if rk4:",
            "            k2 = -grad(theta + 0.5 * h * k1, k, *data)",
            "            k3 = -grad(theta + 0.5 * h * k2, k, *data)",
            "            k4 = -grad(theta + h * k3, k, *data)",
            "            theta = theta + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)",
            "        else:",
            "            theta = theta + h * k1",
            f"        finite = np.all(np.abs(theta) < {runaway!r})"]
    lines += ["        if not finite:",
              "            done = (n - 1) // every + 1",
              "            return out[:done], seen[:done], n",
              "        if n % every == 0:"] + record("n // every", "            ")
    return "\n".join(lines + ["    return out, seen, steps", ""])


SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0     # SciPy's Runge–Kutta step-size control


def adaptive_source(name: str, loops: bool, work: tuple = (1, 1, 1), order: int = 7) -> str:
    """The source of the adaptive loop ``name(theta, f, state, t_eval, out, seen, budget,
    rtol, atol, table, e3, e5, dense, k, <data>)`` → (status, evaluations, point): SciPy's
    ``DOP853`` for the autonomous flow dθ/dt = F(θ) = −∇L(θ), stepped and recorded in one
    compiled loop. A step of size h has the stages K_s = F(θ + h Σ_{j<s} a_sj K_j)
    (``table`` rows 1…11; row 12 gives θ_new, K_12 = F(θ_new)), the error norm

        ‖err‖ = h e₅² / √((e₅² + 0.01 e₃²) P),   e_m² = Σ_p ((Σ_j E_m,j K_jp) / s_p)²,
        s_p = atol + rtol · max(|θ_p|, |θ_new,p|),

    and is accepted when ‖err‖ < 1; the next h is h · min(MAX_FACTOR, SAFETY ‖err‖^(−1/(order
    + 1))) (at most h after a rejection; a rejected step shrinks by max(MIN_FACTOR, …)).
    Each requested time τ ∈ (t, t + h] gets the dense output of the step — three more
    stages (``table`` rows 13…15), F₀ = Δθ, F₁ = hK₀ − Δθ, F₂ = 2Δθ − h(K₀ + K₁₂),
    F₃₊ᵢ = h Σ_j D_ij K_j, and with x = (τ − t)/h

        θ(τ) = θ + x(1−x)·…  (Horner: y = 0; y += F_i, then y *= x or 1 − x, i = 6 … 0),

    recorded in ``out`` with its loss and conserved quantities in ``seen``. The first call
    (``state[1]`` < 0) evaluates F(θ₀) into ``f`` and picks the first step as SciPy's
    ``select_initial_step``. A call returns after ``budget`` evaluations (status 0: call
    again), at t_end (1), when the step falls below 10 ulp of t (2), or at the first
    non-finite F (3: ``point`` is where). ``theta``, ``f`` and ``state`` = [t, h, t_end,
    next row] carry the run from call to call. With ``loops`` it calls the ``loop_*``
    kernels on a work array (no BLAS, no allocation per step).

    Parameters
    ----------
    name : str
        The function's name.
    loops : bool
        Call the allocation-free loop kernels.
    work : tuple
        The work array's shape (``lower``'s slices and side).
    order : int
        The error estimator's order (SciPy's ``DOP853.error_estimator_order``).

    Returns
    -------
    str

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.compiled.loops import adaptive_source
    >>> from scipy.integrate import DOP853
    >>> kernels = ("def loss(theta, k, *data):\\n    return 0.5 * np.sum(theta * theta)\\n"
    ...            "def grad(theta, k, *data):\\n    return theta.copy()\\n"
    ...            "def conserved(theta, k, *data):\\n    return np.empty(0)\\n")
    >>> ns = {"np": np}
    >>> exec(kernels + adaptive_source("adaptive", False), ns)
    >>> table = np.zeros((16, 16))
    >>> table[:12, :12], table[12, :12], table[13:] = DOP853.A, DOP853.B, DOP853.A_EXTRA
    >>> theta, f, state = np.ones(1), np.empty(1), np.array([0.0, -1.0, 1.0, 0.0])
    >>> out, seen = np.empty((2, 1)), np.empty((2, 1))
    >>> status, evaluations, _ = ns["adaptive"](theta, f, state, np.array([0.0, 1.0]), out, seen,
    ...     10**6, 1e-10, 1e-12, table, DOP853.E3, DOP853.E5, DOP853.D, None, *[None] * 8)
    >>> status, round(float(out[1, 0]), 9), round(float(np.exp(-1.0)), 9)   # θ' = −θ
    (1, 0.367879441, 0.367879441)
    """
    prefix = "loop_" if loops else ""

    def evaluate(at: str, into: str, indent: str) -> list[str]:
        """into = F(at) = −∇L(at); on a non-finite value, return status 3 and the point."""
        head = ([f"{prefix}grad({at}, {into}, work, k, *data)", "value = " + into] if loops
                else [f"value = grad({at}, k, *data)"])
        entry = f"{into[:-1]}, p]" if into.endswith("]") else f"{into}[p]"    # no row view
        return [indent + line for line in head + [
            "total = 0.0",
            "for p in range(size):",
            f"    {entry} = -value[p]",
            f"    total += {entry}",
            "evaluations += 1",
            "if not np.isfinite(total):",
            "    state[0], state[1], state[3] = t, h_abs, row",
            f"    return 3, evaluations, {at}.copy()"]]

    def combine(row: str, indent: str) -> list[str]:
        """probe = θ + (Σ_{j<row} a_row,j K_j) h, as SciPy sums it."""
        return [indent + line for line in [
            "for p in range(size):",
            "    acc = 0.0",
            f"    for j in range({row}):",
            f"        if table[{row}, j] != 0.0:",
            f"            acc += stages[j, p] * table[{row}, j]",
            "    probe[p] = theta[p] + acc * h"]]

    exponent = -1.0 / (order + 1)
    lines = [
        f"def {name}(theta, f, state, t_eval, out, seen, budget, rtol, atol, table, e3, e5, "
        f"dense, k, {DATA}):",
        f"    data = ({DATA})",
        "    size, rows = theta.size, t_eval.size",
        f"    work = np.empty({tuple(work)})",
        "    stages = np.empty((table.shape[0], size))",
        "    probe, theta_new, poly = np.empty(size), np.empty(size), np.empty((7, size))",
        "    t, h_abs, t_end, row = state[0], state[1], state[2], int(state[3])",
        "    h, evaluations = 0.0, 0",
        "    if h_abs < 0.0:                  # the start: F(θ₀), then the first step",
        *evaluate("theta", "f", "        "),
        "        d0, d1 = 0.0, 0.0",
        "        for p in range(size):",
        "            scale = atol + abs(theta[p]) * rtol",
        "            d0 += (theta[p] / scale) ** 2",
        "            d1 += (f[p] / scale) ** 2",
        "        d0, d1 = np.sqrt(d0 / size), np.sqrt(d1 / size)",
        "        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1",
        "        h0 = min(h0, t_end - t)",
        "        for p in range(size):",
        "            probe[p] = theta[p] + h0 * f[p]",
        *evaluate("probe", "stages[1]", "        "),
        "        d2 = 0.0",
        "        for p in range(size):",
        "            d2 += ((stages[1, p] - f[p]) / (atol + abs(theta[p]) * rtol)) ** 2",
        "        d2 = np.sqrt(d2 / size) / h0",
        "        if d1 <= 1e-15 and d2 <= 1e-15:",
        "            h1 = max(1e-6, h0 * 1e-3)",
        "        else:",
        f"            h1 = (0.01 / max(d1, d2)) ** {1.0 / (order + 1)!r}",
        "        h_abs = min(100 * h0, h1, t_end - t)",
        "    while t < t_end:",
        "        if evaluations >= budget:",
        "            state[0], state[1], state[3] = t, h_abs, row",
        "            return 0, evaluations, probe",
        "        least = 10 * abs(np.nextafter(t, np.inf) - t)",
        "        h_abs = max(h_abs, least)",
        "        rejected = False",
        "        while True:",
        "            if h_abs < least:",
        "                state[0], state[1], state[3] = t, h_abs, row",
        "                return 2, evaluations, probe",
        "            t_new = min(t + h_abs, t_end)",
        "            h = t_new - t",
        "            h_abs = abs(h)",
        "            stages[0] = f",
        "            for s in range(1, 13):",
        *combine("s", "                "),
        *evaluate("probe", "stages[s]", "                "),
        "            theta_new[:] = probe",
        "            n5, n3 = 0.0, 0.0",
        "            for p in range(size):",
        "                scale = atol + max(abs(theta[p]), abs(theta_new[p])) * rtol",
        "                a5, a3 = 0.0, 0.0",
        "                for j in range(e5.size):",
        "                    a5 += stages[j, p] * e5[j]",
        "                    a3 += stages[j, p] * e3[j]",
        "                n5 += (a5 / scale) ** 2",
        "                n3 += (a3 / scale) ** 2",
        "            error = 0.0 if n5 == 0.0 and n3 == 0.0 else \\",
        "                h_abs * n5 / np.sqrt((n5 + 0.01 * n3) * size)",
        "            if error < 1.0:",
        f"                factor = {MAX_FACTOR!r} if error == 0.0 else \\",
        f"                    min({MAX_FACTOR!r}, {SAFETY!r} * error ** {exponent!r})",
        "                h_abs *= min(1.0, factor) if rejected else factor",
        "                break",
        f"            h_abs *= max({MIN_FACTOR!r}, {SAFETY!r} * error ** {exponent!r})",
        "            rejected = True",
        "        if row < rows and t_eval[row] <= t_new:     # dense output of the step",
        "            for s in range(13, table.shape[0]):",
        *combine("s", "                "),
        *evaluate("probe", "stages[s]", "                "),
        "            for p in range(size):",
        "                delta = theta_new[p] - theta[p]",
        "                poly[0, p] = delta",
        "                poly[1, p] = h * stages[0, p] - delta",
        "                poly[2, p] = 2 * delta - h * (stages[12, p] + stages[0, p])",
        "                for i in range(dense.shape[0]):",
        "                    acc = 0.0",
        "                    for j in range(table.shape[0]):",
        "                        acc += dense[i, j] * stages[j, p]",
        "                    poly[3 + i, p] = h * acc",
        "        while row < rows and t_eval[row] <= t_new:",
        "            x = (t_eval[row] - t) / h",
        "            for p in range(size):",
        "                y = 0.0",
        "                for i in range(7):",
        "                    y += poly[6 - i, p]",
        "                    y *= x if i % 2 == 0 else 1 - x",
        "                out[row, p] = y + theta[p]",
        *_observe("out[row]", "seen[row", loops, "            "),
        "            row += 1",
        "        theta[:] = theta_new",
        "        f[:] = stages[12]",
        "        t = t_new",
        "    state[0], state[1], state[3] = t, h_abs, row",
        "    return 1, evaluations, probe",
        ""]
    return "\n".join(lines)
