// Test OpenID Provider for the portcullis integration tests (node `oidc-provider` v9).
//
// Configured entirely through environment variables (see README.md). Listens on
// 127.0.0.1 only. When ready it prints exactly one line to stdout:
//
//     IDP_READY http://127.0.0.1:<port>
//
// Everything else goes to stderr.
//
// ---------------------------------------------------------------------------
// devInteractions HTML forms (oidc-provider 9.x), for tests that drive the flow
// with a plain HTTP client. Keep a cookie jar: the IdP sets `idp_interaction`
// (path /interaction/<uid>), `idp_interaction_resume` (path /auth/<uid>) and
// `idp_session` (path /), each with a `.sig` companion. Cookies are per host,
// not per port, so the gateway on 127.0.0.1 sees `idp_session` too.
//
// 1. GET /auth?client_id=..&response_type=code&scope=openid email profile offline_access
//        &redirect_uri=..&state=..&nonce=..&code_challenge=..&code_challenge_method=S256
//    -> 303 Location: /interaction/<uid>            (relative)
// 2. GET /interaction/<uid>  -> 200 HTML login page; the form (action is absolute):
//      <form autocomplete="off" action="http://127.0.0.1:<port>/interaction/<uid>" method="post">
//        <input type="hidden" name="prompt" value="login"/>
//        <input required type="text" name="login" placeholder="Enter any login" autofocus="on">
//        <input required type="password" name="password" placeholder="and password" >
//        <button type="submit" class="login login-submit">Sign-in</button>
//      </form>
//    POST /interaction/<uid>   (application/x-www-form-urlencoded)
//         prompt=login&login=<username>&password=<anything>
//    -> 303 Location: http://127.0.0.1:<port>/auth/<uid>
// 3. GET /auth/<uid> -> 303 Location: /interaction/<uid2>   (new uid for consent)
// 4. GET /interaction/<uid2> -> 200 HTML consent ("Authorize") page:
//      <form autocomplete="off" action="http://127.0.0.1:<port>/interaction/<uid2>" method="post">
//        <input type="hidden" name="prompt" value="consent"/>
//        <button autofocus type="submit" class="login login-submit">Continue</button>
//      </form>
//    POST /interaction/<uid2>  body: prompt=consent
//    -> 303 Location: http://127.0.0.1:<port>/auth/<uid2>
// 5. GET /auth/<uid2> -> 303 Location: <redirect_uri>?code=..&state=..&iss=http%3A%2F%2F127.0.0.1%3A<port>
//
// The form is always POSTed to the URL of the page itself. The "[ Cancel ]" link
// (GET /interaction/<uid>/abort) ends with error=access_denied at the redirect_uri.
// With an existing IdP session whose grant already covers the requested scopes,
// GET /auth answers 303 straight to the redirect_uri (no login/consent pages).
//
// RP-initiated logout: GET /session/end?id_token_hint=..&post_logout_redirect_uri=..&state=..
// -> 200 HTML page with <form id="op.logoutForm" method="post" action=".../session/end/confirm">
//    <input type="hidden" name="xsrf" value="<hex>"/></form> (a script auto-submits it
//    with logout=yes in browsers); POST /session/end/confirm xsrf=<hex>&logout=yes
// -> 303 Location: <post_logout_redirect_uri>?state=..  (and back-channel logout is sent)
// ---------------------------------------------------------------------------

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import process from 'node:process';

import { calculateJwkThumbprint } from 'jose';
import Provider, { errors } from 'oidc-provider';
// The provider's internal state (keystore, published JWKS); used by /__test/rotate_keys.
import instance from 'oidc-provider/lib/helpers/weak_cache.js';
// The in-memory adapter over a store of our size (STORE_MAX_ENTRIES).
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';
import LRU from 'oidc-provider/lib/helpers/lru.js';

// ----- logging: stdout is reserved for the single IDP_READY line ---------------
const log = (...args) => console.error('[idp]', ...args);
// oidc-provider prints NOTICEs with console.info (stdout); route them to stderr.
console.info = (...args) => console.error(...args);
console.log = (...args) => console.error(...args);

// ----- configuration -----------------------------------------------------------
const env = process.env;

function intEnv(name, dflt) {
  const raw = env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number.parseInt(raw, 10);
  if (!Number.isFinite(n) || n < 0) {
    throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  }
  return n;
}

