#!/usr/bin/env node
// Development identity provider for the OAuth proxy tests.
//
// A real OpenID Provider / OAuth 2.0 authorization server built on the
// `oidc-provider` package (pinned in package.json), configured for:
//   - open dynamic client registration (RFC 7591), native and web clients,
//     http loopback redirect URIs
//   - authorization code flow with PKCE (S256 only, always required)
//   - resource indicators (RFC 8707): RS256 JWT access tokens (RFC 9068)
//     whose `aud` is the requested resource
//   - refresh tokens (rotated) for clients allowed the refresh_token grant
//   - RFC 9207 `iss` in authorization responses
//   - RFC 8414 metadata at /.well-known/oauth-authorization-server
//   - a plain HTML login page (no JavaScript) for the test user
//
// See README.md in this directory for usage.

import crypto from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

// ---------------------------------------------------------------------------
// Command line / environment
// ---------------------------------------------------------------------------

const USAGE = `usage: node idp.mjs [options]

  --port N                       listen port (0 = pick a free one)   [env IDP_PORT, default 9000]
  --host H                       listen address                       [env IDP_HOST, default 127.0.0.1]
  --issuer URL                   issuer identifier                    [env IDP_ISSUER, default http://<host>:<port>]
  --static-client-redirect-uri U redirect URI of the static client "mcp-proxy" (repeatable)
                                 [env IDP_STATIC_CLIENT_REDIRECT_URIS, space/comma separated,
                                  default http://127.0.0.1:8000/callback]
  --static-client-auth-method M  client_secret_basic (default) or client_secret_post
                                 [env IDP_STATIC_CLIENT_AUTH_METHOD]
  --access-token-ttl SECONDS     access token lifetime                [env IDP_ACCESS_TOKEN_TTL, default 3600]
  --refresh-token-ttl SECONDS    refresh token lifetime               [env IDP_REFRESH_TOKEN_TTL, default 86400]
  --default-scope SCOPES         scope to use when an authorization request (GET /auth)
                                 has none [env IDP_DEFAULT_SCOPE, default off: such a
                                 request ends with error=access_denied]
  --auto-login USER              log USER in and consent without showing the form
                                 [env IDP_AUTO_LOGIN, default off]
  --exit-on-stdin-eof            exit when standard input is closed   [env IDP_EXIT_ON_STDIN_EOF=1]
  --exit-with-parent             exit when the parent process dies    [env IDP_EXIT_WITH_PARENT=1]
  --quiet                        do not log requests on stderr        [env IDP_QUIET=1]
  -h, --help                     show this help
`;

function envFlag(name) {
  const v = process.env[name];
  return v !== undefined && v !== '' && !['0', 'false', 'no', 'off'].includes(v.toLowerCase());
}

