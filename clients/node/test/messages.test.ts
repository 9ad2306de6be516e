// Tool calls, content parts, name, extra and the developer role in the Node client: OpenAI Chat
// Completions messages go in as the OpenAI SDK writes them and come back out of `toOpenAI` equal,
// bad input is refused naming the field, and the daemon stores every field byte for byte.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  InvalidArgumentError, MemoryClient, type Message, type MessageInput, MessageKind, NO_RESULT, type OpenAIMessage, Role,
  makeMessage, toOpenAI,
} from "../src";
import { type Daemon, REPO, startDaemon } from "./daemon";

/** What the daemon hands back for an appended message: the wire fields, plus server-set ones. */
function stored(m: MessageInput, i: number): Message {
  return { ...makeMessage(m, i), seq: BigInt(i + 1), id: `id-${i + 1}`, kind: MessageKind.MESSAGE_KIND_MESSAGE };
}

/** An OpenAI conversation as an agent holds it: parallel calls, a pending call, parts, name, extra
 * (shared with the Go client's test and tests/interop). */
const CONVERSATION = JSON.parse(
  readFileSync(join(REPO, "tests", "interop", "openai_conversation.json"), "utf8")) as OpenAIMessage[];

describe("OpenAI messages in and out (no daemon)", () => {
  it("turns what it took in back into the same OpenAI messages", () => {
    const back = toOpenAI(CONVERSATION.map((m, i) => stored(m as MessageInput, i)));
    assert.deepEqual(back, CONVERSATION);
  });

  it("stores an array content as parts, never as text", () => {
    const w = makeMessage(CONVERSATION[1] as MessageInput);
    assert.equal(w.content, "");
    assert.equal(w.role, Role.ROLE_USER);
    assert.equal(w.name, "ana");
    assert.deepEqual(w.parts.map((p) => [p.text, p.image?.url, p.image?.detail, p.file?.fileId, p.file?.filename]), [
      ["Where is order A-48213? Photo attached 📦", undefined, undefined, undefined, undefined],
      [undefined, "https://example.com/box.png", "low", undefined, undefined],
      [undefined, undefined, undefined, "file-abc", "invoice.pdf"],
    ]);
    assert.ok(!JSON.stringify(w, (_k, v) => (typeof v === "bigint" ? String(v) : v)).includes("[object Object]"));
  });

  it("keeps tool calls, the answered call id, developer role and provider extras as fields", () => {
    const a = makeMessage(CONVERSATION[2] as MessageInput);
    assert.deepEqual(a.toolCalls, [
      { id: "call_1", name: "get_order", arguments: '{"id": "A-48213"}' },
      { id: "call_2", name: "get_eta", arguments: '{"id":"A-48213","tz":"Europe/Paris"}' },
    ]);
    assert.equal(makeMessage(CONVERSATION[3] as MessageInput).toolCallId, "call_1");
    assert.equal(makeMessage(CONVERSATION[0] as MessageInput).role, Role.ROLE_DEVELOPER);
    assert.equal(makeMessage(CONVERSATION[5] as MessageInput).extra, '{"refusal":"none","audio":{"id":"aud_1"}}');
    // The SDK's nulls are not provider data: nothing to keep (an empty list is kept, as Python does).
    const sdk = { role: "assistant", content: "hi", refusal: null, audio: null, annotations: [], function_call: null };
    assert.equal(makeMessage(sdk as MessageInput).extra, '{"annotations":[]}');
    assert.equal(makeMessage({ ...sdk, annotations: null } as MessageInput).extra, "");
    // file_data (a data: URL or bare base64) becomes the part's bytes and MIME type.
    const file = makeMessage({ role: "user", content: [{ type: "file", file: { file_data: "data:application/pdf;base64,JVBERg==", filename: "a.pdf" } },
      { type: "file", file: { file_data: "JVBERg==" } }] });
    assert.deepEqual(file.parts.map((p) => [p.file?.data.toString(), p.file?.mimeType, p.file?.url, p.file?.filename]),
      [["%PDF", "application/pdf", "", "a.pdf"], ["%PDF", "", "", ""]]);
    // memoryd's own spelling is the same message.
    const own = makeMessage({ role: "assistant", toolCalls: [{ id: "c", name: "f", arguments: "{}" }], extra: { x: 1 } });
    assert.deepEqual([own.toolCalls, own.extra], [[{ id: "c", name: "f", arguments: "{}" }], '{"x":1}']);
    // An extra given as text is stored byte for byte, spacing and key order included.
    assert.equal(makeMessage({ role: "user", content: "x", extra: '{ "b": 1,  "a": [2] }' }).extra, '{ "b": 1,  "a": [2] }');
  });

  it("emits a group's results right after its call, in call order, whatever was appended in between", () => {
    const msgs: MessageInput[] = [
      { role: "system", content: "sys" },
      { role: "tool", toolCallId: "a", content: "before its call: left out" },
      { role: "assistant", content: "", toolCalls: [{ id: "b", name: "f", arguments: "1" }, { id: "a", name: "g", arguments: "2" }] },
      { role: "user", content: "meanwhile" },
      { role: "tool", toolCallId: "a", parts: [{ text: "A" }, { image: { url: "https://x/a.png" } }, { file: { fileId: "file-1" } }] },
      { role: "tool", toolCallId: "orphan", content: "its call is gone" },
      { role: "tool", toolCallId: "b", content: "B", name: "f", extra: { cached: true } },
      { role: "tool", toolCallId: "b", content: "a second result: left out" },
      { role: "assistant", toolCalls: [{ id: "lost", name: "h", arguments: "{}" }] },
      { role: "user", content: "the agent stopped mid-call, the conversation went on" },
    ];
    const got = toOpenAI(msgs.map(stored));
    assert.deepEqual(got, [
      { role: "system", content: "sys" },
      { role: "assistant", content: null, tool_calls: [
        { id: "b", type: "function", function: { name: "f", arguments: "1" } },
        { id: "a", type: "function", function: { name: "g", arguments: "2" } },
      ] },
      { role: "tool", tool_call_id: "b", content: "B", cached: true },
      { role: "tool", tool_call_id: "a", content: "A\n[image: https://x/a.png]\n[file: file-1]" },
      { role: "user", content: "meanwhile" },
      { role: "assistant", content: null, tool_calls: [{ id: "lost", type: "function", function: { name: "h", arguments: "{}" } }] },
      { role: "tool", tool_call_id: "lost", content: NO_RESULT },
      { role: "user", content: "the agent stopped mid-call, the conversation went on" },
    ]);
    assert.equal(NO_RESULT, "[no result recorded]");
  });

  it("presents the summary as a system message and keeps the pending group as it is", () => {
    const summary: Message = { ...stored({ role: "system", content: "Earlier: the user asked about A-1." }, 0),
      kind: MessageKind.MESSAGE_KIND_SUMMARY };
    const pending = stored({ role: "assistant", toolCalls: [
      { id: "p1", name: "f", arguments: "{}" }, { id: "p2", name: "g", arguments: "{}" }] }, 1);
    const one = stored({ role: "tool", toolCallId: "p2", content: "done" }, 2);
    assert.deepEqual(toOpenAI([summary, pending, one]), [
      { role: "system", content: "Earlier: the user asked about A-1." },
      { role: "assistant", content: null, tool_calls: [
        { id: "p1", type: "function", function: { name: "f", arguments: "{}" } },
        { id: "p2", type: "function", function: { name: "g", arguments: "{}" } },
      ] },
      { role: "tool", tool_call_id: "p2", content: "done" },
    ]);
  });

  it("renders media by data and by file id, and never lets extra override what the message has", () => {
    const m: Message = stored({ role: "user", parts: [
      { image: { data: Buffer.from("png!"), mimeType: "image/png", width: 10, height: 20 } },
      { file: { data: Buffer.from("%PDF"), mimeType: "application/pdf", filename: "a.pdf" } },
      { file: { url: "data:application/pdf;base64,JVBERg==" } },
      { image: { fileId: "file-img" } },
    ] }, 0);
    m.extra = '{"role": "system", "content": "no", "cache": {"ttl": 5}}';
    assert.deepEqual(toOpenAI([m]), [{ role: "user", cache: { ttl: 5 }, content: [
      { type: "image_url", image_url: { url: "data:image/png;base64,cG5nIQ==" } },
      { type: "file", file: { file_data: "data:application/pdf;base64,JVBERg==", filename: "a.pdf" } },
      { type: "file", file: { file_data: "data:application/pdf;base64,JVBERg==" } },
      { type: "file", file: { file_id: "file-img" } },
    ] }]);
  });

  it("refuses bad input naming the field", () => {
    const call = (over: object) => ({ id: "c1", type: "function", function: { name: "f", arguments: "{}" }, ...over });
    const bad: [unknown, RegExp][] = [
      [{ role: "user", content: [{ type: "input_audio", input_audio: { data: "", format: "wav" } }] },
        /messages\[0\]\.content\[0\]\.type: unknown content part type "input_audio"/],
      [{ role: "user", content: [{ type: "text", text: "ok" }, { kind: "text" }] }, /messages\[0\]\.content\[1\]: unknown fields kind/],
      [{ role: "user", content: [{ type: "text", text: 3 }] }, /messages\[0\]\.content\[0\]\.text: must be a string/],
      [{ role: "user", content: ["plain"] }, /messages\[0\]\.content\[0\]: must be a content part object/],
      [{ role: "user", content: { type: "text", text: "x" } }, /messages\[0\]\.content: must be a string, null or an array/],
      [{ role: "user", content: [{ type: "image_url", image_url: { url: "" } }] }, /content\[0\]\.image_url\.url: must not be empty/],
      [{ role: "user", content: [{ type: "image_url", image_url: { url: "u", detail: "max" } }] }, /image_url\.detail: must be/],
      [{ role: "user", content: [{ type: "file", file: { filename: "a.pdf" } }] }, /content\[0\]\.file: needs file_id or file_data/],
      [{ role: "user", content: [{ type: "file", file: { file_data: "data:application/pdf;base64,%%%" } }] },
        /content\[0\]\.file\.file_data: is not base64/],
      [{ role: "user", parts: [{ text: "a", image: { url: "u" } }] }, /messages\[0\]\.parts\[0\]: must have exactly one/],
      [{ role: "user", parts: [{ image: {} }] }, /messages\[0\]\.parts\[0\]\.image: needs a url, a fileId or data/],
      [{ role: "user", parts: [{ image: { url: "u", width: -1 } }] }, /parts\[0\]\.image\.width: must be an integer/],
      [{ role: "user", content: "x", parts: [{ text: "y" }] }, /messages\[0\]\.content: must be empty when parts is set/],
      [{ role: "assistant", tool_calls: [call({ type: "custom" })] }, /messages\[0\]\.tool_calls\[0\]\.type: must be "function"/],
      [{ role: "assistant", tool_calls: [call({ id: "" })] }, /messages\[0\]\.tool_calls\[0\]\.id: must not be empty/],
      [{ role: "assistant", tool_calls: [call({ function: { name: "", arguments: "{}" } })] },
        /tool_calls\[0\]\.function\.name: must not be empty/],
      [{ role: "assistant", tool_calls: [call({ function: { name: "f", arguments: { a: 1 } } })] },
        /tool_calls\[0\]\.function\.arguments: must be a string/],
      [{ role: "assistant", tool_calls: [call({}), call({})] }, /tool_calls\[1\]\.id: repeats the call id "c1"/],
      [{ role: "assistant", toolCalls: [{ id: "c", name: "f", arguments: "{}" }], tool_calls: [call({})] },
        /messages\[0\]\.toolCalls: pass toolCalls or tool_calls, not both/],
      [{ role: "user", toolCalls: [{ id: "c", name: "f", arguments: "{}" }] }, /messages\[0\]\.toolCalls: only assistant/],
      [{ role: "tool", content: "r" }, /messages\[0\]\.toolCallId: is required on tool messages/],
      [{ role: "tool", tool_call_id: "", content: "r" }, /messages\[0\]\.tool_call_id: is required on tool messages/],
      [{ role: "user", toolCallId: "c", content: "r" }, /messages\[0\]\.toolCallId: only tool messages/],
      [{ role: "user", content: "x", name: 7 }, /messages\[0\]\.name: must be a string/],
      [{ role: "user", content: "x", extra: "[1]" }, /messages\[0\]\.extra: must be a JSON object text/],
      [{ role: "user", content: "x", extra: "{nope" }, /messages\[0\]\.extra: must be a JSON object text/],
      [{ role: "user", content: "x", extra: { n: 1n } }, /messages\[0\]\.extra: is not serialisable as JSON/],
      [{ role: "user", content: "x", extra: { tool_calls: [] } }, /messages\[0\]\.extra\.tool_calls: is a field memoryd models/],
      [{ role: "assistant", content: "x", refusal: "r", extra: { refusal: "s" } }, /messages\[0\]\.refusal: is also in extra/],
    ];
    for (const [msg, why] of bad) {
      assert.throws(() => makeMessage(msg as MessageInput), (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentError, `${JSON.stringify(msg, (_k, v) => (typeof v === "bigint" ? "n" : v))}: ${String(err)}`);
        assert.match(err.details, why);
        return true;
      });
    }
    assert.throws(() => makeMessage({ role: "function", content: "x" } as never), /unknown role: function/);
  });
});

