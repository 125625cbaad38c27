"""Tests for the model, the training loop, sampling, checkpoints and the data helpers of microgpt.

The whole-model checks use a tiny configuration (a vocabulary of a few characters, a context
of 4 to 5 tokens, a width of 4 to 6) so that each one runs in milliseconds in plain Python.
Every expected number is computed independently here: by finite differences, by a formula
written out in the test, or by a second, deliberately simple implementation of the model.
"""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702
from support import fast  # noqa: E402
import microgpt

import json
import math
import random
import tempfile
import unittest

Value = microgpt.Value

KINDS = ("float", "fused", "atomic")   # plain floats, Values with fused nodes, Values atomic

CHARS = ["a", "b", "c"]          # vocabulary of the tiny models: a b c and BOS (id 3)
BOS = len(CHARS)
VOCAB = len(CHARS) + 1


def tiny_config(**changes):
    settings = dict(n_layer=1, n_embd=4, n_head=2, block_size=4)
    settings.update(changes)
    return microgpt.Config(**settings)


def fresh_params(config, seed=0, vocab_size=VOCAB):
    """Parameters with all gradients at 0; the same seed always gives the same numbers."""
    return microgpt.init_params(config, vocab_size, random.Random(seed))


def close(a, b, rel, abs_=0.0):
    return abs(a - b) <= max(rel * max(abs(a), abs(b)), abs_)


# --- 1. and 2. the whole model's gradient ------------------------------------------------------

class TestWholeModelGradient(unittest.TestCase):

    def check_against_finite_differences(self, fused_flag):
        """Backward gives d loss / d p for every parameter p at once. To check it we measure the
        slope for a sample of parameters: move p.data up by h, recompute the loss, move it down
        by h, recompute, and divide the change by 2h. The sample takes one parameter from
        every matrix (so no part of the model is skipped) plus random others, 30 in all."""
        # A larger initial spread than the default makes the attention and the ReLUs do real
        # work, so the gradients are far from trivial.
        config = tiny_config(init_std=0.5)
        tokens = [BOS, 0, 1, 2, 1, BOS]                     # 5 > block_size: cut to 4 predictions
        h = 1e-6
        with fast(fused_flag):
            params = fresh_params(config, seed=1)
            loss = microgpt.document_loss(tokens, params, config)
            loss.backward()

            rng = random.Random(2)
            sample = [rng.choice(rng.choice(matrix)) for matrix in params.values()]
            flat = microgpt.flatten(params)
            sample += rng.sample(flat, 30 - len(sample))

            def loss_now():
                return microgpt.document_loss(tokens, params, config).data

            for p in sample:
                original = p.data
                p.data = original + h
                up = loss_now()
                p.data = original - h
                down = loss_now()
                p.data = original
                measured = (up - down) / (2 * h)
                self.assertLessEqual(abs(p.grad - measured), 1e-7 + 1e-5 * abs(measured),
                                     f"grad {p.grad!r}, measured {measured!r}")
        # The check is not vacuous: the sampled gradients are clearly non-zero.
        self.assertGreater(max(abs(p.grad) for p in sample), 1e-3)

    def test_fused_model_gradient_matches_finite_differences(self):
        self.check_against_finite_differences(True)

    def test_atomic_model_gradient_matches_finite_differences(self):
        self.check_against_finite_differences(False)

    def test_a_few_training_steps_give_the_same_losses_gradients_and_weights_with_fast_on_and_off(self):
        """Four Adam steps on batches of two documents, once with Part II (FAST = True) and
        once with Part I alone: every step's loss, every parameter's gradient at every step,
        and the final weights agree up to rounding (1e-9 relative). The steps are done by
        hand from train()'s own pieces (add_gradient per document, then adam_update) so the
        gradients can be read before Adam resets them; train() itself must give the same."""
        config = tiny_config(n_layer=2, init_std=0.5)
        docs = [[BOS, 0, 1, 2, BOS], [BOS, 2, 2, BOS], [BOS, 1, 0, 0, 2, 1, BOS]]
        batch_for_step = lambda step: [docs[step % 3], docs[(step + 1) % 3]]
        steps = 4
        runs = {}
        for flag in (True, False):
            with fast(flag):
                params = fresh_params(config, seed=3)
                flat = microgpt.flatten(params)
                m, v = [0.0] * len(flat), [0.0] * len(flat)
                losses, grads = [], []
                for step in range(steps):
                    batch = batch_for_step(step)
                    losses.append(sum(microgpt.add_gradient(t, params, config, 1 / len(batch))
                                      for t in batch) / len(batch))
                    grads.append([p.grad for p in flat])
                    microgpt.adam_update(flat, m, v, step, steps, config)
                by_train = fresh_params(config, seed=3)
                train_losses = list(microgpt.train(by_train, config, batch_for_step, steps))
                self.assertEqual(train_losses, losses)
                self.assertEqual([p.data for p in microgpt.flatten(by_train)], [p.data for p in flat])
                runs[flag] = (losses, grads, [p.data for p in flat])
        (loss_f, grads_f, weights_f), (loss_p, grads_p, weights_p) = runs[True], runs[False]
        for step in range(steps):
            self.assertTrue(close(loss_f[step], loss_p[step], 1e-9), f"step {step}: {loss_f[step]!r} vs {loss_p[step]!r}")
            for i, (f, p) in enumerate(zip(grads_f[step], grads_p[step])):
                self.assertTrue(close(f, p, 1e-9, 1e-15), f"step {step}, parameter {i}: fast {f!r} vs plain {p!r}")
        for i, (f, p) in enumerate(zip(weights_f, weights_p)):
            self.assertTrue(close(f, p, 1e-9, 1e-15), f"parameter {i} after training: fast {f!r} vs plain {p!r}")
        self.assertGreater(max(abs(g) for g in grads_f[0]), 1e-3)           # not vacuous
        self.assertNotEqual(loss_f[0], loss_f[-1])

    def test_adding_up_each_documents_gradient_equals_the_gradient_of_the_batch_mean(self):
        """train() frees each document's graph before building the next (so memory holds one
        document's graph): add_gradient adds 1/B of each document's gradient to p.grad. That
        must equal backward() through one graph of the whole batch's mean loss."""
        config = tiny_config(init_std=0.5)
        batch = [[BOS, 0, 1, 2, BOS], [BOS, 2, 2, BOS], [BOS, 1, BOS]]
        for flag in (True, False):
            with self.subTest(fast=flag), fast(flag):
                one_graph = fresh_params(config, seed=6)
                mean_loss = sum(microgpt.document_loss(t, one_graph, config) for t in batch) / len(batch)
                mean_loss.backward()
                per_document = fresh_params(config, seed=6)
                total = sum(microgpt.add_gradient(t, per_document, config, 1 / len(batch)) for t in batch)
                self.assertTrue(close(total / len(batch), mean_loss.data, 1e-12))
                for a, b in zip(microgpt.flatten(one_graph), microgpt.flatten(per_document)):
                    self.assertTrue(close(a.grad, b.grad, 1e-9, 1e-15), f"{a.grad!r} vs {b.grad!r}")