function fail(msg) {
  process.stderr.write(`dev-idp: ${msg}\n`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      issuer: { type: 'string' },
      'static-client-redirect-uri': { type: 'string', multiple: true },
      'static-client-auth-method': { type: 'string' },
      'access-token-ttl': { type: 'string' },
      'refresh-token-ttl': { type: 'string' },
      'auto-login': { type: 'string' },
      'default-scope': { type: 'string' },
      'exit-on-stdin-eof': { type: 'boolean' },
      'exit-with-parent': { type: 'boolean' },
      quiet: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (err) {
  fail(`${err.message}\n${USAGE}`);
}

if (args.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}

function intOption(value, name, min) {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) fail(`${name} must be an integer >= ${min}, got ${JSON.stringify(value)}`);
  return n;
}

const PORT = intOption(args.port ?? process.env.IDP_PORT ?? '9000', '--port', 0);
const HOST = args.host ?? process.env.IDP_HOST ?? '127.0.0.1';
const ISSUER_OPTION = args.issuer ?? process.env.IDP_ISSUER ?? '';
const ACCESS_TOKEN_TTL = intOption(args['access-token-ttl'] ?? process.env.IDP_ACCESS_TOKEN_TTL ?? '3600', '--access-token-ttl', 1);
const REFRESH_TOKEN_TTL = intOption(args['refresh-token-ttl'] ?? process.env.IDP_REFRESH_TOKEN_TTL ?? '86400', '--refresh-token-ttl', 1);
const DEFAULT_SCOPE = (args['default-scope'] ?? process.env.IDP_DEFAULT_SCOPE ?? '').trim();
const AUTO_LOGIN = args['auto-login'] ?? process.env.IDP_AUTO_LOGIN ?? '';
const EXIT_ON_STDIN_EOF = args['exit-on-stdin-eof'] || envFlag('IDP_EXIT_ON_STDIN_EOF');
const EXIT_WITH_PARENT = args['exit-with-parent'] || envFlag('IDP_EXIT_WITH_PARENT');
const QUIET = args.quiet || envFlag('IDP_QUIET');

let staticRedirectUris = args['static-client-redirect-uri'];
if (!staticRedirectUris?.length && process.env.IDP_STATIC_CLIENT_REDIRECT_URIS) {
  staticRedirectUris = process.env.IDP_STATIC_CLIENT_REDIRECT_URIS.split(/[\s,]+/).filter(Boolean);
}
if (!staticRedirectUris?.length) staticRedirectUris = ['http://127.0.0.1:8000/callback'];

const STATIC_AUTH_METHOD = args['static-client-auth-method'] ?? process.env.IDP_STATIC_CLIENT_AUTH_METHOD ?? 'client_secret_basic';
if (!['client_secret_basic', 'client_secret_post'].includes(STATIC_AUTH_METHOD)) {
  fail('--static-client-auth-method must be client_secret_basic or client_secret_post');
}

// ---------------------------------------------------------------------------
// Fixed test data
// ---------------------------------------------------------------------------

const USERS = {
  testuser: {
    password: 'testpass',
    claims: {
      sub: 'testuser',
      email: 'testuser@example.com',
      email_verified: true,
      name: 'Test User',
    },
  },
};

if (AUTO_LOGIN && !USERS[AUTO_LOGIN]) fail(`--auto-login: unknown user ${JSON.stringify(AUTO_LOGIN)}`);

// Scopes a resource server (any resource indicator) accepts.
const RESOURCE_SCOPES = 'mcp:tools mcp:admin';

const STATIC_CLIENT = {
  client_id: 'mcp-proxy',
  client_secret: 'mcp-proxy-secret',
  client_name: 'MCP proxy (static client)',
  application_type: 'web',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: staticRedirectUris,
  token_endpoint_auth_method: STATIC_AUTH_METHOD,
  scope: 'openid offline_access mcp:tools mcp:admin',
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

function log(line) {
  if (!QUIET) process.stderr.write(`dev-idp: ${line}\n`);
}

function escapeHtml(value) {
  return String(value ?? '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

function toList(value) {
  if (value === undefined || value === null || value === '') return [];
  return Array.isArray(value) ? value : [value];
}

function isHttpUrl(value) {
  const u = URL.parse(value);
  return !!u && (u.protocol === 'http:' || u.protocol === 'https:') && !u.hash;
}

function readBody(req, limit = 64 * 1024) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        reject(new Error('request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendHtml(res, status, html) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Length', Buffer.byteLength(html));
  res.end(html);
}

function sendText(res, status, text) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.end(`${text}\n`);
}

function defaultIssuer(host, port) {
  let h = host;
  if (h === '0.0.0.0' || h === '::' || h === '') h = '127.0.0.1';
  if (h.includes(':')) h = `[${h}]`;
  return `http://${h}:${port}`;
}

// ---------------------------------------------------------------------------
// Signing key: a fresh RSA 2048 key per run
// ---------------------------------------------------------------------------

function makeSigningJwk() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  // RFC 7638 thumbprint as kid
  const thumbprintInput = JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n });
  const kid = crypto.createHash('sha256').update(thumbprintInput).digest('base64url');
  return { ...jwk, kid, alg: 'RS256', use: 'sig' };
}

