// A real OpenID Connect provider for the single sign-on tests: panva/oidc-provider, configured from the
// environment, with its own login form that checks passwords (no dev interactions) and consent granted for the
// configured (first-party) clients, as a company's identity provider does for its own applications.
//
//   OIDC_ISSUER    the issuer URL clients see (it may be a reverse proxy in front of PORT)
//   PORT           where this process listens
//   OIDC_CLIENTS   JSON list of client metadata (client_id, client_secret, redirect_uris, post_logout_redirect_uris)
//   OIDC_ACCOUNTS_FILE  a JSON file: login -> {password, email, name, groups}, read at every lookup (a directory
//                  whose groups change between sign-ins)
//   OIDC_ID_TOKEN_TTL  JSON object: client_id -> ID token lifetime in seconds (default 3600)
//   OIDC_CONFORM_ID_TOKEN_CLAIMS  true: email, groups ... only from the UserInfo endpoint (the package's default)
import crypto from 'node:crypto';
import fs from 'node:fs';
import Provider from 'oidc-provider';

const issuer = process.env.OIDC_ISSUER;
const port = Number(process.env.PORT);
const clients = JSON.parse(process.env.OIDC_CLIENTS || '[]');
const accountsNow = () => JSON.parse(fs.readFileSync(process.env.OIDC_ACCOUNTS_FILE, 'utf8'));
const idTokenTtl = JSON.parse(process.env.OIDC_ID_TOKEN_TTL || '{}');

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const configuration = {
  clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // false: the scopes' claims go into the ID token too; true (oidc-provider's default): only the UserInfo endpoint
  // has them when an access token is issued, as with several real providers
  conformIdTokenClaims: process.env.OIDC_CONFORM_ID_TOKEN_CLAIMS === 'true',
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false }, rpInitiatedLogout: { enabled: true } },
  ttl: { IdToken: (ctx, token, client) => idTokenTtl[client.clientId] ?? 3600 },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const account = accountsNow()[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: account.email,
          email_verified: true,
          name: account.name,
          preferred_username: id,
          groups: account.groups || [],
        };
      },
    };
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
};

const provider = new Provider(issuer, configuration);
provider.proxy = true;

function loginPage(uid, error) {
  return `<!doctype html><html><head><title>Company sign-in</title></head><body>
<h1>Company sign-in</h1>${error ? `<p role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label>Username <input name="login" autocomplete="username" autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button></form></body></html>`;
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString());
}

provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!match) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (ctx.method === 'POST' && match[2]) {
    const form = await readForm(ctx.req);
    const login = form.get('login') || '';
    const account = accountsNow()[login];
    if (!account || !crypto.timingSafeEqual(
      crypto.createHash('sha256').update(form.get('password') || '').digest(),
      crypto.createHash('sha256').update(account.password).digest(),
    )) {
      ctx.status = 401;
      ctx.type = 'html';
      ctx.body = loginPage(details.uid, 'Wrong username or password.');
      return undefined;
    }
    return provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
  }
  if (details.prompt.name === 'login') {
    ctx.type = 'html';
    ctx.body = loginPage(details.uid);
    return undefined;
  }
  // consent: loadExistingGrant grants the configured clients what they ask; anything else is refused
  return provider.interactionFinished(ctx.req, ctx.res, { error: 'access_denied', error_description: 'consent not granted' });
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${port}, issuer ${issuer}`);
});
