"""Tests for section 3 (Autograd) and for Part II's fused nodes of microgpt.

How to read these tests: backward() claims to know the derivative of its output with respect
to every input. We never trust that claim on its own word. Instead we *measure* the slope:
nudge one input up by a tiny h, then down by h, and look at how much the output moved,

    d f / d x_i  ~  (f(x + h e_i) - f(x - h e_i)) / (2 h)        (a central finite difference)

using plain Python floats and the math module, so the measurement shares no code with the
Value class. If the two agree to about 1e-6, the chain rule was applied correctly.
"""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702
from support import fast  # noqa: E402
import microgpt

import math
import random
import unittest

Value = microgpt.Value

H = 1e-6      # the step of the finite differences
TOL = 1e-6    # how closely a gradient must match its measurement (absolute, or relative if larger)


# --- small helpers --------------------------------------------------------------------------

def central_difference(f, xs, i, h=H):
    """The measured slope of f (a function of a list of floats) along input i."""
    up, down = list(xs), list(xs)
    up[i] += h
    down[i] -= h
    return (f(up) - f(down)) / (2 * h)


# exp, log and relu written so that one expression works on plain floats and on Values alike:
# the float version is the independent "reference", the Value version is what we test.
def exp(x):
    return x.exp() if isinstance(x, Value) else math.exp(x)


def log(x):
    return x.log() if isinstance(x, Value) else math.log(x)


def relu(x):
    return x.relu() if isinstance(x, Value) else max(0.0, x)


def graph_nodes(root):
    """Every Value reachable from root (root included)."""
    seen, stack = {}, [root]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen[id(node)] = node
            stack.extend(node._children)
    return list(seen.values())


def leaves(root):
    return [node for node in graph_nodes(root) if not node._children]


class CloseMixin:
    def assertClose(self, actual, expected, tol=TOL, msg=None):
        """|actual - expected| <= tol, measured absolutely near 0 and relatively for large numbers."""
        bound = tol * max(1.0, abs(expected))
        self.assertLessEqual(abs(actual - expected), bound,
                             msg or f"{actual!r} differs from {expected!r} by more than {bound:g}")


# --- 1. every operation against finite differences ------------------------------------------