# --- 3. plain floats ---------------------------------------------------------------------------

class TestPlainFloatForward(unittest.TestCase):

    def test_plain_float_forward_gives_the_same_logits_as_the_value_forward(self):
        """Sampling runs the model on plain floats (weights_of) for speed; it must compute
        exactly what the Value graph computes."""
        config = tiny_config(n_layer=2, init_std=0.5)
        tokens = [BOS, 1, 0, 2]
        params = fresh_params(config, seed=4)
        from_floats = microgpt.logits_at_every_position(tokens, microgpt.weights_of(params), config)
        for flag in (True, False):
            with self.subTest(fast=flag), fast(flag):
                from_values = microgpt.logits_at_every_position(tokens, params, config)
                for row_f, row_v in zip(from_floats, from_values):
                    for f, v in zip(row_f, row_v):
                        self.assertIsInstance(f, float)
                        self.assertLessEqual(abs(f - v.data), 1e-12)


# --- 4. softmax and rmsnorm --------------------------------------------------------------------

def apply_as(op, xs, kind):
    """op applied to xs as plain floats, or as Values with the fused or the atomic graph;
    returns the output numbers."""
    if kind == "float":
        return op(list(xs))
    with fast(kind == "fused"):
        return [y.data for y in op([Value(x) for x in xs])]


