"""chat-agent's openai back end against tests/fixtures/fake_openai.py.

Runs the real chat-agent (CHAT_AGENT_BIN) with AGENT_BACKEND=openai pointed
at the fake, calls it over gRPC with Debian's python3-grpcio, and checks the
reply text, streaming, cost, errors, and that the system prompt, summary and
history reached the model server. Needs neither PostgreSQL nor Redis.
"""

import glob
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("CHATD_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..")))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "fixtures"))
from fake_openai import COMPLETION_TOKENS, PROMPT_TOKENS, FakeOpenAI  # noqa: E402


def agent_bin():
    env = os.environ.get("CHAT_AGENT_BIN")
    if env:
        return env
    found = sorted(glob.glob(os.path.join(SOURCE_DIR, "build*", "chat-agent")), key=os.path.getmtime)
    if not found:
        raise unittest.SkipTest("chat-agent not built: set CHAT_AGENT_BIN")
    return found[-1]


def load_pb2():
    out = tempfile.mkdtemp(prefix="agent-openai-pb2-")
    subprocess.run(["protoc", "-I", os.path.join(SOURCE_DIR, "proto"), "-I", "/usr/include",
                    "--python_out", out, "ai_service.proto"], check=True)
    sys.path.insert(0, out)
    import ai_service_pb2

    return ai_service_pb2


HISTORY = ('[{"role":"user","content":"first question"},'
           '{"role":"assistant","content":"first answer"},'
           '{"role":"file","content":"report.pdf text"}]')