// ---------------------------------------------------------------------------
// oidc-provider configuration
// ---------------------------------------------------------------------------

async function getResourceServerInfo(ctx, resourceIndicator /* , client */) {
  if (!isHttpUrl(resourceIndicator)) {
    throw new errors.InvalidTarget('resource indicator must be an absolute http(s) URL without fragment');
  }
  return {
    scope: RESOURCE_SCOPES,
    audience: resourceIndicator,
    accessTokenFormat: 'jwt',
    accessTokenTTL: ACCESS_TOKEN_TTL,
    jwt: { sign: { alg: 'RS256' } },
  };
}

function buildConfiguration() {
  return {
    clients: [STATIC_CLIENT],
    jwks: { keys: [makeSigningJwk()] },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },

    async findAccount(ctx, id) {
      const user = USERS[id];
      if (!user) return undefined;
      return {
        accountId: id,
        async claims(/* use, scope, claims, rejected */) {
          return { ...user.claims };
        },
      };
    },

    scopes: ['openid', 'offline_access', 'mcp:tools', 'mcp:admin'],
    responseTypes: ['code'],
    claims: {
      // the openid scope alone yields sub, email and name
      openid: ['sub', 'email', 'email_verified', 'name'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    // put the scope-derived claims (email, name) into the ID token too
    conformIdTokenClaims: false,

    pkce: {
      required: () => true, // S256 is the only method oidc-provider 9 supports
    },

    features: {
      devInteractions: { enabled: false },
      registration: { enabled: true, initialAccessToken: false },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // when the request names exactly one resource (or the grant holds
        // several), use the first; with no resource: none (opaque token)
        async defaultResource(ctx, client, oneOf) {
          if (Array.isArray(oneOf) && oneOf.length) return oneOf[0];
          return oneOf || undefined;
        },
        // a token request without `resource` gets the granted resource
        async useGrantedResource() {
          return true;
        },
        getResourceServerInfo,
      },
    },

    // a refresh token for every code exchange of a client allowed the
    // refresh_token grant (offline_access is not required)
    async issueRefreshToken(ctx, client /* , code */) {
      return client.grantTypeAllowed('refresh_token');
    },
    // tokens do not die with the browser session
    async expiresWithSession() {
      return false;
    },

    ttl: {
      AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL || ACCESS_TOKEN_TTL,
      AuthorizationCode: 60,
      ClientCredentials: 600,
      IdToken: 3600,
      RefreshToken: REFRESH_TOKEN_TTL,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },

    interactions: {
      url(ctx, interaction) {
        return `/interaction/${interaction.uid}`;
      },
    },

    async renderError(ctx, out /* , error */) {
      ctx.type = 'html';
      ctx.body = page('Error', `<h1>Error</h1><p><code>${escapeHtml(out.error)}</code></p>`
        + `<p>${escapeHtml(out.error_description)}</p>`);
    },
  };
}

// ---------------------------------------------------------------------------
// Interactions (login + automatic consent)
// ---------------------------------------------------------------------------

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
${body}
</body>
</html>
`;
}

function loginPage({ uid, client, params, error }) {
  const clientLabel = client?.clientName ? `${client.clientName} (${client.clientId})` : params.client_id;
  const scopes = params.scope || '';
  const resources = toList(params.resource).join(' ');
  const title = `Sign in to ${clientLabel} - scopes: ${scopes || '(none)'}`;
  return page(title, `<h1>Sign in</h1>