function listEnv(name) {
  return (env[name] || '').split(',').map((s) => s.trim()).filter(Boolean);
}

const PORT = intEnv('IDP_PORT', 0);
const CLIENT_ID = env.CLIENT_ID || 'gateway';
const CLIENT_SECRET = env.CLIENT_SECRET || '';
const CLIENT_AUTH_METHOD = env.CLIENT_AUTH_METHOD || '';
const REDIRECT_URIS = listEnv('REDIRECT_URIS');
const POST_LOGOUT_REDIRECT_URIS = listEnv('POST_LOGOUT_REDIRECT_URIS');
const BACKCHANNEL_LOGOUT_URI = env.BACKCHANNEL_LOGOUT_URI || '';
const CLIENT2_ID = env.CLIENT2_ID || '';
const CLIENT2_SECRET = env.CLIENT2_SECRET || '';
const ACCESS_TOKEN_TTL = intEnv('ACCESS_TOKEN_TTL', 3600);
const ID_TOKEN_TTL = intEnv('ID_TOKEN_TTL', 3600);
const REFRESH_TOKEN_TTL = intEnv('REFRESH_TOKEN_TTL', 86400);
const SESSION_TTL = intEnv('SESSION_TTL', 86400);
// oidc-provider's in-memory adapter keeps this many recent entries (and as many older
// ones) and silently evicts the rest: every login stores about ten (interactions,
// session, grant, code, tokens), so past ~150 logins the first sessions' refresh tokens
// are gone (invalid_grant). 0: the shipped default (1000).
const STORE_MAX_ENTRIES = intEnv('STORE_MAX_ENTRIES', 0);
const API_RESOURCE = env.API_RESOURCE || 'https://api.portcullis.test';
const USERS = env.USERS_JSON ? JSON.parse(env.USERS_JSON) : {};
// Opt-in deviations from oidc-provider's shipped defaults (see README.md).
const CLAIMS_IN_ID_TOKEN = flagEnv('CLAIMS_IN_ID_TOKEN');
const ACCESS_TOKEN_FORMAT = env.ACCESS_TOKEN_FORMAT || 'opaque';
const SIGNING_ALG = env.SIGNING_ALG || 'RS256';
const USERINFO_SIGNED = flagEnv('USERINFO_SIGNED');
const CLIENT_KEY_FILE = env.CLIENT_KEY_FILE || '';
const CLIENT_KEY_ID = env.CLIENT_KEY_ID || '';

function flagEnv(name) {
  const raw = (env[name] || '').trim().toLowerCase();
  if (['', '0', 'false', 'no'].includes(raw)) return false;
  if (['1', 'true', 'yes'].includes(raw)) return true;
  throw new Error(`${name} must be 1 or 0, got ${JSON.stringify(env[name])}`);
}

if (REDIRECT_URIS.length === 0) {
  throw new Error('REDIRECT_URIS is required (comma-separated list)');
}
if (typeof USERS !== 'object' || USERS === null || Array.isArray(USERS)) {
  throw new Error('USERS_JSON must be a JSON object {"<username>": {claims...}}');
}
if (!['opaque', 'jwt'].includes(ACCESS_TOKEN_FORMAT)) {
  throw new Error(`ACCESS_TOKEN_FORMAT must be opaque or jwt, got ${JSON.stringify(ACCESS_TOKEN_FORMAT)}`);
}
if (!['RS256', 'ES256'].includes(SIGNING_ALG)) {
  throw new Error(`SIGNING_ALG must be RS256 or ES256, got ${JSON.stringify(SIGNING_ALG)}`);
}
if (CLIENT_AUTH_METHOD === 'private_key_jwt' && !CLIENT_KEY_FILE) {
  throw new Error('CLIENT_AUTH_METHOD=private_key_jwt needs CLIENT_KEY_FILE (a PEM private key)');
}

// ----- accounts ------------------------------------------------------------------
const STANDARD_CLAIMS = new Set([
  'sub', 'email', 'email_verified', 'name', 'given_name', 'family_name',
  'preferred_username', 'groups',
]);
const EXTRA_CLAIMS = [...new Set(
  Object.values(USERS).flatMap((u) => Object.keys(u || {})),
)].filter((k) => !STANDARD_CLAIMS.has(k));