class AgentOpenAITest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pb = load_pb2()
        cls.fake = FakeOpenAI().start()
        env = dict(os.environ, AGENT_HOST="127.0.0.1", AGENT_PORT="0", AGENT_BACKEND="openai",
                   OPENAI_BASE_URL="http://127.0.0.1:%d/v1" % cls.fake.port, OPENAI_API_KEY="sk-test",
                   OPENAI_TIMEOUT_SECONDS="20", AGENT_WORKERS="4")
        for k in ("AGENT_DELAY_MS", "AGENT_DISABLE", "AGENT_FAIL_MODE", "AGENT_RECORD_FILE"):
            env.pop(k, None)
        cls.proc = subprocess.Popen([agent_bin()], env=env, stderr=subprocess.PIPE, text=True)
        cls.log = []
        port = None
        deadline = time.time() + 20
        while port is None and time.time() < deadline:
            line = cls.proc.stderr.readline()
            if not line:
                break
            cls.log.append(line)
            if "chat-agent listening on" in line:
                port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        if port is None:
            cls.proc.kill()
            raise RuntimeError("chat-agent did not start:\n" + "".join(cls.log))
        cls.drain = threading.Thread(target=lambda: cls.log.extend(cls.proc.stderr), daemon=True)
        cls.drain.start()
        cls.channel = grpc.insecure_channel("127.0.0.1:%d" % port)
        pb = cls.pb
        cls.process = cls.channel.unary_unary(
            "/ai_service.AIService/Process", request_serializer=pb.Request.SerializeToString,
            response_deserializer=pb.Response.FromString)
        cls.stream = cls.channel.unary_stream(
            "/ai_service.AIService/ProcessStream", request_serializer=pb.Request.SerializeToString,
            response_deserializer=pb.Chunk.FromString)
        cls.summarize = cls.channel.unary_unary(
            "/ai_service.AIService/Summarize", request_serializer=pb.SummaryRequest.SerializeToString,
            response_deserializer=pb.SummaryResponse.FromString)
        cls.title = cls.channel.unary_unary(
            "/ai_service.AIService/Title", request_serializer=pb.TitleRequest.SerializeToString,
            response_deserializer=pb.TitleResponse.FromString)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.proc.terminate()
        try:
            rc = cls.proc.wait(15)
        except subprocess.TimeoutExpired:
            cls.proc.kill()
            rc = cls.proc.wait()
        cls.drain.join(5)
        cls.fake.stop()
        if rc != 0:
            raise AssertionError("chat-agent exited %s:\n%s" % (rc, "".join(cls.log)))

    def request(self, message="what now?", model="test-model", **kw):
        fields = dict(user_id="u1", session_id="s1", chat_message=message, model_name=model,
                      session_prompt="You are terse.", chat_summary="we talked about reports",
                      chat_history=HISTORY, model_provider="ollama", balance=5.0)
        fields.update(kw)
        return self.pb.Request(**fields)

    def last_request(self, since):
        reqs = self.fake.requests[since:]
        self.assertEqual(len(reqs), 1, reqs)
        return reqs[0]

    def expected_cost(self):
        return PROMPT_TOKENS / 1000 * 0.0015 + COMPLETION_TOKENS / 1000 * 0.002

    def test_process_builds_prompt(self):
        n = len(self.fake.requests)
        resp = self.process(self.request("hello model"), timeout=20)
        self.assertEqual(resp.response_text, "fake reply to: hello model")
        self.assertAlmostEqual(resp.cost, self.expected_cost(), places=6)
        self.assertGreater(resp.timestamp.seconds, 0)

        req = self.last_request(n)
        self.assertEqual(req["path"], "/v1/chat/completions")
        self.assertEqual(req["headers"].get("Authorization"), "Bearer sk-test")
        body = req["body"]
        self.assertEqual(body["model"], "test-model")
        self.assertTrue(body["stream"])
        self.assertEqual(body["messages"], [
            {"role": "system",
             "content": "You are terse.\n\nSummary of earlier conversation: we talked about reports"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "[file] report.pdf text"},
            {"role": "user", "content": "hello model"},
        ])

    def test_no_prompt_no_summary(self):
        n = len(self.fake.requests)
        resp = self.process(self.request("bare", session_prompt="", chat_summary="", chat_history=""),
                            timeout=20)
        self.assertEqual(resp.response_text, "fake reply to: bare")
        self.assertEqual(self.last_request(n)["body"]["messages"], [{"role": "user", "content": "bare"}])

    def test_stream(self):
        chunks = list(self.stream(self.request("one two three four"), timeout=20))
        deltas = [c.delta for c in chunks if c.delta]
        self.assertGreaterEqual(len(deltas), 2)
        self.assertEqual("".join(deltas), "fake reply to: one two three four")
        self.assertTrue(chunks[-1].done)
        self.assertFalse(any(c.done for c in chunks[:-1]))
        self.assertAlmostEqual(chunks[-1].cost, self.expected_cost(), places=6)

    def test_cost_estimate_without_usage(self):
        resp = self.process(self.request("estimate me", model="no-usage"), timeout=20)
        self.assertEqual(resp.response_text, "fake reply to: estimate me")
        self.assertGreater(resp.cost, 0)
        self.assertNotAlmostEqual(resp.cost, self.expected_cost(), places=7)

    def test_http_error_is_internal(self):
        for call in (lambda r: self.process(r, timeout=20), lambda r: list(self.stream(r, timeout=20))):
            with self.assertRaises(grpc.RpcError) as cm:
                call(self.request("x", model="fail-500"))
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INTERNAL)
            self.assertIn("HTTP 500", cm.exception.details())
            self.assertIn("the model fell over", cm.exception.details())

    def test_malformed_history(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.process(self.request("x", chat_history="{nope"), timeout=20)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_summarize(self):
        n = len(self.fake.requests)
        resp = self.summarize(self.pb.SummaryRequest(
            user_id="u1", session_id="s1", model_name="test-model", model_provider="ollama",
            previous_summary="the user likes cats", user_message="and dogs?", assistant_message="Dogs too."),
            timeout=20)
        self.assertTrue(resp.summary.startswith("fake reply to: Previous summary:\nthe user likes cats"))
        self.assertAlmostEqual(resp.cost, self.expected_cost(), places=6)
        body = self.last_request(n)["body"]
        self.assertFalse(body["stream"])
        self.assertEqual(body["messages"][0]["role"], "system")
        user = body["messages"][-1]["content"]
        for part in ("the user likes cats", "User: and dogs?", "Assistant: Dogs too."):
            self.assertIn(part, user)

    def test_title(self):
        n = len(self.fake.requests)
        resp = self.title(self.pb.TitleRequest(
            user_id="u1", session_id="s1", model_name="test-model", model_provider="ollama",
            user_message="plan a weekend in Rome", assistant_message="Day one: the Forum."), timeout=20)
        self.assertTrue(resp.title.startswith("fake reply to: User: plan a weekend in Rome"), resp.title)
        self.assertAlmostEqual(resp.precise_cost, self.expected_cost(), places=12)
        self.assertAlmostEqual(resp.cost, self.expected_cost(), places=6)
        body = self.last_request(n)["body"]
        self.assertEqual((body["stream"], body["max_tokens"], body["model"]), (False, 32, "test-model"))
        self.assertIn("title", body["messages"][0]["content"])

    def test_usage_tokens_reported(self):
        resp = self.process(self.request("count"), timeout=20)
        self.assertEqual((resp.prompt_tokens, resp.completion_tokens), (PROMPT_TOKENS, COMPLETION_TOKENS))
        self.assertAlmostEqual(resp.precise_cost, self.expected_cost(), places=12)
        chunks = list(self.stream(self.request("count"), timeout=20))
        self.assertEqual((chunks[-1].prompt_tokens, chunks[-1].completion_tokens),
                         (PROMPT_TOKENS, COMPLETION_TOKENS))
        self.assertTrue(all(c.prompt_tokens == 0 for c in chunks[:-1]))

    def test_cancel_aborts_model_call(self):
        it = self.stream(self.request("a b c d e f g h i j k l m n o p", model="slow"), timeout=20)
        first = next(it)
        self.assertTrue(first.delta)
        it.cancel()
        # The agent notices the cancel and drops the HTTP transfer.
        deadline = time.time() + 5
        while self.fake.aborted == 0 and time.time() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(self.fake.aborted, 1)


if __name__ == "__main__":
    unittest.main()