class TestSoftmax(unittest.TestCase):
    """softmax(l)[i] = exp(l[i]) / sum_j exp(l[j]). Each property is checked for plain floats
    and for Values (fused and atomic)."""

    LOGITS = [0.3, -1.2, 2.5, 0.9, -0.4]

    def softmax_data(self, logits, kind):
        return apply_as(microgpt.softmax, logits, kind)

    def test_softmax_is_positive_and_sums_to_one(self):
        for kind in KINDS:
            with self.subTest(kind=kind):
                p = self.softmax_data(self.LOGITS, kind)
                self.assertTrue(all(x > 0 for x in p))
                self.assertAlmostEqual(sum(p), 1.0, delta=1e-12)

    def test_softmax_matches_its_definition(self):
        e = [math.exp(l) for l in self.LOGITS]
        expected = [x / sum(e) for x in e]
        for kind in KINDS:
            with self.subTest(kind=kind):
                for got, want in zip(self.softmax_data(self.LOGITS, kind), expected):
                    self.assertAlmostEqual(got, want, delta=1e-12)

    def test_softmax_ignores_a_constant_added_to_every_logit(self):
        for kind in KINDS:
            with self.subTest(kind=kind):
                base = self.softmax_data(self.LOGITS, kind)
                for c in (-50.0, 7.0, 300.0):
                    shifted = self.softmax_data([l + c for l in self.LOGITS], kind)
                    for a, b in zip(base, shifted):
                        self.assertAlmostEqual(a, b, delta=1e-12)

    def test_softmax_keeps_the_order_of_the_logits(self):
        order = sorted(range(len(self.LOGITS)), key=lambda i: self.LOGITS[i])
        for kind in KINDS:
            with self.subTest(kind=kind):
                p = self.softmax_data(self.LOGITS, kind)
                self.assertEqual(sorted(range(len(p)), key=lambda i: p[i]), order)

    def test_softmax_of_huge_logits_does_not_overflow(self):
        """exp(1000) overflows a float, but only differences of logits matter:
        softmax([1000, 999]) = [1, e**-1] / (1 + e**-1)."""
        expected = [1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))]
        for kind in KINDS:
            with self.subTest(kind=kind):
                for got, want in zip(self.softmax_data([1000.0, 999.0], kind), expected):
                    self.assertAlmostEqual(got, want, delta=1e-12)


class TestRMSNorm(unittest.TestCase):
    """rmsnorm(x) = x / sqrt(mean(x**2) + 1e-5): the output's mean square is
    m / (m + 1e-5) where m is the input's, i.e. 1 up to the small epsilon."""

    X = [0.5, -1.3, 2.2, 0.1, -0.7, 1.9]

    def rmsnorm_data(self, x, kind):
        return apply_as(microgpt.rmsnorm, x, kind)

    def test_rmsnorm_output_has_mean_square_one_up_to_epsilon(self):
        m = sum(v * v for v in self.X) / len(self.X)
        for kind in KINDS:
            with self.subTest(kind=kind):
                y = self.rmsnorm_data(self.X, kind)
                ms = sum(v * v for v in y) / len(y)
                self.assertAlmostEqual(ms, m / (m + 1e-5), delta=1e-12)   # the exact effect of eps
                self.assertAlmostEqual(ms, 1.0, delta=1e-4)

    def test_rmsnorm_ignores_a_positive_scale_of_its_input(self):
        """rmsnorm(c * x) = rmsnorm(x) for c > 0, except for the eps term, whose effect is of
        relative size eps / mean(x**2), at most 1e-5 / 0.09 here."""
        for kind in KINDS:
            with self.subTest(kind=kind):
                base = self.rmsnorm_data(self.X, kind)
                for c in (0.3, 2.0, 1000.0):
                    scaled = self.rmsnorm_data([c * v for v in self.X], kind)
                    for a, b in zip(base, scaled):
                        self.assertAlmostEqual(a, b, delta=3e-4)


# --- 5. and 6. causality and the key/value cache -------------------------------------------------

def matvec(w, x):
    return [sum(wij * xj for wij, xj in zip(row, x)) for row in w]


def reference_rmsnorm(x):
    return [v / math.sqrt(sum(u * u for u in x) / len(x) + 1e-5) for v in x]


def reference_softmax(scores):
    m = max(scores)
    e = [math.exp(s - m) for s in scores]
    return [v / sum(e) for v in e]


