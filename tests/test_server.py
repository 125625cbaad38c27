"""The chat in a web page (--serve): what the server refuses, checked with http.client
against 127.0.0.1, and a round trip in a real browser (headless Chromium driven by selenium)."""
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from tests.support import MICROGPT_COMMAND, microgpt, run_main, run_many

try:
    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
JSON = {"Content-Type": "application/json"}
WAIT = 60         # seconds before a test gives up on something that should happen at once


# ---------------------------------------------------------------------------------------
# A small chat model, shared by every test (made once)
# ---------------------------------------------------------------------------------------

_MODEL = {}


def chat_model():
    """(weights, config, chars) of a tiny chat model: untrained, which is all the server's
    refusals need; the slow browser test trains one."""
    if not _MODEL:
        config = microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=16)
        chars = microgpt.chat_vocab(microgpt.build_vocab("abcdefghijklmnopqrstuvwxyz"))
        params = microgpt.init_params(config, len(chars), random.Random(0))     # a chat model has no BOS
        _MODEL.update(weights=microgpt.inference_weights(params), config=config, chars=chars)
    return _MODEL["weights"], _MODEL["config"], _MODEL["chars"]


def model_reply(request, rng, temperature):
    """The model's answer, exactly as --serve computes it."""
    weights, config, chars = chat_model()
    return microgpt.chat_reply(weights, config, chars, request, rng, temperature)


def full_answer(request, seed, temperature=0.5):
    return [piece for piece, _, _ in model_reply(request, random.Random(seed), temperature)]


def long_answer_seed(request, tokens):
    """A seed whose answer has at least `tokens` tokens, so a test can cut it short."""
    for seed in range(1000):
        if len(full_answer(request, seed)) >= tokens:
            return seed
    raise AssertionError(f"no seed below 1000 gives an answer of {tokens} tokens")


class PacedReply:
    """The model's real answer, but each token after the first waits until the test lets it
    go; records whether the answer was stopped before its end (the generator closed)."""

    def __init__(self):
        self.go = threading.Semaphore(0)
        self.started = threading.Event()
        self.closed_early = threading.Event()
        self.finished = threading.Event()

    def __call__(self, request, rng, temperature):
        answer = model_reply(request, rng, temperature)
        try:
            for i, token in enumerate(answer):
                if i:
                    self.go.acquire(timeout=WAIT)
                self.started.set()
                yield token
            self.finished.set()
        except GeneratorExit:
            self.closed_early.set()
            raise


class Served:
    """A ChatServer on 127.0.0.1 (a free port) in a background thread, for a `with` block."""

    def __init__(self, reply=model_reply, generations=2):
        self.server = microgpt.ChatServer("127.0.0.1", 0, reply, {"model": {}}, 0.5, 42, generations)
        self.port = self.server.port

    def __enter__(self):
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(WAIT)

    def connect(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT)

    def send(self, method, path, body=None, headers=None):
        """(status, headers, body bytes) of one request."""
        conn = self.connect()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def chat(self, obj, headers=None):
        status, _, body = self.send("POST", "/api/chat", json.dumps(obj), dict(JSON, **(headers or {})))
        return status, [json.loads(line) for line in body.decode("utf-8").splitlines()]


