"""Part V, from names to an assistant: the chat format, the loss mask, the reward and the
advantages of reinforcement learning, its gradient, the chat checkpoint and the terminal chat.

Everything runs on tiny models (n_embd 8) and a few steps, so the file takes seconds; the
whole pipeline with its real defaults runs only with MICROGPT_SLOW=1.
"""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

from support import (MICROGPT_COMMAND, NAMES, TempDirTestCase, assert_ok, assert_refused, run_main,  # noqa: E402
                     write_text)

import microgpt

import argparse
import contextlib
import html
import io
import json
import math
import random
import re
import statistics
import subprocess
import tempfile
import unittest
from unittest import mock

LETTERS = list("abcdefghijklmnopqrstuvwxyz")
TINY = microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=16)
TINY_PLAN = dict(n_layer=1, n_embd=8, n_head=2, block_size=16, pretrain_steps=20, sft_steps=6, sft_batch=2,
                 sft_val=20, rl_steps=2, rl_requests=2, rl_group=4, eval_requests=6)


def tiny_chat_model(seed=0, config=TINY):
    """A random pretrained model of names, with the chat tokens added: (params, chat vocabulary)."""
    rng = random.Random(seed)
    params = microgpt.init_params(config, len(LETTERS) + 1, rng)
    chat_chars = microgpt.chat_vocab(LETTERS)
    return microgpt.add_chat_tokens(params, LETTERS, chat_chars, config, rng), chat_chars


def conversation(request, answer, chat_chars):
    return microgpt.render(microgpt.encode_text(request, chat_chars), microgpt.encode_text(answer, chat_chars),
                           chat_chars)


class ChatFormatTest(unittest.TestCase):

    def test_a_rendered_conversation_parses_back_to_its_request_and_answer(self):
        _, chat_chars = tiny_chat_model()
        tokens, mask = conversation("a name starting with em", "emma", chat_chars)
        self.assertEqual(microgpt.parse(tokens, chat_chars), ("a name starting with em", "emma"))
        self.assertEqual([chat_chars[t] for t in tokens],
                         ["<|user|>", "a name starting with ", "e", "m", "<|pad|>", "<|pad|>", "<|pad|>",
                          "<|assistant|>", "e", "m", "m", "a", "<|end|>"])
        self.assertEqual(mask, [0] * 8 + [1] * 5)
        tokens, mask = conversation("a name ending with son", "jason", chat_chars)
        self.assertEqual(microgpt.parse(tokens, chat_chars), ("a name ending with son", "jason"))
        self.assertEqual([chat_chars[t] for t in tokens][1:8],
                         ["a name ending with ", "<|pad|>", "<|pad|>", "s", "o", "n", "<|assistant|>"])

    def test_raw_text_never_encodes_to_a_special_token(self):
        chars = sorted(set("<|>userasintd"))          # every character of the special tokens is a token
        chat_chars = microgpt.chat_vocab(chars)
        ids = microgpt.encode_text("<|user|><|assistant|><|end|>", chat_chars)
        self.assertEqual("".join(chat_chars[i] for i in ids), "<|user|><|assistant|><|end|>")
        self.assertTrue(all(len(chat_chars[i]) == 1 for i in ids))
        self.assertIsNone(microgpt.encode_text("a name", microgpt.chat_vocab(LETTERS)))   # the space alone

    def test_new_tokens_get_new_rows_and_the_pretrained_rows_are_kept(self):
        rng = random.Random(1)
        params = microgpt.init_params(TINY, len(LETTERS) + 1, rng)
        chat_chars = microgpt.chat_vocab(LETTERS)
        chat = microgpt.add_chat_tokens(params, LETTERS, chat_chars, TINY, rng)
        data = lambda rows: [[p.data for p in row] for row in rows]
        for name in ("wte", "lm_head"):
            self.assertEqual(len(chat[name]), len(chat_chars))
            self.assertEqual(data(chat[name][:26]), data(params[name][:26]))
        bos = len(LETTERS)
        self.assertEqual(data([chat["wte"][chat_chars.index("<|assistant|>")]]), data([params["wte"][bos]]))
        self.assertEqual(data([chat["lm_head"][chat_chars.index("<|end|>")]]), data([params["lm_head"][bos]]))


