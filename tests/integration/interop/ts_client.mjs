// The official TypeScript SDK's client, with its own OAuth code (auth.js), through the proxy.
//
//   node ts_client.mjs <MCP URL> <tool> <JSON arguments> [streamable|sse]
//
// Headless: where a desktop client would open a browser, this prints one JSON line
// {"authorize": "<URL>"} and reads {"code": "..."} from stdin (the test logs in as a person
// would, see tests/interop/test_clients.py). Everything else is the SDK's: discovery from the
// 401 challenge, the resource and authorization-server metadata, dynamic registration, PKCE,
// the token exchange. At the end it prints {"tools": [...], "text": "...", "registered": ...}.
import { createInterface } from "node:readline";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";

const [url, tool, argumentsJson, transportKind = "streamable"] = process.argv.slice(2);
const REDIRECT = "http://127.0.0.1:33418/callback";

const say = (document) => process.stdout.write(JSON.stringify(document) + "\n");
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

class HeadlessProvider {
  constructor() {
    this.client = undefined;
    this.saved = undefined;
    this.verifier = undefined;
  }
  get redirectUrl() {
    return REDIRECT;
  }
  get clientMetadata() {
    return {
      client_name: "TypeScript SDK interop test",
      redirect_uris: [REDIRECT],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  }
  clientInformation() {
    return this.client;
  }
  saveClientInformation(info) {
    this.client = info;
  }
  tokens() {
    return this.saved;
  }
  saveTokens(tokens) {
    this.saved = tokens;
  }
  redirectToAuthorization(authorizationUrl) {
    say({ authorize: authorizationUrl.toString() });
  }
  saveCodeVerifier(verifier) {
    this.verifier = verifier;
  }
  codeVerifier() {
    return this.verifier;
  }
}

function transportFor(provider) {
  const target = new URL(url);
  return transportKind === "sse"
    ? new SSEClientTransport(target, { authProvider: provider })
    : new StreamableHTTPClientTransport(target, { authProvider: provider });
}

async function connected(provider) {
  const client = new Client({ name: "ts-sdk-interop", version: "1.0.0" });
  const transport = transportFor(provider);
  try {
    await client.connect(transport);
    return client;
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
  }
  // The SDK sent us to the authorization endpoint; the test answers with the code.
  const { value } = await lines.next();
  const { code } = JSON.parse(value);
  await transport.finishAuth(code);
  const again = new Client({ name: "ts-sdk-interop", version: "1.0.0" });
  await again.connect(transportFor(provider));
  return again;
}

try {
  const provider = new HeadlessProvider();
  const client = await connected(provider);
  const { tools } = await client.listTools();
  const result = await client.callTool({ name: tool, arguments: JSON.parse(argumentsJson) });
  say({
    tools: tools.map((t) => t.name),
    text: result.content.map((c) => c.text ?? "").join(""),
    registered: provider.client?.client_id !== undefined,
    token_type: provider.saved?.token_type,
  });
  await client.close();
  process.exit(0);
} catch (error) {
  say({ error: String(error?.stack ?? error) });
  process.exit(1);
}
