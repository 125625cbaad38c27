"""Section 8 of microgpt.py, "Look inside": continuous text (--stream), the GPT as a Markov
chain (--chain), the per-token microscope (--explain), and the loss-curve sparkline.

The numerical facts are checked through the functions (fast); the command line is run in
this process (support.run_main) with models of a few hundred parameters trained for a few
steps.
"""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

from support import NAMES, TempDirTestCase, assert_ok, assert_refused, run_main, write_text  # noqa: E402

import microgpt

import itertools
import json
import random
import re
import tempfile
import unittest

BITS = "0110101101" * 5            # a 2-character stream: 2**block_size Markov states
SMALL = ["--n-embd", "8", "--n-head", "2"]

# The two alphabets of sparkline(), lowest level first.
UNICODE_LEVELS = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"
ASCII_LEVELS = "_.-:=+*#"


def random_weights(config, vocab_size, seed):
    return microgpt.weights_of(microgpt.init_params(config, vocab_size, random.Random(seed)))


# A Graphviz DOT file as print_chain writes it: one edge per line. Quoted strings follow the
# DOT rules: any character but a double quote, which must be written \".
QUOTED = r'"((?:[^"\\]|\\.)*)"'
DOT_EDGE = re.compile(r"^\s*" + QUOTED + r"\s*->\s*" + QUOTED + r"\s*\[\s*label\s*=\s*" + QUOTED
                      + r"\s*(?:,\s*penwidth\s*=\s*[\d.]+\s*)?\]\s*;?\s*$")
EDGE_LABEL = re.compile(r"^(.+) \((\d+)%\)$")


def parse_dot(text):
    """[(source, target, token label, percent)] of a digraph with one labelled edge per line.
    Raises ValueError for anything else. // comment lines (microgpt's marker) are skipped."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("//")]
    if not lines or not re.match(r"^\s*digraph\s+(\w+\s*)?\{\s*$", lines[0]) or lines[-1].strip() != "}":
        raise ValueError("not a digraph { ... }")
    edges = []
    for line in lines[1:-1]:
        match = DOT_EDGE.match(line)
        if not match:
            raise ValueError(f"not a DOT edge statement: {line!r}")
        source, target, label = (s.replace('\\"', '"') for s in match.groups())
        parts = EDGE_LABEL.match(label)
        if not parts:
            raise ValueError(f"edge label is not 'token (NN%)': {label!r}")
        edges.append((source, target, parts.group(1), int(parts.group(2))))
    return edges


def parse_chain_table(stdout):
    """{state: [(token label, percent, next state)]} from the table printed by --chain."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Markov chain:"))
    table = {}
    for line in lines[start + 2:]:
        if line.startswith("wrote ") or not line.strip():
            break
        state, moves = line.split(None, 1)
        table[state] = [(t, float(p), nxt) for t, p, nxt in re.findall(r"(\S+): +([\d.]+)% -> (\S+)", moves)]
    return lines[start], lines[start + 1], table