/** A seeded generator of OpenAI conversations: groups with parallel calls, parts, names, extras. */
function randomConversation(seed: number): OpenAIMessage[] {
  let s = seed >>> 0;
  const rnd = (n: number) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % n;
  };
  const text = () => ["hi", "héllo 🧠", "", "{\"a\": [1, 2]}", "line\nbreak \"q\" \\", "記憶"][rnd(6)];
  const out: OpenAIMessage[] = [];
  let call = 0;
  const n = 1 + rnd(12);
  for (let i = 0; i < n; i++) {
    const k = rnd(5);
    if (k === 0) out.push({ role: rnd(2) ? "system" : "developer", content: text() });
    else if (k === 1) {
      const m: OpenAIMessage = { role: "user", content: rnd(2) ? text()
        : [{ type: "text", text: text() }, { type: "image_url", image_url: { url: `https://x/${rnd(99)}.png` } }] };
      if (rnd(3) === 0) m.name = `u${rnd(9)}`;
      out.push(m);
    } else if (k === 2) {
      const m: OpenAIMessage = { role: "assistant", content: text() || "ok" };
      if (rnd(3) === 0) m.refusal = text();
      out.push(m);
    } else {
      const calls = Array.from({ length: 1 + rnd(3) }, () => ({
        id: `call_${seed}_${call++}`, type: "function" as const,
        function: { name: `tool_${rnd(4)}`, arguments: JSON.stringify({ q: text(), n: rnd(1000) }) },
      }));
      const c = rnd(2) ? null : text() || null;
      out.push({ role: "assistant", content: c, tool_calls: calls });
      const answered = i === n - 1 ? calls.slice(0, rnd(calls.length + 1)) : calls; // the newest may be pending
      for (const tc of answered) out.push({ role: "tool", tool_call_id: tc.id, content: text() });
    }
  }
  return out;
}