<p>Client: <strong id="client">${escapeHtml(clientLabel)}</strong></p>
<p>Requested scopes: <span id="scopes">${escapeHtml(scopes || '(none)')}</span></p>
${resources ? `<p>Resource: <span id="resource">${escapeHtml(resources)}</span></p>` : ''}
${error ? `<p id="error" role="alert" style="color:#b00">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
  <p><label>Username <input type="text" name="username" autocomplete="username" autofocus></label></p>
  <p><label>Password <input type="password" name="password" autocomplete="current-password"></label></p>
  <p><button type="submit">Sign in</button></p>
</form>
<form method="post" action="/interaction/${escapeHtml(uid)}/abort">
  <p><button type="submit">Cancel</button></p>
</form>`);
}

// Grants everything the authorization request asks for: the requested OIDC
// scopes, the requested claims, and for each requested resource the requested
// scopes that resource server accepts; plus whatever the consent prompt
// reports as missing.
async function grantEverything(provider, interaction, accountId) {
  const { params, prompt, grantId } = interaction;
  let grant = grantId ? await provider.Grant.find(grantId) : undefined;
  if (!grant) {
    grant = new provider.Grant({ accountId, clientId: params.client_id });
  }

  const requested = (params.scope || '').split(' ').filter(Boolean);
  const known = new Set(['openid', 'offline_access', 'mcp:tools', 'mcp:admin', 'email', 'profile']);
  const oidcScopes = requested.filter((s) => known.has(s));
  if (oidcScopes.length) grant.addOIDCScope(oidcScopes.join(' '));

  if (params.claims) {
    try {
      const { userinfo = {}, id_token: idToken = {} } = JSON.parse(params.claims);
      const names = [...Object.keys(userinfo), ...Object.keys(idToken)];
      if (names.length) grant.addOIDCClaims(names);
    } catch { /* ignore malformed claims parameter, oidc-provider rejects it */ }
  }

  for (const resource of toList(params.resource)) {
    if (!isHttpUrl(resource)) continue;
    const rsScopes = new Set(RESOURCE_SCOPES.split(' '));
    const scopes = requested.filter((s) => rsScopes.has(s));
    if (scopes.length) grant.addResourceScope(resource, scopes.join(' '));
  }

  const details = prompt?.details || {};
  if (details.missingOIDCScope?.length) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims?.length) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }

  return grant.save();
}

async function finishWithLogin(provider, req, res, interaction, accountId) {
  const consentGrantId = await grantEverything(provider, interaction, accountId);
  await provider.interactionFinished(req, res, {
    login: { accountId, amr: ['pwd'] },
    consent: { grantId: consentGrantId },
  }, { mergeWithLastSubmission: false });
}

async function handleInteraction(provider, req, res, uid, action) {
  let interaction;
  try {
    interaction = await provider.interactionDetails(req, res);
  } catch (err) {
    sendHtml(res, 400, page('Error', `<h1>Error</h1><p>${escapeHtml(err.error_description || err.message)}</p>`));
    return;
  }
  if (interaction.uid !== uid) {
    sendHtml(res, 400, page('Error', '<h1>Error</h1><p>interaction mismatch</p>'));
    return;
  }

  const { prompt, params, session } = interaction;
  const client = await provider.Client.find(params.client_id);

  if (action === 'show') {
    if (prompt.name === 'consent') {
      // already logged in: consent is granted automatically
      const consentGrantId = await grantEverything(provider, interaction, session.accountId);
      await provider.interactionFinished(req, res, { consent: { grantId: consentGrantId } }, { mergeWithLastSubmission: true });
      return;
    }
    if (prompt.name === 'login' && AUTO_LOGIN) {
      await finishWithLogin(provider, req, res, interaction, AUTO_LOGIN);
      return;
    }
    sendHtml(res, 200, loginPage({ uid, client, params }));
    return;
  }

  if (action === 'abort') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
    return;
  }

  // action === 'login'
  const form = new URLSearchParams(await readBody(req));
  const username = form.get('username') || '';
  const password = form.get('password') || '';
  const user = USERS[username];
  const ok = !!user && crypto.timingSafeEqual(
    crypto.createHash('sha256').update(password).digest(),
    crypto.createHash('sha256').update(user.password).digest(),
  );
  if (!ok) {
    sendHtml(res, 401, loginPage({ uid, client, params, error: 'Invalid username or password.' }));
    return;
  }
  await finishWithLogin(provider, req, res, interaction, username);
}

