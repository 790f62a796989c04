// An MCP server with the fixtures the conformance suite's server scenarios call
// (@modelcontextprotocol/conformance: test_simple_text, test://static-text, test_simple_prompt, ...),
// on the official TypeScript SDK's low-level Server and Streamable HTTP transport, stateful.
//
//   node conformance_server.mjs [--json-response]
//        prints "conformance-server listening url=http://127.0.0.1:<port>/mcp"; --json-response answers
//        POSTs with one JSON body instead of an event stream (scripts/benchmark.py uses both)
//
// Written here from what each scenario checks; the suite runs against it directly and through
// the proxy (tests/integration/interop/test_conformance.py), and every scenario that passes
// directly must pass through the proxy too.
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";

import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { InMemoryEventStore } from "@modelcontextprotocol/sdk/examples/shared/inMemoryEventStore.js";
import {
  CallToolRequestSchema,
  CompleteRequestSchema,
  CreateMessageResultSchema,
  ElicitResultSchema,
  GetPromptRequestSchema,
  isInitializeRequest,
  ListPromptsRequestSchema,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  ReadResourceRequestSchema,
  SetLevelRequestSchema,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";

// A 1x1 PNG and a short silent WAV, base64.
const PNG =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
const WAV = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA=";
const LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];

const text = (value) => ({ type: "text", text: value });
const emptySchema = { type: "object", properties: {} };

const TOOLS = [
  { name: "test_simple_text", description: "Returns simple text", inputSchema: emptySchema },
  { name: "test_image_content", description: "Returns an image", inputSchema: emptySchema },
  { name: "test_audio_content", description: "Returns audio", inputSchema: emptySchema },
  { name: "test_embedded_resource", description: "Returns an embedded resource", inputSchema: emptySchema },
  { name: "test_multiple_content_types", description: "Returns text, image and resource", inputSchema: emptySchema },
  { name: "test_tool_with_logging", description: "Logs three messages while it runs", inputSchema: emptySchema },
  { name: "test_error_handling", description: "Always fails, as a tool result", inputSchema: emptySchema },
  { name: "test_tool_with_progress", description: "Reports progress three times", inputSchema: emptySchema },
  {
    name: "test_sampling",
    description: "Asks the client's model",
    inputSchema: { type: "object", properties: { prompt: { type: "string" } }, required: ["prompt"] },
  },
  {
    name: "test_elicitation",
    description: "Asks the user for their name and email",
    inputSchema: { type: "object", properties: { message: { type: "string" } }, required: ["message"] },
  },
  { name: "test_elicitation_sep1034_defaults", description: "Elicitation with defaults", inputSchema: emptySchema },
  { name: "test_elicitation_sep1330_enums", description: "Elicitation with enum schemas", inputSchema: emptySchema },
  { name: "test_reconnection", description: "Closes its stream mid-call; the client reconnects", inputSchema: emptySchema },
  {
    name: "json_schema_2020_12_tool",
    description: "An input schema with JSON Schema 2020-12 keywords",
    inputSchema: {
      $schema: "https://json-schema.org/draft/2020-12/schema",
      type: "object",
      $defs: { address: { type: "object", properties: { street: { type: "string" }, city: { type: "string" } } } },
      properties: { name: { type: "string" }, address: { $ref: "#/$defs/address" } },
      additionalProperties: false,
    },
  },
];

const RESOURCES = [
  { uri: "test://static-text", name: "static-text", mimeType: "text/plain" },
  { uri: "test://static-binary", name: "static-binary", mimeType: "image/png" },
  { uri: "test://watched-resource", name: "watched-resource", mimeType: "text/plain" },
];

const PROMPTS = [
  { name: "test_simple_prompt", description: "A prompt without arguments" },
  {
    name: "test_prompt_with_arguments",
    description: "A prompt with two arguments",
    arguments: [
      { name: "arg1", description: "First", required: true },
      { name: "arg2", description: "Second", required: true },
    ],
  },
  {
    name: "test_prompt_with_embedded_resource",
    description: "A prompt embedding a resource",
    arguments: [{ name: "resourceUri", description: "The resource", required: true }],
  },
  { name: "test_prompt_with_image", description: "A prompt with an image" },
];

