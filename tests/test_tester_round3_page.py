"""The third tester's findings on the report page's words and the terminal's loss summary:
the page says "names" only for the shipped names.txt, its captions claim a right guess or a
head's lean only when there is one, the sparkline's ends agree with the numbers beside them,
--batch all prints the last step's (exact) loss, and an empty sample says it is empty."""
import contextlib
import html
import io
import os
import re
import tempfile
import unittest
from unittest import mock

from tests.support import scratch_directory, in_background, microgpt, run_main, run_many, write_text

TINY = ["--n-embd", "8", "--n-head", "2", "--block-size", "8", "--n-layer", "1"]
LEVELS = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"


def visible_text(page):
    """The words a reader sees: the page without its JSON, tags and entities."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page.split('<script type="application/json"')[0]))


def two_pages():
    """PageWordForOneDocument's two runs, in new processes, in the background
    (support.in_background): one on lines of your own, one on the shipped names.txt by
    default, run from another folder than the one it is in."""
    home = scratch_directory()
    lines = ["Print a line of text", "Read the Help topics", "Open a File", "Close it Again",
             "Sort the List", "Join two Strings", "Split on Commas", "Format a Number"] * 4
    own = write_text(home.name, "lines.txt", "\n".join(lines) + "\n")
    runs = {"own": ["--input", own], "default": []}
    results = run_many([TINY + extra + ["--steps", "2", "--num-samples", "2", "--report", key + ".html"]
                        for key, extra in runs.items()], home.name, real=True)
    return home, dict(zip(runs, results))


TWO_PAGES = in_background(two_pages)


class PageWordForOneDocument(unittest.TestCase):
    """Item 4: a page made from your own lines calls them documents, never names."""

    @classmethod
    def setUpClass(cls):
        home, results = TWO_PAGES.result()
        cls.addClassCleanup(home.cleanup)
        cls.pages = {}
        for key, result in results.items():
            assert result.returncode == 0, result.stderr
            with open(os.path.join(home.name, key + ".html"), encoding="utf-8") as f:
                cls.pages[key] = visible_text(f.read())

    def test_a_page_of_your_own_lines_never_calls_them_names(self):
        page = self.pages["own"]
        self.assertIsNone(re.search(r"\bnames?\b", page), re.findall(r".{60}\bnames?\b.{30}", page))
        self.assertIn("Inside one document", page)
        self.assertIn("held-out documents", page)

    def test_a_page_of_the_shipped_names_calls_them_names(self):
        self.assertIn("Inside one name", self.pages["default"])
        self.assertIn("held-out names", self.pages["default"])
        self.assertNotIn("held-out document", self.pages["default"])

    def test_the_embeddings_captions_use_the_runs_word(self):
        config = microgpt.Config(steps=500)
        chars = sorted("abcdefghijklmnopqrstuvwxyz")
        weights = microgpt.weights_of(microgpt.init_params(config, len(chars) + 1, microgpt.random.Random(1)))
        weights["wpe"][12] = [1e-6] * config.n_embd          # a pale position that few documents reach
        docs = ["ab", "abc", "abcd"] * 10 + ["abcdefghijklmn"]
        names = [microgpt.label(t, chars) for t in range(len(chars) + 1)]
        for word in ("document", "name"):
            with self.subTest(word=word):
                section = microgpt.embeddings_section(weights, config, names, chars, "docs", docs, 500, word)
                self.assertIn(f"of the {word}s are long enough to reach position", section)


class CaptionsClaimOnlyWhatIsTrue(unittest.TestCase):
    """Item 5: a "right guess" is a position whose likeliest token is the true one; a head
    "leans" only if it gives a place at least LEAN times the even share."""
    names = ["a", "e", "m", "t", "<BOS>"]

    def caption(self, probs):
        example = {"text": "met", "tokens": [4, 2, 1, 3], "targets": [2, 1, 3, 4], "probs": probs,
                   "attention": []}
        section = microgpt.inside_section(example, self.names, "name", 1)
        return html.unescape(section.split("<figcaption>")[1].split("</figcaption>")[0])

    def test_with_no_position_guessed_right_the_caption_claims_no_right_guess(self):
        # the true token is never the likeliest: a is
        probs = [[0.5, 0.1, 0.3, 0.05, 0.05], [0.6, 0.2, 0.1, 0.05, 0.05],
                 [0.5, 0.1, 0.1, 0.25, 0.05], [0.7, 0.1, 0.1, 0.05, 0.05]]
        caption = self.caption(probs)
        self.assertNotIn("right guess", caption)
        self.assertIn("It guessed no position right", caption)
        self.assertIn("the true token it rated highest was m after <BOS> (position 0), at 30", caption)

    def test_the_surest_right_guess_is_one_the_model_ranked_first(self):
        # position 0's true token (m) gets 30% but a gets 50%; position 2's (t) is the likeliest at 25%
        probs = [[0.5, 0.1, 0.3, 0.05, 0.05], [0.6, 0.2, 0.1, 0.05, 0.05],
                 [0.2, 0.2, 0.2, 0.25, 0.15], [0.7, 0.1, 0.1, 0.05, 0.05]]
        self.assertIn("Its surest right guess: t after e (position 2), at 25", self.caption(probs))

    def test_a_head_at_the_even_share_is_not_said_to_lean(self):
        even = [[1 / n] * n for n in range(1, 9)]
        phrase = microgpt.head_habit(even)
        self.assertNotIn("lean", phrase)
        self.assertNotIn("mostly", phrase)
        self.assertIn("favours none", phrase)
        # 45% on its own token where even gives 33%: above 40%, but not 1.5 times the even share
        phrase = microgpt.head_habit([[1.0], [0.5, 0.5], [0.275, 0.275, 0.45]])
        self.assertNotIn("mostly", phrase)
        self.assertIn("favours none", phrase)

    def test_a_head_that_leans_says_so_with_shares_that_bear_it_out(self):
        rows = [[0.1] * 7 + [0.3]] * 4           # 30% on its own token, where even gives 12.5%
        phrase = microgpt.head_habit(rows)
        shares = [int(x) for x in re.findall(r"(\d+)%", phrase)]
        self.assertIn("leans towards its own token", phrase)
        self.assertGreaterEqual(shares[0], microgpt.LEAN * shares[1])


class LossSummaryAgreesWithItsLabels(unittest.TestCase):
    """Item 9: the sparkline's ends draw the numbers beside them, and --batch all prints the
    last step's exact loss, as the page does."""

    def test_after_a_spike_a_sparkline_that_ends_higher_than_it_starts_draws_it_so(self):
        # as --lr 0.5 did: 3.49 at step 1, a spike of hundreds, 10.39 at the end
        values = [3.49, 50.0, 300.0, 900.0] + [900.0 - i for i in range(500)] + [10.39] * 496
        for ascii_only, levels in ((False, LEVELS), (True, "_.-:=+*#")):
            with self.subTest(ascii_only=ascii_only):
                line = microgpt.sparkline(values, ascii_only=ascii_only)
                self.assertLess(levels.index(line[0]), levels.index(line[-1]))
                self.assertEqual(line[0], levels[0])                  # the lowest value is the first

    def test_batch_all_prints_the_last_steps_loss_and_draws_every_steps(self):
        with tempfile.TemporaryDirectory() as tmp:
            data = write_text(tmp, "seq.txt", "111101111011110")
            report = os.path.join(tmp, "r.html")
            result = run_main(["--input", data, "--stream", "--block-size", "3", "--n-embd", "8", "--n-head", "2",
                               "--steps", "4", "--batch", "all", "--num-samples", "0", "--report", report], tmp)
            self.assertEqual(result.returncode, 0, result.stderr)
            with open(report, encoding="utf-8") as f:
                page = visible_text(f.read())
        losses = [float(x) for x in re.findall(r"^step +\d+/4 \| loss (\d+\.\d+)", result.stdout, re.M)]
        self.assertEqual(len(losses), 4)
        self.assertIn(f"; loss {losses[-1]:.4f} (the last step's, on all the data", result.stdout)
        self.assertNotIn("smoothed loss", result.stdout)
        curve = re.search(r"^loss curve: (\S+) (\S+) (\S+)$", result.stdout, re.M)
        self.assertEqual((curve.group(1), curve.group(3)), (f"{losses[0]:.2f}", f"{losses[-1]:.2f}"))
        self.assertIn(f"training (the last step, on all the data: nothing to smooth) {losses[-1]:.4f}", page)
        self.assertIn(f"to {losses[-1]:.2f} (the last)", page)


class EmptySampleSaysSo(unittest.TestCase):
    """Item 10: a sample the model ended at once is not a blank after "sample 1:"."""

    def test_an_empty_sample_is_printed_as_empty(self):
        config = microgpt.Config(num_samples=2)
        out = io.StringIO()
        with mock.patch.object(microgpt, "sample_document", side_effect=["", "ann"]), \
                contextlib.redirect_stdout(out):
            microgpt.print_samples(None, config, list("an"), "docs", "", "a")
        lines = out.getvalue().splitlines()
        self.assertEqual(lines[1:], ["sample  1: (empty: it ended at once)", "sample  2: ann"])


if __name__ == "__main__":
    unittest.main()
