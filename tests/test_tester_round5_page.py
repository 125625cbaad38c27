"""Tester 5's items on the --report page: 1, a barely trained --bpe model's page ended in a
traceback (it re-encoded each sample's text, which can make more tokens than the context);
2, the loss caption said "learning them by heart" of a run that had not seen its training
data once; 3, a raw control character (ESC, a right-to-left override) from the data in a
caption; 10, red triangles said to be 5 that overlap into fewer on the chart."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

from support import NAMES, assert_ok, in_background, run_many, scratch_directory, write_text  # noqa: E402

import microgpt

import html
import json
import math
import random
import re
import unicodedata
import unittest

TINY = ["--n-embd", "8", "--n-head", "2", "--block-size", "8"]


def page_data(page):
    return json.loads(re.search(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S).group(1))


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


AB_TEXT = "ab" * 300 + "".join(random.Random(0).choice("abcdefgh") for _ in range(80))
RAW_LINES = ["\x1b[2Jclear", "\u202eevil", "cr\x85x"]
RAW_NAME = "u\x1bni\u202e.txt"                  # the file's name is on the page too


def round5_page_runs():
    """The runs of this file's tests, each in a folder of its own, in new processes, in the
    background (support.in_background): the suite's last module, they run while the
    modules before it do. Returns (the scratch folder, {name: (folder, result)})."""
    home = scratch_directory()
    runs = {
        # a --bpe model after one step: its samples re-encode into other, and more, tokens
        "bpe": ["--input", "names.txt", "--bpe", "30", "--steps", "1", "--num-samples", "12", "--save", "m.json",
                "--report", "r.html"] + TINY,
        # 100 steps of 1 of 18 names: over them 5.6 times
        "by_heart": TINY + ["--input", "names.txt", "--steps", "100", "--num-samples", "0", "--report", "r.html"],
        # 600 characters of "abab..." and then 80 random letters: the held-out last 10% is unlike the rest
        "stream": TINY + ["--input", "ab.txt", "--stream", "--steps", "100", "--block-size", "4", "--length", "20",
                          "--num-samples", "0", "--report", "r.html"],
        "raw": ["--input", RAW_NAME, "--steps", "100", "--num-samples", "5", "--report", "r.html", "--n-embd", "8",
                "--n-head", "2", "--block-size", "12"]}
    folders = {}
    for name in runs:
        folder = folders[name] = os.path.join(home.name, name)
        os.mkdir(folder)
        write_text(folder, "names.txt", "\n".join(NAMES) + "\n")
    write_text(folders["stream"], "ab.txt", AB_TEXT)
    write_text(folders["raw"], RAW_NAME, "\n".join(RAW_LINES * 20) + "\n")
    results = {}
    for name, args in runs.items():     # one after another: the main thread is busy too
        [results[name]] = run_many([args], folders[name], real=True)
    return home, {name: (folders[name], results[name]) for name in runs}


RUNS = in_background(round5_page_runs)


def run_of(name):
    """(folder, result) of one of round5_page_runs' runs."""
    return RUNS.result()[1][name]


def tearDownModule():
    RUNS.result()[0].cleanup()


class BpePageOfAnUntrainedModelTest(unittest.TestCase):

    def test_a_one_step_bpe_run_writes_its_page_shading_the_tokens_the_sampler_drew(self):
        folder, result = run_of("bpe")
        assert_ok(self, result)
        page = read(os.path.join(folder, "r.html"))
        data = page_data(page)
        config, chars, params, _, _ = microgpt.load_checkpoint(os.path.join(folder, "m.json"))
        weights, bos = microgpt.inference_weights(params), len(chars)
        # The samples drawn again, by hand, as print_samples draws them: from BOS, one token at
        # a time, with the sampling stream seeded seed + 1.
        rng, drawn = random.Random(config.seed + 1), []
        for _ in range(12):
            tokens, keys, values = [bos], [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]
            probs = []
            for pos in range(config.block_size):
                logits = microgpt.gpt(tokens[pos], pos, keys, values, weights, config)
                token = microgpt.sample_token(logits, config.temperature, rng)
                if token == bos:
                    break
                probs.append(float(microgpt.softmax(logits)[token]))     # at temperature 1, as the page says
                tokens.append(token)
            drawn.append((tokens[1:], probs))
        printed = re.findall(r"(?m)^sample +\d+: (.*)$", result.stdout)
        self.assertEqual(printed, ["".join(chars[t] for t in ids) or "(empty: it ended at once)" for ids, _ in drawn])
        # encoding the text again cuts some samples otherwise, and one into more tokens than
        # the context holds (what made the old page fail)
        self.assertTrue(any(microgpt.encode(microgpt.decode(ids, chars), chars) != ids for ids, _ in drawn))
        self.assertTrue(any(len(microgpt.encode(microgpt.decode(ids, chars), chars)) > config.block_size
                            for ids, _ in drawn))
        self.assertEqual(data["sample_tokens"], [ids for ids, _ in drawn])
        shaded = re.findall(r'<p class="sample">(.*?)</p>', page)
        self.assertEqual(len(shaded), 12)
        for (ids, probs), row, page_probs in zip(drawn, shaded, data["sample_probs"]):
            spans = re.findall(r'<span style="[^"]*" title="([0-9.]+)">([^<]*)</span>', row)
            if not ids:
                continue
            self.assertEqual([html.unescape(text) for _, text in spans], [chars[t] for t in ids])
            self.assertEqual([title for title, _ in spans], [f"{p:.3f}" for p in probs])
            for p, q in zip(page_probs, probs):
                self.assertAlmostEqual(p, q, places=9)


def loss_caption(page):
    return html.unescape(re.search(r"<h3>Loss while training</h3>.*?<figcaption>(.*?)</figcaption>", page, re.S)
                         .group(1))