function buildServer() {
  const server = new Server(
    { name: "mcp-auth-addon-conformance-fixtures", version: "1.0.0" },
    {
      capabilities: {
        tools: {},
        resources: { subscribe: true },
        prompts: {},
        logging: {},
        completions: {},
      },
    },
  );
  let level = "info";
  const log = (lvl, data, extra) => {
    if (LEVELS.indexOf(lvl) >= LEVELS.indexOf(level)) {
      return extra.sendNotification({ method: "notifications/message", params: { level: lvl, data } });
    }
  };

  server.setRequestHandler(SetLevelRequestSchema, async (request) => {
    level = request.params.level;
    return {};
  });
  server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: TOOLS }));
  server.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
    const args = request.params.arguments ?? {};
    switch (request.params.name) {
      case "test_simple_text":
        return { content: [text("This is a simple text response for testing.")] };
      case "test_image_content":
        return { content: [{ type: "image", data: PNG, mimeType: "image/png" }] };
      case "test_audio_content":
        return { content: [{ type: "audio", data: WAV, mimeType: "audio/wav" }] };
      case "test_embedded_resource":
        return {
          content: [
            { type: "resource", resource: { uri: "test://embedded-resource", mimeType: "text/plain", text: "embedded" } },
          ],
        };
      case "test_multiple_content_types":
        return {
          content: [
            text("Multiple content types:"),
            { type: "image", data: PNG, mimeType: "image/png" },
            {
              type: "resource",
              resource: { uri: "test://mixed-content-resource", mimeType: "application/json", text: '{"ok":true}' },
            },
          ],
        };
      case "test_tool_with_logging":
        for (const step of ["starting", "working", "done"]) {
          await log("info", `test_tool_with_logging: ${step}`, extra);
          await new Promise((r) => setTimeout(r, 20));
        }
        return { content: [text("logged three messages")] };
      case "test_error_handling":
        return { isError: true, content: [text("This tool intentionally returns an error for testing")] };
      case "test_tool_with_progress": {
        const token = request.params._meta?.progressToken;
        for (const progress of [0, 50, 100]) {
          if (token !== undefined) {
            await extra.sendNotification({
              method: "notifications/progress",
              params: { progressToken: token, progress, total: 100 },
            });
          }
          await new Promise((r) => setTimeout(r, 20));
        }
        return { content: [text("progress reported")] };
      }
      case "test_sampling": {
        const answer = await extra.sendRequest(
          {
            method: "sampling/createMessage",
            params: { messages: [{ role: "user", content: text(String(args.prompt)) }], maxTokens: 100 },
          },
          CreateMessageResultSchema,
        );
        return { content: [text(`LLM response: ${answer.content.text ?? ""}`)] };
      }
      case "test_elicitation": {
        const answer = await extra.sendRequest(
          {
            method: "elicitation/create",
            params: {
              message: String(args.message),
              requestedSchema: {
                type: "object",
                properties: { username: { type: "string" }, email: { type: "string" } },
                required: ["username", "email"],
              },
            },
          },
          ElicitResultSchema,
        );
        return { content: [text(`User response: ${answer.action} ${JSON.stringify(answer.content ?? {})}`)] };
      }
      case "test_elicitation_sep1034_defaults": {
        const answer = await extra.sendRequest(
          {
            method: "elicitation/create",
            params: {
              message: "Confirm or change the defaults",
              requestedSchema: {
                type: "object",
                properties: {
                  name: { type: "string", default: "John Doe" },
                  age: { type: "integer", default: 30 },
                  score: { type: "number", default: 95.5 },
                  status: { type: "string", enum: ["active", "inactive", "pending"], default: "active" },
                  verified: { type: "boolean", default: true },
                },
              },
            },
          },
          ElicitResultSchema,
        );
        return { content: [text(`Elicitation result: ${answer.action}`)] };
      }
      case "test_elicitation_sep1330_enums": {
        const answer = await extra.sendRequest(
          {
            method: "elicitation/create",
            params: {
              message: "Pick options",
              requestedSchema: {
                type: "object",
                properties: {
                  untitledSingle: { type: "string", enum: ["option1", "option2", "option3"] },
                  titledSingle: {
                    type: "string",
                    oneOf: [
                      { const: "value1", title: "First" },
                      { const: "value2", title: "Second" },
                    ],
                  },
                  legacyEnum: { type: "string", enum: ["opt1", "opt2"], enumNames: ["Option 1", "Option 2"] },
                  untitledMulti: { type: "array", items: { type: "string", enum: ["option1", "option2", "option3"] } },
                  titledMulti: {
                    type: "array",
                    items: {
                      anyOf: [
                        { const: "value1", title: "First" },
                        { const: "value2", title: "Second" },
                      ],
                    },
                  },
                },
              },
            },
          },
          ElicitResultSchema,
        );
        return { content: [text(`Elicitation result: ${answer.action}`)] };
      }
      case "test_reconnection":
        // SEP-1699: close the POST's stream mid-call; the client reconnects (GET with
        // Last-Event-ID) and gets the result from the event store.
        await new Promise((r) => setTimeout(r, 50));
        extra.closeSSEStream?.();
        await new Promise((r) => setTimeout(r, 200));
        return { content: [text("Reconnection test completed")] };
      case "json_schema_2020_12_tool":
        return { content: [text(`received ${JSON.stringify(args)}`)] };
      default:
        return { isError: true, content: [text(`unknown tool ${request.params.name}`)] };
    }
  });

  server.setRequestHandler(ListResourcesRequestSchema, async () => ({ resources: RESOURCES }));
  server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({
    resourceTemplates: [{ uriTemplate: "test://template/{id}/data", name: "template", mimeType: "application/json" }],
  }));
  server.setRequestHandler(ReadResourceRequestSchema, async (request) => {
    const uri = request.params.uri;
    if (uri === "test://static-text" || uri === "test://watched-resource") {
      return { contents: [{ uri, mimeType: "text/plain", text: "This is the content of the static text resource." }] };
    }
    if (uri === "test://static-binary") {
      return { contents: [{ uri, mimeType: "image/png", blob: PNG }] };
    }
    const templated = /^test:\/\/template\/([^/]+)\/data$/.exec(uri);
    if (templated) {
      return { contents: [{ uri, mimeType: "application/json", text: JSON.stringify({ id: templated[1] }) }] };
    }
    throw new Error(`unknown resource ${uri}`);
  });
  server.setRequestHandler(SubscribeRequestSchema, async () => ({}));
  server.setRequestHandler(UnsubscribeRequestSchema, async () => ({}));

  server.setRequestHandler(ListPromptsRequestSchema, async () => ({ prompts: PROMPTS }));
  server.setRequestHandler(GetPromptRequestSchema, async (request) => {
    const args = request.params.arguments ?? {};
    switch (request.params.name) {
      case "test_simple_prompt":
        return { messages: [{ role: "user", content: text("This is a simple prompt for testing.") }] };
      case "test_prompt_with_arguments":
        return {
          messages: [{ role: "user", content: text(`Prompt with arguments: arg1='${args.arg1}', arg2='${args.arg2}'`) }],
        };
      case "test_prompt_with_embedded_resource":
        return {
          messages: [
            {
              role: "user",
              content: { type: "resource", resource: { uri: args.resourceUri, mimeType: "text/plain", text: "embedded" } },
            },
            { role: "user", content: text("Please process the embedded resource above.") },
          ],
        };
      case "test_prompt_with_image":
        return {
          messages: [
            { role: "user", content: { type: "image", data: PNG, mimeType: "image/png" } },
            { role: "user", content: text("Please analyze the image above.") },
          ],
        };
      default:
        throw new Error(`unknown prompt ${request.params.name}`);
    }
  });
  server.setRequestHandler(CompleteRequestSchema, async (request) => ({
    completion: { values: [`${request.params.argument.value}-completed`], total: 1, hasMore: false },
  }));
  return server;
}

