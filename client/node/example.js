// Rank, Reward and RankStream against a running personalizer, from Node.js,
// with @grpc/grpc-js and @grpc/proto-loader reading proto/ directly.
// Run: npm ci && node example.js --addr 127.0.0.1:50051
'use strict';

const path = require('path');
const assert = require('assert');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const addrFlag = process.argv.indexOf('--addr');
const addr = addrFlag > 0 ? process.argv[addrFlag + 1] : '127.0.0.1:50051';

const def = protoLoader.loadSync('personalizer/v1/personalizer.proto', {
  includeDirs: [path.join(__dirname, '..', '..', 'proto')],
  keepCase: false,
  defaults: true,
  oneofs: true,
});
const { PersonalizerService } = grpc.loadPackageDefinition(def).personalizer.v1;
const client = new PersonalizerService(addr, grpc.credentials.createInsecure());
const deadline = () => ({ deadline: Date.now() + 10000 });

function feature(name, value) {
  if (typeof value === 'boolean') return { name, boolValue: value };
  if (typeof value === 'number') return { name, numberValue: value };
  return { name, stringValue: value };
}

function namespace(name, features) {
  return { name, features: Object.entries(features).map(([k, v]) => feature(k, v)) };
}

function request(eventId) {
  const req = {
    contextFeatures: [namespace('User', { tier: 'gold', visits: 3 }), namespace('', { timeOfDay: 'morning' })],
    actions: [
      { id: 'news', features: [namespace('', { type: 'News', length: 0.4 })] },
      { id: 'sports', features: [namespace('', { type: 'Sports', length: 0.9 })] },
      { id: 'music', features: [namespace('', { type: 'Music', live: true })] },
    ],
    excludedActions: ['music'],
  };
  if (eventId !== undefined) req.eventId = eventId;
  return req;
}

const call = (method, req) =>
  new Promise((resolve, reject) => client[method](req, deadline(), (err, resp) => (err ? reject(err) : resolve(resp))));

async function main() {
  const resp = await call('Rank', request());
  assert.ok(resp.eventId, 'no event id');
  assert.strictEqual(resp.ranking[0].id, resp.rewardActionId);
  const probs = Object.fromEntries(resp.ranking.map((r) => [r.id, r.probability]));
  assert.strictEqual(probs.music, 0, 'excluded action was given a probability');
  assert.ok(Math.abs(Object.values(probs).reduce((a, b) => a + b, 0) - 1) < 1e-6);
  console.log(`rank: event ${resp.eventId} shows ${resp.rewardActionId}, ranking ${JSON.stringify(probs)}`);

  const again = await call('Rank', request(resp.eventId));
  assert.strictEqual(again.rewardActionId, resp.rewardActionId, 'same event id, different answer');

  await call('Reward', { eventId: resp.eventId, value: 1 });
  console.log(`reward: 1 for event ${resp.eventId}`);

  await assert.rejects(call('Reward', { eventId: resp.eventId, value: 2 }), (err) => {
    assert.strictEqual(err.code, grpc.status.INVALID_ARGUMENT);
    console.log(`reward 2 refused: ${err.details}`);
    return true;
  });

  const ids = [0, 1, 2, 3, 4].map((i) => `node-stream-${i}`);
  const got = await new Promise((resolve, reject) => {
    const out = [];
    const stream = client.RankStream(deadline());
    stream.on('data', (r) => out.push(r.response.eventId));
    stream.on('error', reject);
    stream.on('end', () => resolve(out));
    for (const id of ids) stream.write({ request: request(id) });
    stream.end();
  });
  assert.deepStrictEqual(got, ids);
  console.log(`rank stream: ${got.length} answers in order`);
  console.log('node example: ok');
}

main()
  .then(() => client.close())
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