class TestEachOperationAgainstFiniteDifferences(CloseMixin, unittest.TestCase):
    """One operation at a time. Each case is an expression f of one or two inputs; the same
    Python expression is evaluated on Values (forward + backward) and on plain floats (the
    reference value and the finite differences)."""

    def check(self, f, inputs):
        xs = [Value(x) for x in inputs]
        out = f(*xs)
        self.assertIsInstance(out, Value)
        # The forward value must be the plain-float answer ...
        self.assertClose(out.data, f(*inputs), tol=1e-12)
        out.backward()
        # ... and each input's gradient the measured slope.
        for i, x in enumerate(xs):
            measured = central_difference(lambda v: f(*v), inputs, i)
            self.assertClose(x.grad, measured, msg=f"input {i}: grad {x.grad!r}, measured {measured!r}")

    def check_cases(self, cases):
        for description, f, inputs in cases:
            with self.subTest(description):
                self.check(f, inputs)

    def test_addition_gradient_is_one_for_each_input(self):
        self.check_cases([
            ("Value + Value", lambda a, b: a + b, [1.3, -0.4]),
            ("Value + number", lambda a: a + 2.5, [1.3]),
            ("number + Value (radd)", lambda a: 2.5 + a, [1.3]),
        ])

    def test_subtraction_gradient_is_plus_one_and_minus_one(self):
        self.check_cases([
            ("Value - Value", lambda a, b: a - b, [1.3, -0.4]),
            ("Value - number", lambda a: a - 2.5, [1.3]),
            ("number - Value (rsub)", lambda a: 2.5 - a, [1.3]),
        ])

    def test_multiplication_gradient_is_the_other_factor(self):
        self.check_cases([
            ("Value * Value", lambda a, b: a * b, [1.3, -0.4]),
            ("Value * number", lambda a: a * -1.5, [1.3]),
            ("number * Value (rmul)", lambda a: -1.5 * a, [1.3]),
        ])

    def test_division_gradients_for_values_and_constants(self):
        self.check_cases([
            ("Value / Value", lambda a, b: a / b, [1.3, -0.4]),
            ("Value / number", lambda a: a / 2.5, [1.3]),
            ("number / Value (rtruediv)", lambda a: 2.5 / a, [-0.7]),
        ])

    def test_power_with_constant_exponent_follows_k_times_a_to_the_k_minus_one(self):
        self.check_cases([
            ("a ** 2", lambda a: a ** 2, [-1.3]),
            ("a ** 3", lambda a: a ** 3, [0.8]),
            ("a ** -1", lambda a: a ** -1, [-0.6]),
            ("a ** -2", lambda a: a ** -2, [1.7]),
            ("a ** 0.5", lambda a: a ** 0.5, [2.2]),
            ("a ** -0.5", lambda a: a ** -0.5, [0.9]),
            ("a ** 1.5", lambda a: a ** 1.5, [0.4]),
        ])

    def test_exp_gradient_is_exp(self):
        self.check_cases([
            ("exp(a), a > 0", lambda a: exp(a), [0.9]),
            ("exp(a), a < 0", lambda a: exp(a), [-2.1]),
        ])

    def test_log_gradient_is_one_over_a(self):
        self.check_cases([
            ("log(a), a > 1", lambda a: log(a), [3.4]),
            ("log(a), a < 1", lambda a: log(a), [0.2]),
        ])

    def test_relu_passes_gradient_when_positive_and_blocks_it_when_negative(self):
        self.check_cases([
            ("relu(a), a > 0", lambda a: relu(a), [0.7]),
            ("relu(a), a < 0", lambda a: relu(a), [-0.7]),
        ])
        # Spelled out as well: the slope is exactly 1 on the right of 0 and exactly 0 on the left.
        for x, slope in ((0.7, 1.0), (-0.7, 0.0)):
            a = Value(x)
            a.relu().backward()
            self.assertEqual(a.grad, slope)

    def test_negation_gradient_is_minus_one(self):
        self.check_cases([("-a", lambda a: -a, [1.3])])


# --- 2. and 3. compositions and reuse ---------------------------------------------------------