class LossMaskTest(unittest.TestCase):

    def test_the_fine_tuning_loss_is_the_mean_loss_of_the_assistants_tokens_only(self):
        params, chat_chars = tiny_chat_model()
        weights = microgpt.weights_of(params)
        tokens, mask = conversation("a name ending with ma", "emma", chat_chars)
        every = microgpt.sequence_losses(tokens, weights, TINY)     # Part I: a loss at every position
        answer = [loss for pos, loss in enumerate(every) if mask[pos + 1]]
        self.assertEqual(len(answer), len("emma") + 1)                 # the letters and <|end|>
        got = microgpt.answer_losses(tokens, mask, weights, TINY)
        self.assertEqual(len(got), len(answer))
        for a, b in zip(got, answer):
            self.assertAlmostEqual(a, b, places=12)


class RewardTest(unittest.TestCase):

    def test_an_answer_is_correct_only_if_it_satisfies_the_request_is_letters_only_longer_and_ended(self):
        cases = [("starting with", "em", list("emma"), True, True),
                 ("starting with", "em", list("emma"), False, False),      # never ended
                 ("starting with", "em", list("amma"), True, False),       # wrong start
                 ("starting with", "em", list("em"), True, False),         # only X
                 ("ending with", "son", list("jason"), True, True),
                 ("ending with", "son", list("jasons"), True, False),
                 ("ending with", "a", ["e", "m", "<|user|>", "a"], True, False),   # not letters only
                 ("ending with", "a", ["e", "a name ending with ", "a"], True, False)]
        for kind, x, answer, ended, expected in cases:
            with self.subTest(kind=kind, x=x, answer=answer, ended=ended):
                self.assertEqual(microgpt.is_correct(kind, x, answer, ended), expected)

    def test_advantages_are_reward_minus_group_mean_over_the_groups_spread(self):
        for rewards in ([1, 0, 0, 1, 1, 0, 0, 0], [1, 0], [0, 0, 0, 1]):
            mu, sd = statistics.mean(rewards), statistics.pstdev(rewards)
            got = microgpt.advantages([float(r) for r in rewards])
            for a, r in zip(got, rewards):
                self.assertAlmostEqual(a, (r - mu) / sd, places=12)
            self.assertAlmostEqual(sum(got), 0.0, places=12)

    def test_a_group_whose_answers_are_all_equally_good_has_no_advantage(self):
        self.assertEqual(microgpt.advantages([1.0] * 6), [0.0] * 6)
        self.assertEqual(microgpt.advantages([0.0] * 6), [0.0] * 6)


class PolicyGradientTest(unittest.TestCase):

    def test_the_rl_gradient_equals_central_finite_differences_of_its_loss(self):
        params, chat_chars = tiny_chat_model(seed=3)
        rng = random.Random(5)
        weights = microgpt.weights_of(params)
        group = microgpt.answer_group(weights, TINY, chat_chars, "ending with", "an", rng, 4)
        rewards = [1.0, 0.0, 0.0, 1.0]         # as if graded so: every answer gets an advantage
        samples = [(t, m, a) for (t, m, _), a in zip(group, microgpt.advantages(rewards))]
        n = len(samples)
        for tokens, mask, a in samples:
            microgpt.backpropagate(lambda: microgpt.policy_loss(tokens, mask, a, n, params, TINY))

        def total_loss():
            w = microgpt.weights_of(params)
            return sum(microgpt.policy_loss(t, m, a, n, w, TINY) for t, m, a in samples)

        flat = microgpt.flatten(params)
        checked = 0
        count = 25 if os.environ.get("MICROGPT_SLOW") else 12      # more weights checked in CI
        for p in random.Random(7).sample(flat, count) + [params["lm_head"][chat_chars.index("<|end|>")][0]]:
            h, old = 1e-5, p.data
            p.data = old + h
            up = total_loss()
            p.data = old - h
            down = total_loss()
            p.data = old
            self.assertAlmostEqual(p.grad, (up - down) / (2 * h), delta=1e-6 + 1e-4 * abs(p.grad))
            checked += abs(p.grad) > 1e-6
        self.assertGreater(checked, 5)         # real gradients were compared, not just zeros


