// A single-file Express application that decides itself, with the
// asyncreply/server module of clients/js, which requests become
// asynchronous: the gateway in front of it needs no --async route. Its
// routes and answers are those of ../railsgem/config.ru, session included:
// a cookie that names the user and, as Rails' cookie store does, is
// re-issued with a new value on every response that reads it.
//
//   GET  /reports/:id         respondToAsync(): every first arrival is deferred
//   GET  /pages/:id?slow=1    res.deferAsync(), decided per request
//   GET  /exports/:id         deferred, and reports its progress as it works
//   POST /uploads             deferred, then echoes the request's body
//
// Express comes from clients/js/node_modules (`npm ci` there).
//
//   node app.mjs   # prints "listening on http://127.0.0.1:PORT"
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { setTimeout as delay } from 'node:timers/promises';

import { asyncreply, respondToAsync } from '../../../clients/js/src/server.js';

const express = createRequire(new URL('../../../clients/js/package.json', import.meta.url))('express');

// The session cookie's name, as in the Rails applications. Unsigned: this
// application only stands for one in tests.
const SESSION_COOKIE = '_e2e_session';

function startSession(res, user) {
  const session = { user, nonce: randomBytes(8).toString('hex') };
  res.cookie(SESSION_COOKIE, Buffer.from(JSON.stringify(session)).toString('base64url'), { httpOnly: true, path: '/' });
}

// currentUser reads the session, and re-issues its cookie with a new value.
function currentUser(req, res) {
  for (const pair of (req.get('cookie') ?? '').split(';')) {
    const [name, value] = pair.trim().split('=');
    if (name !== SESSION_COOKIE || !value) {
      continue;
    }
    try {
      const { user } = JSON.parse(Buffer.from(value, 'base64url').toString());
      if (typeof user === 'string' && user !== '') {
        startSession(res, user);
        return user;
      }
    } catch {
      // not a session of ours: anonymous
    }
  }
  return undefined;
}

// authenticate comes before respondToAsync, so that an anonymous request is
// refused at once rather than deferred.
function authenticate(req, res, next) {
  req.user = currentUser(req, res);
  if (req.user === undefined) {
    res.sendStatus(401);
    return;
  }
  next();
}

const EXPORT_STEPS = 4;

const app = express();
app.use(asyncreply());

app.post('/login', express.urlencoded({ extended: false }), (req, res) => {
  const name = req.body?.name;
  if (typeof name !== 'string' || name === '') {
    res.status(400).type('text/plain').send('name is required\n');
    return;
  }
  startSession(res, name);
  res.type('text/plain').send(`logged in as ${name}\n`);
});

app.get('/whoami', authenticate, (req, res) => {
  res.type('text/plain').send(req.user);
});

app.get('/ping', (req, res) => {
  res.type('text/plain').send('pong\n');
});

// Slow, as the reports the gateway exists for are.
app.get('/reports/:id', authenticate, respondToAsync(), async (req, res) => {
  await delay(1000);
  res.type('text/plain').send(`Report ${req.params.id} for ${req.user}\n`);
});

// Slow only when asked, and then deferred before the slow part.
app.get('/pages/:id', authenticate, async (req, res) => {
  const slow = req.query.slow === '1';
  if (slow && res.deferAsync()) {
    return;
  }
  if (slow) {
    await delay(1000);
  }
  const summary = req.asyncReplay ? 'rendered on the replay' : 'rendered at once';
  res.type('text/html').send(`Page ${req.params.id} for ${req.user}: ${summary}\n`);
});

// Reports how far it has got at every step, for the client polling it.
app.get('/exports/:id', authenticate, respondToAsync(), async (req, res) => {
  for (let step = 1; step <= EXPORT_STEPS; step++) {
    await req.asyncProgress(Math.floor((step * 100) / (EXPORT_STEPS + 1)), `step ${step} of ${EXPORT_STEPS}`);
    await delay(250);
  }
  res.type('text/plain').send(`Export ${req.params.id} for ${req.user}\n`);
});

// Echoes the request's body, byte for byte, on the replay. The body parser
// comes after respondToAsync: a first arrival's body is the gateway's to
// record, and the replay brings it again.
app.post('/uploads', authenticate, respondToAsync(), express.raw({ type: () => true, limit: '16mb' }), (req, res) => {
  res.type(req.get('content-type') ?? 'application/octet-stream').send(req.body);
});

const server = app.listen(0, '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