def reference_forward(tokens, W, config):
    """The GPT written the slow, obvious way: no cache. Every layer is computed for all
    positions of `tokens` at once, and attention builds the full T x T table of scores,
    masking (with -inf) every position later than the one reading. Returns [T][vocab] logits."""
    T, n_head = len(tokens), config.n_head
    hd = config.n_embd // n_head
    add = lambda a, b: [u + v for u, v in zip(a, b)]
    x = [reference_rmsnorm(add(W["wte"][tok], W["wpe"][pos])) for pos, tok in enumerate(tokens)]
    for i in range(config.n_layer):
        a = [reference_rmsnorm(xt) for xt in x]
        Q = [matvec(W[f"layer{i}.attn_wq"], at) for at in a]
        K = [matvec(W[f"layer{i}.attn_wk"], at) for at in a]
        V = [matvec(W[f"layer{i}.attn_wv"], at) for at in a]
        attended = [[] for _ in range(T)]
        for h in range(n_head):
            lo, hi = h * hd, (h + 1) * hd
            for t in range(T):
                scores = [sum(q * k for q, k in zip(Q[t][lo:hi], K[s][lo:hi])) / math.sqrt(hd)
                          if s <= t else -math.inf for s in range(T)]     # the causal mask
                w = reference_softmax(scores)
                attended[t] += [sum(w[s] * V[s][j] for s in range(T)) for j in range(lo, hi)]
        x = [add(xt, matvec(W[f"layer{i}.attn_wo"], at)) for xt, at in zip(x, attended)]
        hidden = [[max(0.0, v) for v in matvec(W[f"layer{i}.mlp_fc1"], reference_rmsnorm(xt))] for xt in x]
        x = [add(xt, matvec(W[f"layer{i}.mlp_fc2"], ht)) for xt, ht in zip(x, hidden)]
    return [matvec(W["lm_head"], xt) for xt in x]


class TestAttention(unittest.TestCase):

    def setUp(self):
        self.config = tiny_config(n_layer=2, n_embd=6, n_head=3, block_size=5, init_std=0.5)
        self.weights = microgpt.weights_of(fresh_params(self.config, seed=5))

    def test_attention_at_a_position_ignores_later_tokens(self):
        """Change the token at position 3: the logits at positions 0..2 stay bit for bit the
        same (they never see it), those from position 3 on change."""
        a = [BOS, 0, 1, 2, 0]
        b = [BOS, 0, 1, 0, 1]
        la = microgpt.logits_at_every_position(a, self.weights, self.config)
        lb = microgpt.logits_at_every_position(b, self.weights, self.config)
        for pos in range(3):
            self.assertEqual(la[pos], lb[pos])
        for pos in range(3, 5):
            self.assertNotEqual(la[pos], lb[pos])

    def test_kv_cached_logits_equal_a_cache_free_recomputation(self):
        """gpt() reads one token at a time and keeps the keys and values of earlier positions
        in a cache. The reference recomputes, for each prefix tokens[:t+1], every layer at
        every position from scratch; its last row must equal the cached logits at t."""
        tokens = [BOS, 2, 0, 0, 1]
        cached = microgpt.logits_at_every_position(tokens, self.weights, self.config)
        for t in range(len(tokens)):
            expected = reference_forward(tokens[:t + 1], self.weights, self.config)[-1]
            for got, want in zip(cached[t], expected):
                self.assertLessEqual(abs(got - want), 1e-9, f"position {t}")
        # And the reference sees the whole sequence causally too: one pass, same numbers.
        for got_row, want_row in zip(cached, reference_forward(tokens, self.weights, self.config)):
            for got, want in zip(got_row, want_row):
                self.assertLessEqual(abs(got - want), 1e-9)

    def test_a_steps_loss_is_the_mean_over_the_batch_of_the_mean_next_token_cross_entropy(self):
        """The training loss, from its definition: for each sequence, -log softmax(logits at t)
        [tokens[t+1]] averaged over the predicted positions (at most block_size of them, so
        the 7-token sequence below is cut to 5 predictions), then averaged over the batch.
        train() reports it for the weights before the step's update."""
        batch = [[BOS, 0, 1, BOS], [BOS, 2, 2, 1, 0, 1, BOS]]
        per_sequence = []
        for tokens in batch:
            n = min(self.config.block_size, len(tokens) - 1)
            logits = reference_forward(tokens[:n], self.weights, self.config)
            per_sequence.append(sum(-math.log(reference_softmax(logits[t])[tokens[t + 1]])
                                    for t in range(n)) / n)
        expected = sum(per_sequence) / len(per_sequence)
        for flag in (True, False):
            with self.subTest(fast=flag), fast(flag):
                params = {name: [[Value(w) for w in row] for row in m] for name, m in self.weights.items()}
                first_loss = next(microgpt.train(params, self.config, lambda step: batch, 1))
                self.assertLessEqual(abs(first_loss - expected), 1e-9)