def raw_exchange(port, data):
    """Send raw bytes and read the whole reply (for requests http.client will not send)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)         # nothing more is coming
        reply = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return reply
            reply += chunk


# ---------------------------------------------------------------------------------------
# The API and its refusals, in-process
# ---------------------------------------------------------------------------------------

class TestChatAPI(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.served = Served().__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.served.__exit__(None, None, None)

    def assert_refused(self, status, headers, body, code):
        self.assertEqual(status, code, body)
        self.assertEqual(headers.get_content_type(), "application/json")
        self.assertIn("error", json.loads(body))         # a reason, as JSON, not a traceback

    def test_the_page_is_one_self_contained_document(self):
        status, headers, body = self.served.send("GET", "/")
        page = body.decode("utf-8")
        self.assertEqual(status, 200)
        self.assertEqual(headers.get_content_type(), "text/html")
        self.assertIn('<form id="ask">', page)
        # Nothing fetched from elsewhere: no script, style sheet or image by address, and the
        # browser is told so too (Content-Security-Policy).
        for attribute in ("src=", "http://", "https://", "@import", "url("):
            self.assertNotIn(attribute, page.replace('href="data:,"', ""))
        self.assertIn("default-src 'none'", headers["Content-Security-Policy"])
        self.assertIn("connect-src 'self'", headers["Content-Security-Policy"])

    def test_an_answer_streams_one_json_line_per_token_then_done(self):
        seed = long_answer_seed("a name starting with m", 2)
        status, lines = self.served.chat({"request": "a name starting with m", "seed": seed})
        self.assertEqual(status, 200)
        *tokens, done = lines
        expected = full_answer("a name starting with m", seed)    # the model called directly
        self.assertEqual([t["token"] for t in tokens], expected)
        self.assertEqual(done, {"done": True, "answer": "".join(expected), "tokens": len(expected), "seed": seed})
        for t in tokens:
            self.assertTrue(0 < t["p"] <= 1)
            self.assertEqual(len(t["alternatives"]), 5)
            probs = [q for _, q in t["alternatives"]]
            self.assertEqual(probs, sorted(probs, reverse=True))
            self.assertLessEqual(sum(probs), 1 + 1e-9)

    def test_the_same_seed_gives_the_same_answer_and_no_seed_a_reported_one(self):
        _, first = self.served.chat({"request": "a name ending with a"})
        seed = first[-1]["seed"]
        _, again = self.served.chat({"request": "a name ending with a", "seed": seed})
        self.assertEqual(first, again)

    def test_info_states_the_limits(self):
        status, _, body = self.served.send("GET", "/api/info")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["limits"]["body_bytes"], microgpt.MAX_BODY_BYTES)

    def test_a_host_other_than_localhost_is_refused(self):
        port = self.served.port
        for host in (f"evil.example:{port}", "evil.example", f"localhost:{port + 1}", f"127.0.0.1.nip.io:{port}",
                     f"localhost.evil.example:{port}", "", f"user@localhost:{port}", "localhost:x"):
            with self.subTest(host=host):
                self.assert_refused(*self.served.send("GET", "/", headers={"Host": host}), 403)
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"LOCALHOST:{port}"):
            with self.subTest(host=host):
                self.assertEqual(self.served.send("GET", "/", headers={"Host": host})[0], 200)

    def test_two_host_headers_are_refused_with_400_even_if_the_first_is_ours(self):
        port = self.served.port
        for second in ("evil.example", f"127.0.0.1:{port}"):
            with self.subTest(second=second):
                reply = raw_exchange(port, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: {second}\r\n"
                                     "\r\n".encode())
                head, _, body = reply.partition(b"\r\n\r\n")
                self.assertTrue(head.startswith(b"HTTP/1.0 400"), reply[:100])
                self.assertEqual(len(body.splitlines()), 1, body)
                self.assertIn("one Host header", json.loads(body)["error"])

    def test_white_space_around_a_request_is_dropped_as_the_page_drops_it(self):
        status, lines = self.served.chat({"request": "  a name ending with ly \n", "seed": 3})
        self.assertEqual(status, 200, lines)
        _, trimmed = self.served.chat({"request": "a name ending with ly", "seed": 3})
        self.assertEqual(lines, trimmed)
        status, lines = self.served.chat({"request": " \t\n"})
        self.assertEqual(status, 400)
        self.assertIn("1 to", lines[0]["error"])

    def test_a_request_from_a_page_elsewhere_is_refused(self):
        body = json.dumps({"request": "a name starting with m"})
        for origin in ("http://evil.example", "null", f"http://evil.example:{self.served.port}"):
            with self.subTest(origin=origin):
                self.assert_refused(*self.served.send("POST", "/api/chat", body, dict(JSON, Origin=origin)), 403)
        status, _, _ = self.served.send("POST", "/api/chat", body,
                                        dict(JSON, Origin=f"http://localhost:{self.served.port}"))
        self.assertEqual(status, 200)

    def test_a_body_over_the_cap_is_refused_with_413(self):
        body = json.dumps({"request": "a" * microgpt.MAX_BODY_BYTES})
        self.assert_refused(*self.served.send("POST", "/api/chat", body, JSON), 413)
        # Announced but never sent: refused from the header alone.
        reply = raw_exchange(self.served.port, f"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1:{self.served.port}\r\n"
                             "Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n".encode())
        self.assertTrue(reply.startswith(b"HTTP/1.0 413"), reply[:100])

    def test_bad_json_and_bad_fields_are_refused_with_400(self):
        port = self.served.port
        for body in (b"{not json", b"\xff\xfe", b"[]", b'"a name"', b"{}", b'{"request": 5}',
                     b'{"request": ""}', b'{"request": "a name", "prompt": "x"}',
                     json.dumps({"request": "a" * (microgpt.MAX_REQUEST_CHARS + 1)}).encode(),
                     b'{"request": "a name starting with m", "temperature": -1}',
                     b'{"request": "a name starting with m", "temperature": NaN}',
                     b'{"request": "a name starting with m", "temperature": "hot"}',
                     b'{"request": "a name starting with m", "seed": -1}',
                     b'{"request": "a name starting with m", "seed": true}',
                     b"[" * 100000):
            with self.subTest(body=body[:40]):
                self.assert_refused(*self.served.send("POST", "/api/chat", body, JSON),
                                    413 if len(body) > microgpt.MAX_BODY_BYTES else 400)
        self.assert_refused(*self.served.send("POST", "/api/chat", b"{}", {"Content-Type": "text/plain"}), 415)
        reply = raw_exchange(port, f"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        self.assertTrue(reply.startswith(b"HTTP/1.0 411"), reply[:100])
        reply = raw_exchange(port, b"NONSENSE\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.0 400"), reply[:100])

    def test_characters_the_model_does_not_know_are_refused_with_400(self):
        status, lines = self.served.chat({"request": "a name starting with \u00e9"})
        self.assertEqual(status, 400)
        self.assertIn("\u00e9", lines[0]["error"])

    def test_a_request_of_neither_kind_is_refused_with_400_saying_what_is_understood(self):
        # {"request": "hello"} streamed an answer ("elloh") as if the model had understood.
        for request in ("hello", "a name starting with emma", "a name ending with", "a name starting with m please"):
            with self.subTest(request=request):
                status, lines = self.served.chat({"request": request})
                self.assertEqual(status, 400)
                self.assertEqual(len(lines), 1)
                self.assertIn("understands only 'a name starting with X' and 'a name ending with X'",
                              lines[0]["error"])
        status, lines = self.served.chat({"request": "a name ending with son"})
        self.assertEqual(status, 200)
        self.assertTrue(lines[-1]["done"])

    def test_unknown_paths_and_wrong_methods_get_404_and_405(self):
        self.assert_refused(*self.served.send("GET", "/names.txt"), 404)
        self.assert_refused(*self.served.send("GET", "/../microgpt.py"), 404)
        self.assert_refused(*self.served.send("POST", "/api/other", b"{}", JSON), 404)
        for method, path in (("GET", "/api/chat"), ("PUT", "/"), ("DELETE", "/api/chat"), ("BREW", "/"),
                             ("POST", "/")):
            with self.subTest(method=method, path=path):
                status, headers, body = self.served.send(method, path, b"{}" if method == "POST" else None, JSON)
                self.assert_refused(status, headers, body, 405)
                self.assertIn(headers["Allow"], ("GET", "POST"))

    def test_the_answer_stops_at_the_length_cap(self):
        seed = long_answer_seed("a name starting with m", 4)
        cap, microgpt.MAX_ANSWER_TOKENS = microgpt.MAX_ANSWER_TOKENS, 3
        try:
            status, lines = self.served.chat({"request": "a name starting with m", "seed": seed})
        finally:
            microgpt.MAX_ANSWER_TOKENS = cap
        self.assertEqual(status, 200)
        self.assertEqual(lines[-1]["tokens"], 3)
        self.assertEqual(len(lines), 4)


class TestChatServerLimits(unittest.TestCase):

    def test_answers_beyond_the_concurrency_cap_get_503_and_the_slot_comes_back(self):
        paced = PacedReply()
        seed = long_answer_seed("a name starting with m", 2)
        with Served(paced, generations=1) as served:
            conn = served.connect()
            conn.request("POST", "/api/chat", json.dumps({"request": "a name starting with m", "seed": seed}), JSON)
            response = conn.getresponse()
            response.readline()                      # the first token: the one slot is taken
            status, headers, body = served.send("POST", "/api/chat", json.dumps({"request": "a name ending with a"}),
                                                 JSON)
            self.assertEqual(status, 503)
            self.assertEqual(headers["Retry-After"], "1")
            for _ in range(microgpt.MAX_ANSWER_TOKENS):
                paced.go.release()
            response.read()
            conn.close()
            self.assertTrue(paced.finished.wait(WAIT))
            for _ in range(microgpt.MAX_ANSWER_TOKENS):
                paced.go.release()
            status, _, _ = served.send("POST", "/api/chat", json.dumps({"request": "a name ending with a", "seed": 1}),
                                       JSON)
            self.assertEqual(status, 200)

    def test_a_client_that_leaves_mid_answer_stops_the_generation(self):
        paced = PacedReply()
        seed = long_answer_seed("a name starting with m", 4)
        with Served(paced, generations=1) as served:
            s = socket.create_connection(("127.0.0.1", served.port), timeout=WAIT)
            body = json.dumps({"request": "a name starting with m", "seed": seed}).encode()
            s.sendall(f"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\nContent-Type: application/json"
                      f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            received = b""
            while b'"token"' not in received:         # the first token has arrived
                chunk = s.recv(65536)
                self.assertTrue(chunk, "the server closed the connection before the first token")
                received += chunk
            # Leave at once (a reset, as a closed browser tab does), then let the model go on.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
            for _ in range(3):
                paced.go.release()
            self.assertTrue(paced.closed_early.wait(WAIT), "the generation went on after the client left")
            self.assertFalse(paced.finished.is_set())
            deadline = time.monotonic() + WAIT
            while served.server.abandoned < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertEqual(served.server.abandoned, 1)
            # The one slot is free again.
            for _ in range(microgpt.MAX_ANSWER_TOKENS):
                paced.go.release()
            status, _, _ = served.send("POST", "/api/chat", json.dumps({"request": "a name ending with a", "seed": 1}),
                                       JSON)
            self.assertEqual(status, 200)


# ---------------------------------------------------------------------------------------
# The command line: --serve as a user starts it
# ---------------------------------------------------------------------------------------

def save_chat_model(path):
    """Save the shared tiny chat model as a checkpoint --load can read."""
    weights, config, chars = chat_model()
    params = {name: [[microgpt.Value(x) for x in row] for row in matrix] for name, matrix in weights.items()}
    microgpt.save_checkpoint(path, params, config, chars, "chat")


def port_of(proc):
    """The port a started `--serve` prints in its first line, the address to open."""
    line = proc.stdout.readline()
    if "serving the chat at http://" not in line:
        raise AssertionError(f"--serve did not start: {line or proc.stderr.read()}")
    return int(line.split("http://")[1].split("/")[0].rsplit(":", 1)[1])


class TestServeCommand(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model = os.path.join(cls.tmp.name, "chat.json")
        save_chat_model(cls.model)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def start(self, *args):
        """Start `microgpt.py --load chat.json --serve --port 0 ARGS`; returns the process."""
        env = dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(MICROGPT_COMMAND + ["--load", self.model, "--serve", "--port", "0"]
                                + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        return proc

    def port_of(self, proc):
        return port_of(proc)

    def stop(self, proc, signum):
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=WAIT)
        return proc.returncode, err

    def test_ctrl_c_and_sigterm_stop_it_cleanly_even_after_a_client_left_mid_answer(self):
        signals = (signal.SIGINT, signal.SIGTERM)
        procs = [self.start() for _ in signals]            # side by side: most of the time is startup
        for signum, proc in zip(signals, procs):
            with self.subTest(signal=signum.name):
                port = self.port_of(proc)
                s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
                body = json.dumps({"request": "a name starting with m"}).encode()
                s.sendall(f"POST /api/chat HTTP/1.0\r\nHost: localhost:{port}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                self.assertTrue(s.recv(100).startswith(b"HTTP/1.0 200"))
                s.close()
                code, err = self.stop(proc, signum)
                self.assertEqual(code, 128 + signum)
                self.assertNotIn("Traceback", err)
                self.assertEqual(err.strip(), f"microgpt: interrupted by {signum.name}")

    def test_another_address_only_when_asked_and_with_a_warning(self):
        proc = self.start("--host", "0.0.0.0")
        port = self.port_of(proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        conn.request("GET", "/")
        status = conn.getresponse().status
        conn.close()
        code, err = self.stop(proc, signal.SIGINT)
        self.assertEqual(status, 200)
        self.assertIn("microgpt: warning: listening on 0.0.0.0", err)

    def test_without_a_chat_model_it_says_what_to_do(self):
        names_model = os.path.join(self.tmp.name, "names.json")
        config, chars = microgpt.Config(n_embd=4, n_head=1, block_size=4), list("abc")
        params = microgpt.init_params(config, len(chars) + 1, random.Random(0))
        microgpt.save_checkpoint(names_model, params, config, chars, "docs")
        arg_lists = (["--serve"], ["--load", names_model, "--serve"], ["--port", "8000"])
        for args, result in zip(arg_lists, run_many(arg_lists, self.tmp.name)):
            with self.subTest(args=args):
                self.assertEqual(result.returncode, 2)
                self.assertNotIn("Traceback", result.stderr)
                self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
                if "--serve" in args:
                    self.assertIn("--chat --save chat.json", result.stderr)

    def test_a_port_in_use_is_one_line_not_a_traceback(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            # in this process: the refusal comes before any serving (a bind that worked would hang here)
            result = run_main(["--load", self.model, "--serve", "--port", port], self.tmp.name)
        self.assertEqual(result.returncode, 2)
        self.assertIn(f"port {port}", result.stderr)
        self.assertIn("--port N", result.stderr)


# ---------------------------------------------------------------------------------------
# The page in a real browser
# ---------------------------------------------------------------------------------------

def headless_chromium(user_data_dir):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: CI runs as root; the others keep Chromium from reaching the network.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=760,520", f"--user-data-dir={user_data_dir}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))


def ask_in_the_page(driver, port, request):
    """Open the page, type the request, press Enter and wait for the whole answer. Returns
    the answer's token elements and its turn element."""
    driver.get(f"http://localhost:{port}/")
    driver.find_element(By.ID, "request").send_keys(request, Keys.ENTER)
    WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".assistant[data-done]"))
    turn = driver.find_elements(By.CSS_SELECTOR, ".assistant")[-1]
    return turn.find_elements(By.CSS_SELECTOR, ".tok"), turn