class StreamTest(unittest.TestCase):

    def test_stream_training_lowers_the_loss_on_a_small_text(self):
        chars = microgpt.build_vocab(BITS)
        train_tokens, _ = microgpt.stream_split(microgpt.encode(BITS, chars), 4)
        config = microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=4, lr=0.02)
        rng = random.Random(0)
        params = microgpt.init_params(config, len(chars), rng)
        losses = list(microgpt.train(params, config, microgpt.window_batches(train_tokens, 4, 4, rng), 30))
        self.assertEqual(len(losses), 30)
        self.assertLess(sum(losses[-5:]) / 5, sum(losses[:5]) / 5)

    def test_stream_split_holds_out_the_last_tenth_only_when_it_is_a_whole_window(self):
        tokens = list(range(100))                                  # a tenth is 10 tokens
        for block_size in (1, 8, 9):                               # 10 >= block_size + 1: held out
            with self.subTest(block_size=block_size):
                train, val = microgpt.stream_split(tokens, block_size)
                self.assertEqual(val, tokens[-10:])
                self.assertEqual(train, tokens[:-10])
        for block_size in (10, 50, 200):                           # 10 < block_size + 1: all trained on
            with self.subTest(block_size=block_size):
                train, val = microgpt.stream_split(tokens, block_size)
                self.assertEqual((train, val), (tokens, []))
        train, val = microgpt.stream_split(list(range(1000)), 16)
        self.assertEqual((len(train), len(val)), (900, 100))
        self.assertEqual(train + val, list(range(1000)))

    def test_random_windows_are_contiguous_slices_of_the_training_tokens(self):
        tokens = list(range(500, 600))                             # distinct, so a window's place is known
        block_size = 8
        train, val = microgpt.stream_split(tokens, block_size)
        self.assertTrue(val)
        batches = microgpt.window_batches(train, block_size, 3, random.Random(5))
        starts = set()
        for step in range(300):
            batch = batches(step)
            self.assertEqual(len(batch), 3)
            for window in batch:
                self.assertEqual(len(window), block_size + 1)
                start = train.index(window[0])
                self.assertEqual(window, train[start:start + block_size + 1])
                self.assertFalse(set(window) & set(val))
                starts.add(start)
        # every window start is possible, the last one included, and no other
        self.assertEqual(starts, set(range(len(train) - block_size)))

    def test_all_windows_are_every_contiguous_slice_of_the_training_tokens(self):
        tokens = list(range(200, 300))
        block_size = 6
        train, val = microgpt.stream_split(tokens, block_size)
        batches = microgpt.window_batches(train, block_size, "all", random.Random(0))
        expected = [train[s:s + block_size + 1] for s in range(len(train) - block_size)]
        for step in (0, 1, 17):
            windows = batches(step)
            self.assertEqual(len(windows), len(train) - block_size)
            self.assertEqual(windows, expected)
            self.assertTrue(all(len(w) == block_size + 1 for w in windows))
            self.assertFalse({t for w in windows for t in w} & set(val))

    def test_stream_cli_trains_and_prints_samples_of_the_requested_length(self):
        with tempfile.TemporaryDirectory() as tmp:
            data = write_text(tmp, "bits.txt", BITS)
            result = run_main(["--input", data, "--stream", "--block-size", "3", "--steps", "3", "--length", "25",
                              "--prompt", "01", "--num-samples", "2"] + SMALL, cwd=tmp)
        assert_ok(self, result)
        lines = result.stdout.splitlines()
        self.assertTrue([l for l in lines if l.startswith("step 3/3")], result.stdout)
        header = next(i for i, l in enumerate(lines) if l.startswith("--- 2 samples"))
        first, separator, second = lines[header + 1:header + 4]
        self.assertEqual(separator, "---")
        for sample in (first, second):
            self.assertTrue(sample.startswith("01"), sample)
            self.assertEqual(len(sample), len("01") + 25, sample)
            self.assertLessEqual(set(sample), set("01"))

    def test_a_stream_checkpoint_loads_back_into_stream_mode(self):
        """The checkpoint records the mode: loading it without --stream still gives a stream
        model (no BOS, samples of --length characters from the text's first character,
        --chain allowed), and the same sample as the run that saved it."""
        with tempfile.TemporaryDirectory() as tmp:
            data = write_text(tmp, "bits.txt", BITS)
            ckpt = os.path.join(tmp, "bits.json")
            common = ["--length", "20"]
            trained = run_main(["--input", data, "--stream", "--block-size", "3", "--steps", "3", "--save", ckpt]
                               + SMALL + common, cwd=tmp)
            loaded = run_main(["--load", ckpt, "--chain"] + common, cwd=tmp)
            with open(ckpt, encoding="utf-8") as f:
                saved = json.load(f)
        assert_ok(self, trained)
        assert_ok(self, loaded)
        self.assertEqual(saved["mode"], "stream")
        self.assertEqual(len(saved["state_dict"]["wte"]), len(saved["chars"]))    # no row for BOS

        def sample(stdout):
            lines = stdout.splitlines()
            return lines[lines.index(next(l for l in lines if l.startswith("--- 1 sample"))) + 1]
        self.assertEqual(sample(loaded.stdout), sample(trained.stdout))
        self.assertEqual(len(sample(loaded.stdout)), 1 + 20)                       # the start, then 20
        self.assertTrue(sample(loaded.stdout).startswith(BITS[0]))
        self.assertIn("Markov chain: 8 states", loaded.stdout)