describe("OpenAI conversations round-trip (seeded, no daemon)", () => {
  it("toOpenAI gives back every generated conversation unchanged", () => {
    for (let seed = 1; seed <= 300; seed++) {
      const conv = randomConversation(seed);
      assert.deepEqual(toOpenAI(conv.map((m, i) => stored(m as MessageInput, i))), conv, `seed ${seed}`);
    }
  });
});

describe("tool calls, parts, name and extra through the daemon", () => {
  let daemon: Daemon;
  let c: MemoryClient;
  before(async () => {
    daemon = await startDaemon();
    c = new MemoryClient(daemon.address);
  });
  after(async () => {
    c?.close();
    await daemon?.stop();
  });

  it("stores an OpenAI conversation and reads it back as the same OpenAI history", async () => {
    const key = "node-openai";
    await c.append("default", CONVERSATION as MessageInput[], { key });
    const raw = await c.readAll("default", { key, view: "raw" });
    assert.deepEqual(raw.map((m) => m.role), [Role.ROLE_DEVELOPER, Role.ROLE_USER, Role.ROLE_ASSISTANT, Role.ROLE_TOOL,
      Role.ROLE_TOOL, Role.ROLE_ASSISTANT, Role.ROLE_USER, Role.ROLE_ASSISTANT]);
    assert.deepEqual(raw[2].toolCalls.map((t) => t.arguments), ['{"id": "A-48213"}', '{"id":"A-48213","tz":"Europe/Paris"}']);
    assert.equal(raw[5].extra, '{"refusal":"none","audio":{"id":"aud_1"}}');
    assert.deepEqual(toOpenAI(raw), CONVERSATION);
    assert.deepEqual(toOpenAI(await c.readAll("default", { key, view: "context" })), CONVERSATION);
  });

  it("refuses an unknown part kind before sending, and stores nothing of the batch", async () => {
    const key = "node-bad-part";
    await assert.rejects(c.append("default", [{ role: "user", content: "fine" },
      { role: "user", content: [{ type: "input_audio", input_audio: { data: "AAAA", format: "wav" } }] } as never],
    { key }), /messages\[1\]\.content\[0\]\.type: unknown content part type/);
    assert.equal((await c.stats("default", { key })).messageCount, 0n);
  });

  it("is answered INVALID_ARGUMENT by the daemon for a result whose call is not in the instance", async () => {
    await assert.rejects(c.append("default", [{ role: "tool", tool_call_id: "call_nowhere", content: "r" }],
      { key: "node-no-call" }), (err: unknown) => {
      assert.ok(err instanceof InvalidArgumentError && !err.details.includes("refused by the client"), String(err));
      assert.match(err.details, /tool_call_id/);
      return true;
    });
  });
});