class ChatReplyTest(unittest.TestCase):

    def test_chat_reply_yields_each_token_with_its_probability_and_top_five(self):
        params, chat_chars = tiny_chat_model(seed=2)
        weights = microgpt.weights_of(params)
        # the first seed whose answer has a token (an untrained model may end its turn at once)
        pieces = next(filter(None, (list(microgpt.chat_reply(weights, TINY, chat_chars, "a name starting with em",
                                                            random.Random(seed), 1.0)) for seed in range(20))))
        prompt = microgpt.prompt_for(microgpt.encode_text("a name starting with em", chat_chars), chat_chars)
        tokens = prompt + [chat_chars.index(piece) for piece, _, _ in pieces]
        rows = microgpt.explain(tokens[:TINY.block_size], weights, TINY)
        for i, (piece, p, top) in enumerate(pieces):
            probs = rows[len(prompt) - 1 + i][0]
            self.assertAlmostEqual(p, probs[chat_chars.index(piece)], places=12)
            self.assertEqual(len(top), 5)
            self.assertEqual([q for _, q in top], sorted(probs, reverse=True)[:5])
            self.assertNotIn(piece, ("<|end|>", "<|user|>", "<|assistant|>"))
        self.assertLessEqual(len(prompt) + len(pieces), TINY.block_size + 1)

    def test_chat_reply_refuses_a_request_with_unknown_characters(self):
        params, chat_chars = tiny_chat_model()
        with self.assertRaisesRegex(microgpt.BadInput, "'A'"):
            next(microgpt.chat_reply(microgpt.weights_of(params), TINY, chat_chars, "A name", random.Random(0), 0.5))


def run_pipeline(names_path, seed=42, temperature=0.5, save=None):
    args = argparse.Namespace(load=None, input=names_path, save=save, seed=seed, temperature=temperature,
                              report=None)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        config, chat_chars, params, card = microgpt.chat_pipeline(args, microgpt.ChatPlan(**TINY_PLAN),
                                                                  microgpt.StopSignals())
    return config, chat_chars, params, card, out.getvalue()


