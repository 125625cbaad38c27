"""Nothing lost, round three: the second hostile pass of issue 16, from a clean clone, at the
features that came after the first one (--gpt2 with damaged or odd folders, --tokenize, --bpe,
--resume, --chat). Each test is one attack that broke a promise before its fix, run through
the command line (in this process: none of them needs a real one)."""
import itertools
import math
import json
import os
import random
import subprocess
import sys
import unittest
from unittest import mock

from tests.support import MICROGPT_COMMAND, NAMES, TempDirTestCase, assert_ok, assert_refused, microgpt, run_main, write_text
from tests.test_chat import TINY as TINY_CHAT, tiny_chat_model
from tests.test_gpt2 import write_model


class FakeClock:
    """A clock that jumps 20 s at every reading: every phase of a run looks slow."""
    ticks = itertools.count(0, 20)
    perf_counter = staticmethod(lambda: next(FakeClock.ticks))
    time = staticmethod(lambda: next(FakeClock.ticks))


class TestGPT2Folders(TempDirTestCase):

    def test_a_config_claiming_a_trillion_layers_is_refused_before_any_layer_is_listed(self):
        # It hung: the memory estimate listed every tensor of 10**12 layers before it could refuse.
        folder = os.path.join(self.tmp, "huge")
        write_model(folder, config_changes={"n_layer": 10**12})
        real_shapes = microgpt.gpt2_shapes

        def listing(config):
            if config.n_layer > 1000:
                raise AssertionError(f"gpt2_shapes listed {config.n_layer:,} layers")
            return real_shapes(config)
        with mock.patch.object(microgpt, "gpt2_shapes", listing):
            assert_refused(self, self.tmp, ["--gpt2", folder, "--prompt", "hi"])

    def test_the_parameter_count_of_the_memory_estimate_is_that_of_the_tensors(self):
        for n_layer, n_embd, n_head, n_inner in ((1, 8, 2, None), (3, 16, 4, 40), (2, 12, 3, 7)):
            raw = {"n_layer": n_layer, "n_embd": n_embd, "n_head": n_head, "n_positions": 11,
                   "vocab_size": 300, "n_inner": n_inner or 4 * n_embd}
            config = microgpt.GPT2Config(eps=1e-5, **raw)
            listed = sum(math.prod(shape) for shape in microgpt.gpt2_shapes(config).values())
            self.assertEqual(microgpt.gpt2_memory(config)[0], listed)

    def test_a_weights_file_that_is_a_fifo_a_device_or_a_broken_link_is_named_as_such(self):
        # Each was "FOLDER has no model.safetensors", though the file is there.
        cases = []
        for name, make in (("fifo", os.mkfifo), ("device", lambda p: os.symlink(os.devnull, p)),
                           ("loop", lambda p: os.symlink("model.safetensors", p)),
                           ("dangling", lambda p: os.symlink("elsewhere.safetensors", p))):
            if name == "fifo" and not hasattr(os, "mkfifo"):
                continue
            folder = os.path.join(self.tmp, "folders", name)     # outside what assert_refused reads: a FIFO
            write_model(folder)
            os.remove(os.path.join(folder, "model.safetensors"))
            make(os.path.join(folder, "model.safetensors"))
            cases.append(["--gpt2", folder, "--prompt", "hi"])
        work = os.path.join(self.tmp, "work")
        os.mkdir(work)
        assert_refused(self, work, *cases)
        for args in cases:
            error = run_main(args, work).stderr
            self.assertIn(os.path.join(args[1], "model.safetensors") + " is ", error)
            self.assertNotIn("has no model.safetensors", error)

    def test_control_characters_gpt2_writes_are_shown_as_escapes(self):
        # A model that always writes ESC (byte 27) cleared the screen: GPT-2's output went to
        # the terminal raw, though names' samples are escaped.
        def always_escape(tensors):
            e = len(tensors["ln_f.weight"][1])
            tensors["ln_f.weight"] = ([e], [0.0] * e)     # the final LayerNorm gives its bias...
            tensors["ln_f.bias"] = ([e], [1.0] * e)
            shape, wte = tensors["wte.weight"]
            wte[27 * e:28 * e] = [5.0] * e                 # ...to which ESC's row is the closest
        folder = os.path.join(self.tmp, "esc")
        write_model(folder, tensors_changes=always_escape)
        result = run_main(["--gpt2", folder, "--prompt", "hi", "--length", "3", "--temperature", "0"], self.tmp)
        assert_ok(self, result)
        self.assertNotIn("\x1b", result.stdout)
        self.assertIn("hi" + "\\x1b" * 3, result.stdout)