# --- 7. tokenizer ------------------------------------------------------------------------------

class TestTokenizer(unittest.TestCase):

    def test_build_vocab_is_the_sorted_distinct_characters(self):
        text = "hello world\nzebra"
        chars = microgpt.build_vocab(text)
        self.assertEqual(chars, sorted(set(text)))
        self.assertEqual(len(chars), len(set(chars)))
        self.assertTrue(all(chars[i] < chars[i + 1] for i in range(len(chars) - 1)))

    def test_encode_then_decode_gives_back_the_text(self):
        text = "the cat sat on the mat"
        chars = microgpt.build_vocab(text)
        ids = microgpt.encode(text, chars)
        self.assertEqual([chars[i] for i in ids], list(text))   # id i stands for chars[i]
        self.assertEqual(microgpt.decode(ids, chars), text)

    def test_encode_document_wraps_the_ids_in_bos_which_is_len_chars(self):
        chars = microgpt.build_vocab("emma")
        bos = len(chars)
        self.assertEqual(microgpt.encode_document("emma", chars),
                         [bos] + microgpt.encode("emma", chars) + [bos])
        self.assertEqual(microgpt.decode(microgpt.encode_document("emma", chars), chars), "emma")

    def test_encode_for_raises_bad_input_naming_what_and_the_unknown_character(self):
        chars = microgpt.build_vocab("abc")
        with self.assertRaises(microgpt.BadInput) as caught:
            microgpt.encode_for("--prompt", "abz", chars)
        self.assertIn(repr("z"), str(caught.exception))
        self.assertIn("--prompt", str(caught.exception))


# --- 8. parameters -------------------------------------------------------------------------------

class TestParameters(unittest.TestCase):

    def test_default_config_with_27_tokens_has_4192_parameters_with_the_documented_shapes(self):
        config = microgpt.Config()
        n, v = config.n_embd, 27
        expected = {"wte": (v, n), "wpe": (config.block_size, n), "lm_head": (v, n)}
        for i in range(config.n_layer):
            for name in ("attn_wq", "attn_wk", "attn_wv", "attn_wo"):
                expected[f"layer{i}.{name}"] = (n, n)
            expected[f"layer{i}.mlp_fc1"] = (4 * n, n)
            expected[f"layer{i}.mlp_fc2"] = (n, 4 * n)
        params = fresh_params(config, seed=6, vocab_size=v)
        actual = {name: (len(m), len(m[0])) for name, m in params.items()}
        self.assertEqual(actual, expected)
        self.assertEqual(microgpt.param_shapes(config, v), expected)
        for name, m in params.items():
            self.assertTrue(all(len(row) == expected[name][1] for row in m), name)
        # 2 * 27 * 16 (wte, lm_head) + 16 * 16 (wpe) + 4 * 16 * 16 (attention) + 2 * 64 * 16 (MLP)
        self.assertEqual(2 * v * n + config.block_size * n + 12 * n * n, 4192)
        self.assertEqual(len(microgpt.flatten(params)), 4192)
        self.assertEqual(len({id(p) for p in microgpt.flatten(params)}), 4192)   # all distinct

    def test_initial_weights_are_gaussian_with_std_close_to_0_08(self):
        """With 4192 draws the sample std is within a few percent of the true 0.08 and the
        mean within about 0.005 of 0 (several standard errors): loose, but catches a wrong
        scale or a missing random draw."""
        params = fresh_params(microgpt.Config(), seed=7, vocab_size=27)
        xs = [p.data for p in microgpt.flatten(params)]
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
        self.assertLess(abs(mean), 0.005)
        self.assertGreater(std, 0.072)
        self.assertLess(std, 0.088)
        self.assertTrue(all(p.grad == 0.0 for p in microgpt.flatten(params)))

    def trained_from(self, value, steps=5):
        """Parameters that all started at `value`, after `steps` Adam steps on three names
        (Part I alone), and the losses."""
        docs = ["abc", "bca", "cab"]
        config = tiny_config(n_embd=4)
        params = fresh_params(config)
        for p in microgpt.flatten(params):
            p.data = value
        with fast(False):
            losses = list(microgpt.train(params, config, microgpt.document_batches(
                microgpt.encode_documents(docs, CHARS), 1), steps))
        return params, losses

    def test_weights_that_start_equal_never_come_apart_within_a_row(self):
        # Section 4: each vector's numbers stay equal, so the model has width 1. Each row of
        # every matrix stays one number; each matrix inside the blocks stays one number.
        params, _ = self.trained_from(0.08)
        for name, matrix in params.items():
            rows = [{p.data for p in row} for row in matrix]
            self.assertTrue(all(len(row) == 1 for row in rows), name)
            if name.startswith("layer"):
                self.assertEqual(len(set.union(*rows)), 1, name)
        self.assertGreater(len({row[0].data for row in params["lm_head"]}), 1)   # the rows do move

    def test_weights_that_start_at_zero_never_move_and_the_loss_stays_ln_vocab(self):
        params, losses = self.trained_from(0.0)
        self.assertEqual({p.data for p in microgpt.flatten(params)}, {0.0})
        for loss in losses:
            self.assertAlmostEqual(loss, math.log(VOCAB), places=12)