function capitalize(s) {
  return s ? s.charAt(0).toUpperCase() + s.slice(1) : s;
}

function claimsFor(id) {
  return {
    email: `${id}@example.com`,
    email_verified: true,
    name: capitalize(id),
    preferred_username: id,
    groups: [],
    ...(USERS[id] || {}),
    sub: id,
  };
}

// ----- clients -------------------------------------------------------------------
// The main client's public key for private_key_jwt, from CLIENT_KEY_FILE (a PEM private
// key: PKCS#8, PKCS#1 for RSA or SEC1 for EC; a public key PEM works too).
async function clientPublicJwk(file) {
  let pem;
  try {
    pem = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`CLIENT_KEY_FILE ${file}: ${err.message}`);
  }
  const jwk = crypto.createPublicKey(pem).export({ format: 'jwk' });
  if (jwk.kty === 'RSA') {
    jwk.alg = 'RS256';
  } else if (jwk.kty === 'EC' && jwk.crv === 'P-256') {
    jwk.alg = 'ES256';
  } else {
    throw new Error(`CLIENT_KEY_FILE ${file}: need an RSA or EC P-256 key, got ${jwk.kty} ${jwk.crv || ''}`);
  }
  jwk.use = 'sig';
  jwk.kid = CLIENT_KEY_ID || await calculateJwkThumbprint(jwk, 'sha256');
  return jwk;
}
const CLIENT_JWK = CLIENT_AUTH_METHOD === 'private_key_jwt' ? await clientPublicJwk(CLIENT_KEY_FILE) : undefined;

function makeClient(clientId, secret, { main }) {
  const client = {
    client_id: clientId,
    redirect_uris: REDIRECT_URIS,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    id_token_signed_response_alg: SIGNING_ALG,
  };
  if (main && USERINFO_SIGNED) {
    client.userinfo_signed_response_alg = SIGNING_ALG;
  }
  if (main && CLIENT_JWK) {
    client.token_endpoint_auth_method = 'private_key_jwt';
    client.jwks = { keys: [CLIENT_JWK] };
  } else if (secret) {
    client.client_secret = secret;
    client.token_endpoint_auth_method = (main && CLIENT_AUTH_METHOD) || 'client_secret_basic';
  } else {
    client.token_endpoint_auth_method = 'none';
  }
  if (POST_LOGOUT_REDIRECT_URIS.length) {
    client.post_logout_redirect_uris = POST_LOGOUT_REDIRECT_URIS;
  }
  if (main && BACKCHANNEL_LOGOUT_URI) {
    client.backchannel_logout_uri = BACKCHANNEL_LOGOUT_URI;
    client.backchannel_logout_session_required = true;
  }
  return client;
}

const clients = [makeClient(CLIENT_ID, CLIENT_SECRET, { main: true })];
if (CLIENT2_ID) clients.push(makeClient(CLIENT2_ID, CLIENT2_SECRET, { main: false }));

// ----- keys ------------------------------------------------------------------------
// A fresh private signing JWK for SIGNING_ALG: RSA-2048 (RS256) or EC P-256 (ES256).
function generateSigningKey() {
  const { privateKey } = SIGNING_ALG === 'ES256'
    ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `test-${crypto.randomBytes(6).toString('hex')}`, alg: SIGNING_ALG, use: 'sig' };
}

// The public part of a keystore key, as oidc-provider publishes it at /jwks
// (lib/helpers/initialize_keystore.js).
function publicJwk(key) {
  return JSON.parse(JSON.stringify({
    kty: key.kty,
    use: key.use,
    key_ops: key.key_ops ? [...key.key_ops] : undefined,
    kid: key.kid,
    alg: key.alg,
    crv: key.crv,
    e: key.e,
    n: key.n,
    x: key.x,
    x5c: key.x5c ? [...key.x5c] : undefined,
    y: key.y,
    pub: key.pub,
  }));
}

// A new signing key goes first in the provider's keystore (signing picks the first
// key matching the alg), so everything is signed with it from now on. The old keys stay
// (still published, still accepted by the IdP itself, e.g. in id_token_hint) unless
// keepOld is false: then they are gone from both.
function rotateSigningKeys(provider, keepOld) {
  const state = instance(provider);
  const key = generateSigningKey();
  const old = [...state.keystore];
  state.keystore.clear();
  state.keystore.add(key);
  if (keepOld) for (const k of old) state.keystore.add(k);
  state.jwks = { keys: [...state.keystore].map(publicJwk) };
  return { kid: key.kid, kids: state.jwks.keys.map((k) => k.kid) };
}