class TestTokenize(TempDirTestCase):

    def test_options_tokenize_would_ignore_are_refused(self):
        folder = os.path.join(self.tmp, "tok")
        write_model(folder)
        text = write_text(self.tmp, "text.txt", "hello world")
        assert_refused(self, self.tmp, *[["--gpt2", folder, "--tokenize", text] + extra for extra in (
            ["--prompt", "hi"], ["--length", "3"], ["--ids"], ["--top-k", "2"], ["--explain", "hi"],
            ["--temperature", "0"], ["--seed", "3"], ["--steps", "2"], ["--bpe", "3"])])
        result = run_main(["--gpt2", folder, "--tokenize", text], self.tmp)
        assert_ok(self, result)
        # The tiny tokenizer's merges: only ("h", "e"), its second, applies here (id 256 + 1).
        self.assertEqual(result.stdout.split(), ["257"] + [str(b) for b in b"llo world"])

    def test_a_long_word_is_tokenized_as_bpe_would_without_a_pass_per_merge(self):
        # One line of 160,000 letters took 34 s with 3,000 merges (and minutes with GPT-2's
        # 50,000): bpe() scans the whole word once per merge it makes.
        rng = random.Random(0)
        for _ in range(200):        # the fast path against the lesson's bpe(), on random words and merges
            alphabet = "abcde"[:rng.randint(1, 5)]
            corpus = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) for _ in range(12)]
            ranks = {pair: r for r, pair in enumerate(microgpt.learn_merges(corpus, rng.randint(1, 40)))}
            word = list("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))))
            self.assertEqual(microgpt.long_word_bpe(word, ranks), microgpt.bpe(word, ranks))
        folder = os.path.join(self.tmp, "tok")
        write_model(folder)
        byte_char = microgpt.bytes_to_unicode()
        merges = microgpt.learn_merges(["".join(rng.choice("etaoin") for _ in range(40)) for _ in range(50)], 60)
        vocab = {ch: b for b, ch in enumerate(byte_char)}
        vocab.update({a + b: 256 + n for n, (a, b) in enumerate(merges)})
        vocab["<|endoftext|>"] = len(vocab)
        with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(vocab, f)
        with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("".join(f"{a} {b}\n" for a, b in merges))
        line = "".join(rng.choice("etaoin") for _ in range(5000))
        text = write_text(self.tmp, "line.txt", line)
        with mock.patch.object(microgpt, "merge_pair", side_effect=AssertionError("a pass over the word")):
            result = run_main(["--gpt2", folder, "--tokenize", text], self.tmp)
        assert_ok(self, result)
        expected = microgpt.bpe(list(line), {pair: r for r, pair in enumerate(merges)})
        self.assertEqual(result.stdout.split(), [str(vocab[token]) for token in expected])


class TestBPE(TempDirTestCase):

    def test_learning_many_merges_reports_its_progress(self):
        # --bpe 8000 on names.txt learned for two minutes without a word (and --bpe 1000000
        # for hours): learn_merges said nothing until it was done.
        data = write_text(self.tmp, "names.txt", "\n".join(NAMES * 3) + "\n")
        with mock.patch.object(microgpt, "time", FakeClock):
            result = run_main(["--input", data, "--bpe", "40", "--steps", "1", "--num-samples", "0",
                               "--n-embd", "8", "--n-head", "2"], self.tmp)
        assert_ok(self, result)
        self.assertRegex(result.stdout, r"bpe: [\d,]+ of 40 merges learned in \d+ s")


class TestTerminalChat(TempDirTestCase):
    """Real processes: what is on standard input (closed, or a pipe) is the point."""

    def setUp(self):
        super().setUp()
        params, chat_chars = tiny_chat_model()
        self.model = os.path.join(self.tmp, "chat.json")
        microgpt.save_checkpoint(self.model, params, TINY_CHAT, chat_chars, "chat", {"stage": "SFT"})

    def chat(self, **kwargs):
        return subprocess.run(MICROGPT_COMMAND + ["--load", self.model, "--chat"],
                              capture_output=True, cwd=self.tmp, timeout=60, **kwargs)

    def test_a_chat_with_standard_input_closed_ends_as_at_end_of_input(self):
        # `--chat <&-` was an AttributeError traceback: Python's sys.stdin is then None.
        result = self.chat(stdin=None, preexec_fn=lambda: os.close(0))
        self.assertEqual((result.returncode, result.stderr), (0, b""))

    def test_piped_requests_are_echoed_with_escapes_and_an_endless_line_is_skipped(self):
        # The echo of a piped request printed ESC and U+202E raw, and a line without end was
        # read whole into memory (3 MB here; a pipe of gigabytes would fill it).
        requests = ("a name starting with \x1b[2J\n\u202e hi\n" + "a" * 3000000 + "\na name ending with a\n")
        result = self.chat(input=requests.encode("utf-8"))
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        out = result.stdout.decode("utf-8")
        self.assertNotIn("\x1b", out)
        self.assertNotIn("\u202e", out)
        lines = out.splitlines()
        asked = [line for line in lines if line.startswith("> ")]
        self.assertEqual(asked, ["> a name starting with \\x1b[2J", "> \\u202e hi", "> " + "a" * 200 + "...",
                                 "> a name ending with a"])
        self.assertEqual(lines[lines.index(asked[2]) + 1],
                         f"(cannot answer: a request of more than {microgpt.CHAT_LINE_LIMIT:,} characters)")
        self.assertLess(max(map(len, lines)), 1000)


if __name__ == "__main__":
    unittest.main()