# --- 9. and 10. training --------------------------------------------------------------------------

class TestAdam(unittest.TestCase):

    def test_adam_update_follows_the_written_out_formula_and_resets_gradients(self):
        """Adam with linear learning-rate decay, written out:
            lr_t = lr * (1 - t / T)
            m = 0.85 m + 0.15 g          v = 0.99 v + 0.01 g**2
            p -= lr_t * (m / (1 - 0.85**(t+1))) / (sqrt(v / (1 - 0.99**(t+1))) + 1e-8)
        checked for step 0 and then for a later step t = 7 (continuing m and v)."""
        config = microgpt.Config(lr=0.02)
        T = 20
        start = [0.5, -0.3, 1.2, 0.0]
        params = [Value(x) for x in start]
        m, v = [0.0] * 4, [0.0] * 4
        expected, em, ev = list(start), [0.0] * 4, [0.0] * 4
        for t, grads in ((0, [0.1, -2.0, 0.0, 3e-4]), (7, [-0.4, 0.5, 1.5, -1e-3])):
            for p, g in zip(params, grads):
                p.grad = g
            microgpt.adam_update(params, m, v, t, T, config)
            lr_t = 0.02 * (1 - t / T)
            for i, g in enumerate(grads):
                em[i] = 0.85 * em[i] + 0.15 * g
                ev[i] = 0.99 * ev[i] + 0.01 * g * g
                m_hat = em[i] / (1 - 0.85 ** (t + 1))
                v_hat = ev[i] / (1 - 0.99 ** (t + 1))
                expected[i] -= lr_t * m_hat / (math.sqrt(v_hat) + 1e-8)
            with self.subTest(step=t):
                for i, p in enumerate(params):
                    self.assertTrue(close(p.data, expected[i], 1e-12, 1e-15), f"{p.data!r} vs {expected[i]!r}")
                    self.assertTrue(close(m[i], em[i], 1e-12, 1e-300))
                    self.assertTrue(close(v[i], ev[i], 1e-12, 1e-300))
                    self.assertEqual(p.grad, 0.0)
            if t == 0:
                # A consequence worth seeing: at step 0 the bias-corrected m and v are g and g**2,
                # so every parameter moves by lr * g / (|g| + eps), i.e. by lr against the sign
                # of its gradient, whatever the gradient's size (and not at all if it is 0).
                for p, x, g in zip(params, start, grads):
                    self.assertAlmostEqual(x - p.data, 0.02 * (g > 0) - 0.02 * (g < 0), delta=1e-6)


