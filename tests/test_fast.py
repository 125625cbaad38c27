"""Tests for Part II of microgpt.py: every speed trick changes no number.

The fused nodes are checked one by one in test_autograd.py (against Part I's graph and against
finite differences) and the whole model in test_model.py. Here: the tape, the collector
switch, plain-float inference, and the whole command line run on Part I alone (--plain).
"""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702
from support import scratch_directory, NAMES, TempDirTestCase, assert_ok, fast, in_background, run_many, write_text  # noqa: E402
import microgpt

import gc
import json
import random
import re
import tempfile
import unittest

Value = microgpt.Value
CHARS = ["a", "b", "c"]
BOS = len(CHARS)


def tiny_params(seed=0, **changes):
    settings = dict(n_layer=1, n_embd=4, n_head=2, block_size=5, init_std=0.5)
    settings.update(changes)
    config = microgpt.Config(**settings)
    return config, microgpt.init_params(config, len(CHARS) + 1, random.Random(seed))


class TestTape(unittest.TestCase):

    def record(self, build):
        """Run build() with the tape recording; return (its result, the tape)."""
        Value.tape = []
        try:
            result = build()
        finally:
            tape, Value.tape = Value.tape, None
        return result, tape

    def test_the_tape_lists_every_node_after_all_of_its_children(self):
        """Creation order is a topological order: a node is made from children that exist."""
        config, params = tiny_params()
        with fast(True):
            loss, tape = self.record(lambda: microgpt.document_loss([BOS, 0, 2, 1, BOS], params, config))
        position = {id(node): i for i, node in enumerate(tape)}
        self.assertIs(tape[-1], loss)
        for node in tape:
            for child in node._children:
                if id(child) in position:           # parameters were made before recording
                    self.assertLess(position[id(child)], position[id(node)])
        # and every node backward() would visit is on the tape
        self.assertLessEqual({id(n) for n in loss.topological_order()}, set(position))

    def test_backward_along_the_tape_gives_the_gradients_of_backward(self):
        config, params_a = tiny_params(seed=1)
        _, params_b = tiny_params(seed=1)
        tokens = [BOS, 1, 1, 0, BOS]
        with fast(True):
            microgpt.document_loss(tokens, params_a, config).backward()
            loss, tape = self.record(lambda: microgpt.document_loss(tokens, params_b, config))
            microgpt.backward_along(loss, tape)
        grads_a = [p.grad for p in microgpt.flatten(params_a)]
        grads_b = [p.grad for p in microgpt.flatten(params_b)]
        # The same sums, possibly added up in another order: equal up to rounding.
        for a, b in zip(grads_a, grads_b):
            self.assertAlmostEqual(a, b, delta=1e-12 * max(1.0, abs(a)))
        self.assertGreater(max(map(abs, grads_a)), 1e-3)

    def test_an_error_during_the_forward_pass_stops_the_recording(self):
        """Otherwise every Value made afterwards would pile up on a tape no one reads."""
        config, params = tiny_params()
        with fast(True), self.assertRaises(IndexError):
            microgpt.add_gradient([BOS, 99, BOS], params, config)    # token 99 does not exist
        self.assertIsNone(Value.tape)


class TestCollectorSwitch(unittest.TestCase):

    def test_the_cycle_collector_is_paused_only_inside_the_block_and_only_on_cpython(self):
        self.assertTrue(gc.isenabled())
        with microgpt.cycle_collector_paused():
            paused = not gc.isenabled()
        self.assertTrue(gc.isenabled())
        self.assertEqual(paused, sys.implementation.name == "cpython")   # PyPy needs its collector

    def test_a_block_inside_a_paused_block_leaves_the_collector_paused(self):
        with microgpt.cycle_collector_paused():
            with microgpt.cycle_collector_paused():
                pass
            self.assertEqual(gc.isenabled(), sys.implementation.name != "cpython")
        self.assertTrue(gc.isenabled())

    def test_the_collector_comes_back_after_an_error(self):
        with fast(True), self.assertRaises(ValueError):
            with microgpt.cycle_collector_paused():
                raise ValueError
        self.assertTrue(gc.isenabled())


class TestPlainFloats(unittest.TestCase):

    def test_inference_weights_are_plain_floats_if_fast_and_the_values_themselves_if_not(self):
        _, params = tiny_params()
        with fast(True):
            weights = microgpt.inference_weights(params)
        self.assertEqual(weights, microgpt.weights_of(params))
        self.assertTrue(all(type(w) is float for m in weights.values() for row in m for w in row))
        with fast(False):
            self.assertIs(microgpt.inference_weights(params), params)

    def test_validation_loss_explain_and_samples_agree_with_part_one_alone(self):
        config, params = tiny_params(seed=2, n_layer=2)
        seqs = [[BOS, 0, 1, BOS], [BOS, 2, 2, 1, 0, 1, BOS]]
        results = {}
        for flag in (True, False):
            with fast(flag):
                weights = microgpt.inference_weights(params)
                rng = random.Random(7)
                results[flag] = (microgpt.mean_token_loss(seqs, weights, config),
                                 microgpt.explain([BOS, 2, 0], weights, config),
                                 [microgpt.sample_document(weights, config, CHARS, rng, 1.0) for _ in range(10)])
        (loss_f, explain_f, samples_f), (loss_p, explain_p, samples_p) = results[True], results[False]
        self.assertAlmostEqual(loss_f, loss_p, delta=1e-12)
        self.assertEqual(samples_f, samples_p)
        for (probs_f, heads_f), (probs_p, heads_p) in zip(explain_f, explain_p):
            for a, b in zip(probs_f, probs_p):
                self.assertIs(type(b), float)
                self.assertAlmostEqual(a, b, delta=1e-12)
            for head_f, head_p in zip(heads_f, heads_p):
                for a, b in zip(head_f, head_p):
                    self.assertAlmostEqual(a, b, delta=1e-12)