const transports = new Map();

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = Buffer.concat(chunks).toString();
  return body ? JSON.parse(body) : undefined;
}

const http = createServer(async (req, res) => {
  try {
    if (!req.url.startsWith("/mcp")) {
      res.writeHead(404).end();
      return;
    }
    const sessionId = req.headers["mcp-session-id"];
    const body = req.method === "POST" ? await readJson(req) : undefined;
    let transport = sessionId ? transports.get(sessionId) : undefined;
    if (!transport && req.method === "POST" && isInitializeRequest(body)) {
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        eventStore: new InMemoryEventStore(),
        retryInterval: 100,
        enableJsonResponse: process.argv.includes("--json-response"),
        onsessioninitialized: (id) => transports.set(id, transport),
        // The suite's dns-rebinding scenario: only loopback Host values are served.
        enableDnsRebindingProtection: true,
        allowedHosts: [`127.0.0.1:${port}`, `localhost:${port}`],
      });
      transport.onclose = () => transport.sessionId && transports.delete(transport.sessionId);
      await buildServer().connect(transport);
    }
    if (!transport) {
      res.writeHead(sessionId ? 404 : 400, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32000, message: "no such session" } }));
      return;
    }
    await transport.handleRequest(req, res, body);
  } catch (error) {
    if (!res.headersSent) res.writeHead(500).end(String(error));
  }
});

let port = 0;
http.listen(0, "127.0.0.1", () => {
  port = http.address().port;
  console.log(`conformance-server listening url=http://127.0.0.1:${port}/mcp`);
});
// Owned by the test process: stop when it closes our stdin.
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