class MarkovChainTest(unittest.TestCase):

    def test_markov_chain_lists_every_state_once_with_probabilities_summing_to_1(self):
        for vocab_size, block_size in ((3, 2), (2, 3), (4, 1)):
            with self.subTest(vocab_size=vocab_size, block_size=block_size):
                config = microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=block_size)
                chain = microgpt.markov_chain(random_weights(config, vocab_size, 3), config, vocab_size)
                states = [tuple(state) for state, _ in chain]
                self.assertEqual(len(chain), vocab_size ** block_size)
                self.assertEqual(set(states), set(itertools.product(range(vocab_size), repeat=block_size)))
                for state, probs in chain:
                    self.assertEqual(len(probs), vocab_size)
                    self.assertTrue(all(p >= 0 for p in probs))
                    self.assertAlmostEqual(sum(probs), 1.0, places=9)

    def test_chain_cli_prints_every_state_and_writes_a_dot_file_with_every_transition(self):
        block_size, chars = 3, sorted(set(BITS))
        states = {"".join(s) for s in itertools.product(chars, repeat=block_size)}
        with tempfile.TemporaryDirectory() as tmp:
            data = write_text(tmp, "bits.txt", BITS)
            dot_path = os.path.join(tmp, "chain.dot")
            result = run_main(["--input", data, "--stream", "--block-size", block_size, "--steps", "3",
                              "--num-samples", "0", "--chain", dot_path] + SMALL, cwd=tmp)
            assert_ok(self, result)
            with open(dot_path, encoding="utf-8") as f:
                dot = f.read()
            self.assertEqual([n for n in os.listdir(tmp) if n.endswith(".tmp")], [])

        title, header, table = parse_chain_table(result.stdout)
        self.assertIn(f"{len(states)} states", title)
        self.assertTrue(header.startswith("state"))
        self.assertEqual(set(table), states)                       # one row per state
        for state, moves in table.items():
            self.assertEqual([t for t, _, _ in moves], chars, state)
            for token, _, target in moves:
                self.assertEqual(target, state[1:] + token)        # reading a token shifts the context
            self.assertLessEqual(abs(sum(p for _, p, _ in moves) - 100), 0.1 * len(chars), moves)

        edges = parse_dot(dot)
        # every move but those under CHAIN_MIN_PROBABILITY (1%), which the table shows to 0.1%
        likely = {(s, t) for s in states for t, p, _ in table[s] if p >= 100 * microgpt.CHAIN_MIN_PROBABILITY + 0.1}
        possible = {(s, t) for s in states for t, p, _ in table[s] if p >= 100 * microgpt.CHAIN_MIN_PROBABILITY - 0.1}
        self.assertLessEqual(likely, {(s, t) for s, _, t, _ in edges})
        self.assertLessEqual({(s, t) for s, _, t, _ in edges}, possible)
        for source, target, token, percent in edges:
            self.assertEqual(target, source[1:] + token)
            # the same numbers as the table, which shows one more decimal
            shown = {(t, nxt): p for t, p, nxt in table[source]}
            self.assertLessEqual(abs(shown[(token, target)] - percent), 1.0, (source, token))
        for state in states:
            total = sum(p for s, _, _, p in edges if s == state)
            self.assertLessEqual(abs(total - 100), 2 * len(chars), state)

    def test_dot_file_is_valid_when_the_vocabulary_has_a_double_quote(self):
        # A '"' inside a DOT quoted string must be written \" or the file does not parse.
        text = 'a"a"aa"a""' * 4
        chars = sorted(set(text))
        states = {"".join(s) for s in itertools.product(chars, repeat=2)}
        with tempfile.TemporaryDirectory() as tmp:
            data = write_text(tmp, "quotes.txt", text)
            dot_path = os.path.join(tmp, "chain.dot")
            result = run_main(["--input", data, "--stream", "--block-size", "2", "--steps", "2",
                              "--num-samples", "0", "--chain", dot_path] + SMALL, cwd=tmp)
            assert_ok(self, result)
            with open(dot_path, encoding="utf-8") as f:
                dot = f.read()
        edges, error = [], None
        try:
            edges = parse_dot(dot)
        except ValueError as e:
            error = str(e)
        self.assertIsNone(error, dot)
        self.assertEqual({s for s, _, _, _ in edges}, states)
        self.assertLessEqual(len(edges), len(states) * len(chars))      # moves under 1% are left out
        for source, target, token, _ in edges:
            self.assertEqual(target, source[1:] + token)


