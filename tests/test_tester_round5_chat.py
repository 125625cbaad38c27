"""What a fifth tester found: every ordinary Ctrl-C said the model's scores were not all
checked (also for the default model, whose check takes milliseconds); the chat model's
answers showed special tokens at a high temperature; the chat card's presentation view
held only its curves (the layout of its slides: test_report_layout)."""
import io
import os
import random
import signal
import threading
import unittest
from unittest import mock

from tests.support import TempDirTestCase, microgpt, run_main, REPO
from tests.test_server import WithBrowser, Served, ask_in_the_page, chat_model, full_answer, save_chat_model

NOT_ALL_CHECKED = "the model's scores were not all checked"


def recording_the_score_checks(results):
    """A check_finite_scores that appends what each call returns (True: every token checked)."""
    check = microgpt.check_finite_scores
    return lambda *args, **kwargs: results.append(check(*args, **kwargs)) or results[-1]


# One token drawn that the model gave 3.2e-8, beside one it gave almost everything.
ALMOST_NEVER = ("q", 3.2e-8, [("a", 0.9954571), ("r", 0.0014), ("q", 3.2e-8)])


@unittest.skipUnless(hasattr(signal, "SIGINT") and os.name == "posix", "needs POSIX signals")
class ACtrlCOfTheDefaultModelFinishesItsQuickScoreCheck(TempDirTestCase):
    # The default model's shape on the first 200 names of names.txt (every letter, so 27
    # tokens as on all of it; block_size 16): 32 tokens x 4,192 weights.
    ARGS = ["--input", "first200.txt", "--steps", "3", "--num-samples", "0", "--save", "m.json"]

    def setUp(self):
        super().setUp()
        with open(os.path.join(REPO, "names.txt"), encoding="utf-8") as f:
            first = f.read().split()[:200]
        with open(os.path.join(self.tmp, "first200.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(first) + "\n")

    def test_the_default_models_check_is_quick_and_a_bpe_3000_ones_is_not(self):
        config = microgpt.Config()
        small = microgpt.init_params(config, 27, random.Random(0))
        big = microgpt.init_params(config, 3000, random.Random(0))
        self.assertTrue(microgpt.score_check_is_quick(microgpt.weights_of(small), config))
        self.assertFalse(microgpt.score_check_is_quick(microgpt.weights_of(big), config))

    def test_a_check_that_takes_seconds_says_so_at_once_and_a_quick_one_says_nothing(self):
        # The sixth tester's --load of a --bpe 3000 model sat silent for 9.4 s: the check's
        # progress lines come only after PROGRESS_SECONDS, so a long check announces itself.
        config = microgpt.Config()
        weights = microgpt.weights_of(microgpt.init_params(config, 27, random.Random(0)))
        for quick in (True, False):
            with self.subTest(quick=quick), mock.patch.object(microgpt, "score_check_is_quick", lambda *a: quick), \
                    mock.patch("sys.stdout", new_callable=io.StringIO) as out:
                self.assertTrue(microgpt.check_finite_scores(weights, config))
            said = "" if quick else "checking the model's scores: each of its 27 tokens at every position\n"
            self.assertEqual(out.getvalue(), said)

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
        logits, original = microgpt.logits_at_every_position, microgpt.check_finite_scores

        def window(*args, **kwargs):      # Ctrl-C again at the second window
            windows.append(1)
            if len(windows) > 1:
                # to the main thread, as Ctrl-C reaches the program, which has no other thread
                # (the test process may have one: a signal to the process could go there)
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            return logits(*args, **kwargs)

        def check(*args, **kwargs):
            with mock.patch.object(microgpt, "logits_at_every_position", window):
                checks.append(original(*args, **kwargs))
            return checks[-1]
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


class AnAnswerAtAHighTemperatureEndsWithItsTurn(unittest.TestCase):
    """At temperature 10 the tiny untrained chat model of test_server writes special tokens
    often: seeds 0 to 29 of "a name starting with m" give answers that stop at <|user|> and at
    <|assistant|>, and answers with <|pad|> inside."""
    REQUEST, SEEDS = "a name starting with m", range(30)

    def setUp(self):
        self.weights, self.config, self.chars = chat_model()

    def drawn(self, seed):
        """Every token the model draws for REQUEST (the turn's end included), and the pieces
        chat_reply shows, with the same seed at temperature 10."""
        prompt = microgpt.chat_prompt(self.REQUEST, self.config, self.chars)
        ends = {self.chars.index(t) for t in (microgpt.END, microgpt.USER, microgpt.ASSISTANT)}
        drawn = [self.chars[t] for t, _ in microgpt.generate_answer(self.weights, self.config, prompt,
                                                                     random.Random(seed), 10, ends)]
        shown = [p for p, _, _ in microgpt.chat_reply(self.weights, self.config, self.chars, self.REQUEST,
                                                      random.Random(seed), 10)]
        return drawn, shown

    def test_an_answer_stops_at_end_user_or_assistant_and_shows_none_of_them(self):
        stopped_by = set()
        for seed in self.SEEDS:
            drawn, shown = self.drawn(seed)
            self.assertFalse({microgpt.END, microgpt.USER, microgpt.ASSISTANT} & set(shown), (seed, shown))
            self.assertEqual(drawn[:len(shown)], shown)
            if len(drawn) > len(shown):          # the turn ended with the one token not shown
                self.assertEqual(len(drawn), len(shown) + 1)
                stopped_by.add(drawn[-1])
        self.assertLessEqual({microgpt.USER, microgpt.ASSISTANT}, stopped_by, "the seeds no longer test both")

    def test_the_reward_judges_the_answer_the_user_sees(self):
        for seed in self.SEEDS:
            _, shown = self.drawn(seed)
            _, ids, texts, ended, correct = microgpt.answer_request(self.weights, self.config, self.chars,
                                                                   "starting with", "m", random.Random(seed), 10)
            self.assertEqual(texts, shown)
            self.assertEqual(correct, microgpt.is_correct("starting with", "m", shown, ended))

    def test_a_name_followed_by_user_is_a_finished_right_answer_and_one_with_pad_is_wrong(self):
        chars = self.chars

        def writes(*tokens):
            return lambda *args: iter((chars.index(t), None) for t in tokens)
        with mock.patch.object(microgpt, "generate_answer", writes("m", "a", "r", "y", microgpt.USER)):
            *_, texts, ended, correct = microgpt.answer_request(self.weights, self.config, chars,
                                                                "starting with", "m", random.Random(0), 10)
        self.assertEqual((texts, ended, correct), (list("mary"), True, True))
        with mock.patch.object(microgpt, "generate_answer", writes("m", microgpt.PAD, "y", microgpt.END)):
            *_, texts, ended, correct = microgpt.answer_request(self.weights, self.config, chars,
                                                                "starting with", "m", random.Random(0), 10)
        self.assertEqual((texts, ended, correct), (["m", microgpt.PAD, "y"], True, False))


class TheTerminalAndTheApiShowPadAsAToken(TempDirTestCase):

    def test_the_terminal_chat_at_temperature_10_shows_no_turn_token_and_explains_pad_once(self):
        save_chat_model(os.path.join(self.tmp, "chat.json"))
        requests = "a name starting with m\n" * 30
        result = run_main(["--load", "chat.json", "--chat", "--temperature", "10", "--seed", "1"], self.tmp,
                          stdin=requests)
        self.assertEqual(result.returncode, 0, result.stderr)
        answers = [line for line in result.stdout.splitlines()[2:] if not line.startswith(("> ", "("))]
        # an answer that ends at once (the first token ends the turn) says so, rather than an empty line
        self.assertEqual(len(answers) + result.stdout.count(microgpt.NO_ANSWER + "\n"), 30, result.stdout)
        self.assertNotIn("", answers)
        self.assertIn(microgpt.NO_ANSWER, result.stdout)
        for token in ("<|user|>", "<|assistant|>", "<|end|>"):
            self.assertFalse([a for a in answers if token in a], token)
        self.assertTrue(any("<|pad|>" in a for a in answers), answers)
        self.assertEqual(result.stdout.count(microgpt.SPECIAL_IN_ANSWER), 1)

    def test_the_terminal_says_when_an_answer_ends_with_a_space_it_would_not_show(self):
        # the sixth tester: "orhaicna name ending with " ended in a space no one could see
        answers = {"a name starting with m": ["o", "r", "a name ending with "], "a name starting with e": ["e", "m"]}
        reply = lambda weights, config, chars, request, rng, temperature: ((p, 0.5, []) for p in answers[request])
        with mock.patch.object(microgpt, "chat_reply", reply), mock.patch("sys.stdin", io.StringIO(
                "a name starting with m\na name starting with e\n")), \
                mock.patch("sys.stdout", new_callable=io.StringIO) as out:
            microgpt.terminal_chat(None, None, [], 42, 10)
        self.assertEqual(out.getvalue().splitlines(), [
            "> a name starting with m", "ora name ending with " + microgpt.ENDS_WITH_SPACE,
            "> a name starting with e", "em"])

    def test_the_api_marks_pad_as_special_and_streams_no_turn_token(self):
        seen = set()
        with Served() as served:
            for seed in range(30):
                status, lines = served.chat({"request": "a name starting with m", "seed": seed, "temperature": 10})
                self.assertEqual(status, 200)
                *tokens, done = lines
                self.assertEqual([t["token"] for t in tokens], full_answer("a name starting with m", seed, 10))
                for t in tokens:
                    self.assertNotIn(t["token"], (microgpt.END, microgpt.USER, microgpt.ASSISTANT))
                    self.assertEqual(t.get("special", False), t["token"] == microgpt.PAD)
                    seen.add(t["token"])
        self.assertIn(microgpt.PAD, seen)


    def test_a_token_drawn_at_a_probability_that_rounds_to_0_is_sent_as_2_significant_digits(self):
        # the sixth tester: at temperature 10 the API said "p": 0.0 of a token the model drew
        with Served(reply=lambda request, rng, temperature: (token for token in [ALMOST_NEVER])) as served:
            status, lines = served.chat({"request": "a name starting with m", "seed": 0, "temperature": 10})
        self.assertEqual(status, 200)
        self.assertEqual((lines[0]["p"], lines[0]["alternatives"]),
                         (3.2e-08, [["a", 0.995457], ["r", 0.0014], ["q", 3.2e-08]]))
        self.assertEqual([microgpt.api_probability(p) for p in (0.0, 1.0, 4.4e-7, 5.1e-7)], [0.0, 1.0, 4.4e-7, 1e-6])


class TheChatPageShowsPadAsATokenAndAnEmptyAnswerAsANote(WithBrowser):

    def test_the_page_shows_a_tiny_probability_to_2_significant_digits_not_as_0(self):
        with Served(reply=lambda request, rng, temperature: (token for token in [ALMOST_NEVER])) as served:
            tokens, _ = ask_in_the_page(self.driver, served.port, "a name starting with m")
            label, tip = tokens[0].get_attribute("aria-label"), tokens[0].get_attribute("data-tip")
        self.assertEqual(label, "q, probability 3.2e-8")
        # two significant digits below 1% (the ninth tester: 0.14% showed as "0.1%" above 0.018%)
        self.assertEqual(tip.splitlines(), ["p = 3.2e-8", "  a             99.5%", "  r             0.14%",
                                            "\u25b8 q            0.0000032%"])

    def test_the_page_shows_pad_in_a_dashed_box_and_letters_without(self):
        seed = next(s for s in range(100) if microgpt.PAD in full_answer("a name starting with m", s, 10))
        with Served(reply=lambda request, rng, temperature: microgpt.chat_reply(
                *chat_model(), request, random.Random(seed), 10)) as served:
            tokens, _ = ask_in_the_page(self.driver, served.port, "a name starting with m")
            shown = [(t.get_attribute("textContent"), t.value_of_css_property("outline-style")) for t in tokens]
        self.assertEqual([text for text, _ in shown], full_answer("a name starting with m", seed, 10))
        for text, outline in shown:
            self.assertEqual(outline, "dashed" if text == microgpt.PAD else "none", text)

    def test_an_answer_that_ends_at_once_says_so_in_the_page(self):
        seed = next(s for s in range(100) if not full_answer("a name starting with m", s, 10))
        with Served(reply=lambda request, rng, temperature: microgpt.chat_reply(
                *chat_model(), request, random.Random(seed), 10)) as served:
            tokens, turn = ask_in_the_page(self.driver, served.port, "a name starting with m")
            self.assertEqual(tokens, [])
            self.assertIn(microgpt.NO_ANSWER, turn.text)
