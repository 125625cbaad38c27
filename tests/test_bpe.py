"""Part IV, IV.1: tokens bigger than letters. GPT-2's byte-level BPE tokenizer (checked
against tiktoken with GPT-2's own ranks where those are at hand) and microgpt's own learned
BPE (checked against hand computations)."""
import base64
import functools
import importlib.util
import json
import os
import random
import sys
import tempfile
import unicodedata
import unittest
from unittest import mock

import contextlib
import io

from tests.support import NAMES, assert_ok, assert_refused, microgpt, run_main, run_many, write_text

try:
    import tiktoken
except ImportError:
    tiktoken = None
try:
    import regex
except ImportError:
    regex = None

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIKTOKEN_FILE = os.environ.get("MICROGPT_GPT2_TIKTOKEN", "")
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@functools.lru_cache(maxsize=None)
@functools.lru_cache(maxsize=None)
def hostile_texts():
    """Texts a tokenizer gets wrong first: every Unicode category, combining marks, emoji
    joined by zero-width joiners, CJK, right-to-left scripts, \\r\\n, tabs, runs of spaces,
    contractions in every case, and characters drawn at random from all of Unicode (those
    assigned in this Python's Unicode version, without lone surrogates, which UTF-8 cannot
    hold). Made once per process (a tuple of strings: nobody can change it): looking up the
    category of all 1.1 million code points takes a third of a second."""
    rng = random.Random(13)
    by_category = {}
    for code in range(sys.maxunicode + 1):
        category = unicodedata.category(chr(code))
        if category not in ("Cn", "Cs") and len(by_category.setdefault(category, [])) < 40:
            by_category[category].append(chr(code))
    every_category = " ".join("".join(chars) for chars in by_category.values())
    contractions = " ".join(c + suffix for c in ("'", "\u2019")
                            for suffix in ("s", "S", "t", "T", "re", "RE", "Re", "rE", "ve", "VE", "m", "M",
                                           "ll", "LL", "Ll", "d", "D"))
    assigned = [c for c in (chr(rng.randrange(sys.maxunicode + 1)) for _ in range(40000))
                if unicodedata.category(c) not in ("Cn", "Cs")]
    return (
        every_category,
        "e\u0301 \u0065\u0301\u0301 a\u0308\u0323 \u1100\u1161\u11a8 Zalgo: Z\u0351\u0352\u0353o\u0354\u0355",
        "family \U0001F469\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466 flag \U0001F1EB\U0001F1F7 "
        "skin \U0001F44D\U0001F3FD keycap 1\uFE0F\u20E3",
        "\u4e2d\u6587\u5b57\u7b26 \u65e5\u672c\u8a9e\u306e\u6587\u7ae0 \ud55c\uad6d\uc5b4 \u3000\u5168\u89d2",
        "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e2\u05d1\u05e8\u05d9\u05ea \u202eevil\u202c \u200f",
        "line one\r\nline two\r\n\r\n\ttab\t\tthen  two   three    spaces     \n  \n\t \n",
        "I'm, you're, he's, we've, they'd, she'll, don't; I'M, YOU'RE, HE'S, DON'T " + contractions,
        " lead", "trail ", "   ", "\n", "", "<|endoftext|>", "a<|endoftext|>b", "''s '''t ' 's !'s",
        "\x00\x01\x1c\x1d\x1e\x1f\x7f\x85\xa0\u2028\u2029\u200b\ufeff \u00bd \u2167 \u0663 \u00b2",
        "1234567890 3.14159 -42 1,000,000 \u0661\u0662\u0663 \u2160\u2161",
        "".join(assigned),
    )