class PipelineTest(TempDirTestCase):
    """The pipeline (seed 42, saving chat.json and its stages) runs once for the class, in
    `shared`; the tests that need other runs make them."""

    @classmethod
    def setUpClass(cls):
        cls._shared_dir = tempfile.TemporaryDirectory()
        home = cls._shared_dir.name
        names = write_text(home, "names.txt", "\n".join(NAMES) + "\n")
        cls.shared_save = os.path.join(home, "chat.json")
        cls.shared = run_pipeline(names, save=cls.shared_save)

    @classmethod
    def tearDownClass(cls):
        cls._shared_dir.cleanup()

    def test_the_report_page_shows_the_card_each_stages_curve_and_shaded_answers(self):
        config, chat_chars, params, card, _ = self.shared
        page = microgpt.chat_report_page(card, microgpt.ChatPlan(**TINY_PLAN), config, chat_chars,
                                         microgpt.weights_of(params))
        self.assertIn(microgpt.REPORT_MARK, page)
        for row in card:
            self.assertIn(f"<td>{row['stage']}</td>", page)
            for rate in row["pass_rates"].values():
                self.assertIn(f"<td>{rate:.1%}</td>", page)
        curves = sum(1 for row in card if row.get("curve"))
        self.assertEqual(page.count("<svg"), 1 + 2 * curves)    # the legend, and each curve twice: the page's
        self.assertEqual(page.count('<div class="big">'), curves)     # and the presentation view's copy
        self.assertIn('style="background:', page)                     # answers shaded by probability
        data = re.search(r'<script type="application/json" id="microgpt-data">(.*?)</script>', page, re.S)
        self.assertEqual(json.loads(data.group(1))[-1]["stage"], "RL")

    def test_the_report_pages_shaded_answers_are_the_terminals_example_conversations(self):
        # The page drew its answers afresh (another rng), so it showed other answers than the
        # terminal's card for the same requests.
        config, chat_chars, params, card, _ = self.shared
        weights = microgpt.weights_of(params)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            microgpt.print_card(card, microgpt.ChatPlan(**TINY_PLAN))
        printed = [line for line in out.getvalue().split("example conversations")[1].splitlines()[1:] if " -> " in line]
        terminal = [re.match(r"  (.*?) +-> (.*?) +(right|wrong)$", line).groups() for line in printed]
        page = microgpt.chat_report_page(card, microgpt.ChatPlan(**TINY_PLAN), config, chat_chars, weights)
        table = page.split("Answers, shaded by probability")[1].split("</table>")[0]
        rows = re.findall(r'<tr><td class="mono">(.*?)</td><td class="sample">(.*?)</td><td>(right|wrong)</td>',
                          table)
        self.assertEqual(len(rows), len(terminal))
        self.assertGreater(len(rows), 1)
        for (request, shaded, verdict), (asked, answer, said) in zip(rows, terminal):
            with self.subTest(request=request):
                pieces = re.findall(r'<span style="background:[^"]*" title="([\d.]+)">(.*?)</span>', shaded)
                shown = "".join(html.unescape(text) for _, text in pieces) or "(nothing)"
                self.assertEqual((html.unescape(request), shown, verdict), (asked, answer, said))
                # each token shaded by the probability the model gives it there, as explain() computes it
                prompt = microgpt.prompt_for(microgpt.encode_text(asked, chat_chars), chat_chars)
                tokens = prompt + [chat_chars.index(html.unescape(t)) for _, t in pieces]
                rows_explained = microgpt.explain(tokens[:config.block_size], weights, config)
                for i, (p, text) in enumerate(pieces):
                    expected = rows_explained[len(prompt) - 1 + i][0][chat_chars.index(html.unescape(text))]
                    self.assertEqual(p, f"{expected:.3f}")

    def test_each_stages_pass_rate_line_puts_each_rate_before_its_kind_of_request(self):
        # "SFT: held-out pass rate starting with 88.3%, ending with 87.5%" read as a trend.
        printed = self.shared[4]
        for row in self.shared[3]:
            with self.subTest(stage=row["stage"]):
                rates = ", ".join(f'{row["pass_rates"][kind]:.1%} on "{kind} X"' for kind in microgpt.TASKS)
                self.assertIn(f"\n{row['stage']}: held-out pass rate: {rates}\n", printed)
                self.assertNotRegex(printed, rf"{row['stage']}: held-out pass rate starting with \d")

    def test_the_card_and_its_page_say_under_rls_answers_that_the_reward_does_not_judge_names(self):
        config, chat_chars, params, card, _ = self.shared
        weights, plan = microgpt.weights_of(params), microgpt.ChatPlan(**TINY_PLAN)
        for stages, shown in ((card, True), (card[:-1], False)):       # with RL, and ending with SFT
            with self.subTest(last=stages[-1]["stage"]):
                with contextlib.redirect_stdout(io.StringIO()) as out:
                    microgpt.print_card(stages, plan)
                terminal = out.getvalue().split("example conversations")[1]
                page = microgpt.chat_report_page(stages, plan, config, chat_chars, weights)
                answers = page.split("Answers, shaded by probability")[1].split("</figure>")[0]   # the last stage's
                for text in (terminal, html.unescape(answers)):
                    said = [line for line in text.splitlines() if "not whether the answer sounds like a name" in line]
                    self.assertEqual(len(said), 1 if shown else 0, text)
                    if shown:
                        self.assertIn("reward hacking", said[0])
                        self.assertIn("count as right", said[0])

    def test_the_same_seed_gives_the_same_report_card_and_weights(self):
        first = self.shared                    # saved its stages too: saving changes nothing
        second = run_pipeline(self.names)
        strip = lambda card: json.dumps([{k: v for k, v in row.items() if k != "cpu"} for row in card])
        self.assertEqual(strip(first[3]), strip(second[3]))
        self.assertEqual(microgpt.weights_of(first[2]), microgpt.weights_of(second[2]))
        self.assertEqual([row["stage"] for row in first[3]], ["pretrained", "SFT", "RL"])
        self.assertNotEqual(strip(run_pipeline(self.names, seed=7)[3]), strip(first[3]))

    def test_rl_resumed_from_the_saved_sft_stage_ends_exactly_as_the_whole_pipeline(self):
        _, _, params, card, _ = self.shared
        home = os.path.dirname(self.shared_save)
        sft = os.path.join(home, "chat-sft.json")
        self.assertTrue(os.path.exists(os.path.join(home, "chat-pretrained.json")))
        loaded = microgpt.load_checkpoint(sft)
        self.assertEqual((loaded[3], loaded[4]["stage"]), ("chat", "SFT"))
        args = argparse.Namespace(load=sft, input=self.names, save=None, seed=42, temperature=0.5, report=None)
        with contextlib.redirect_stdout(io.StringIO()):
            _, _, resumed, resumed_card = microgpt.chat_pipeline(args, microgpt.ChatPlan(**TINY_PLAN),
                                                                 microgpt.StopSignals(), loaded[:3])
        strip = lambda row: {k: v for k, v in row.items() if k != "cpu"}
        self.assertEqual([row["stage"] for row in resumed_card], ["SFT", "RL"])
        self.assertEqual(resumed_card[0]["pass_rates"], card[1]["pass_rates"])
        self.assertEqual(strip(resumed_card[1]), strip(card[2]))
        self.assertEqual(microgpt.weights_of(resumed), microgpt.weights_of(params))

    def test_a_saved_chat_model_loads_back_and_answers_the_same(self):
        config, chat_chars, params, card, _ = self.shared
        path = os.path.join(self.tmp, "chat.json")
        microgpt.save_checkpoint(path, params, config, chat_chars, "chat", {"stage": "RL", "card": card})
        loaded_config, loaded_chars, loaded_params, mode, raw = microgpt.load_checkpoint(path)
        self.assertEqual((mode, loaded_chars, raw["stage"]), ("chat", chat_chars, "RL"))
        self.assertEqual(microgpt.weights_of(loaded_params), microgpt.weights_of(params))
        answer = lambda w, c: list(microgpt.chat_reply(w, c, chat_chars, "a name ending with a", random.Random(3), 0.5))
        self.assertEqual(answer(microgpt.weights_of(loaded_params), loaded_config),
                         answer(microgpt.weights_of(params), config))