@unittest.skipUnless(HAVE_SELENIUM, "selenium is not installed (pip install selenium)")
@unittest.skipUnless(CHROMIUM and CHROMEDRIVER, "chromium and chromedriver are not installed "
                     "(apt-get install chromium chromium-driver)")
class WithBrowser(unittest.TestCase):
    """A class whose tests drive one headless Chromium (self.driver), started for the class."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.driver = headless_chromium(os.path.join(cls.tmp.name, "profile"))

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        cls.tmp.cleanup()


class TestChatInTheBrowser(WithBrowser):

    def test_the_page_shows_exactly_the_tokens_the_api_streams_with_alternatives_on_hover(self):
        with Served() as served:
            tokens, turn = ask_in_the_page(self.driver, served.port, "a name starting with m")
            self.assertEqual(turn.get_attribute("data-done"), "1")
            seed = int(turn.get_attribute("data-seed"))
            _, lines = served.chat({"request": "a name starting with m", "seed": seed})
        self.assertEqual([t.get_attribute("textContent") for t in tokens], [line["token"] for line in lines[:-1]])
        # Each token is shaded by its probability, and pointing at it shows the alternatives.
        shades = {t.value_of_css_property("background-color") for t in tokens}
        self.assertTrue(all(s.startswith("rgb") for s in shades), shades)
        ActionChains(self.driver).move_to_element(tokens[0]).perform()
        tip = self.driver.find_element(By.ID, "tip")
        self.assertTrue(tip.is_displayed())
        tip_lines = tip.text.splitlines()
        self.assertEqual(tip_lines[0], f"p = {lines[0]['p']:.3f}")
        self.assertEqual(len(tip_lines), 1 + len(lines[0]["alternatives"]))
        path = os.path.join(self.tmp.name, "chat.png")
        self.assertTrue(self.driver.save_screenshot(path))
        self.assertGreater(os.path.getsize(path), 1000)

    def test_the_page_shows_each_token_as_soon_as_it_is_made(self):
        paced = PacedReply()
        with Served(paced) as served:
            self.driver.get(f"http://localhost:{served.port}/")
            self.driver.find_element(By.ID, "request").send_keys("a name starting with m", Keys.ENTER)
            shown = lambda d: len(d.find_elements(By.CSS_SELECTOR, ".assistant .tok"))  # noqa: E731
            # The model is held after its first token: the page already shows that one.
            WebDriverWait(self.driver, WAIT).until(lambda d: shown(d) == 1)
            self.assertFalse(self.driver.find_elements(By.CSS_SELECTOR, ".assistant[data-done]"))
            for _ in range(microgpt.MAX_ANSWER_TOKENS):
                paced.go.release()
            WebDriverWait(self.driver, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".assistant[data-done]"))

    def test_a_refusal_is_shown_in_the_page(self):
        with Served() as served:
            tokens, turn = ask_in_the_page(self.driver, served.port, "a name starting with \u00e9")
        self.assertEqual(tokens, [])
        self.assertEqual(turn.get_attribute("data-done"), "error")
        self.assertIn("\u00e9", turn.find_element(By.CSS_SELECTOR, ".error").text)

    @unittest.skipUnless(os.environ.get("MICROGPT_SLOW"), "slow end-to-end check; CI sets MICROGPT_SLOW=1")
    def test_a_trained_assistant_answers_in_the_page_what_was_asked(self):
        model = os.path.join(self.tmp.name, "chat.json")
        trained = subprocess.run(MICROGPT_COMMAND + ["--chat", "--save", model], cwd=self.tmp.name,
                                 stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=3600)
        self.assertEqual(trained.returncode, 0, trained.stderr)
        server = subprocess.Popen(MICROGPT_COMMAND + ["--load", model, "--serve", "--port", "0",
                                   "--temperature", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            port = port_of(server)
            for kind, x in (("starting with", "m"), ("ending with", "a"), ("starting with", "el")):
                with self.subTest(kind=kind, x=x):
                    tokens, _ = ask_in_the_page(self.driver, port, f"a name {kind} {x}")
                    answer = "".join(t.get_attribute("textContent") for t in tokens)
                    # What the request asks, checked here without the model's own checker.
                    self.assertTrue(answer.isalpha() and answer.islower() and len(answer) > len(x), answer)
                    self.assertTrue(answer.startswith(x) if kind == "starting with" else answer.endswith(x), answer)
            self.driver.save_screenshot(os.path.join(self.tmp.name, "trained.png"))
        finally:
            server.send_signal(signal.SIGINT)
            _, err = server.communicate(timeout=WAIT)
        self.assertEqual(server.returncode, 130)
        self.assertNotIn("Traceback", err)


if __name__ == "__main__":
    unittest.main()
