// @alicloud/pop-core (the official Node SDK, V1 signatures), unchanged, by
// GET (everything in the query) and by POST (everything, Signature included,
// in a form body), against a running mqgate with real MQTT clients
// (mosquitto_sub) connected.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert');
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const RPCClient = require('@alicloud/pop-core').RPCClient;

const BIN = process.env.MQGATE_BIN || path.join(__dirname, '..', '..', '..', 'target', 'debug', 'mqgate');
const INSTANCE = 'mqtt-cn-test0001';
const SPECIAL = 'GID_x@@@dev 1+*~/é';

let gate;
let storage;

before(async () => {
  storage = fs.mkdtempSync(path.join(os.tmpdir(), 'mqgate-node-'));
  const config = path.join(storage, 'mqgate.toml');
  fs.writeFileSync(config, `
[http]
listen = "127.0.0.1:0"
[mqtt]
listen = "127.0.0.1:0"
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
  gate = { child, http: words.http, mqtt: words.mqtt };
});

after(async () => {
  const exited = new Promise((resolve) => gate.child.once('exit', resolve));
  gate.child.kill('SIGTERM');
  assert.strictEqual(await exited, 0);
  fs.rmSync(storage, { recursive: true, force: true });
});

function client(key = 'testid', secret = 'testsecret') {
  return new RPCClient({
    accessKeyId: key,
    accessKeySecret: secret,
    endpoint: `http://${gate.http}`,
    apiVersion: '2020-04-20',
  });
}