class TerminalChatTest(TempDirTestCase):

    def test_terminal_chat_answers_each_piped_line_and_explains_unknown_characters_in_one_line(self):
        params, chat_chars = tiny_chat_model()
        path = os.path.join(self.tmp, "chat.json")
        microgpt.save_checkpoint(path, params, TINY, chat_chars, "chat", {"stage": "SFT"})
        requests = "a name starting with em\na name ending with \u00e9\n\na name ending with son\n"
        result = run_main(["--load", path, "--chat"], self.tmp, stdin=requests)
        assert_ok(self, result)
        lines = result.stdout.splitlines()
        asked = [i for i, line in enumerate(lines) if line.startswith("> ")]
        self.assertEqual([lines[i] for i in asked], ["> a name starting with em", "> a name ending with \u00e9",
                                                      "> a name ending with son"])
        self.assertEqual(len(lines), asked[-1] + 2)                 # one line of answer after each
        self.assertEqual(asked, [asked[0], asked[0] + 2, asked[0] + 4])
        self.assertTrue(lines[asked[1] + 1].startswith("(cannot answer:"), lines[asked[1] + 1])
        self.assertIn("'\u00e9'", lines[asked[1] + 1])
        self.assertEqual(result.stderr, "")

    def test_terminal_chat_says_what_it_understands_instead_of_answering_other_text(self):
        # "hello" was answered with letters ("elloh"), as if the model had understood it.
        params, chat_chars = tiny_chat_model()
        path = os.path.join(self.tmp, "chat.json")
        microgpt.save_checkpoint(path, params, TINY, chat_chars, "chat", {"stage": "RL"})
        requests = ["hello", "a name starting with emma", "a name", "a name ending with", "em",
                    "a name starting with em"]
        result = run_main(["--load", path, "--chat"], self.tmp, stdin="\n".join(requests) + "\n")
        assert_ok(self, result)
        lines = result.stdout.splitlines()
        replies = [lines[lines.index("> " + request) + 1] for request in requests]
        for request, reply in zip(requests[:-1], replies):
            with self.subTest(request=request):
                self.assertEqual(reply, "(cannot answer: the assistant understands only 'a name starting with X' "
                                        f"and 'a name ending with X', X being 1 to 3 letters; not {request!r})")
        self.assertFalse(replies[-1].startswith("(cannot answer"), replies[-1])

    def test_a_chat_model_without_chat_and_bad_chat_options_are_refused(self):
        params, chat_chars = tiny_chat_model()
        path = os.path.join(self.tmp, "chat.json")
        microgpt.save_checkpoint(path, params, TINY, chat_chars, "chat", {"stage": "RL"})
        assert_refused(self, self.tmp, ["--load", path], ["--chat", "--steps", "5"],
                       ["--load", path, "--chat", "--save", "other.json"], ["--chat", "--temperature", "-1"],
                       ["--chat", "--save", "x.json", "--report", "x.json"], ["--chat", "--load", "missing.json"])

    def test_a_stage_file_of_save_that_is_another_file_of_the_run_is_refused_before_training(self):
        # --save c.json also writes c-pretrained.json and c-sft.json: a --report, --input or
        # --load of one of those names used to be found out only after minutes of training.
        names = write_text(self.tmp, "c-sft.json", "\n".join(NAMES) + "\n")
        model = os.path.join(self.tmp, "m-sft.json")
        params = microgpt.init_params(TINY, len(microgpt.build_vocab("".join(NAMES))) + 1, random.Random(0))
        microgpt.save_checkpoint(model, params, TINY, microgpt.build_vocab("".join(NAMES)), "docs")
        cases = [["--chat", "--save", "c.json", "--report", "c-pretrained.json"],
                 ["--chat", "--save", "c.json", "--report", "./c-sft.json"],
                 ["--chat", "--save", "c", "--report", "c-sft.json"],
                 ["--chat", "--save", "c.json", "--input", names],
                 ["--chat", "--save", "m.json", "--load", model]]
        with mock.patch.object(microgpt, "chat_pipeline", side_effect=AssertionError("the pipeline started")):
            results = assert_refused(self, self.tmp, *cases)
        for args, result in zip(cases, results):
            stage = "pretrained" if "pretrained" in " ".join(args) else "SFT"
            self.assertIn(f"puts the {stage} stage: choose another name", result.stderr)


