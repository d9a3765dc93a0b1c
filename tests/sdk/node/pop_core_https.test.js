// @alicloud/pop-core (the official Node SDK), unchanged, over HTTPS against
// a mqgate serving HTTPS and MQTT over TLS with a CA and server certificate
// made at run time (`mqgate cert`): told the CA by NODE_EXTRA_CA_CERTS (how
// a Node user trusts a private CA) or by its `opts.agent`; without it, the
// call fails its certificate check. Devices: mosquitto_sub over TLS.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert');
const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const https = require('node:https');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const RPCClient = require('@alicloud/pop-core').RPCClient;

const BIN = process.env.MQGATE_BIN || path.join(__dirname, '..', '..', '..', 'target', 'debug', 'mqgate');
const INSTANCE = 'mqtt-cn-test0001';

let gate;
let storage;
let ca;

before(async () => {
  storage = fs.mkdtempSync(path.join(os.tmpdir(), 'mqgate-node-https-'));
  const tls = path.join(storage, 'tls');
  execFileSync(BIN, ['cert', '--out', tls], { stdio: 'ignore' });
  ca = path.join(tls, 'ca.crt');
  const files = `tls_cert = ${JSON.stringify(path.join(tls, 'server.crt'))}\ntls_key = ${JSON.stringify(path.join(tls, 'server.key'))}\n`;
  const config = path.join(storage, 'mqgate.toml');
  fs.writeFileSync(config, `
[http]
listen = "127.0.0.1:0"
tls_listen = "127.0.0.1:0"
${files}
[mqtt]
listen = "127.0.0.1:0"
tls_listen = "127.0.0.1:0"
${files}
[storage]
dir = ${JSON.stringify(storage)}
[[accounts]]
id = "1234567890"
  [[accounts.instances]]
  id = "${INSTANCE}"
  [[accounts.users]]
  name = "root"
  access_key_id = "testid"
  access_key_secret = "testsecret"
  root = true
`);
  const child = spawn(BIN, ['serve', '--config', config], { stdio: ['ignore', 'pipe', 'ignore'] });
  const first = await new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout });
    lines.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`mqgate exited with ${code}`)));
  });
  const words = Object.fromEntries(first.split(' ').filter((w) => w.includes('=')).map((w) => w.split('=')));
  assert.ok(words.https && words.mqtts, first);
  gate = { child, https: words.https, mqtts: words.mqtts };
});

after(async () => {
  const exited = new Promise((resolve) => gate.child.once('exit', resolve));
  gate.child.kill('SIGTERM');
  assert.strictEqual(await exited, 0);
  fs.rmSync(storage, { recursive: true, force: true });
});

function client(opts) {
  return new RPCClient({
    accessKeyId: 'testid',
    accessKeySecret: 'testsecret',
    endpoint: `https://${gate.https}`,
    apiVersion: '2020-04-20',
    opts,
  });
}

// mosquitto_sub over TLS, checking the certificate against the CA for the
// name localhost, with Signature-mode credentials.
function tlsDevice(clientId) {
  const port = gate.mqtts.split(':')[1];
  const password = crypto.createHmac('sha1', 'testsecret').update(clientId).digest('base64');
  const child = spawn('stdbuf', ['-oL', 'mosquitto_sub', '-d', '--cafile', ca, '-h', 'localhost', '-p', port,
    '-i', clientId, '-t', 'node/#', '-V', 'mqttv5', '-u', `Signature|testid|${INSTANCE}`, '-P', password,
  ], { stdio: ['ignore', 'pipe', 'ignore'] });
  const dev = { child, connacks: 0 };
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    if (line.includes('received CONNACK')) dev.connacks += 1;
  });
  dev.exited = new Promise((resolve) => child.once('exit', resolve));
  return dev;
}

async function until(predicate, ms = 5000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await predicate()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

test('over HTTPS with its agent trusting the CA: a TLS device is online, then kicked', async () => {
  const sdk = client({ agent: new https.Agent({ ca: fs.readFileSync(ca), keepAlive: true }) });
  const clientId = 'GID_node@@@tls';
  const query = async () => (await sdk.request('QuerySessionByClientId', { InstanceId: INSTANCE, ClientId: clientId })).OnlineStatus;
  const dev = tlsDevice(clientId);
  try {
    assert.ok(await until(async () => (await query()) === true), 'the TLS device never came online');
    for (const method of ['GET', 'POST']) {
      const sent = await sdk.request('SendMessage', { InstanceId: INSTANCE, MqttTopic: 'node/https', Payload: method }, { method });
      assert.strictEqual(sent.MsgId.length, 32);
    }
    const closed = await sdk.request('CloseConnection', { InstanceId: INSTANCE, ClientId: clientId }, { method: 'POST' });
    assert.strictEqual(closed.Code, 200);
    // MQTT 5: mosquitto_sub hears DISCONNECT 0x98 and exits.
    await Promise.race([dev.exited, new Promise((_, reject) => setTimeout(() => reject(new Error('mosquitto_sub still connected')), 5000))]);
    assert.strictEqual(await query(), false);
  } finally {
    dev.child.kill();
  }
});

test('over HTTPS with NODE_EXTRA_CA_CERTS, the SDK unchanged', async () => {
  // The variable is read when Node starts: a Node process of its own.
  const script = `
    const RPCClient = require('@alicloud/pop-core').RPCClient;
    new RPCClient({ accessKeyId: 'testid', accessKeySecret: 'testsecret', endpoint: process.argv[1], apiVersion: '2020-04-20' })
      .request('QuerySessionByClientId', { InstanceId: '${INSTANCE}', ClientId: 'GID_node@@@nobody' })
      .then((r) => console.log(JSON.stringify(r)), (e) => { console.error(e.code, e.message); process.exit(1); });
  `;
  const run = (env) => new Promise((resolve) => {
    const child = spawn(process.execPath, ['-e', script, `https://${gate.https}`], { cwd: __dirname, env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.once('exit', (code) => resolve({ code, out, err }));
  });
  const trusted = await run({ NODE_EXTRA_CA_CERTS: ca });
  assert.strictEqual(trusted.code, 0, trusted.err);
  const answer = JSON.parse(trusted.out);
  assert.strictEqual(answer.OnlineStatus, false);
  assert.strictEqual(answer.RequestId.length, 36);

  const untrusted = await run({ NODE_EXTRA_CA_CERTS: '' });
  assert.notStrictEqual(untrusted.code, 0);
  assert.match(untrusted.err, /CERT|certificate|self.signed/i);
});
