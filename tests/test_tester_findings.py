"""What a newcomer and a teacher found by using microgpt and trying to break it: each test
is one finding, run through the real command line (main() in this process), with a tiny
model and few steps so the whole file takes a second or two."""
import json
import os
import re
import shutil
import unittest

import microgpt
from tests.support import TempDirTestCase, assert_ok, assert_refused, run_main, trained_checkpoint, write_text


class TestMarkovChainOfBpeTokensNamesEveryStateOnce(TempDirTestCase):
    """With --bpe, the contexts (a, ba) and (ab, a) are different states; written as their
    characters run together both were "aba", so the table listed one name for several
    states and the Graphviz file merged them into one node."""

    def test_every_state_of_a_bpe_chain_has_its_own_name_in_the_table_and_the_dot_file(self):
        text = write_text(self.tmp, "ab.txt", "abababbbaabab")
        result = run_main(["--input", text, "--stream", "--block-size", "3", "--bpe", "2", "--steps", "3",
                           "--num-samples", "0", "--chain", "chain.dot"], self.tmp)
        assert_ok(self, result)
        lines = result.stdout.splitlines()
        header = next(i for i, line in enumerate(lines) if line.startswith("Markov chain:"))
        count = int(re.match(r"Markov chain: (\d+) states", lines[header]).group(1))
        rows = lines[header + 2: header + 2 + count]
        names = [row.split("  ")[0].strip() for row in rows]
        self.assertEqual(len(set(names)), count, names)
        with open(f"{self.tmp}/chain.dot", encoding="utf-8") as f:
            sources = set(re.findall(r'^  ("(?:[^"\\]|\\.)*") ->', f.read(), re.M))
        self.assertEqual(len(sources), count)

    def test_a_chain_of_single_characters_keeps_its_names_run_together(self):
        text = write_text(self.tmp, "ab.txt", "abababbbaabab")
        result = run_main(["--input", text, "--stream", "--block-size", "3", "--steps", "3",
                           "--num-samples", "0", "--chain"], self.tmp)
        assert_ok(self, result)
        self.assertIn("\naab ", result.stdout)


class TestLearningManyMergesIsNeverSilent(unittest.TestCase):
    """`--bpe 100000` on names.txt learned merges for over five minutes without a word (each
    merge looks at every pair); the command line now says how far it got every 10 seconds,
    through learn_merges' progress callback, which must see every merge and change none."""

    def test_learn_merges_reports_each_merge_and_learns_the_same_merges(self):
        words = ["aaabdaaabac", "abracadabra", "banana", "bandana"] * 3
        seen = []
        merges = microgpt.learn_merges(words, 6, seen.append)
        self.assertEqual(merges, microgpt.learn_merges(words, 6))
        self.assertEqual(seen, list(range(1, len(merges) + 1)))


class TestTooShortATextSaysTokensAfterBpe(TempDirTestCase):
    """`--stream --bpe 100` on "hello world" said the file "has 2 characters": it has 11
    characters, which 9 merges made 2 tokens."""

    def test_a_stream_too_short_after_bpe_is_counted_in_tokens(self):
        text = write_text(self.tmp, "hello.txt", "hello world")
        (result,) = assert_refused(self, self.tmp, ["--input", text, "--stream", "--bpe", "100"])
        self.assertIn("has 2 tokens", result.stderr)
        (result,) = assert_refused(self, self.tmp, ["--input", text, "--stream"])
        self.assertIn(f"has {len('hello world')} characters", result.stderr)


@unittest.skipUnless(microgpt.memory_limit(), "this system does not say how much memory there is")
class TestTooManyMergesForMemorySaysBpe(TempDirTestCase):
    """`--bpe 99999999` was refused for memory with the advice to choose a smaller --n-embd,
    --n-layer or --block-size, none of which the user had raised."""

    def test_a_bpe_vocabulary_too_big_for_memory_names_bpe_in_the_advice(self):
        (result,) = assert_refused(self, self.tmp, ["--input", self.names, "--bpe", "99999999"])
        self.assertIn("fewer --bpe merges", result.stderr)


