// Rank, Reward and RankStream against a running personalizer, from Node.js,
// then MultiSlotRank and MultiSlotReward on a multi-slot loop it makes,
// with @grpc/grpc-js and @grpc/proto-loader reading proto/ directly.
// Run: npm ci && node example.js --addr 127.0.0.1:50051
'use strict';

const path = require('path');
const assert = require('assert');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const flag = (name, def) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : def;
};
const addr = flag('--addr', '127.0.0.1:50051');
const multiSlotLoop = flag('--multislot-loop', 'node-carousel'); // made, used and deleted

const def = protoLoader.loadSync(['personalizer/v1/personalizer.proto', 'personalizer/v1/admin.proto'], {
  includeDirs: [path.join(__dirname, '..', '..', 'proto')],
  keepCase: false,
  defaults: true,
  oneofs: true,
});
const { PersonalizerService, AdminService } = grpc.loadPackageDefinition(def).personalizer.v1;
const client = new PersonalizerService(addr, grpc.credentials.createInsecure());
const admin = new AdminService(addr, grpc.credentials.createInsecure());
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

// call calls a PersonalizerService method (an AdminService one with
// svc = admin); md, if given, is the call's metadata.
const call = (method, req, md = new grpc.Metadata(), svc = client) =>
  new Promise((resolve, reject) => svc[method](req, md, deadline(), (err, resp) => (err ? reject(err) : resolve(resp))));

// A loop's problem type is its policy's, fixed when the loop is made:
// --ccb_explore_adf makes it multi-slot.
const multiSlotPolicy = '--ccb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::';

function multiSlotRequest(eventId) {
  const req = {
    contextFeatures: [namespace('User', { tier: 'gold', visits: 3 })],
    actions: ['News', 'Sports', 'Music', 'Film', 'Radio'].map((t) => ({ id: t.toLowerCase(), features: [namespace('', { type: t })] })),
    slots: [
      { id: 'hero', baselineAction: 'news', features: [namespace('', { size: 'large' })] },
      { id: 'side', baselineAction: 'sports', excludedActions: ['news', 'radio'], features: [namespace('', { size: 'small' })] },
      { id: 'footer', baselineAction: 'film', excludedActions: ['music'] },
    ],
  };
  if (eventId !== undefined) req.eventId = eventId;
  return req;
}

// checkSlots: every slot answered, in order, with an action no earlier
// slot took and it does not exclude.
function checkSlots(req, resp) {
  assert.deepStrictEqual(resp.slots.map((s) => s.id), req.slots.map((s) => s.id));
  const taken = new Set();
  resp.slots.forEach((got, k) => {
    const a = got.rewardActionId;
    assert.ok(a && !taken.has(a), `slot ${got.id}: ${a} again or none`);
    assert.ok(!(req.slots[k].excludedActions || []).includes(a), `slot ${got.id} got its excluded action ${a}`);
    taken.add(a);
  });
}

async function multiSlot() {
  await call('CreateLoop', { loop: multiSlotLoop, policy: { name: 'multi-slot', arguments: multiSlotPolicy } }, undefined, admin).catch((err) => {
    if (err.code !== grpc.status.ALREADY_EXISTS) throw err;
  });
  const md = new grpc.Metadata();
  md.set('x-personalizer-loop', multiSlotLoop);
  try {
    let resp;
    for (let i = 0; i < 10; i++) {
      const req = multiSlotRequest();
      resp = await call('MultiSlotRank', req, md);
      checkSlots(req, resp);
    }
    console.log(`multi-slot rank: event ${resp.eventId} fills ${resp.slots.map((s) => `${s.id}=${s.rewardActionId}`).join(', ')}`);

    const again = await call('MultiSlotRank', multiSlotRequest(resp.eventId), md);
    assert.deepStrictEqual(again.slots, resp.slots, 'same event id, different answer');

    await call('MultiSlotReward', { eventId: resp.eventId, rewards: [{ slotId: 'hero', value: 1 }, { slotId: 'side', value: 0.5 }] }, md);
    console.log(`multi-slot reward: hero 1, side 0.5 for event ${resp.eventId}`);

    await assert.rejects(call('MultiSlotRank', { ...multiSlotRequest(), slots: [] }, md), (err) => {
      assert.strictEqual(err.code, grpc.status.INVALID_ARGUMENT);
      console.log(`no slots refused: ${err.details}`);
      return true;
    });
    await assert.rejects(call('MultiSlotRank', multiSlotRequest()), (err) => {
      assert.strictEqual(err.code, grpc.status.FAILED_PRECONDITION);
      console.log(`multi-slot rank on the single-slot loop refused: ${err.details}`);
      return true;
    });
  } finally {
    await call('DeleteLoop', { loop: multiSlotLoop }, undefined, admin);
  }
}

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

  await multiSlot();
  console.log('node example: ok');
}

main()
  .then(() => {
    client.close();
    admin.close();
  })
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
