"""What the ninth tester left: a --chat run with a missing data file printed the first
stage's header before its error; a stop signal during an evaluation between two chat stages
said "stopping after this step" and printed the next stage's header before stopping; a
second signal just after a stage boundary dropped the command that redoes the next stage;
and the --bpe page's captions listed tokens such as on and x bare, like words."""
import functools
import os
import signal
import unittest
from unittest import mock

from tests.support import TempDirTestCase, microgpt, run_main
from tests.test_chat import TINY_PLAN
from tests.test_tester_round4_save import RUN_AGAIN


class AChatRunWithAMissingDataFile(TempDirTestCase):

    def test_says_so_in_one_line_before_any_stage_begins(self):
        result = run_main(["--chat", "--input", "nosuch.txt", "--save", "c.json"], self.tmp)
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stdout, "")
        self.assertEqual(result.stderr, "microgpt: error: data file not found: nosuch.txt\n")
        self.assertEqual(sorted(os.listdir(self.tmp)), ["names.txt"])


@unittest.skipUnless(hasattr(signal, "SIGINT") and os.name == "posix", "needs POSIX signals")
class AStopDuringAnEvaluationBetweenChatStages(TempDirTestCase):
    """Stop signals sent (as Ctrl-C would) while a stage's held-out evaluation runs."""

    def run_pipeline(self, stage, signals):
        evaluate = microgpt.evaluate_stage

        def evaluate_with_signals(card, name, *args, **kwargs):
            if name == stage:
                for _ in range(signals):
                    microgpt.interrupt_myself(stop_signals[0])
            return evaluate(card, name, *args, **kwargs)
        stop_signals = []
        make_stop = microgpt.StopSignals
        plan = functools.partial(microgpt.ChatPlan, **TINY_PLAN)
        with mock.patch.object(microgpt, "ChatPlan", plan), \
                mock.patch.object(microgpt, "evaluate_stage", evaluate_with_signals), \
                mock.patch.object(microgpt, "StopSignals", lambda: stop_signals.append(make_stop()) or stop_signals[-1]):
            return run_main(["--chat", "--input", "names.txt", "--save", "c.json"], self.tmp)

    def test_one_signal_waits_for_the_evaluation_and_begins_no_next_stage(self):
        for stage, header, what, before in (("pretrained", "--- stage 2", "fine-tuning", "c-pretrained.json"),
                                            ("SFT", "--- stage 3", "reinforcement learning", "c-sft.json")):
            with self.subTest(stage=stage):
                result = self.run_pipeline(stage, 1)
                self.assertEqual(result.returncode, 130, result.stderr)
                self.assertIn("microgpt: stopping after this evaluation (Ctrl-C again stops at once)", result.stderr)
                self.assertNotIn("after this step", result.stderr)
                self.assertIn(f"{stage}: held-out pass rate", result.stdout)      # the evaluation finished
                self.assertNotIn(header, result.stdout)
                self.assertIn(f"before the first step of {what}: nothing new to save", result.stderr)
                self.assertIn(f"to redo the {what} from its start: {RUN_AGAIN} --load {before} --chat --save c.json "
                              "--input names.txt\n", result.stderr)

    def test_a_second_signal_stops_at_once_and_still_says_how_to_redo_the_next_stage(self):
        # SFT is saved after its evaluation: a second signal in it leaves fine-tuning to redo
        for stage, what, before in (("pretrained", "fine-tuning", "c-pretrained.json"),
                                    ("SFT", "fine-tuning", "c-pretrained.json"),
                                    ("RL", "reinforcement learning", "c-sft.json")):
            with self.subTest(stage=stage):
                result = self.run_pipeline(stage, 2)
                self.assertEqual(result.returncode, 130, result.stderr)
                self.assertNotIn(f"{stage}: held-out pass rate", result.stdout)  # cut short
                self.assertIn("microgpt: interrupted by SIGINT\n", result.stderr)
                self.assertTrue(result.stderr.endswith(f"to redo the {what} from its start: {RUN_AGAIN} --load "
                                                       f"{before} --chat --save c.json --input names.txt\n"),
                                result.stderr)
                self.assertTrue(os.path.exists(os.path.join(self.tmp, before)))

    def test_without_save_a_stopped_pipeline_offers_no_command_to_redo_a_stage(self):
        plan = functools.partial(microgpt.ChatPlan, **TINY_PLAN)
        with mock.patch.object(microgpt, "ChatPlan", plan), \
                mock.patch.dict(os.environ, {"MICROGPT_STOP_AFTER_STEP": "3"}):
            result = run_main(["--chat", "--input", "names.txt"], self.tmp)
        self.assertEqual(result.returncode, 130, result.stderr)
        self.assertNotIn("to redo", result.stderr)


class CaptionsQuoteTokensOfSeveralCharacters(unittest.TestCase):

    def test_a_bpe_vocabulary_is_quoted_and_a_character_one_is_not(self):
        names = ["a", "on", "x", "<BOS>"]
        self.assertEqual(microgpt.caption_names(names, ["a", "on", "x"]), ["'a'", "'on'", "'x'", "<BOS>"])
        characters = ["a", "b", "\\s", "<BOS>"]
        self.assertEqual(microgpt.caption_names(characters, ["a", "b", " "]), characters)

    def test_the_scatter_plots_caption_lists_the_quoted_tokens(self):
        names = ["on", "x", "den", "a", "<BOS>"]
        wte = [[3.0, 0.0], [1.0, 0.1], [0.0, 0.0], [-1.0, 0.2], [-3.0, 0.0]]
        points = [(row[0], row[1]) for row in wte]
        said = microgpt.caption_names(names, names[:4])
        caption = microgpt.pca_caption(wte, points, names, "names", said)
        self.assertIn("runs from <BOS> 'a' on the left to 'x' 'on' on the right.", caption)
        self.assertIn("Closest together in all the dimensions: 'x' and 'den', 'den' and 'a'", caption)


if __name__ == "__main__":
    unittest.main()