// A device: mosquitto_sub with ApsaraMQ Signature-mode credentials. With
// -d it reports each CONNACK it receives, so a test can see it reconnect.
function device(clientId, version, login) {
  const [host, port] = gate.mqtt.split(':');
  const [username, secret, raw] = login || [`Signature|testid|${INSTANCE}`, 'testsecret'];
  // Signature and DeviceCredential modes sign the client id; Token mode
  // sends its password as is.
  const password = raw || crypto.createHmac('sha1', secret).update(clientId).digest('base64');
  // stdbuf: line-buffered stdout, or the lines arrive only at exit.
  const child = spawn('stdbuf', ['-oL', 'mosquitto_sub',
    '-d', '-h', host, '-p', port, '-i', clientId, '-t', 'node/#', '-V', version,
    '-u', username, '-P', password,
  ], { stdio: ['ignore', 'pipe', 'ignore'] });
  const dev = { child, connacks: 0, granted: [] };
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    if (line.includes('received CONNACK')) dev.connacks += 1;
    const subscribed = line.match(/Subscribed \(mid: \d+\): (\d+)/);
    if (subscribed) dev.granted.push(Number(subscribed[1]));
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

async function expectError(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail('expected the SDK to throw');
}

for (const method of ['GET', 'POST']) {
  for (const version of ['mqttv311', 'mqttv5']) {
    test(`${method}: the three actions with a ${version} device`, async () => {
      const sdk = client();
      const clientId = `${SPECIAL}-${method}-${version}`;
      const query = (id) => sdk.request('QuerySessionByClientId', { InstanceId: INSTANCE, ClientId: id }, { method });
      const dev = device(clientId, version);
      try {
        assert.ok(await until(async () => (await query(clientId)).OnlineStatus === true), 'device never online');
        const batch = await sdk.request(
          'BatchQuerySessionByClientIds',
          { InstanceId: INSTANCE, ClientIdList: [clientId, 'GID_x@@@nobody'] },
          { method },
        );
        assert.deepStrictEqual(batch.OnlineStatusList.map((s) => ({ ...s })), [
          { ClientId: clientId, OnlineStatus: true },
          { ClientId: 'GID_x@@@nobody', OnlineStatus: false },
        ]);
        const closed = await sdk.request('CloseConnection', { InstanceId: INSTANCE, ClientId: clientId }, { method });
        assert.strictEqual(closed.Code, 200);
        assert.strictEqual(closed.Success, true);
        assert.strictEqual(closed.Message, 'operation success.');
        if (version === 'mqttv5') {
          // MQTT 5: mosquitto_sub hears DISCONNECT 0x98 and exits.
          await Promise.race([dev.exited, new Promise((_, reject) => setTimeout(() => reject(new Error('mosquitto_sub still connected')), 5000))]);
          assert.strictEqual((await query(clientId)).OnlineStatus, false);
        } else {
          // MQTT 3.1.1: the connection is closed and mosquitto_sub, as a
          // device may, connects again: a second CONNACK.
          assert.ok(await until(() => dev.connacks >= 2), `mosquitto_sub saw ${dev.connacks} CONNACK(s)`);
        }
      } finally {
        dev.child.kill();
      }
    });
  }

  test(`${method}: a wrong secret`, async () => {
    const err = await expectError(client('testid', 'nope').request('QuerySessionByClientId', { InstanceId: INSTANCE, ClientId: 'c' }, { method }));
    assert.strictEqual(err.code, 'SignatureDoesNotMatch');
    assert.match(err.data.Message, /server string to sign is:/);
  });

  test(`${method}: an unknown key`, async () => {
    const err = await expectError(client('LTAInobody', 'x').request('QuerySessionByClientId', { InstanceId: INSTANCE, ClientId: 'c' }, { method }));
    assert.strictEqual(err.code, 'InvalidAccessKeyId.NotFound');
  });

  test(`${method}: a missing parameter`, async () => {
    const err = await expectError(client().request('QuerySessionByClientId', { InstanceId: INSTANCE }, { method }));
    assert.strictEqual(err.code, 'InvalidParameter.ClientId');
    assert.match(err.data.Message, /ClientId/);
  });

  test(`${method}: an unknown action`, async () => {
    const err = await expectError(client().request('DescribeEverything', { InstanceId: INSTANCE }, { method }));
    assert.strictEqual(err.code, 'InvalidAction.NotFound');
  });
}

for (const method of ['GET', 'POST']) {
  test(`${method}: RegisterDeviceCredential, and a device logs in with it`, async () => {
    const sdk = client();
    const clientId = `GID_node@@@cred-${method}`;
    const answer = await sdk.request('RegisterDeviceCredential', { InstanceId: INSTANCE, ClientId: clientId }, { method });
    const credential = answer.DeviceCredential;
    assert.strictEqual(credential.ClientId, clientId);
    assert.strictEqual(credential.InstanceId, INSTANCE);
    assert.match(credential.DeviceAccessKeyId, /^DC\./);
    const dev = device(clientId, 'mqttv311', [`DeviceCredential|${credential.DeviceAccessKeyId}|${INSTANCE}`, credential.DeviceAccessKeySecret]);
    try {
      const online = async () => (await sdk.request('QuerySessionByClientId', { InstanceId: INSTANCE, ClientId: clientId }, { method })).OnlineStatus === true;
      assert.ok(await until(online), 'the device never came online with its credential');
      assert.strictEqual(dev.connacks, 1);
    } finally {
      dev.child.kill();
    }
  });
}

for (const method of ['GET', 'POST']) {
  test(`${method}: ApplyToken, and a device logs in and subscribes with it`, async () => {
    const sdk = client();
    const clientId = `GID_node@@@token-${method}`;
    const answer = await sdk.request('ApplyToken', {
      InstanceId: INSTANCE, Actions: 'R', Resources: 'node/#', ExpireTime: Date.now() + 3600 * 1000,
    }, { method });
    assert.strictEqual(typeof answer.Token, 'string');
    assert.ok(answer.Token.length >= 32);
    const dev = device(clientId, 'mqttv5', [`Token|testid|${INSTANCE}`, null, `R|${answer.Token}`]);
    try {
      assert.ok(await until(() => dev.granted.length > 0), 'no SUBACK for node/#');
      assert.deepStrictEqual(dev.granted, [0]);
      const status = await sdk.request('QueryToken', { InstanceId: INSTANCE, Token: answer.Token }, { method });
      assert.strictEqual(status.TokenStatus, true);
    } finally {
      dev.child.kill();
    }
    const err = await expectError(sdk.request('ApplyToken', {
      InstanceId: INSTANCE, Actions: 'R', Resources: 'node/#/x', ExpireTime: Date.now() + 3600 * 1000,
    }, { method }));
    assert.strictEqual(err.code, 'InvalidParameter.Resources');
  });
}

test('AddCustomAuthPermission and QueryCustomAuthPermission', async () => {
  const sdk = client();
  const identity = 'node-custom-auth';
  const added = await sdk.request('AddCustomAuthPermission', {
    InstanceId: INSTANCE, IdentityType: 'USER', Identity: identity, Topic: 'node/ca/+', Effect: 'ALLOW', PermitAction: 'PUB',
  }, { method: 'POST' });
  assert.strictEqual(added.Code, 200);
  assert.strictEqual(added.Success, true);
  assert.strictEqual(added.Message, 'operation success.');
  await sdk.request('AddCustomAuthPermission', {
    InstanceId: INSTANCE, IdentityType: 'USER', Identity: identity, Topic: 'node/ca/deny', Effect: 'DENY', PermitAction: 'PUB_SUB',
  }, { method: 'GET' });
  const found = await sdk.request('QueryCustomAuthPermission', { InstanceId: INSTANCE, Identity: identity, Size: 10 }, { method: 'GET' });
  assert.strictEqual(found.Code, 200);
  assert.deepStrictEqual(found.Data.Results.map((r) => ({ ...r })), [
    { IdentityType: 'USER', Identity: identity, Topic: 'node/ca/+', Effect: 'ALLOW', PermitAction: 'PUB' },
    { IdentityType: 'USER', Identity: identity, Topic: 'node/ca/deny', Effect: 'DENY', PermitAction: 'PUB_SUB' },
  ]);
  assert.strictEqual(found.Data.NextToken, undefined);
  // Paged one at a time by POST: the NextToken of the first page leads to the second, the last.
  const first = await sdk.request('QueryCustomAuthPermission', { InstanceId: INSTANCE, Identity: identity, Size: 1 }, { method: 'POST' });
  assert.strictEqual(first.Data.Results[0].Topic, 'node/ca/+');
  assert.ok(first.Data.NextToken);
  const second = await sdk.request('QueryCustomAuthPermission', {
    InstanceId: INSTANCE, Identity: identity, Size: 1, NextToken: first.Data.NextToken,
  }, { method: 'POST' });
  assert.strictEqual(second.Data.Results[0].Topic, 'node/ca/deny');
  assert.strictEqual(second.Data.NextToken, undefined);
  const err = await expectError(sdk.request('AddCustomAuthPermission', {
    InstanceId: INSTANCE, IdentityType: 'USER', Identity: identity, Topic: 'node/#/x', Effect: 'ALLOW', PermitAction: 'PUB',
  }, { method: 'POST' }));
  assert.strictEqual(err.code, 'InvalidParameter.Topic');
});

test('GET and POST: SendMessage carries a 64 KB payload, in the query string and in a form body, to a subscriber', async () => {
  // pop-core by GET puts every parameter in the query string; by POST in
  // the body: the URL is just `/`.
  const sdk = new RPCClient({
    accessKeyId: 'testid', accessKeySecret: 'testsecret', endpoint: `http://${gate.http}`, apiVersion: '2020-04-20',
  }, true);
  const clientId = 'GID_node@@@send';
  const topic = 'node/send/cmd';
  // 65,532 Base64 characters and two of two bytes: 65,536 bytes, the limit.
  const payload = crypto.randomBytes(49149).toString('base64') + 'éé';
  assert.strictEqual(Buffer.byteLength(payload), 65536);
  const [host, port] = gate.mqtt.split(':');
  // mosquitto_sub prints the first two messages (-N: as is, no newline)
  // and exits.
  const sub = spawn('mosquitto_sub', ['-h', host, '-p', port, '-i', clientId, '-V', 'mqttv5', '-q', '1',
    '-t', 'node/send/+', '-C', '2', '-W', '10', '-N',
    '-u', `Signature|testid|${INSTANCE}`, '-P', crypto.createHmac('sha1', 'testsecret').update(clientId).digest('base64'),
  ], { stdio: ['ignore', 'pipe', 'ignore'] });
  const chunks = [];
  sub.stdout.on('data', (chunk) => chunks.push(chunk));
  const exited = new Promise((resolve) => sub.once('exit', resolve));
  try {
    // Subscribed: the EMQX API of the instance lists its subscription.
    const subscriptions = `http://${gate.http}/instances/${INSTANCE}/api/v5/clients/${encodeURIComponent(clientId)}/subscriptions`;
    const auth = { authorization: `Basic ${Buffer.from('testid:testsecret').toString('base64')}` };
    assert.ok(await until(async () => {
      const res = await fetch(subscriptions, { headers: auth });
      return res.ok && (await res.json()).some((s) => s.topic === 'node/send/+');
    }), 'mosquitto_sub never subscribed');
    // By GET the same parameters make a URI over 65,534 bytes, more than
    // the HTTP stack takes: mqgate moves its query string into a header
    // before the HTTP stack reads the request, and reads it from there.
    const [byGet, getEntry] = await sdk.request('SendMessage', { InstanceId: INSTANCE, MqttTopic: topic, Payload: payload }, { method: 'GET' });
    assert.strictEqual(getEntry.response.statusCode, 200);
    assert.ok(getEntry.url.length > 65534, `${getEntry.url.length} characters of URL`);
    assert.match(byGet.MsgId, /^[0-9a-f]{32}$/);
    const [answer, entry] = await sdk.request('SendMessage', { InstanceId: INSTANCE, MqttTopic: topic, Payload: payload }, { method: 'POST' });
    assert.strictEqual(entry.response.statusCode, 200);
    assert.strictEqual(entry.url, `http://${gate.http}/`);
    assert.match(answer.MsgId, /^[0-9a-f]{32}$/);
    assert.strictEqual(await exited, 0, 'mosquitto_sub did not get both messages');
    const arrived = Buffer.concat(chunks);
    assert.ok(arrived.equals(Buffer.from(payload + payload)), `${arrived.length} bytes arrived`);
    const err = await expectError(sdk.request('SendMessage', { InstanceId: INSTANCE, MqttTopic: topic, Payload: `${payload}x` }, { method: 'POST' }));
    assert.strictEqual(err.code, 'InvalidParameter.Payload');
  } finally {
    sub.kill();
  }
});

test('POST: QueryMqttTraceDevice shows how two mosquitto_sub devices came and went', async () => {
  const sdk = client();
  const trace = async (clientId, extra = {}) => sdk.request('QueryMqttTraceDevice', {
    InstanceId: INSTANCE, MqttRegionId: 'cn-hangzhou', ClientId: clientId,
    BeginTime: Date.now() - 600 * 1000, EndTime: Date.now(), CurrentPage: 1, PageSize: 10, ...extra,
  }, { method: 'POST' });
  const pairs = (answer) => answer.DeviceInfoList.map((e) => [e.Action, e.ActionInfo]);
  // SIGTERM: mosquitto_sub sends DISCONNECT and exits. SIGKILL: the socket
  // just closes.
  const ends = [
    ['GID_node@@@trace-term', 'mqttv311', 'SIGTERM', ['disconnect', 'disconnected by client']],
    ['GID_node@@@trace-kill', 'mqttv5', 'SIGKILL', ['close', 'closed by client']],
  ];
  for (const [clientId, version, signal, last] of ends) {
    const dev = device(clientId, version);
    try {
      assert.ok(await until(() => dev.connacks >= 1), `${clientId}: no CONNACK`);
    } finally {
      dev.child.kill(signal);
    }
    await dev.exited;
    let answer;
    assert.ok(await until(async () => (answer = await trace(clientId)).DeviceInfoList.length >= 2), `${clientId}: ${JSON.stringify(answer)}`);
    assert.deepStrictEqual(pairs(answer), [['connect', 'accepted'], last]);
    assert.strictEqual(answer.Total, 2);
    assert.strictEqual(answer.CurrentPage, 1);
    assert.strictEqual(answer.PageSize, 10);
    for (const e of answer.DeviceInfoList) {
      assert.strictEqual(e.ActionCode, `mqtt.trace.action.${e.Action}`);
      assert.match(e.Time, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$/);
      // UTC, within the last minute.
      const at = Date.parse(`${e.Time.replace(' ', 'T')}Z`);
      assert.ok(Math.abs(Date.now() - at) < 60 * 1000, e.Time);
    }
    assert.strictEqual(answer.DeviceInfoList[0].ChannelId, answer.DeviceInfoList[1].ChannelId);
    // Newest first, one to a page.
    const newest = await trace(clientId, { PageSize: 1, Reverse: true });
    assert.deepStrictEqual(pairs(newest), [last]);
    assert.strictEqual(newest.Total, 2);
  }
  const err = await expectError(trace('GID_node@@@trace-kill', { PageSize: 101 }));
  assert.strictEqual(err.code, 'InvalidParameter.PageSize');
});

test('POST: SendMessage, then QueryMqttTraceMessageSubscribe lists its delivery to a mosquitto_sub device', async () => {
  const sdk = client();
  const clientId = 'GID_node@@@trace-msg';
  const [host, port] = gate.mqtt.split(':');
  // -d: mosquitto_sub reports its SUBACK and the PUBACK it sends (QoS 1).
  const sub = spawn('stdbuf', ['-oL', 'mosquitto_sub', '-d', '-h', host, '-p', port, '-i', clientId, '-V', 'mqttv311',
    '-q', '1', '-t', 'node/trace-msg/+',
    '-u', `Signature|testid|${INSTANCE}`, '-P', crypto.createHmac('sha1', 'testsecret').update(clientId).digest('base64'),
  ], { stdio: ['ignore', 'pipe', 'ignore'] });
  const seen = { granted: [], pubacks: 0 };
  readline.createInterface({ input: sub.stdout }).on('line', (line) => {
    const subscribed = line.match(/Subscribed \(mid: \d+\): (\d+)/);
    if (subscribed) seen.granted.push(Number(subscribed[1]));
    if (line.includes('sending PUBACK')) seen.pubacks += 1;
  });
  try {
    assert.ok(await until(() => seen.granted.length > 0), 'mosquitto_sub never subscribed');
    assert.deepStrictEqual(seen.granted, [1]);
    const sent = await sdk.request('SendMessage', {
      InstanceId: INSTANCE, MqttTopic: 'node/trace-msg/cmd', Payload: 'traced from pop-core',
    }, { method: 'POST' });
    assert.match(sent.MsgId, /^[0-9a-f]{32}$/);
    assert.ok(await until(() => seen.pubacks >= 1), 'mosquitto_sub never acknowledged the message');
    const deliveries = (extra = {}) => sdk.request('QueryMqttTraceMessageSubscribe', {
      InstanceId: INSTANCE, MqttRegionId: 'cn-hangzhou', MsgId: sent.MsgId,
      BeginTime: Date.now() - 600 * 1000, EndTime: Date.now(), CurrentPage: 1, PageSize: 10, ...extra,
    }, { method: 'POST' });
    let answer;
    assert.ok(await until(async () => (answer = await deliveries()).MessageTraceLists.length >= 2), JSON.stringify(answer));
    assert.deepStrictEqual(answer.MessageTraceLists.map((e) => [e.MsgId, e.ClientId, e.Action, e.ActionCode, e.ActionInfo]), [
      [sent.MsgId, clientId, 'sub', 'mqtt.trace.action.msg.sub', 'Push To Mqtt Client'],
      [sent.MsgId, clientId, 'ack', 'mqtt.trace.action.msg.ack', 'Acked By Mqtt Client'],
    ]);
    assert.deepStrictEqual([answer.Total, answer.CurrentPage, answer.PageSize], [2, 1, 10]);
    for (const e of answer.MessageTraceLists) {
      assert.match(e.Time, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$/);
      const at = Date.parse(`${e.Time.replace(' ', 'T')}Z`);
      assert.ok(Math.abs(Date.now() - at) < 60 * 1000, e.Time);
    }
    // ClientId narrows to that device; another has nothing.
    assert.strictEqual((await deliveries({ ClientId: clientId })).Total, 2);
    const none = await deliveries({ ClientId: 'GID_node@@@nobody' });
    assert.deepStrictEqual([none.Total, none.MessageTraceLists], [0, []]);
    const err = await expectError(deliveries({ MsgId: 'not-a-msg-id' }));
    assert.strictEqual(err.code, 'InvalidParameter.MsgId');
  } finally {
    sub.kill();
  }
});