// ----- test statistics & bookkeeping ---------------------------------------------
const stats = {
  token_requests: { authorization_code: 0, refresh_token: 0 },
  revocations: 0,
  introspections: 0,
  end_session: 0,
  end_session_confirm: 0,
  backchannel_logouts_sent: 0,
  // error code ("invalid_grant", "invalid_client", ...) -> count, from grant.error
  token_errors: {},
  userinfo_requests: 0,
  jwks_requests: 0,
};
function resetStats() {
  for (const k of Object.keys(stats.token_requests)) stats.token_requests[k] = 0;
  stats.revocations = 0;
  stats.introspections = 0;
  stats.end_session = 0;
  stats.end_session_confirm = 0;
  stats.backchannel_logouts_sent = 0;
  stats.token_errors = {};
  stats.userinfo_requests = 0;
  stats.jwks_requests = 0;
}

// code_challenge values of authorization requests whose `scope` contained
// offline_access (see the offline_access note in main()). value: Date.now()
const offlineRequested = new Map();

// grantId -> { accountId, clientId }
const knownGrants = new Map();
// session jti -> { accountId, authorizations: { clientId: { sid, grantId } } }
const knownSessions = new Map();
// accountId -> Map(clientId -> Set(sid))  (sids seen when tokens were issued)
const issuedSids = new Map();

function rememberSid(accountId, clientId, sid) {
  if (!accountId || !clientId || !sid) return;
  if (!issuedSids.has(accountId)) issuedSids.set(accountId, new Map());
  const byClient = issuedSids.get(accountId);
  if (!byClient.has(clientId)) byClient.set(clientId, new Set());
  const sids = byClient.get(clientId);
  sids.delete(sid); // keep insertion order = recency
  sids.add(sid);
}