// ---------------------------------------------------------------------------
// HTTP server
// ---------------------------------------------------------------------------

let provider;
let providerCallback;

const INTERACTION_RE = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|abort))?\/?$/;

async function route(req, res) {
  if (!providerCallback) {
    sendText(res, 503, 'starting');
    return;
  }
  const path = (req.url || '/').split('?')[0];

  if (path === '/.well-known/oauth-authorization-server') {
    // RFC 8414 metadata: the same document as OpenID discovery
    req.url = '/.well-known/openid-configuration';
    providerCallback(req, res);
    return;
  }

  if (DEFAULT_SCOPE && path === '/auth' && req.method === 'GET') {
    // oidc-provider denies a request that ends up with no granted scope at all
    const url = new URL(req.url, 'http://placeholder');
    if (!url.searchParams.get('scope')) {
      url.searchParams.set('scope', DEFAULT_SCOPE);
      req.url = `${url.pathname}${url.search}`;
    }
  }

  const m = INTERACTION_RE.exec(path);
  if (m) {
    const [, uid, action] = m;
    if (!action && req.method === 'GET') {
      await handleInteraction(provider, req, res, uid, 'show');
      return;
    }
    if (action && req.method === 'POST') {
      await handleInteraction(provider, req, res, uid, action);
      return;
    }
    res.setHeader('Allow', action ? 'POST' : 'GET');
    sendText(res, 405, 'method not allowed');
    return;
  }

  providerCallback(req, res);
}

const server = http.createServer((req, res) => {
  const path = (req.url || '/').split('?')[0];
  const method = req.method;
  res.on('finish', () => log(`${method} ${path} ${res.statusCode}`));
  route(req, res).catch((err) => {
    log(`error handling ${method} ${path}: ${err.name}: ${err.message}`);
    if (!res.headersSent) sendText(res, 500, 'internal error');
    else res.destroy();
  });
});

let shuttingDown = false;
function shutdown(reason) {
  if (shuttingDown) return;
  shuttingDown = true;
  log(`shutting down (${reason})`);
  server.close();
  server.closeAllConnections();
  setImmediate(() => process.exit(0));
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGHUP', () => shutdown('SIGHUP'));

server.on('error', (err) => fail(`cannot listen on ${HOST}:${PORT}: ${err.message}`));

server.listen(PORT, HOST, () => {
  const { port } = server.address();
  const issuer = ISSUER_OPTION || defaultIssuer(HOST, port);

  provider = new Provider(issuer, buildConfiguration());

  for (const event of ['server_error', 'authorization.error', 'grant.error', 'registration_create.error',
    'introspection.error', 'revocation.error', 'userinfo.error', 'discovery.error', 'jwks.error']) {
    provider.on(event, (ctx, err) => {
      const detail = err.error_detail || err.cause?.message;
      log(`${event}: ${err.error || err.name}: ${err.error_description || err.message}${detail ? ` (${detail})` : ''}`);
    });
  }

  providerCallback = provider.callback();

  if (EXIT_ON_STDIN_EOF) {
    process.stdin.on('end', () => shutdown('stdin closed'));
    process.stdin.on('error', () => shutdown('stdin error'));
    process.stdin.on('data', () => {});
    process.stdin.resume();
  }
  if (EXIT_WITH_PARENT) {
    const parent = process.ppid;
    setInterval(() => {
      if (process.ppid !== parent) shutdown('parent exited');
    }, 500).unref();
  }

  process.stdout.write(`dev-idp listening issuer=${issuer} port=${port}\n`);
});