class ExplainTest(unittest.TestCase):

    def test_explain_gives_softmax_of_the_logits_and_causal_attention_weights(self):
        config = microgpt.Config(n_layer=2, n_embd=8, n_head=2, block_size=6)
        vocab_size = 5
        weights = random_weights(config, vocab_size, 7)
        tokens = [4, 0, 3, 3, 1, 2]
        rows = microgpt.explain(tokens, weights, config)
        logits = microgpt.logits_at_every_position(tokens, weights, config)
        self.assertEqual(len(rows), len(tokens))
        for pos, (probs, heads) in enumerate(rows):
            with self.subTest(pos=pos):
                expected = microgpt.softmax(logits[pos])
                self.assertEqual(len(probs), vocab_size)
                for p, e in zip(probs, expected):
                    self.assertAlmostEqual(p, e, places=12)
                self.assertEqual(len(heads), config.n_layer * config.n_head)
                for weights_of_head in heads:
                    self.assertEqual(len(weights_of_head), pos + 1)   # positions 0..pos, nothing later
                    self.assertTrue(all(w >= 0 for w in weights_of_head))
                    self.assertAlmostEqual(sum(weights_of_head), 1.0, places=9)
        # causal: what a position sees does not change when later tokens are added
        prefix = microgpt.explain(tokens[:3], weights, config)
        for (p_short, h_short), (p_long, h_long) in zip(prefix, rows):
            for a, b in zip(p_short, p_long):
                self.assertAlmostEqual(a, b, places=12)
            for ws, wl in zip(h_short, h_long):
                for a, b in zip(ws, wl):
                    self.assertAlmostEqual(a, b, places=12)

    def test_explain_cli_prints_one_row_per_position(self):
        text = "emma"
        with tempfile.TemporaryDirectory() as tmp:
            data = write_text(tmp, "names.txt", "\n".join(NAMES) + "\n")
            result = run_main(["--input", data, "--steps", "1", "--num-samples", "0", "--block-size", "8",
                              "--explain", text] + SMALL, cwd=tmp)
        assert_ok(self, result)
        lines = result.stdout.splitlines()
        header = next(i for i, l in enumerate(lines) if l.split()[:2] == ["pos", "token"])
        end = next(i for i, l in enumerate(lines) if l.startswith("attention:"))
        rows = [l.split() for l in lines[header + 1:end] if l.strip()]
        # documents are read from BOS: BOS, e, m, m, a
        self.assertEqual([int(r[0]) for r in rows], list(range(len(text) + 1)))
        self.assertEqual([r[1] for r in rows], ["<BOS>"] + list(text))
        # one heat map per head (1 layer x 2 heads), each with one row per position
        maps = [i for i, l in enumerate(lines) if re.match(r"^layer \d+ head \d+$", l)]
        self.assertEqual(len(maps), 2)
        n = len(text) + 1
        for i in maps:
            # a header of column positions 0..n-1, then row pos shows pos + 1 shaded cells
            self.assertEqual(lines[i + 1].split(), [str(pos) for pos in range(n)])
            for pos, line in enumerate(lines[i + 2:i + 2 + n]):
                self.assertEqual(line.split()[0], str(pos))