// ----- start -----------------------------------------------------------------------
async function main() {
  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(PORT, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;

  const configuration = {
    clients,
    // The shipped adapter and store class, only larger (the provider builds the same
    // factory itself, over a 1000-entry store, when no adapter is configured; 15 s is its
    // default clockTolerance, which the adapter adds to every expiry).
    ...(STORE_MAX_ENTRIES > 0 ? {
      adapter: ((store) => (model) => new MemoryAdapter(model, store, 15))(new LRU({ maxSize: STORE_MAX_ENTRIES })),
    } : {}),
    jwks: { keys: [generateSigningKey()] },
    cookies: {
      keys: [crypto.randomBytes(32).toString('hex')],
      // Cookies are per host, not per port: the gateway under test also lives on
      // 127.0.0.1, so keep the IdP's cookie names distinct from oidc-provider's
      // generic defaults (_session, _interaction, _interaction_resume).
      names: { session: 'idp_session', interaction: 'idp_interaction', resume: 'idp_interaction_resume' },
    },

    async findAccount(ctx, id) {
      if (!id) return undefined;
      return {
        accountId: id,
        async claims() {
          return claimsFor(id);
        },
      };
    },

    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'given_name', 'family_name', 'preferred_username', 'groups', ...EXTRA_CLAIMS],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    // Shipped default (true): when the access token can be used at userinfo (opaque, no
    // `aud`), the ID token carries only sub + protocol claims and the scope claims are
    // at userinfo only. CLAIMS_IN_ID_TOKEN=1 puts them in the ID token too.
    ...(CLAIMS_IN_ID_TOKEN ? { conformIdTokenClaims: false } : {}),

    pkce: { required: () => true },
    responseTypes: ['code'],

    features: {
      devInteractions: { enabled: true },
      revocation: { enabled: true },
      introspection: {
        enabled: true,
        // Any authenticated confidential client (and public clients for their own tokens).
        allowedPolicy: async (ctx, client, token) => {
          if (client.clientAuthMethod === 'none' && token.clientId !== client.clientId) return false;
          return true;
        },
      },
      rpInitiatedLogout: {
        enabled: true,
        // `form` is <form id="op.logoutForm" method="post" action=".../session/end/confirm">
        //   <input type="hidden" name="xsrf" value="..."/></form>
        // Confirming = POST xsrf=<value>&logout=yes to /session/end/confirm.
        // Browsers auto-confirm (script below); HTTP clients must POST the form.
        logoutSource: async (ctx, form) => {
          ctx.type = 'html';
          ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Logout Request</title></head><body>
<h1>Do you want to sign-out from ${escapeHtml(ctx.host)}?</h1>
${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>
<script>(function(){var f=document.getElementById('op.logoutForm');var i=document.createElement('input');i.type='hidden';i.name='logout';i.value='yes';f.appendChild(i);f.submit();})();</script>
</body></html>`;
        },
        postLogoutSuccessSource: async (ctx) => {
          ctx.type = 'html';
          ctx.body = '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Sign-out Success</title></head>'
            + '<body><h1>Sign-out Success</h1><p>Your sign-out was successful.</p></body></html>';
        },
      },
      backchannelLogout: { enabled: true },
      claimsParameter: { enabled: true },
      userinfo: { enabled: true },
      // USERINFO_SIGNED=1: /me answers application/jwt for the main client.
      jwtUserinfo: { enabled: USERINFO_SIGNED },
      resourceIndicators: {
        enabled: true,
        // Default (shipped defaults for defaultResource/useGrantedResource): without a
        // `resource` parameter the access token is opaque, good for userinfo and
        // introspection. With a `resource` parameter (at /auth and /token) it is a JWT
        // for that resource (getResourceServerInfo below).
        // ACCESS_TOKEN_FORMAT=jwt: every access token is a JWT for API_RESOURCE.
        ...(ACCESS_TOKEN_FORMAT === 'jwt' ? {
          // No `resource` parameter -> API_RESOURCE, both at /auth and /token.
          defaultResource: async (ctx, client, oneOf) => {
            if (oneOf) return oneOf.includes(API_RESOURCE) ? API_RESOURCE : oneOf[0];
            return API_RESOURCE;
          },
          // Always mint the access token for the granted resource (a JWT), never an
          // opaque userinfo token.
          useGrantedResource: async () => true,
        } : {}),
        getResourceServerInfo: async (ctx, resourceIndicator) => {
          let url;
          try {
            url = new URL(resourceIndicator);
          } catch {
            throw new errors.InvalidTarget();
          }
          if (!['http:', 'https:'].includes(url.protocol)) throw new errors.InvalidTarget();
          // API_RESOURCE is the main one; any other absolute http(s) URI is accepted too
          // so tests can mint access tokens with a different audience.
          return {
            scope: 'openid email profile groups offline_access',
            audience: resourceIndicator,
            accessTokenTTL: ACCESS_TOKEN_TTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: SIGNING_ALG } },
          };
        },
      },
    },

    // offline_access handling. oidc-provider 9 drops `offline_access` from the
    // requested scope at the authorization endpoint unless `prompt` contains
    // `consent` (OIDC Core 11), and that check applies even when no `prompt`
    // parameter was sent at all. For this test IdP we want: offline_access
    // requested -> refresh token issued. The pre-middleware below records the
    // code_challenge (mandatory, unique per request) of every /auth request whose
    // raw scope had offline_access; loadExistingGrant (which runs after the scope
    // check, on the initial request with an existing session and on every resume
    // after login/consent) puts offline_access back into the request scope. The
    // consent prompt then grants it like any other scope.
    async loadExistingGrant(ctx) {
      const { params, client } = ctx.oidc;
      if (
        params.code_challenge
        && offlineRequested.has(params.code_challenge)
        && client.grantTypeAllowed('refresh_token')
      ) {
        const scopes = new Set((params.scope || '').split(' ').filter(Boolean));
        if (!scopes.has('offline_access')) {
          scopes.add('offline_access');
          params.scope = [...scopes].join(' ');
        }
      }
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      return undefined;
    },

    issueRefreshToken: async (ctx, client, code) => (
      client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access')
    ),
    rotateRefreshToken: true,

    ttl: {
      AccessToken: ACCESS_TOKEN_TTL,
      AuthorizationCode: 60,
      IdToken: ID_TOKEN_TTL,
      RefreshToken: REFRESH_TOKEN_TTL,
      Interaction: 3600,
      Session: SESSION_TTL,
      Grant: Math.max(REFRESH_TOKEN_TTL, SESSION_TTL, ACCESS_TOKEN_TTL),
    },

    // oidc-provider blocks outgoing requests (back-channel logout) to special-use
    // addresses such as 127.0.0.1 through its SSRF-protecting dispatcher. In this
    // test IdP the only targets are local test servers, so use a plain fetch.
    fetch: (url, options) => {
      const opts = { ...options };
      delete opts.dispatcher;
      return globalThis.fetch(url, opts);
    },

    renderError: async (ctx, out) => {
      ctx.type = 'html';
      const rows = Object.entries(out)
        .map(([k, v]) => `<pre><strong>${escapeHtml(k)}</strong>: ${escapeHtml(v)}</pre>`).join('');
      ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>oops! something went wrong</title></head>`
        + `<body><h1>oops! something went wrong</h1>${rows}</body></html>`;
    },
  };

  const provider = new Provider(issuer, configuration);

  // --- events --------------------------------------------------------------------
  provider.on('grant.saved', (grant) => {
    knownGrants.set(grant.jti, { accountId: grant.accountId, clientId: grant.clientId });
  });
  provider.on('grant.revoked', (ctx, grantId) => {
    log('grant revoked', grantId);
    knownGrants.delete(grantId);
  });
  provider.on('session.saved', (session) => {
    if (session.accountId) {
      knownSessions.set(session.jti, {
        accountId: session.accountId,
        authorizations: JSON.parse(JSON.stringify(session.authorizations || {})),
      });
      for (const [clientId, auth] of Object.entries(session.authorizations || {})) {
        rememberSid(session.accountId, clientId, auth?.sid);
      }
    }
  });
  provider.on('session.destroyed', (session) => knownSessions.delete(session.jti));
  provider.on('grant.success', (ctx) => {
    const src = ctx.oidc.entities.AuthorizationCode || ctx.oidc.entities.RefreshToken;
    if (src) rememberSid(src.accountId, src.clientId, src.sid);
    log('token issued', ctx.oidc.params?.grant_type, 'client', ctx.oidc.client?.clientId);
  });
  const detail = (err) => (err.error_detail ? `(${err.error_detail})` : '');
  provider.on('grant.error', (ctx, err) => {
    const code = err.error || err.message || 'unknown';
    stats.token_errors[code] = (stats.token_errors[code] || 0) + 1;
    // e.g. "token error refresh_token invalid_grant grant request is invalid (refresh token already used)"
    log('token error', ctx.oidc?.params?.grant_type, code, err.error_description || '', detail(err));
  });
  provider.on('userinfo.error', (ctx, err) => log('userinfo error', err.message, err.error_description || '', detail(err)));
  provider.on('jwks.error', (ctx, err) => log('jwks error', err.message, err.error_description || '', detail(err)));
  provider.on('authorization.error', (ctx, err) => log('authorization error', err.message, err.error_description || '', detail(err)));
  provider.on('end_session.error', (ctx, err) => log('end_session error', err.message, err.error_description || '', detail(err)));
  provider.on('revocation.error', (ctx, err) => log('revocation error', err.message, err.error_description || '', detail(err)));
  provider.on('introspection.error', (ctx, err) => log('introspection error', err.message, err.error_description || '', detail(err)));
  provider.on('backchannel.error', (ctx, err, client) => log('backchannel error', client.clientId, err.message));
  provider.on('backchannel.success', (ctx, client, accountId, sid) => {
    stats.backchannel_logouts_sent += 1;
    log('backchannel logout sent', client.clientId, accountId, sid);
  });
  provider.on('server_error', (ctx, err) => log('server_error', err));

  // --- middleware: test hooks, stats, offline page tweaks -------------------------
  provider.use(async (ctx, next) => {
    if (ctx.path.startsWith('/__test/')) {
      await testHooks(ctx, provider);
      return;
    }

    if (ctx.path === '/auth' && ctx.method === 'GET') {
      const { scope, code_challenge: challenge } = ctx.query;
      if (typeof scope === 'string' && typeof challenge === 'string'
        && scope.split(' ').includes('offline_access')) {
        const now = Date.now();
        offlineRequested.set(challenge, now);
        for (const [k, t] of offlineRequested) if (now - t > 3600_000) offlineRequested.delete(k);
      }
    }

    await next();

    const { path, method } = ctx;
    if (method === 'POST' && path === '/token') {
      const gty = ctx.oidc?.body?.grant_type || ctx.oidc?.params?.grant_type || 'unknown';
      stats.token_requests[gty] = (stats.token_requests[gty] || 0) + 1;
    } else if (method === 'POST' && path === '/token/revocation') {
      stats.revocations += 1;
    } else if (method === 'POST' && path === '/token/introspection') {
      stats.introspections += 1;
    } else if (path === '/session/end') {
      stats.end_session += 1;
    } else if (path === '/session/end/confirm') {
      stats.end_session_confirm += 1;
    } else if (path === '/me' && (method === 'GET' || method === 'POST')) {
      stats.userinfo_requests += 1;
    } else if (path === '/jwks' && method === 'GET') {
      stats.jwks_requests += 1;
    }

    // The built-in pages @import a Google web font; drop it so browsers stay offline.
    if (typeof ctx.body === 'string' && ctx.body.includes('fonts.googleapis.com')) {
      ctx.body = ctx.body.replace(/@import url\(https:\/\/fonts\.googleapis\.com[^)]*\);?/g, '');
    }
  });

  server.on('request', provider.callback());

  const shutdown = (signal) => {
    log(`received ${signal}, shutting down`);
    server.close();
    server.closeAllConnections?.();
    // Everything is in memory; nothing to flush.
    process.exit(0);
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  log(`issuer ${issuer}; clients: ${clients.map((c) => `${c.client_id} (${c.token_endpoint_auth_method})`).join(', ')}; api resource ${API_RESOURCE}`
    + `; signing ${SIGNING_ALG}; access tokens ${ACCESS_TOKEN_FORMAT}; claims in id token ${CLAIMS_IN_ID_TOKEN ? 'all' : 'default'}`
    + `${USERINFO_SIGNED ? '; signed userinfo' : ''}${CLIENT_JWK ? `; client key ${CLIENT_JWK.kid} (${CLIENT_JWK.alg})` : ''}`);
  process.stdout.write(`IDP_READY ${issuer}\n`);
}

function escapeHtml(v) {
  return String(v).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  }[c]));
}