class TestChainRule(CloseMixin, unittest.TestCase):

    def test_composite_expression_matches_finite_differences(self):
        """Many operations mixed: the chain rule has to multiply local derivatives along every
        path from the output to each input, and add the paths up."""
        def f(a, b, c):
            d = a * b + exp(c) / (b ** 2 + 1.0)
            e = log(d * d + 0.5) - relu(a - c) * 3.0
            return e / (2.0 + c * c) + 1.5 / (a + 4.0) - (b - 0.3) ** 3 + relu(-1.0 - c)
        for inputs in ([0.7, -1.2, 0.4], [-0.3, 0.5, -2.5]):   # second one turns the relus around
            with self.subTest(inputs=inputs):
                xs = [Value(x) for x in inputs]
                out = f(*xs)
                self.assertClose(out.data, f(*inputs), tol=1e-12)
                out.backward()
                for i, x in enumerate(xs):
                    self.assertClose(x.grad, central_difference(lambda v: f(*v), inputs, i))

    def test_a_node_used_several_times_receives_the_sum_of_its_gradients(self):
        """y = x*x + x*3 + x uses x four times; by hand dy/dx = 2x + 3 + 1."""
        x = Value(1.7)
        y = x * x + x * 3 + x
        y.backward()
        self.assertClose(x.grad, 2 * 1.7 + 4, tol=1e-12)

    def test_a_shared_subexpression_passes_on_its_summed_gradient(self):
        """s = a*b feeds three terms: y = s*s + exp(s) + s. By hand,
        dy/ds = 2s + exp(s) + 1, so dy/da = (2s + exp(s) + 1) * b and dy/db = (...) * a."""
        a, b = Value(0.6), Value(-1.1)
        s = a * b
        y = s * s + s.exp() + s
        y.backward()
        sd = 0.6 * -1.1
        dy_ds = 2 * sd + math.exp(sd) + 1
        self.assertClose(s.grad, dy_ds, tol=1e-12)
        self.assertClose(a.grad, dy_ds * -1.1, tol=1e-12)
        self.assertClose(b.grad, dy_ds * 0.6, tol=1e-12)

    def test_graph_deeper_than_the_recursion_limit_backpropagates(self):
        """backward() orders the graph with an explicit stack, so depth is not limited by
        Python's recursion limit. The chain y_0 = x, y_(k+1) = 0.999 * y_k + x has the closed
        form derivative dy_N/dx = 0.999**N + (1 - 0.999**N) / 0.001 (a geometric series)."""
        n = sys.getrecursionlimit() * 3
        x = Value(0.5)
        y = x
        for _ in range(n):
            y = y * 0.999 + x
        y.backward()          # must not raise RecursionError
        r = 0.999 ** n
        self.assertClose(x.grad, r + (1 - r) / 0.001, tol=1e-9)

    def test_a_long_chain_of_additions_deeper_than_the_recursion_limit(self):
        """y = x + x + ... + x (N additions, nested N deep): dy/dx = N + 1."""
        n = sys.getrecursionlimit() * 3
        x = Value(2.0)
        y = x
        for _ in range(n):
            y = y + x
        y.backward()
        self.assertEqual(x.grad, n + 1.0)


# --- 5. fused nodes against the atomic graph and against finite differences -----------------

def reference_dot(a, b, scale=1.0):
    return [scale * sum(x * y for x, y in zip(a, b))]


def reference_linear(x, w):
    return [sum(wij * xj for wij, xj in zip(row, x)) for row in w]


def reference_rmsnorm(x):
    rms = math.sqrt(sum(xi * xi for xi in x) / len(x) + 1e-5)
    return [xi / rms for xi in x]


def reference_mlp(x, w1, w2):
    return reference_linear([max(0.0, y) for y in reference_linear(x, w1)], w2)


def reference_attention_head(q, ks, vs):
    scores = [sum(qi * ki for qi, ki in zip(q, k)) / math.sqrt(len(q)) for k in ks]
    m = max(scores)
    e = [math.exp(s - m) for s in scores]
    p = [ei / sum(e) for ei in e]
    return [sum(pt * v[j] for pt, v in zip(p, vs)) for j in range(len(q))]


def reference_cross_entropy(logits, target):
    return [math.log(sum(math.exp(l) for l in logits)) - logits[target]]


def reference_mean(xs):
    return [sum(xs) / len(xs)]


def reference_softmax(logits):
    e = [math.exp(l) for l in logits]
    return [ei / sum(e) for ei in e]