class LossCaptionSaysByHeartOnlyAfterOneEpochTest(unittest.TestCase):

    def caption_of(self, name):
        folder, result = run_of(name)
        assert_ok(self, result)
        return loss_caption(read(os.path.join(folder, "r.html")))

    def test_a_model_that_went_over_its_18_names_many_times_is_said_to_learn_them_by_heart(self):
        caption = self.caption_of("by_heart")     # 100 steps of 1 of 18 names
        self.assertRegex(caption, r"above the training loss\. .*gone over its training data "
                                  + re.escape(f"{100 / 18:.1f}") + " times, and is starting to learn it by heart")

    def test_a_stream_run_that_saw_two_thirds_of_its_text_blames_the_end_of_the_file_not_memorising(self):
        caption = self.caption_of("stream")       # AB_TEXT, 100 steps of one window of 4
        text = AB_TEXT
        trained_on, training_part = 100 * 1 * 4, len(text) - len(text) // 10      # steps x batch x block_size
        self.assertIn("above the training loss", caption)
        self.assertNotIn("starting to learn", caption)
        self.assertIn(f"trained on {trained_on:,} characters, {trained_on / training_part:.0%} of the "
                      f"{training_part:,} in its training part", caption)
        self.assertIn("the end of the file", caption)

    def test_the_default_stream_run_has_read_a_twelfth_of_names_txt_so_its_caption_claims_no_memorising(self):
        text = microgpt.read_text(microgpt.default_data_path())
        config = microgpt.Config()
        read = microgpt.data_read(config, "stream", text, ["held out"], microgpt.build_vocab(text), "window", True)
        self.assertEqual(read[:2], (config.steps * config.batch * config.block_size, len(text) - len(text) // 10))
        said = microgpt.gap_above(read, "window")
        self.assertNotIn("starting to learn", said)
        self.assertIn("not learning them by heart", said)
        self.assertIn("names.txt lists the most common names first", said)

    def test_a_page_that_cannot_tell_how_much_data_the_model_read_claims_neither_cause(self):
        said = microgpt.gap_above(None, "name")
        self.assertIn("may simply differ", said)
        self.assertIn("or the model may be starting to learn", said)


class NoRawControlCharactersOnThePageTest(unittest.TestCase):

    def test_a_page_of_data_and_a_file_name_with_esc_and_a_right_to_left_override_holds_only_their_escapes(self):
        folder, result = run_of("raw")     # RAW_LINES, 20 times each, in a file named RAW_NAME
        assert_ok(self, result)
        page = read(os.path.join(folder, "r.html"))
        raw = sorted({ch for ch in page if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch not in "\n\t"})
        self.assertEqual(raw, [])
        # what was there is shown as the rest of the page shows it: as its backslash escape
        known = re.search(r"are documents from the data \((.*?)\)", page).group(1)
        self.assertTrue(set(html.unescape(known).split(", ")) <= {"\\x1b[2Jclear", "\\u202eevil", "cr\\x85x"}, known)
        self.assertIn("What microgpt learned from u\\x1bni\\u202e.txt", page)


class RedTrianglesTest(unittest.TestCase):

    def page_with_spikes(self, steps):
        config = microgpt.Config()
        chars = sorted("abcdefghijklmnopqrstuvwxyz")
        weights = microgpt.weights_of(microgpt.init_params(config, len(chars) + 1, random.Random(1)))
        losses = [3.3 - 0.001 * i + 0.2 * math.sin(i) for i in range(1000)]
        for step in steps:
            losses[step - 1] = 5.1
        run = {"config": config, "mode": "docs", "chars": chars, "weights": weights, "n_params": 4192,
               "losses": losses, "val_loss": 2.5, "val_points": [(0, 3.3), (1000, 2.5)], "val_subset": 200,
               "snapshots": [], "data_name": "names.txt", "data": "names.txt", "training": "1000 steps",
               "batch": "1 document", "interpreter": "cpython", "examples": [([26, 0, 1], [0, 1, 26])],
               "samples": ["ab", "ba"], "sample_ids": [[0, 1], [1, 0]], "text": None, "names_data": True}
        return microgpt.report_page(run)

    def triangles(self, page):
        """The tips' x of the red triangles in each loss chart (the page's and the presentation view's)."""
        charts = [c for c in re.findall(r"<svg\b.*?</svg>", page, re.S) if "loss while training" in c]
        self.assertEqual(len(charts), 2)
        return [sorted(float(x) for x in re.findall(r'<path d="M([0-9.]+),[0-9.]+ L[^"]*z" fill="#c00"/>', c))
                for c in charts]

    def test_spikes_a_few_steps_apart_share_a_triangle_and_the_caption_counts_what_is_drawn(self):
        page = self.page_with_spikes([200, 990, 993, 996, 1000])        # on a log axis the last 4 are one place
        caption = html.unescape(re.search(r"<h3>Loss while training</h3>.*?<figcaption>(.*?)</figcaption>",
                                          page, re.S).group(1))
        for tips in self.triangles(page):
            self.assertEqual(len(tips), 2)
            self.assertTrue(all(b - a >= 8 for a, b in zip(tips, tips[1:])), tips)   # a triangle is 8 wide
        self.assertIn("5 steps had a loss above the chart (2 red triangles, as steps close together share one;",
                      caption)

    def test_spikes_far_apart_get_a_triangle_each(self):
        page = self.page_with_spikes([20, 300])
        self.assertEqual([len(tips) for tips in self.triangles(page)], [2, 2])
        self.assertIn("2 steps had a loss above the chart (2 red triangles; the highest", page)


if __name__ == "__main__":
    unittest.main()