// ----- /__test/ hooks ------------------------------------------------------------
function sendJson(ctx, status, body) {
  ctx.status = status;
  ctx.type = 'application/json';
  ctx.body = JSON.stringify(body);
}

async function liveSessionsOf(provider, sub) {
  const out = [];
  for (const [jti, info] of [...knownSessions]) {
    if (info.accountId !== sub) continue;
    // eslint-disable-next-line no-await-in-loop
    const session = await provider.Session.find(jti);
    if (!session) {
      knownSessions.delete(jti);
      continue;
    }
    out.push(session);
  }
  return out;
}

async function revokeGrantsOf(provider, sub, clientId) {
  const revoked = [];
  for (const [grantId, info] of [...knownGrants]) {
    if (info.accountId !== sub) continue;
    if (clientId && info.clientId !== clientId) continue;
    // eslint-disable-next-line no-await-in-loop
    await Promise.all([
      provider.AccessToken.revokeByGrantId(grantId),
      provider.RefreshToken.revokeByGrantId(grantId),
      provider.AuthorizationCode.revokeByGrantId(grantId),
      provider.Grant.adapter.destroy(grantId),
    ]);
    knownGrants.delete(grantId);
    revoked.push({ grant_id: grantId, client_id: info.clientId });
  }
  return revoked;
}