def fast_and_plain_runs():
    """TestPlainCommandLine's two runs, in new processes, in the background
    (support.in_background): Part I alone is slow."""
    home = scratch_directory()
    names = write_text(home.name, "names.txt", "\n".join(NAMES) + "\n")
    base = ["--input", names, "--steps", "2", "--batch", "2", "--n-embd", "8", "--n-head", "2",
            "--block-size", "6", "--num-samples", "2", "--explain", "emma"]
    return home, run_many([base + ["--save", "fast.json", "--report", "fast.html"],
                           base + ["--plain", "--save", "plain.json", "--report", "plain.html"]], home.name, real=True)


FAST_AND_PLAIN = in_background(fast_and_plain_runs)


class TestPlainCommandLine(unittest.TestCase):

    def test_plain_runs_the_command_line_on_part_one_with_the_same_numbers(self):
        """`--plain` sets FAST = False: training, validation, sampling, the microscope, a saved
        checkpoint and the --report page all run on Part I alone, and print the same numbers
        to the 4 decimals shown (the same samples too); the page's numbers agree to 1e-9."""
        home, (fast_run, plain_run) = FAST_AND_PLAIN.result()
        self.addCleanup(home.cleanup)
        self.tmp = home.name
        for result in (fast_run, plain_run):
            assert_ok(self, result)

        def numbers(out):          # every line, with the timings cut out
            return [re.sub(r"[0-9.]+ (ms/step|s left|s \()", "", line) for line in out.splitlines()
                    if not line.startswith(("saved the model", "wrote"))]
        self.assertEqual(numbers(fast_run.stdout), numbers(plain_run.stdout))
        self.assertIn("validation loss:", fast_run.stdout)
        self.assertIn("sample  2:", fast_run.stdout)
        loaded = [microgpt.load_checkpoint(os.path.join(self.tmp, name))[2] for name in ("fast.json", "plain.json")]
        for a, b in zip(*(microgpt.flatten(p) for p in loaded)):
            self.assertAlmostEqual(a.data, b.data, delta=1e-9)
        pages = []
        for name in ("fast.html", "plain.html"):
            with open(os.path.join(self.tmp, name), encoding="utf-8") as f:
                found = re.search(r'<script type="application/json" id="microgpt-data">(.*?)</script>', f.read(), re.S)
            pages.append(json.loads(found.group(1)))
        self.assertEqual(pages[0]["samples"], pages[1]["samples"])
        for a, b in zip(pages[0]["losses"], pages[1]["losses"]):
            self.assertAlmostEqual(a, b, delta=1e-9)
        for example_a, example_b in zip(pages[0]["examples"], pages[1]["examples"]):
            for row_a, row_b in zip(example_a["probs"], example_b["probs"]):
                for a, b in zip(row_a, row_b):
                    self.assertAlmostEqual(a, b, delta=1e-9)


class TestTheSummaryAtTheTop(TempDirTestCase):

    def test_the_ten_lines_at_the_top_of_the_file_print_what_the_command_line_prints(self):
        """microgpt.py's docstring claims its short program is the whole algorithm and
        prints the numbers `python microgpt.py` prints. Run it (on 300 names, 5 steps, 3 samples)
        and the real command line with the same settings: same losses, validation loss and
        samples."""
        lines = microgpt.__doc__.split("(the smoothed loss, timings, headings):\n\n")[1].split("\n\n")[0].split("\n")
        code = "\n".join(line[4:] for line in lines)
        self.assertIn("train(params, config", code)
        with open(microgpt.default_data_path(), encoding="utf-8") as f:
            data = write_text(self.tmp, "some_names.txt", "".join(f.readlines()[:300]))
        code = code.replace('"names.txt"', repr(data))
        printed = []
        namespace = dict(vars(microgpt), random=random,
                         Config=lambda: microgpt.Config(steps=5, num_samples=3),
                         print=lambda text: printed.append(text))
        exec(code, namespace)
        cli = run_many([["--input", data, "--steps", "5", "--num-samples", "3"]], self.tmp)[0]
        assert_ok(self, cli)
        losses = re.findall(r"\| (loss [0-9.]+) \|", cli.stdout)
        validation = re.findall(r"^(validation loss: [0-9.]+)", cli.stdout, re.M)
        samples = re.findall(r"^sample +[0-9]+: (.*)$", cli.stdout, re.M)
        self.assertEqual(len(losses), 5)
        self.assertEqual(printed, losses + validation + samples)


if __name__ == "__main__":
    unittest.main()
