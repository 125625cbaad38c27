"""What a fifth tester found: every ordinary Ctrl-C said the model's scores were not all
checked (also for the default model, whose check takes milliseconds); the chat model's
answers showed special tokens at a high temperature; the chat card's presentation view
held only its curves (the layout of its slides: test_report_layout)."""
import os
import random
import signal
import unittest
from unittest import mock

from tests.support import TempDirTestCase, microgpt, run_main, REPO
from tests.test_tester_round4_save import signals_during_the_score_check

NOT_ALL_CHECKED = "the model's scores were not all checked"


def recording_the_score_checks(results):
    """A check_finite_scores that appends what each call returns (True: every token checked)."""
    check = microgpt.check_finite_scores
    return lambda *args, **kwargs: results.append(check(*args, **kwargs)) or results[-1]


@unittest.skipUnless(hasattr(signal, "SIGINT") and os.name == "posix", "needs POSIX signals")
class ACtrlCOfTheDefaultModelFinishesItsQuickScoreCheck(TempDirTestCase):
    # The default model on names.txt: 27 tokens, block_size 16, so 32 tokens x 4,192 weights.
    ARGS = ["--input", os.path.join(REPO, "names.txt"), "--steps", "3", "--num-samples", "0", "--save", "m.json"]

    def test_the_default_models_check_is_quick_and_a_bpe_3000_ones_is_not(self):
        config = microgpt.Config()
        small = microgpt.init_params(config, 27, random.Random(0))
        big = microgpt.init_params(config, 3000, random.Random(0))
        self.assertTrue(microgpt.score_check_is_quick(microgpt.weights_of(small), config))
        self.assertFalse(microgpt.score_check_is_quick(microgpt.weights_of(big), config))

    def test_a_stopped_default_run_checks_every_score_and_does_not_say_it_did_not(self):
        checks = []
        with mock.patch.object(microgpt, "check_finite_scores", recording_the_score_checks(checks)), \
                mock.patch.dict(os.environ, {"MICROGPT_STOP_AFTER_STEP": "1"}):
            result = run_main(self.ARGS, self.tmp)
        self.assertEqual(result.returncode, 130, result.stderr)
        self.assertIn("interrupted by SIGINT after 1 of 3 steps; saving to m.json", result.stderr)
        self.assertNotIn(NOT_ALL_CHECKED, result.stdout + result.stderr)
        self.assertEqual(checks, [True], "the saved model's scores were not all checked")
        self.assertTrue(microgpt.is_checkpoint(os.path.join(self.tmp, "m.json")))

    def test_a_second_ctrl_c_during_the_quick_check_neither_cuts_it_nor_loses_the_model(self):
        windows, checks = [], []
        signalling = signals_during_the_score_check(windows)
        check = lambda *a, **k: checks.append(signalling(*a, **k)) or checks[-1]   # noqa: E731
        with mock.patch.object(microgpt, "check_finite_scores", check), \
                mock.patch.dict(os.environ, {"MICROGPT_STOP_AFTER_STEP": "1"}):
            result = run_main(self.ARGS, self.tmp)
        self.assertEqual(result.returncode, 130, result.stderr)
        self.assertEqual((len(windows), checks), (2, [True]))       # 32 tokens: 2 windows of 16
        self.assertIn("saved the model to m.json", result.stdout)
        self.assertTrue(microgpt.is_checkpoint(os.path.join(self.tmp, "m.json")))
        self.assertNotIn("Traceback", result.stderr)


if __name__ == "__main__":
    unittest.main()