async function sendBackchannelLogout(provider, client, sub, sid) {
  const logoutToken = new provider.IdToken({ sub }, { client, ctx: undefined });
  logoutToken.mask = { sub: null };
  logoutToken.set('events', { 'http://schemas.openid.net/event/backchannel-logout': {} });
  logoutToken.set('jti', crypto.randomUUID());
  if (sid) logoutToken.set('sid', sid);
  const token = await logoutToken.issue({ use: 'logout' });
  const result = {
    client_id: client.clientId, uri: client.backchannelLogoutUri, sub, sid: sid || null, logout_token: token,
  };
  try {
    const res = await globalThis.fetch(client.backchannelLogoutUri, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ logout_token: token }),
      redirect: 'manual',
      signal: AbortSignal.timeout(5000),
    });
    result.status = res.status;
    result.response_body = await res.text();
    stats.backchannel_logouts_sent += 1;
  } catch (err) {
    result.status = null;
    result.error = String(err?.cause?.message || err?.message || err);
  }
  log('test hook backchannel logout', JSON.stringify({ ...result, logout_token: undefined }));
  return result;
}

async function testHooks(ctx, provider) {
  const remote = ctx.req.socket.remoteAddress || '';
  if (!['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(remote)) {
    sendJson(ctx, 403, { error: 'forbidden' });
    return;
  }
  const { path, method } = ctx;
  const q = ctx.query;

  if (path === '/__test/stats' && method === 'GET') {
    sendJson(ctx, 200, stats);
    return;
  }
  if (path === '/__test/reset_stats' && method === 'POST') {
    resetStats();
    sendJson(ctx, 200, stats);
    return;
  }
  if (path === '/__test/rotate_keys' && method === 'POST') {
    const keepOld = !(q.keep_old === '0' || q.keep_old === 'false');
    const out = rotateSigningKeys(provider, keepOld);
    log('test hook rotate_keys', JSON.stringify({ ...out, keep_old: keepOld }));
    sendJson(ctx, 200, out);
    return;
  }
  if (path === '/__test/health' && method === 'GET') {
    sendJson(ctx, 200, { ok: true, issuer: provider.issuer });
    return;
  }
  if (path === '/__test/revoke_grants' && method === 'POST') {
    const { sub } = q;
    if (!sub) {
      sendJson(ctx, 400, { error: 'sub query parameter required' });
      return;
    }
    const revoked = await revokeGrantsOf(provider, sub, q.client_id);
    log('test hook revoke_grants', sub, JSON.stringify(revoked));
    sendJson(ctx, 200, { sub, revoked });
    return;
  }
  if (path === '/__test/backchannel_logout' && method === 'POST') {
    const { sub } = q;
    if (!sub) {
      sendJson(ctx, 400, { error: 'sub query parameter required' });
      return;
    }
    const sessions = await liveSessionsOf(provider, sub);
    // clientId -> Set(sid)
    const targets = new Map();
    const add = (clientId, sid) => {
      if (!targets.has(clientId)) targets.set(clientId, new Set());
      if (sid) targets.get(clientId).add(sid);
    };
    for (const session of sessions) {
      for (const [clientId, auth] of Object.entries(session.authorizations || {})) add(clientId, auth?.sid);
    }
    // No live IdP session (e.g. it already ended): fall back to the most recent sid
    // seen in issued tokens, per client.
    if (targets.size === 0) {
      for (const [clientId, sids] of issuedSids.get(sub) || []) add(clientId, [...sids].pop());
    }
    // ?sid=<sid> sends exactly that sid (to every client that has a back-channel URI).
    if (q.sid) {
      targets.clear();
      for (const c of clients) add(c.client_id, q.sid);
    }
    const sent = [];
    for (const [clientId, sids] of targets) {
      if (q.client_id && q.client_id !== clientId) continue;
      // eslint-disable-next-line no-await-in-loop
      const client = await provider.Client.find(clientId);
      if (!client?.backchannelLogoutUri) continue;
      // No sid known at all: send a sub-only logout token.
      const list = sids.size ? [...sids] : [undefined];
      for (const sid of list) {
        // eslint-disable-next-line no-await-in-loop
        sent.push(await sendBackchannelLogout(provider, client, sub, sid));
      }
    }

    // Optionally also end the IdP-side session(s) and revoke the grants.
    let endedSessions = 0;
    let revoked = [];
    if (q.end_session === '1' || q.end_session === 'true') {
      for (const session of sessions) {
        // eslint-disable-next-line no-await-in-loop
        await session.destroy();
        knownSessions.delete(session.jti);
        endedSessions += 1;
      }
      revoked = await revokeGrantsOf(provider, sub, undefined);
      issuedSids.delete(sub);
    }

    sendJson(ctx, 200, { sub, sent, ended_sessions: endedSessions, revoked });
    return;
  }

  sendJson(ctx, 404, { error: 'unknown test hook', path, method });
}

main().catch((err) => {
  console.error('[idp] fatal:', err);
  process.exit(1);
});