@unittest.skipUnless(os.environ.get("MICROGPT_SLOW"), "slow end-to-end check; CI sets MICROGPT_SLOW=1")
class WholePipelineTest(unittest.TestCase):

    def test_chat_with_defaults_trains_prints_the_card_saves_and_answers_correctly(self):
        with tempfile.TemporaryDirectory() as tmp:
            requests = "a name starting with em\na name ending with son\n"
            result = subprocess.run(MICROGPT_COMMAND + ["--chat", "--save", "chat.json"],
                                    input=requests, capture_output=True, text=True, encoding="utf-8", cwd=tmp,
                                    timeout=3600, env=dict(os.environ, PYTHONIOENCODING="utf-8"))
            assert_ok(self, result)
            self.assertIn("report card", result.stdout)
            rl = [line for line in result.stdout.splitlines() if line.startswith("RL ")][-1]
            rates = [float(r) for r in re.findall(r"([\d.]+)%", rl)]
            self.assertEqual(len(rates), 2, rl)
            self.assertTrue(all(rate >= 90 for rate in rates), rl)
            for name in ("chat.json", "chat-sft.json", "chat-pretrained.json"):
                self.assertTrue(os.path.exists(os.path.join(tmp, name)), name)
            lines = result.stdout.splitlines()
            answers = [lines[i + 1] for i, line in enumerate(lines) if line.startswith("> ")]
            self.assertEqual(len(answers), 2)
            self.assertTrue(answers[0].startswith("em") and answers[0].isalpha(), answers)
            self.assertTrue(answers[1].endswith("son") and answers[1].isalpha(), answers)


if __name__ == "__main__":
    unittest.main()