class TestTraining(unittest.TestCase):

    def test_training_on_a_few_short_documents_lowers_the_loss(self):
        """A model big enough to memorise four 3-letter names: after 150 Adam steps the mean of
        the last 10 losses is well under 60% of the mean of the first 10. (ln 4 = 1.39 is the
        uniform guess; the best possible is about ln(4)/4 = 0.35, because the first letter of
        a name cannot be predicted from BOS alone. Memorising lies far below the 60% mark.)"""
        docs = ["abc", "bca", "cab", "ccb"]
        chars = microgpt.build_vocab("".join(docs))
        config = tiny_config(n_embd=8, block_size=8)
        params = fresh_params(config, seed=0, vocab_size=len(chars) + 1)
        with fast(True):
            losses = list(microgpt.train(params, config, microgpt.document_batches(
                microgpt.encode_documents(docs, chars), 1), 150))
        self.assertEqual(len(losses), 150)
        first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
        self.assertLess(last, 0.6 * first, f"first {first:.3f}, last {last:.3f}")
        self.assertTrue(all(p.grad == 0.0 for p in microgpt.flatten(params)))

    def test_document_batches_cycle_through_the_documents_in_order(self):
        docs = ["ab", "c", "ba"]
        seqs = [microgpt.encode_document(d, CHARS) for d in docs]
        batches = microgpt.document_batches(seqs, 2)
        self.assertEqual(batches(0), [seqs[0], seqs[1]])
        self.assertEqual(batches(1), [seqs[2], seqs[0]])
        self.assertEqual(microgpt.document_batches(seqs, "all")(5), seqs)

    def test_encode_documents_gives_what_encode_document_gives_for_each_document(self):
        docs = ["ab", "c", "ba", "cab"]
        self.assertEqual(microgpt.encode_documents(docs, CHARS),
                         [microgpt.encode_document(d, CHARS) for d in docs])


# --- 11. sampling ---------------------------------------------------------------------------------

class TestSampling(unittest.TestCase):

    def setUp(self):
        self.config = tiny_config(block_size=8, init_std=0.5)
        self.weights = microgpt.weights_of(fresh_params(self.config, seed=8))

    def samples(self, seed, n=8, prompt=""):
        rng = random.Random(seed)
        return [microgpt.sample_document(self.weights, self.config, CHARS, rng, 1.0, prompt) for _ in range(n)]

    def test_the_same_seed_gives_the_same_samples(self):
        self.assertEqual(self.samples(11), self.samples(11))

    def test_different_seeds_give_different_samples(self):
        """Not guaranteed for every pair of seeds, but with 8 random samples each from an
        untrained model at temperature 1, three seeds that all agree would be a bug."""
        a, b, c = self.samples(11), self.samples(12), self.samples(13)
        self.assertFalse(a == b == c)

    def test_prompted_samples_start_with_the_prompt(self):
        for s in self.samples(14, prompt="ca"):
            self.assertTrue(s.startswith("ca"), s)
            self.assertTrue(set(s) <= set(CHARS))
            self.assertLessEqual(len(s), self.config.block_size)

    def test_a_tiny_temperature_picks_the_most_likely_token(self):
        # Subtracting the largest logit before dividing keeps 1e-300 from overflowing.
        rng = random.Random(0)
        for logits in ([0.0, 2.0, 1.0], [5.0, -3.0, 4.999]):
            best = max(range(len(logits)), key=lambda t: logits[t])
            self.assertEqual({microgpt.sample_token(logits, 1e-300, rng) for _ in range(20)}, {best})

    def test_a_model_whose_scores_overflow_is_refused_before_sampling(self):
        """MLP weights 1e200 times too large make the scores overflow to inf or nan (1e200
        squared is past the largest float): check_finite_scores (Part VI) refuses such a model
        with BadInput; the ordinary model passes."""
        microgpt.check_finite_scores(self.weights, self.config)
        huge = {name: [[w * (1e200 if "mlp" in name else 1.0) for w in row] for row in m]
                for name, m in self.weights.items()}
        with self.assertRaises(microgpt.BadInput):
            microgpt.check_finite_scores(huge, self.config)


# --- 12. checkpoints -------------------------------------------------------------------------------