class SparklineTest(unittest.TestCase):

    def test_sparkline_of_increasing_values_never_goes_down_and_uses_only_its_alphabet(self):
        for values in ([0.1 * i ** 1.5 for i in range(200)], [1.0, 2.0, 3.0], [5.0] * 7, list(range(60))):
            for ascii_only, levels in ((False, UNICODE_LEVELS), (True, ASCII_LEVELS)):
                with self.subTest(n=len(values), ascii_only=ascii_only):
                    line = microgpt.sparkline(values, ascii_only=ascii_only)
                    self.assertEqual(len(line), min(60, len(values)))
                    self.assertLessEqual(set(line), set(levels))
                    heights = [levels.index(c) for c in line]
                    self.assertEqual(heights, sorted(heights))
                    if values[-1] > values[0]:
                        self.assertEqual((line[0], line[-1]), (levels[0], levels[-1]))
        falling = microgpt.sparkline([3.0 - 0.01 * i for i in range(300)], width=20)
        heights = [UNICODE_LEVELS.index(c) for c in falling]
        self.assertEqual(heights, sorted(heights, reverse=True))

    def test_cli_prints_an_ascii_loss_curve_when_stdout_is_ascii_only(self):
        with tempfile.TemporaryDirectory() as tmp:
            data = write_text(tmp, "names.txt", "\n".join(NAMES) + "\n")
            result = run_main(["--input", data, "--steps", "5", "--num-samples", "1", "--block-size", "8"] + SMALL,
                              cwd=tmp, encoding="ascii")
        assert_ok(self, result)
        curve = [l for l in result.stdout.splitlines() if l.startswith("loss curve")]
        self.assertEqual(len(curve), 1, result.stdout)
        self.assertTrue(all(ord(c) < 128 for c in curve[0]), curve[0])
        self.assertLessEqual(set(curve[0].split()[3]), set(ASCII_LEVELS))   # "loss curve: 3.09 #:._ 2.99"


class LookInsideBadInputTest(TempDirTestCase):

    def setUp(self):
        super().setUp()
        self.bits = write_text(self.tmp, "bits.txt", BITS)
        self.trits = write_text(self.tmp, "trits.txt", "0120211021" * 5)

    def test_chain_requests_that_cannot_be_met_are_refused_with_exit_2(self):
        assert_refused(
            self, self.tmp,
            # 3 tokens ** block_size 6 = 729 states > 256
            ["--input", self.trits, "--stream", "--block-size", "6", "--steps", "2", "--chain"] + SMALL,
            # documents: no --stream
            ["--input", self.names, "--block-size", "2", "--steps", "2", "--chain"] + SMALL,
            # a DOT file in a directory that does not exist
            ["--input", self.bits, "--stream", "--block-size", "2", "--steps", "2",
             "--chain", os.path.join(self.tmp, "missing", "chain.dot")] + SMALL,
        )

    def test_explain_text_the_model_cannot_read_is_refused_with_exit_2(self):
        assert_refused(
            self, self.tmp,
            ["--input", self.names, "--block-size", "8", "--steps", "2", "--explain", "emQ"] + SMALL,
            # BOS + 8 characters do not fit a context of 8
            ["--input", self.names, "--block-size", "8", "--steps", "2", "--explain", "isabella"] + SMALL,
            ["--input", self.bits, "--stream", "--block-size", "3", "--steps", "2", "--explain", "0110"] + SMALL,
            ["--input", self.bits, "--stream", "--block-size", "3", "--steps", "2", "--explain", ""] + SMALL,
        )

    def test_impossible_stream_settings_are_refused_with_exit_2(self):
        short = write_text(self.tmp, "short.txt", "0110")
        assert_refused(
            self, self.tmp,
            ["--input", short, "--stream", "--block-size", "8", "--steps", "2"] + SMALL,   # 4 < 8 + 1 characters
            ["--input", self.names, "--block-size", "8", "--steps", "2", "--length", "10"] + SMALL,
            ["--input", self.bits, "--stream", "--block-size", "3", "--steps", "2", "--length", "0"] + SMALL,
        )


if __name__ == "__main__":
    unittest.main()