# Each fused operation: the shapes of its inputs, how to call it on Values, how to compute the
# same thing on floats (the reference above), and how to build it atomically. For most, the
# fused graph is the Part I function with FAST = True (it hands over to Part II's fast_
# version) and the atomic graph the same function with FAST = False (Part I alone); dot() has
# no Part I version, so its atomic version is the textbook sum written here.
CASES = {
    "dot": dict(shapes=[(5,), (5,)],
                fused=lambda a, b: [microgpt.dot(a, b)],
                atomic=lambda a, b: [sum(x * y for x, y in zip(a, b))],
                reference=reference_dot),
    "dot with scale": dict(shapes=[(4,), (4,)],
                           fused=lambda a, b: [microgpt.dot(a, b, 0.37)],
                           atomic=lambda a, b: [sum(x * y for x, y in zip(a, b)) * 0.37],
                           reference=lambda a, b: reference_dot(a, b, 0.37)),
    "linear": dict(shapes=[(4,), (3, 4)],
                   fused=microgpt.linear, atomic=microgpt.linear, reference=reference_linear),
    "mlp": dict(shapes=[(4,), (6, 4), (3, 6)],
                fused=microgpt.mlp, atomic=microgpt.mlp, reference=reference_mlp),
    "rmsnorm": dict(shapes=[(6,)],
                    fused=microgpt.rmsnorm, atomic=microgpt.rmsnorm, reference=reference_rmsnorm),
    "attention_head": dict(shapes=[(3,), (4, 3), (4, 3)],
                           fused=microgpt.attention_head, atomic=microgpt.attention_head,
                           reference=reference_attention_head),
    "cross_entropy": dict(shapes=[(5,)],
                          fused=lambda l: [microgpt.cross_entropy(l, 2)],
                          atomic=lambda l: [microgpt.cross_entropy(l, 2)],
                          reference=lambda l: reference_cross_entropy(l, 2)),
    "softmax": dict(shapes=[(5,)],
                    fused=microgpt.softmax, atomic=microgpt.softmax, reference=reference_softmax),
    "mean": dict(shapes=[(5,)],
                 fused=lambda xs: [microgpt.mean(xs)], atomic=lambda xs: [microgpt.mean(xs)],
                 reference=reference_mean),
}


def size(shape):
    return shape[0] if len(shape) == 1 else shape[0] * shape[1]


def unflatten(flat, shapes):
    """A flat list cut into arguments of the given shapes: (n,) a list, (r, c) a list of rows."""
    args, i = [], 0
    for shape in shapes:
        chunk = flat[i:i + size(shape)]
        i += size(shape)
        args.append(chunk if len(shape) == 1 else [chunk[r * shape[1]:(r + 1) * shape[1]]
                                                   for r in range(shape[0])])
    return args


def random_inputs(shapes, seed):
    rng = random.Random(seed)
    return [rng.uniform(-1.5, 1.5) for _ in range(sum(size(s) for s in shapes))]


def random_weights(n, seed):
    rng = random.Random(seed + 1000)
    return [rng.uniform(-1.0, 1.0) for _ in range(n)]


