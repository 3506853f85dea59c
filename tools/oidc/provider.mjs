// A local OpenID provider for egenmon's tests and `egenmon dev`: panva's oidc-provider
// (certified OpenID Connect implementation) with demo accounts. Never for production.
//
//   node provider.mjs CONFIG.json
//
// CONFIG: {"issuer": "http://127.0.0.1:PORT", "port": PORT,
//          "clients": [oidc-provider client metadata...],
//          "accounts": {"login": {"password": "...", "acr": "...", "claims": {...},
//                                 "tamper": "nonce" | "aud" (tests only)}},
//          "acr_values": [...], "claims": {"scope": ["claim", ...]}}
// Prints "listening <issuer>" on standard output once it answers.
//
// An account's `acr` is the assurance level its sign-ins carry, so a test can sign in
// below the level egenmon requires. `tamper` makes the provider issue, for that account,
// an ID token with a wrong nonce or audience, signed with its real key: the tokens a
// broken or hostile provider would send, for the tests of egenmon's refusals.
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as jose from 'jose';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = config.accounts || {};

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await jose.exportJWK(privateKey)), kid: randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' };

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!doctype html><html lang="sv"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>${esc(title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem}
label,input,button{display:block;width:100%;margin:.3rem 0;font-size:1rem}input,button{padding:.5rem}
.note{color:#555;font-size:.9rem}.error{color:#a00}</style></head><body>${body}</body></html>`;
}

const configuration = {
  clients: config.clients,
  acrValues: config.acr_values || [],
  claims: {
    openid: ['sub'],
    profile: ['name', 'given_name', 'family_name'],
    ...(config.claims || {}),
  },
  // The claims of the requested scopes go into the ID token too (egenmon reads the
  // HSA-id, care unit and personnummer from it, as Swedish providers send them).
  conformIdTokenClaims: false,
  cookies: { keys: [randomBytes(32).toString('hex')] },
  jwks: { keys: [signingJwk] },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = page('Logga ut', `<h1>Logga ut från ${esc(ctx.host)}?</h1>${form}
<button type="submit" form="op.logoutForm" value="yes" name="logout" id="logout-confirm" autofocus>Ja, logga ut</button>
<button type="submit" form="op.logoutForm">Nej</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Utloggad', '<h1 id="logged-out">Du är utloggad</h1>');
      },
    },
  },
  async findAccount(ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...(account.claims || {}) };
      },
    };
  },
  // First-party clients: no consent screen, the requested scopes are granted.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const found = await ctx.oidc.provider.Grant.find(grantId);
      if (found) return found;
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(ctx.oidc.params.scope || 'openid');
    await grant.save();
    return grant;
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { Session: 3600, Interaction: 600, Grant: 3600, AccessToken: 600, AuthorizationCode: 60, IdToken: 600 },
};

const provider = new Provider(config.issuer, configuration);
provider.proxy = true;

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 16384) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function loginForm(uid, error) {
  return page('Logga in', `<h1>Logga in (lokal testleverantör)</h1>
${error ? `<p class="error" id="op-error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
<label for="op-login">Användare</label><input id="op-login" name="login" required autofocus>
<label for="op-password">Lösenord</label><input id="op-password" name="password" type="password" required>
<button type="submit" id="op-submit">Logga in</button></form>
<p class="note">Demo accounts only; this provider runs for egenmon's tests and development.</p>`);
}

provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([A-Za-z0-9_-]+)(\/login)?$/);
  if (!m) {
    await next();
    if (ctx.path === '/token' && ctx.body && typeof ctx.body.id_token === 'string') {
      await tamper(ctx);
    }
    return;
  }
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.uid !== m[1]) ctx.throw(400, 'interaction mismatch');
  ctx.set('Cache-Control', 'no-store');
  if (!m[2] && ctx.method === 'GET' && details.prompt.name === 'consent') {
    // First-party clients: what the prompt asks for is granted without a screen.
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = details.prompt.details;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    if (missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const grantId = await grant.save();
    const to = await provider.interactionResult(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    ctx.status = 303;
    ctx.redirect(to);
    return;
  }
  if (!m[2] && ctx.method === 'GET') {
    ctx.type = 'html';
    ctx.body = loginForm(details.uid);
    return;
  }
  if (m[2] && ctx.method === 'POST') {
    const form = await readForm(ctx.req);
    const login = form.get('login') || '';
    const account = Object.prototype.hasOwnProperty.call(accounts, login) ? accounts[login] : undefined;
    if (!account || account.password !== form.get('password')) {
      ctx.status = 401;
      ctx.type = 'html';
      ctx.body = loginForm(details.uid, 'Fel användare eller lösenord');
      return;
    }
    const result = { login: { accountId: login, acr: account.acr, amr: ['pwd'] } };
    const to = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
    ctx.status = 303;
    ctx.redirect(to);
    return;
  }
  ctx.throw(405);
});

async function tamper(ctx) {
  const claims = jose.decodeJwt(ctx.body.id_token);
  const how = accounts[claims.sub]?.tamper;
  if (!how) return;
  if (how === 'nonce') claims.nonce = `not-${claims.nonce || ''}`;
  if (how === 'aud') claims.aud = 'another-client';
  ctx.body.id_token = await new jose.SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', kid: signingJwk.kid })
    .sign(privateKey);
}

const server = provider.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`listening ${config.issuer}\n`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