class TestCheckpoint(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.config = tiny_config(n_layer=2, block_size=6, init_std=0.5)
        self.params = fresh_params(self.config, seed=9)

    def test_checkpoint_round_trip_keeps_weights_and_samples_exactly(self):
        path = os.path.join(self.dir.name, "model.json")
        microgpt.save_checkpoint(path, self.params, self.config, CHARS, "docs")
        config, chars, params, mode, _ = microgpt.load_checkpoint(path)
        self.assertEqual(chars, CHARS)
        self.assertEqual(mode, "docs")
        for key in microgpt.MODEL_SHAPE:
            self.assertEqual(getattr(config, key), getattr(self.config, key))
        self.assertEqual(microgpt.weights_of(params), microgpt.weights_of(self.params))   # exact floats

        def samples(weights, cfg):
            rng = random.Random(21)
            return [microgpt.sample_document(weights, cfg, CHARS, rng, 1.0) for _ in range(5)]
        self.assertEqual(samples(microgpt.weights_of(params), config),
                         samples(microgpt.weights_of(self.params), self.config))

    def test_checkpoint_file_is_json_with_the_documented_keys(self):
        path = os.path.join(self.dir.name, "model.json")
        microgpt.save_checkpoint(path, self.params, self.config, CHARS, "docs")
        with open(path, encoding="utf-8") as f:
            ckpt = json.load(f)
        self.assertTrue({"format", "version", "config", "chars", "state_dict"} <= set(ckpt))
        self.assertEqual(ckpt["format"], "microgpt")
        self.assertEqual(ckpt["version"], 1)
        self.assertEqual(ckpt["chars"], CHARS)
        self.assertEqual(ckpt["config"], {k: getattr(self.config, k) for k in microgpt.MODEL_SHAPE})

    def test_save_leaves_no_temporary_file_behind(self):
        path = os.path.join(self.dir.name, "model.json")
        microgpt.save_checkpoint(path, self.params, self.config, CHARS, "docs")
        microgpt.save_checkpoint(path, self.params, self.config, CHARS, "docs")   # overwrite too
        self.assertEqual(os.listdir(self.dir.name), ["model.json"])

    def test_a_minimal_hand_written_checkpoint_without_mode_loads_as_documents(self):
        """Only format, version, config, chars and state_dict: what a person (or another
        program) would write by hand. The weights are numbers chosen here, some ints."""
        config = {"n_layer": 1, "n_embd": 2, "n_head": 1, "block_size": 3}
        chars = ["x", "y"]
        vocab = len(chars) + 1                     # + BOS, because "docs" is the default mode
        shapes = {"wte": (vocab, 2), "wpe": (3, 2), "lm_head": (vocab, 2),
                  "layer0.attn_wq": (2, 2), "layer0.attn_wk": (2, 2), "layer0.attn_wv": (2, 2),
                  "layer0.attn_wo": (2, 2), "layer0.mlp_fc1": (8, 2), "layer0.mlp_fc2": (2, 8)}
        state = {name: [[(r * cols + c) % 5 * 0.25 - 0.5 if c else r % 3 for c in range(cols)]
                        for r in range(rows)] for name, (rows, cols) in shapes.items()}
        path = os.path.join(self.dir.name, "hand.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"format": "microgpt", "version": 1, "config": config,
                       "chars": chars, "state_dict": state}, f)
        loaded_config, loaded_chars, params, mode, _ = microgpt.load_checkpoint(path)
        self.assertEqual(mode, "docs")
        self.assertEqual(loaded_chars, chars)
        self.assertEqual({k: getattr(loaded_config, k) for k in microgpt.MODEL_SHAPE}, config)
        self.assertEqual(microgpt.weights_of(params), state)
        self.assertTrue(all(isinstance(p.data, float) for p in microgpt.flatten(params)))


# --- 13. the validation split ------------------------------------------------------------------------

class TestTrainValSplit(unittest.TestCase):

    def test_validation_holds_out_a_tenth_at_most_1000_and_none_below_10(self):
        for n in (0, 1, 9, 10, 19, 20, 57, 9999, 10000, 10010, 25000):
            with self.subTest(n=n):
                docs = [f"doc{i}" for i in range(n)]
                train, val = microgpt.train_val_split(docs, random.Random(n))
                self.assertEqual(len(val), min(1000, n // 10))
                if n < 10:
                    self.assertEqual(val, [])
                # A partition: together exactly the input, nothing lost, nothing doubled.
                self.assertEqual(sorted(train + val), sorted(docs))
                self.assertEqual(len(train) + len(val), n)

    def test_split_does_not_modify_its_input(self):
        docs = [str(i) for i in range(30)]
        copy = list(docs)
        microgpt.train_val_split(docs, random.Random(0))
        self.assertEqual(docs, copy)


if __name__ == "__main__":
    unittest.main()