class TestFusedNodes(CloseMixin, unittest.TestCase):
    """A fused node computes a whole sum (or softmax) in one go and writes down its local
    derivatives by hand. Two independent checks keep it honest:
      * the atomic graph, built from +, *, exp, ... whose gradients section 1 verified, must
        give the same values and gradients (to 1e-9 relative: only rounding differs);
      * central finite differences of a plain-float reference implementation.
    Several outputs are combined into one scalar with fixed random weights, L = sum_k w_k out_k,
    so that every output's gradient path is exercised at once."""

    def run_op(self, op, flat_inputs, shapes, weights):
        """Forward op on fresh Values, backward from the weighted sum of outputs.
        Returns (output values, input gradients, number of graph nodes)."""
        xs = [Value(x) for x in flat_inputs]
        outs = op(*unflatten(xs, shapes))
        total = sum(w * o for w, o in zip(weights, outs))
        total.backward()
        return [o.data for o in outs], [x.grad for x in xs], len(graph_nodes(total))

    def check_fused_matches_atomic(self, name, seed=0):
        case = CASES[name]
        inputs = random_inputs(case["shapes"], seed)
        n_out = len(case["reference"](*unflatten(inputs, case["shapes"])))
        weights = random_weights(n_out, seed)
        with fast(True):
            f_out, f_grad, f_nodes = self.run_op(case["fused"], inputs, case["shapes"], weights)
        with fast(False):
            a_out, a_grad, a_nodes = self.run_op(case["atomic"], inputs, case["shapes"], weights)
        # The switch really changed the graph (otherwise we would compare a thing with itself).
        self.assertLess(f_nodes, a_nodes)
        self.assertEqual(len(f_out), len(a_out))
        for f, a in zip(f_out, a_out):
            self.assertLessEqual(abs(f - a), 1e-9 * max(abs(f), abs(a), 1e-300), f"value {f!r} vs {a!r}")
        for i, (f, a) in enumerate(zip(f_grad, a_grad)):
            self.assertLessEqual(abs(f - a), 1e-9 * max(abs(f), abs(a)) + 1e-15,
                                 f"input {i}: fused grad {f!r} vs atomic grad {a!r}")

    def check_fused_matches_finite_differences(self, name, seed=1):
        case = CASES[name]
        shapes, reference = case["shapes"], case["reference"]
        inputs = random_inputs(shapes, seed)
        n_out = len(reference(*unflatten(inputs, shapes)))
        weights = random_weights(n_out, seed)

        def objective(flat):
            return sum(w * o for w, o in zip(weights, reference(*unflatten(flat, shapes))))

        with fast(True):
            outs, grads, _ = self.run_op(case["fused"], inputs, shapes, weights)
        for o, r in zip(outs, reference(*unflatten(inputs, shapes))):
            self.assertClose(o, r, tol=1e-12)
        for i, g in enumerate(grads):
            measured = central_difference(objective, inputs, i)
            self.assertClose(g, measured, msg=f"input {i}: grad {g!r}, measured {measured!r}")

    def test_fused_dot_matches_the_atomic_sum_of_products(self):
        self.check_fused_matches_atomic("dot")
        self.check_fused_matches_atomic("dot with scale")

    def test_fused_linear_matches_the_atomic_graph(self):
        self.check_fused_matches_atomic("linear")

    def test_fused_mlp_matches_the_atomic_graph(self):
        self.check_fused_matches_atomic("mlp")

    def test_fused_mlp_matches_finite_differences(self):
        self.check_fused_matches_finite_differences("mlp")

    def test_mlp_cases_have_hidden_units_on_both_sides_of_zero(self):
        # so that the two checks above cover both the units that are on and those that are off
        shapes = CASES["mlp"]["shapes"]
        for seed in (0, 1):
            x, w1, _ = unflatten(random_inputs(shapes, seed), shapes)
            pre = reference_linear(x, w1)
            self.assertTrue(any(y > 1e-3 for y in pre) and any(y < -1e-3 for y in pre), pre)

    def test_a_hidden_unit_the_relu_switches_off_is_left_out_of_the_graph(self):
        x = [Value(1.0), Value(2.0)]
        w1 = [[Value(0.5), Value(0.25)], [Value(-0.5), Value(0.1)]]    # unit 0: 1.0, unit 1: -0.3
        w2 = [[Value(3.0), Value(7.0)]]
        with fast(True):
            (out,) = microgpt.mlp(x, w1, w2)
        self.assertEqual(out.data, 3.0)
        # out's children: w2's weight for unit 0, and unit 0 itself, whose children are its
        # weights and x. Unit 1 and w2's weight for it are nowhere: their gradient would be 0.
        self.assertEqual(out._children[0], w2[0][0])
        self.assertEqual(len(out._children), 2)
        self.assertEqual(out._children[1]._children, w1[0] + x)
        out.backward()
        self.assertEqual([w.grad for w in w2[0]], [1.0, 0.0])
        self.assertEqual([w.grad for w in w1[1]], [0.0, 0.0])

    def test_an_mlp_with_every_hidden_unit_off_outputs_zeros(self):
        x = [Value(1.0), Value(2.0)]
        w1 = [[Value(-0.5), Value(0.1)], [Value(-1.0), Value(0.0)]]
        w2 = [[Value(3.0), Value(7.0)], [Value(1.0), Value(1.0)]]
        for flag in (True, False):
            with fast(flag):
                out = microgpt.mlp(x, w1, w2)
            self.assertEqual([o.data for o in out], [0.0, 0.0], f"FAST = {flag}")

    def test_fused_rmsnorm_matches_the_atomic_graph(self):
        self.check_fused_matches_atomic("rmsnorm")

    def test_fused_attention_head_matches_the_atomic_graph(self):
        self.check_fused_matches_atomic("attention_head")

    def test_fused_cross_entropy_matches_the_atomic_graph(self):
        self.check_fused_matches_atomic("cross_entropy")

    def test_fused_softmax_matches_the_atomic_graph(self):
        self.check_fused_matches_atomic("softmax")

    def test_fused_softmax_matches_finite_differences(self):
        self.check_fused_matches_finite_differences("softmax")

    def test_fused_mean_matches_the_atomic_graph(self):
        self.check_fused_matches_atomic("mean")

    def test_fused_dot_matches_finite_differences(self):
        self.check_fused_matches_finite_differences("dot")
        self.check_fused_matches_finite_differences("dot with scale")

    def test_fused_linear_matches_finite_differences(self):
        self.check_fused_matches_finite_differences("linear")

    def test_fused_rmsnorm_matches_finite_differences(self):
        self.check_fused_matches_finite_differences("rmsnorm")

    def test_fused_attention_head_matches_finite_differences(self):
        self.check_fused_matches_finite_differences("attention_head")

    def test_fused_cross_entropy_matches_finite_differences(self):
        self.check_fused_matches_finite_differences("cross_entropy")

    def test_fused_mean_matches_finite_differences(self):
        self.check_fused_matches_finite_differences("mean")

    def test_fused_dot_of_a_vector_with_itself_gives_twice_the_vector(self):
        """The same Value on both sides is two children of one node; their gradients add up:
        d/dx_i sum_j x_j**2 = 2 x_i."""
        xs = [Value(x) for x in (0.3, -1.2, 2.0)]
        microgpt.dot(xs, xs).backward()
        for x in xs:
            self.assertClose(x.grad, 2 * x.data, tol=1e-15)

    def test_fused_cross_entropy_survives_a_probability_that_underflows(self):
        """logits [0, -800], target 1: p[1] = exp(-800) is 0.0 in floating point, but the loss
        is computed as logsumexp - logit = 800 + log(1 + exp(-800)) = 800, with gradient
        softmax - onehot = [1, -1] (to rounding)."""
        with fast(True):
            logits = [Value(0.0), Value(-800.0)]
            loss = microgpt.cross_entropy(logits, 1)
            loss.backward()
        self.assertClose(loss.data, 800.0, tol=1e-15)
        self.assertClose(logits[0].grad, 1.0, tol=1e-15)
        self.assertClose(logits[1].grad, -1.0, tol=1e-15)


# --- 6. constants are not wrapped in nodes ----------------------------------------------------

class TestConstants(unittest.TestCase):
    """A plain number combined with a Value is folded into the local derivative instead of
    getting a Value of its own: fewer nodes, less work for backward(). (A speed choice
    documented in section 3.)"""

    def test_adding_a_constant_makes_a_node_with_one_child(self):
        x = Value(1.0)
        y = x + 2.0
        self.assertEqual(len(y._children), 1)
        self.assertIs(y._children[0], x)

    def test_no_constant_becomes_a_leaf_of_the_graph(self):
        """For every mixed Value/number operation the only leaf of the graph is x itself."""
        x = Value(1.5)
        expressions = {
            "x + 2": x + 2.0, "2 + x": 2.0 + x, "x - 2": x - 2.0, "2 - x": 2.0 - x,
            "x * 2": x * 2.0, "2 * x": 2.0 * x, "x / 2": x / 2.0, "2 / x": 2.0 / x,
            "x ** 2": x ** 2, "-x": -x,
        }
        for description, y in expressions.items():
            with self.subTest(description):
                found = leaves(y)
                self.assertEqual(len(found), 1)
                self.assertIs(found[0], x)


if __name__ == "__main__":
    unittest.main()