class TestAHandEditedRunIsNotCalledFinished(TempDirTestCase):
    """A stopped run whose checkpoint was edited so that Adam's step no longer matches the
    steps recorded was refused with "finished its run (321 of 3,000 steps)": not finished,
    and not the reason."""

    def stopped_run(self, adam_step_change):
        path = trained_checkpoint(self.tmp, ["--steps", "4", "--n-embd", "4", "--n-head", "1", "--num-samples", "0"])
        with open(path, encoding="utf-8") as f:
            ckpt = json.load(f)
        ckpt["run"]["steps"] = 10            # as if stopped after 4 of 10 steps
        ckpt["optimizer"]["step"] += adam_step_change
        with open(path, "w", encoding="utf-8") as f:
            json.dump(ckpt, f)
        return path

    def test_a_checkpoint_whose_adam_step_does_not_match_its_record_says_so(self):
        path = self.stopped_run(+100)
        (result,) = assert_refused(self, self.tmp, ["--resume", path])
        self.assertIn("does not add up", result.stderr)
        self.assertNotIn("finished", result.stderr)

    def test_a_consistent_stopped_run_still_resumes(self):
        path = self.stopped_run(0)
        result = run_main(["--resume", path], self.tmp)
        assert_ok(self, result)
        self.assertIn("resuming the run saved in", result.stdout)


class TestAPromptTooLongForABpeModelIsCountedInTokens(TempDirTestCase):
    """With --bpe a prompt is measured in tokens (a 20-character prompt of 10 tokens fits a
    context of 16), but the refusal of a longer one counted it in characters."""

    def test_the_prompt_limit_is_stated_in_the_unit_it_is_checked_in(self):
        data = write_text(self.tmp, "ab.txt", "ab\nabab\nba\nbab\n" * 5)
        options = ["--input", data, "--bpe", "1", "--steps", "2", "--n-embd", "4", "--n-head", "1",
                   "--num-samples", "1"]
        assert_ok(self, run_main(options + ["--prompt", "ab" * 10], self.tmp))      # 10 tokens
        (result,) = assert_refused(self, self.tmp, options + ["--prompt", "ab" * 20])
        self.assertIn("--prompt is 20 tokens", result.stderr)

    def test_the_explain_limit_is_stated_in_tokens_for_a_bpe_model(self):
        data = write_text(self.tmp, "ab.txt", "ab\nabab\nba\nbab\n" * 5)
        options = ["--input", data, "--bpe", "1", "--steps", "2", "--n-embd", "4", "--n-head", "1",
                   "--num-samples", "0"]
        assert_ok(self, run_main(options + ["--explain", "ab" * 15], self.tmp))     # 15 tokens
        (result,) = assert_refused(self, self.tmp, options + ["--explain", "ab" * 16])
        self.assertIn("1 to 15 tokens (it is 16)", result.stderr)


class TestANewModelWithZeroStepsIsToldWhy(TempDirTestCase):
    """`--steps 0 --save m.json` without --load was refused with "add --steps N to fine-tune
    the loaded model", though no model was loaded; the reason is that a new model needs steps."""

    def test_zero_steps_for_a_new_model_names_the_steps_not_a_loaded_model(self):
        for extra in (["--save", "m.json"], ["--lr", "0.1"]):
            (result,) = assert_refused(self, self.tmp, ["--input", self.names, "--steps", "0"] + extra)
            self.assertIn("--steps must be at least 1", result.stderr)
            self.assertNotIn("loaded model", result.stderr)


try:
    from tests.test_report_layout import CHROMEDRIVER, CHROMIUM, browser, webdriver
except ImportError:                      # selenium is a test-only package
    webdriver = None

# How wide each predictions table is, and the box it has (its scrolling parent's inner width).
TABLE_WIDTHS = """return Array.from(document.querySelectorAll('table.predictions'))
                   .map(t => [t.scrollWidth, t.parentElement.clientWidth]);"""


@unittest.skipUnless(webdriver, "selenium is not installed (a test-only package)")
@unittest.skipUnless(CHROMIUM and CHROMEDRIVER, "chromium and chromedriver are not installed")
class TestPredictionTablesFitTheWindow(TempDirTestCase):
    """At 1024 px (a projector) the report's predictions table was 1,100 px wide in a box of
    984: "guess 5" was cut off behind a scroll bar, and from 541 to 1239 px the table never
    fitted; narrower windows now show fewer guesses instead."""

    def test_every_predictions_table_fits_its_box_from_a_phone_to_a_wide_screen(self):
        page = os.path.join(self.tmp, "r.html")
        assert_ok(self, run_main(["--input", self.names, "--steps", "3", "--num-samples", "3",
                                  "--report", page], self.tmp))
        driver, profile = browser()
        try:
            for width in (480, 620, 760, 800, 940, 1024, 1100, 1280, 1920):
                driver.set_window_size(width, 900)
                driver.get("file://" + page)
                tables = driver.execute_script(TABLE_WIDTHS)
                self.assertTrue(tables)
                for needed, room in tables:
                    self.assertLessEqual(needed, room, f"at {width} px")
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