def tiny_gpt2_files(directory):
    """vocab.json and merges.txt of a tiny GPT-2-style tokenizer: the 256 byte tokens, four
    merges, and <|endoftext|>. Returns (vocab, merges)."""
    byte_chars = microgpt.bytes_to_unicode()
    vocab = {ch: i for i, ch in enumerate(byte_chars)}
    merges = [("\u0120", "t"), ("h", "e"), ("\u0120t", "he"), ("i", "n")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    write_text(directory, "vocab.json", json.dumps(vocab))
    write_text(directory, "merges.txt", "#version: 0.2\n" + "".join(f"{l} {r}\n" for l, r in merges))
    return vocab, merges


class ByteTableTest(unittest.TestCase):

    def test_each_byte_has_its_own_printable_character_and_the_space_is_G_with_a_dot(self):
        table = microgpt.bytes_to_unicode()
        self.assertEqual(len(set(table)), 256)
        self.assertTrue(all(ch.isprintable() and not ch.isspace() for ch in table))
        self.assertEqual((table[32], table[10]), ("\u0120", "\u010a"))     # "Ġ", "Ċ"
        # tiktoken's description of the same table: bytes whose Latin-1 character is
        # printable (and not the space) stand for themselves; the rest follow from 256 on.
        stays = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
        moved = [b for b in range(256) if b not in stays]
        self.assertEqual([table[b] for b in stays], [chr(b) for b in stays])
        self.assertEqual([table[b] for b in moved], [chr(256 + n) for n in range(len(moved))])


class PreTokenizerTest(unittest.TestCase):

    def pieces(self, text):
        return microgpt.gpt2_pretokenizer().findall(text)

    def test_contractions_are_lower_case_only_and_a_space_goes_to_the_next_word(self):
        self.assertEqual(self.pieces("I'm here, they'RE  gone's"),
                         ["I", "'m", " here", ",", " they", "'", "RE", " ", " gone", "'s"])

    def test_white_space_runs_leave_their_last_space_to_the_next_word(self):
        self.assertEqual(self.pieces("a   b"), ["a", "  ", " b"])
        self.assertEqual(self.pieces("a\n\n b\tc"), ["a", "\n\n", " b", "\t", "c"])
        self.assertEqual(self.pieces("x \t \n"), ["x", " \t \n"])          # at the end: one run
        self.assertEqual(self.pieces("x\u00a0y"), ["x", "\u00a0", "y"])    # only U+0020 joins a word

    def test_numbers_include_every_number_category_and_symbols_keep_their_space(self):
        self.assertEqual(self.pieces("12\u00bd\u2167 x!? 3"), ["12\u00bd\u2167", " x", "!?", " 3"])

    def test_file_separators_1c_to_1f_are_not_white_space_as_in_unicode_and_gpt2(self):
        self.assertEqual(self.pieces("a \x1c\x1d b"), ["a", " \x1c\x1d", " b"])

    @unittest.skipUnless(regex, "needs the regex package (pip install regex), which has \\p{L}")
    def test_pieces_match_gpt2s_own_regular_expression_on_hostile_text(self):
        pattern = regex.compile(GPT2_PATTERN)
        for text in hostile_texts():
            with self.subTest(text=text[:40]):
                self.assertEqual(self.pieces(text), pattern.findall(text))


class TinyTokenizerTest(unittest.TestCase):
    """A tokenizer with four merges, enough to check the merging by hand."""

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.dir = cls._tmp.name
        cls.vocab, cls.merges = tiny_gpt2_files(cls.dir)
        cls.tok = microgpt.read_gpt2_tokenizer(cls.dir)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def test_merges_apply_lowest_rank_first_as_worked_out_by_hand(self):
        v = self.vocab
        # " the": G t h e -> Gt h e (rank 0) -> Gt he (rank 1) -> Gthe (rank 2)
        self.assertEqual(self.tok.encode(" the"), [v["\u0120the"]])
        # "thin": t h i n -> t h in (rank 3; (h,e) never occurs): "th" is no merge
        self.assertEqual(self.tok.encode("thin"), [v["t"], v["h"], v["in"]])
        # "é" is two bytes, each its own token
        self.assertEqual(self.tok.encode("\u00e9"), [v["\u00c3"], v["\u00a9"]])

    def test_the_text_endoftext_is_ordinary_text_never_the_special_token(self):
        ids = self.tok.encode("<|endoftext|>")
        self.assertNotIn(self.vocab["<|endoftext|>"], ids)
        self.assertEqual(self.tok.decode_bytes(ids), b"<|endoftext|>")

    @unittest.skipUnless(importlib.util.find_spec("transformers"),
                         "needs transformers (a test-only package): pip install transformers")
    def test_the_same_ids_as_hugging_face_whose_default_alone_makes_the_text_endoftext_special(self):
        from transformers import GPT2Tokenizer
        reference = GPT2Tokenizer(os.path.join(self.dir, "vocab.json"), os.path.join(self.dir, "merges.txt"))
        eot = self.vocab["<|endoftext|>"]
        # What microgpt.py and README.md say: by default Hugging Face's tokenizer turns the text
        # "<|endoftext|>" into the special token; microgpt never does (as tiktoken's encode_ordinary).
        self.assertEqual(reference.encode("<|endoftext|>"), [eot])
        self.assertNotIn(eot, self.tok.encode("<|endoftext|>"))
        # Told to treat special tokens' text as text, it agrees with microgpt on every text.
        reference = GPT2Tokenizer(os.path.join(self.dir, "vocab.json"), os.path.join(self.dir, "merges.txt"),
                                  split_special_tokens=True)
        for text in hostile_texts():
            with self.subTest(text=text[:40]):
                self.assertEqual(self.tok.encode(text), reference.encode(text))

    def test_hostile_text_decodes_back_to_its_exact_bytes(self):
        for text in hostile_texts():
            with self.subTest(text=text[:40]):
                self.assertEqual(self.tok.decode_bytes(self.tok.encode(text)), text.encode("utf-8"))

    def test_tokenize_prints_the_ids_on_one_line(self):
        text = "the thin \u00e9 \U0001F469\u200D\U0001F467 x\r\n"
        path = write_text(self.dir, "text.txt", text)
        result = run_main(["--gpt2", self.dir, "--tokenize", path], self.dir)
        assert_ok(self, result)
        ids = [int(i) for i in result.stdout.split()]
        self.assertEqual(result.stdout.count("\n"), 1)
        self.assertEqual(ids, self.tok.encode(text))
        self.assertEqual(self.tok.decode_bytes(ids), text.encode("utf-8"))


class BadTokenizerFilesTest(unittest.TestCase):

    def test_bad_vocab_or_merges_files_are_refused_with_a_message_naming_the_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            for name, vocab_text, merges_text in [
                    ("notjson", "{", None),
                    ("gap", json.dumps({ch: 2 * i for i, ch in enumerate(microgpt.bytes_to_unicode())}), None),
                    ("nobytes", json.dumps({"a": 0}), None),
                    ("badline", None, "#version: 0.2\n\u0120 t x\n"),
                    ("unknown", None, "#version: 0.2\nq z\n"),
                    ("notutf8", None, None),
                    ("missing", None, None)]:
                with self.subTest(case=name):
                    folder = os.path.join(tmp, name)
                    os.mkdir(folder)
                    tiny_gpt2_files(folder)
                    if vocab_text is not None:
                        write_text(folder, "vocab.json", vocab_text)
                    if merges_text is not None:
                        write_text(folder, "merges.txt", merges_text)
                    if name == "notutf8":
                        with open(os.path.join(folder, "merges.txt"), "wb") as f:
                            f.write(b"\xff\xfe")
                    if name == "missing":
                        os.remove(os.path.join(folder, "vocab.json"))
                    with self.assertRaises(microgpt.BadInput) as caught:
                        microgpt.read_gpt2_tokenizer(folder)
                    self.assertIn(folder, str(caught.exception))

    def test_bad_tokenize_command_lines_are_refused_with_exit_2(self):
        with tempfile.TemporaryDirectory() as tmp:
            text = write_text(tmp, "text.txt", "hello")
            with open(os.path.join(tmp, "latin1.txt"), "wb") as f:
                f.write(b"caf\xe9")
            good = os.path.join(tmp, "good")
            os.mkdir(good)
            tiny_gpt2_files(good)
            assert_refused(self, tmp, ["--gpt2", os.path.join(tmp, "missing"), "--tokenize", text],
                           ["--gpt2", good, "--tokenize", os.path.join(tmp, "latin1.txt")],
                           ["--gpt2", good, "--tokenize", tmp], ["--tokenize", text])


def read_tiktoken_ranks(path):
    """{token bytes: rank} from a .tiktoken file: one base64 token and its rank per line."""
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks


def merge_that_made(token, ranks):
    """The two tokens whose merge made `token`, found without microgpt's code and in
    another way: on bytes, not strings, join the adjacent pair whose joined bytes have the
    lowest rank, one pair at a time, until two parts are left. (Only tokens ranked below
    `token` take part: they are the ones learned before it.)"""
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        joinable = [(ranks[parts[i] + parts[i + 1]], i) for i in range(len(parts) - 1)
                    if ranks.get(parts[i] + parts[i + 1], ranks[token]) < ranks[token]]
        _, i = min(joinable)
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


@unittest.skipUnless(tiktoken and os.path.isfile(TIKTOKEN_FILE),
                     "needs tiktoken and MICROGPT_GPT2_TIKTOKEN=path to gpt2.tiktoken (in the openai-whisper "
                     "source distribution, whisper/assets/gpt2.tiktoken)")
class RealGPT2TokenizerTest(unittest.TestCase):
    """microgpt's tokenizer, reading GPT-2's vocab.json and merges.txt (written here from
    gpt2.tiktoken), gives exactly tiktoken's ids."""

    @classmethod
    def setUpClass(cls):
        ranks = read_tiktoken_ranks(TIKTOKEN_FILE)
        cls.reference = tiktoken.Encoding(name="gpt2-from-ranks", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                          special_tokens={"<|endoftext|>": microgpt.GPT2_EOT})
        table = microgpt.bytes_to_unicode()

        def text(token):
            return "".join(table[b] for b in token)
        vocab = {text(token): rank for token, rank in ranks.items()}
        vocab["<|endoftext|>"] = microgpt.GPT2_EOT
        merges = [merge_that_made(token, ranks) for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])
                  if len(token) > 1]
        cls._tmp = tempfile.TemporaryDirectory()
        cls.dir = cls._tmp.name
        with open(os.path.join(cls.dir, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        with open(os.path.join(cls.dir, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "".join(f"{text(a)} {text(b)}\n" for a, b in merges))
        cls.merges, cls.ranks = merges, ranks
        cls.tok = microgpt.read_gpt2_tokenizer(cls.dir)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def test_files_have_gpt2s_shape_and_a_merged_tokens_id_is_256_plus_its_rank(self):
        self.assertEqual(len(self.merges), 50000)
        self.assertEqual(len(self.ranks), 50256)
        for rank, (a, b) in enumerate(self.merges):
            self.assertEqual(self.ranks[a + b], 256 + rank)

    def test_ids_match_tiktoken_on_the_repository_and_hostile_text(self):
        texts = list(hostile_texts())
        for name in ("README.md", "microgpt.py", "names.txt"):
            with open(os.path.join(REPO, name), encoding="utf-8") as f:
                texts.append(f.read())
        self.assertGreater(sum(map(len, texts)), 300000)
        for text in texts:
            with self.subTest(text=text[:40]):
                ids = self.tok.encode(text)
                self.assertEqual(ids, self.reference.encode_ordinary(text))
                self.assertEqual(self.tok.decode_bytes(ids), text.encode("utf-8"))

    def test_hello_world_is_15496_995_and_endoftext_is_50256(self):
        self.assertEqual(self.tok.encode("Hello world"), [15496, 995])     # GPT-2's famous example
        self.assertEqual(self.reference.encode("<|endoftext|>", allowed_special="all"), [microgpt.GPT2_EOT])
        self.assertEqual(self.tok.decode_bytes([microgpt.GPT2_EOT]), b"<|endoftext|>")

    def test_the_tokens_that_part_iv_quotes_are_gpt2s(self):
        # Part IV once said GPT-2 cuts " Turing" into " Tur" and "ing": it is one token (39141).
        with open(microgpt.__file__, encoding="utf-8") as f:
            source = f.read()
        quoted = {" tokenizer": ([" token", "izer"], '" tokenizer" is [" token", "izer"]'),
                  "<|endoftext|>": (["<", "|", "end", "of", "text", "|", ">"], "(ids 27,\n        91, 437, 1659, "
                                                                          "5239, 91, 29:")}
        for text, (pieces, sentence) in quoted.items():
            with self.subTest(text=text):
                self.assertIn(sentence, source)
                ids = self.reference.encode_ordinary(text)
                self.assertEqual([self.reference.decode_single_token_bytes(i).decode("utf-8") for i in ids], pieces)
                self.assertEqual(self.tok.encode(text), ids)
        self.assertEqual(self.reference.encode_ordinary("<|endoftext|>"), [27, 91, 437, 1659, 5239, 91, 29])

    def test_tokenize_command_prints_tiktokens_ids(self):
        text = hostile_texts()[6] + "\n" + hostile_texts()[2]
        path = write_text(self.dir, "text.txt", text)
        result = run_main(["--gpt2", self.dir, "--tokenize", path], self.dir)
        assert_ok(self, result)
        self.assertEqual([int(i) for i in result.stdout.split()], self.reference.encode_ordinary(text))



def naive_merges(words, num_merges):
    """BPE learning as plainly as it can be written: every round, count every adjacent pair
    in every word again, from scratch."""
    words = [list(w) for w in words]
    merges = []
    for _ in range(num_merges):
        counts = {}
        for w in words:
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        most = max(counts.values())
        best = sorted(pair for pair, n in counts.items() if n == most)[0]
        merges.append(best)
        words = [apply_in_order(w, [best]) for w in words]
    return merges


def apply_in_order(word, merges):
    """Encode a word by applying each merge in learned order, over the whole word, left to right."""
    tokens = list(word)
    for left, right in merges:
        out, i = [], 0
        while i < len(tokens):
            if tokens[i:i + 2] == [left, right]:
                out.append(left + right)
                i += 2
            else:
                out.append(tokens[i])
                i += 1
        tokens = out
    return tokens


class LearnedBPETest(unittest.TestCase):

    def test_learning_aaabdaaabac_merges_aa_then_ab_then_aa_ab_as_worked_out_by_hand(self):
        # aaabdaaabac: "aa" occurs 4 times (overlaps count: a-a-a is two pairs), more than any
        # other pair. Merged left to right: aa a b d aa a b a c. Now (aa, a) and (a, b) occur
        # twice each: a tie, and ("a", "b") sorts first. Then aa ab d aa ab a c: (aa, ab) twice.
        self.assertEqual(microgpt.learn_merges(["aaabdaaabac"], 3), [("a", "a"), ("a", "b"), ("aa", "ab")])

    def test_merging_a_pair_joins_its_occurrences_left_to_right_without_overlap(self):
        self.assertEqual(microgpt.merge_pair(list("aaaa"), ("a", "a")), ["aa", "aa"])
        self.assertEqual(microgpt.merge_pair(list("aaa"), ("a", "a")), ["aa", "a"])
        self.assertEqual(microgpt.merge_pair(["ab", "a", "b"], ("a", "b")), ["ab", "ab"])

    def test_a_word_counts_as_often_as_it_occurs_and_merges_never_join_two_words(self):
        self.assertEqual(microgpt.learn_merges(["xy", "xy", "xy", "ab", "ab"], 1), [("x", "y")])
        self.assertEqual(microgpt.learn_merges(["ab"] * 5, 10), [("a", "b")])    # never ("b", "a")

    def test_incremental_counting_learns_the_same_merges_as_counting_again_every_round(self):
        rng = random.Random(5)
        words = ["".join(rng.choice("aabbbcdd") for _ in range(rng.randrange(1, 9))) for _ in range(300)]
        with open(os.path.join(REPO, "names.txt"), encoding="utf-8") as f:
            names = f.read().split()[:600]
        for corpus, n in ((words, 40), (names, 40), (["aaabdaaabac"], 10)):
            with self.subTest(corpus=corpus[:3]):
                self.assertEqual(microgpt.learn_merges(corpus, n), naive_merges(corpus, n))

    def test_no_two_learned_merges_spell_the_same_token(self):
        # bpe()'s proof that merging by rank equals replaying in order needs it (its docstring
        # shows how two merges of one token break it); small alphabets make the most overlaps.
        rng = random.Random(6)
        for trial in range(400):
            alphabet = "abc"[:1 + trial % 3]
            corpus = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(rng.randint(1, 8))]
            tokens = [a + b for a, b in microgpt.learn_merges(corpus, 60)]
            with self.subTest(corpus=corpus):
                self.assertEqual(len(set(tokens)), len(tokens))
                self.assertFalse(set(tokens) & set(alphabet))

    def test_encoding_applies_the_merges_in_learned_order_and_decodes_back(self):
        with open(os.path.join(REPO, "names.txt"), encoding="utf-8") as f:
            names = f.read().split()
        merges = microgpt.learn_merges(names[:2000], 100)
        vocab = microgpt.Vocabulary(microgpt.build_vocab("".join(names)), merges)
        for name in names[2000:3000]:
            ids = microgpt.encode(name, vocab)
            self.assertEqual([vocab[i] for i in ids], apply_in_order(name, merges))
            self.assertEqual(microgpt.decode(ids, vocab), name)

    def test_any_text_decodes_back_to_itself(self):
        for text in hostile_texts():
            with self.subTest(text=text[:40]):
                words = microgpt.gpt2_pretokenizer().findall(text)
                vocab = microgpt.Vocabulary(microgpt.build_vocab(text), microgpt.learn_merges(words, 40))
                self.assertEqual(microgpt.decode(microgpt.encode(text, vocab), vocab), text)

    def test_names_mode_tokens_never_cross_a_document_boundary(self):
        # Joined, "ab\nab\n..." would make (b, a) or (b, "\n") as common as (a, b).
        with tempfile.TemporaryDirectory() as tmp:
            path = write_text(tmp, "docs.txt", "ab\nab\nab\nab\nabc\ncab\n" * 5)
            config = microgpt.Config(batch="all")
            with contextlib.redirect_stdout(io.StringIO()):
                _, chars, batches, _ = microgpt.prepare_data(path, config, "docs", None, random.Random(1), bpe=10)
        self.assertTrue(all("\n" not in token for token in chars))
        bos = len(chars)
        for seq in batches(0):
            self.assertEqual((seq[0], seq[-1]), (bos, bos))
            self.assertNotIn(bos, seq[1:-1])
            self.assertIn(microgpt.decode(seq, chars), ("ab", "abc", "cab"))
        self.assertEqual(chars.merges[:2], [("a", "b"), ("ab", "c")])


class LearnedBPECommandLineTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.tmp = cls._tmp.name
        names = write_text(cls.tmp, "names.txt", "\n".join(NAMES) + "\n")
        text = write_text(cls.tmp, "text.txt", "the cat sat on the mat, the end. " * 40)
        tiny = ["--steps", "3", "--n-embd", "8", "--n-head", "2", "--block-size", "8"]
        cls.saved = run_many([["--input", names, "--bpe", "12", "--save", "docs.json", "--num-samples", "3"] + tiny,
                              ["--input", text, "--stream", "--bpe", "12", "--save", "stream.json", "--length",
                               "10", "--num-samples", "2"] + tiny], cls.tmp)
        cls.loaded = run_many([["--load", "docs.json", "--num-samples", "3", "--explain", "emma"],
                               ["--load", "stream.json", "--length", "10", "--num-samples", "2",
                                "--explain", "the mat"]], cls.tmp)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def samples(self, stdout):
        return stdout[stdout.index("--- "):].split("\npos ")[0].strip()

    def test_a_saved_bpe_model_keeps_its_merges_and_samples_the_same_when_loaded(self):
        for name, saved, loaded in zip(("docs.json", "stream.json"), self.saved, self.loaded):
            with self.subTest(checkpoint=name):
                assert_ok(self, saved)
                assert_ok(self, loaded)
                with open(os.path.join(self.tmp, name), encoding="utf-8") as f:
                    checkpoint = json.load(f)
                merges = checkpoint["merges"]
                self.assertEqual(len(merges), 12)
                self.assertEqual(checkpoint["chars"][-12:], [left + right for left, right in merges])
                self.assertIn("validation loss per character", saved.stdout)
                self.assertEqual(self.samples(saved.stdout), self.samples(loaded.stdout))
                self.assertIn("top 5 next-token predictions", loaded.stdout)

    def test_length_counts_tokens_with_bpe_as_help_says(self):
        # --length 10 of a --stream --bpe model: 10 tokens after the first one, several
        # characters each (the seventh tester found it counted tokens where --help said characters)
        config, chars, params, mode, raw = microgpt.load_checkpoint(os.path.join(self.tmp, "stream.json"))
        [ids] = microgpt.draw_samples(microgpt.weights_of(params), config, chars, mode, "", raw["stream_start"], 1, 10)
        self.assertEqual(len(ids), 1 + 10)
        self.assertIn("tokens with --stream --bpe", microgpt.make_parser().format_help().replace("\n", " "))

    def test_explain_keeps_its_columns_aligned_for_tokens_longer_than_six_characters(self):
        # the seventh tester: a --bpe 3000 model's long tokens ran into the next column
        chars = ["shazampocus", "a", "hocuscadabra"]
        config = microgpt.Config(n_embd=8, n_head=2, block_size=8)
        weights = microgpt.weights_of(microgpt.init_params(config, len(chars) + 1, random.Random(0)))
        with mock.patch("sys.stdout", new_callable=io.StringIO) as out:
            microgpt.print_explanation([3, 0, 2, 1], [0, 2, 1, 3], weights, config, chars)
        header, *rows = out.getvalue().split("\n\nattention")[0].splitlines()
        for row, true_next in zip(rows, ["shazampocus", "hocuscadabra", "a", "<BOS>"]):
            self.assertEqual(row[header.rindex("next"):].split()[0], true_next, row)
            self.assertEqual(row[header.index("token"):].split()[0], row.split()[1], row)

    def test_explain_shows_tokens_of_several_characters(self):
        docs = self.loaded[0].stdout
        table = docs[docs.index("\npos "):].split("\n\n")[0]
        shown = [row.split()[1] for row in table.splitlines()[3:]]      # the tokens after <BOS>
        self.assertEqual("".join(shown), "emma")
        self.assertLess(len(shown), 4)

    def test_damaged_merges_in_a_checkpoint_are_refused(self):
        with open(os.path.join(self.tmp, "docs.json"), encoding="utf-8") as f:
            good = json.load(f)
        for why, change in [("not pairs", lambda c: c.update(merges=[["a"]])),
                            ("chars disagree", lambda c: c["chars"].__setitem__(-1, "zz")),
                            ("unknown token", lambda c: c.update(merges=[["q", "q"]] + c["merges"][1:],
                                                                 chars=c["chars"][:-12] + ["qq"] + c["chars"][-11:]))]:
            with self.subTest(why=why):
                damaged = json.loads(json.dumps(good))
                change(damaged)
                path = write_text(self.tmp, "damaged.json", json.dumps(damaged))
                with self.assertRaises(microgpt.BadInput):
                    microgpt.load_checkpoint(path)

    def test_bpe_with_a_loaded_model_is_refused_with_exit_2(self):
        assert_refused(self, self.tmp, ["--load", "docs.json", "--bpe", "5"], ["--bpe", "-1"])


if __name__ == "__main__":
    unittest.main()
