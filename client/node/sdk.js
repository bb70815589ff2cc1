// The official Azure Personalizer SDKs, unchanged, against a running
// personalizer: @azure/cognitiveservices-personalizer 2.0.1 (v1.0: rank,
// reward, activate) and @azure-rest/ai-personalizer 1.0.0-beta.1
// (v1.1-preview.3: configuration, policy, evaluations, model and logs, and
// multi-slot rank, reward and activate on a multi-slot loop it makes).
// Run: npm ci && node sdk.js --endpoint http://127.0.0.1:8080
'use strict';

const assert = require('assert');
const { PersonalizerClient } = require('@azure/cognitiveservices-personalizer');
const { ApiKeyCredentials } = require('@azure/ms-rest-js');
const createClient = require('@azure-rest/ai-personalizer').default;
const { isUnexpected } = require('@azure-rest/ai-personalizer');
const { AzureKeyCredential } = require('@azure/core-auth');

const flag = (name, def) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : def;
};
const endpoint = flag('--endpoint', 'http://127.0.0.1:8080');
const key = flag('--key', process.env.PERSONALIZER_KEY || 'no-key-needed');

const v10 = new PersonalizerClient(
  new ApiKeyCredentials({ inHeader: { 'Ocp-Apim-Subscription-Key': key } }), endpoint);
// allowInsecureConnection: the SDK refuses http:// endpoints otherwise.
const rest = createClient(endpoint, new AzureKeyCredential(key), { allowInsecureConnection: endpoint.startsWith("http:") });

const actions = [
  { id: 'news', features: [{ type: 'News', length: 0.4 }] },
  { id: 'sports', features: [{ type: 'Sports', length: 0.9 }] },
  { id: 'music', features: [{ type: 'Music', live: true }] },
  { id: 'film', features: [{ type: 'Film', length: 2 }] },
];
const context = (i) => [{ user: { tier: i % 2 ? 'gold' : 'free' } }, { timeOfDay: 'morning' }];

// expect checks a REST response's status, and its error code when it failed.
function expect(resp, status, code) {
  const detail = JSON.stringify(resp.body);
  assert.strictEqual(resp.status, String(status), `${resp.request.method} ${resp.request.url}: ${resp.status} ${detail}`);
  if (code) {
    assert.ok(isUnexpected(resp), 'an error the SDK does not see as one');
    assert.strictEqual(resp.body.error.code, code, detail);
  } else {
    assert.ok(!isUnexpected(resp), `the SDK calls ${resp.status} unexpected`);
  }
  return resp.body;
}

// expectAt is expect for a route with a path parameter: the SDK's
// isUnexpected matches those against the path with its version prefix
// (/personalizer/v1.1-preview.3/evaluations/ID has more parts than
// /evaluations/{evaluationId}), so it calls every answer unexpected;
// check the status and error code only.
function expectAt(resp, status, code) {
  const detail = JSON.stringify(resp.body);
  assert.strictEqual(resp.status, String(status), `${resp.request.method} ${resp.request.url}: ${resp.status} ${detail}`);
  if (code) assert.strictEqual(resp.body.error.code, code, detail);
  return resp.body;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// multiSlot runs the SDK's multi-slot calls on a multi-slot loop of their
// own (a loop's problem type is its policy's, fixed when the loop is
// made), addressed by the X-Personalizer-Loop header, which the SDK sends
// as given.
async function multiSlot() {
  const loop = flag('--multislot-loop', 'sdk-carousel');
  const policy = { name: 'multi-slot', arguments: '--ccb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::' };
  const made = await rest.pathUnchecked('/loops').post({ body: { loop, policy } });
  assert.ok(made.status === '201' || made.body.error.code === 'LoopAlreadyExists', `${made.status} ${JSON.stringify(made.body)}`);
  const headers = { 'X-Personalizer-Loop': loop };
  const slotsAt = (...ids) => ids.map((id, k) => ({ id, baselineAction: actions[k].id }));
  const request = (eventId) => ({
    contextFeatures: context(1),
    actions,
    slots: [
      { id: 'hero', features: [{ size: 'large' }], baselineAction: 'news' },
      { id: 'side', features: [{ size: 'small' }], excludedActions: ['news', 'film'], baselineAction: 'sports' },
      { id: 'footer', excludedActions: ['sports'], baselineAction: 'music' },
    ],
    eventId,
    deferActivation: true,
  });
  const rank = (body) => rest.path('/multislot/rank').post({ body, headers });
  try {
    let first;
    for (let i = 0; i < 20; i++) {
      const req = request(`sdk-multislot-${i}`);
      const resp = expect(await rank(req), 201);
      // Personalizer's MultiSlotRankResponse, nothing more.
      assert.deepStrictEqual(Object.keys(resp), ['slots', 'eventId']);
      assert.strictEqual(resp.eventId, req.eventId);
      assert.deepStrictEqual(resp.slots.map((s) => s.id), ['hero', 'side', 'footer']);
      const taken = new Set();
      resp.slots.forEach((s, k) => {
        assert.deepStrictEqual(Object.keys(s), ['id', 'rewardActionId']);
        assert.ok(!taken.has(s.rewardActionId), `${s.rewardActionId} in two slots: ${JSON.stringify(resp.slots)}`);
        assert.ok(!(req.slots[k].excludedActions || []).includes(s.rewardActionId), `slot ${s.id} got an excluded action: ${JSON.stringify(resp.slots)}`);
        taken.add(s.rewardActionId);
      });
      assert.deepStrictEqual(expect(await rank(req), 201), resp, 'same event id, different answer');
      first = first || resp;
    }
    expectAt(await rest.path('/multislot/events/{eventId}/activate', first.eventId).post({ headers }), 204);
    const reward = [{ slotId: 'hero', value: 1 }, { slotId: 'side', value: 0.5 }];
    expectAt(await rest.path('/multislot/events/{eventId}/reward', first.eventId).post({ body: { reward }, headers }), 204);
    console.log(`multi-slot: ${first.slots.map((s) => `${s.id}=${s.rewardActionId}`).join(', ')} for ${first.eventId}; activated, rewarded`);

    // Bad input gets Personalizer's error codes.
    const bad = [
      ['no slots', { ...request(), slots: [] }],
      ['more slots than actions', { ...request(), slots: slotsAt('a', 'b', 'c', 'd').concat([{ id: 'e', baselineAction: 'news' }]) }],
      ['duplicate slot ids', { ...request(), slots: slotsAt('a', 'a') }],
      ['unknown baseline', { ...request(), slots: [{ id: 'a', baselineAction: 'radio' }] }],
      ['all actions excluded for a slot', { ...request(), slots: [{ id: 'a', baselineAction: 'news', excludedActions: actions.map((a) => a.id) }] }],
    ];
    for (const [name, body] of bad) {
      const e = expect(await rank(body), 400, 'InvalidRankRequest');
      console.log(`multi-slot ${name}: ${e.error.message}`);
    }
    expectAt(await rest.path('/multislot/events/{eventId}/reward', first.eventId).post({ body: { reward: [{ slotId: 'hero', value: 2 }] }, headers }),
      400, 'InvalidRewardRequest');
    expect(await rest.path('/rank').post({ body: { contextFeatures: context(0), actions }, headers }), 400, 'InvalidRankRequest');
    expect(await rest.path('/multislot/rank').post({ body: request() }), 400, 'InvalidMultiSlotApiAccess');
    console.log('multi-slot: bad input and calls of the other problem type refused with Personalizer\'s codes');
  } finally {
    expectAt(await rest.pathUnchecked('/loops/{loop}', loop).delete(), 204);
  }
}

async function main() {
  // Configuration: read, change, read back, refuse a bad one.
  const before = expect(await rest.path('/configurations/service').get(), 200);
  assert.strictEqual(before.learningMode, 'Online');
  const changed = { ...before, explorationPercentage: 0.5, rewardWaitTime: 'PT3S', defaultReward: 0, rewardAggregation: 'sum' };
  const put = expect(await rest.path('/configurations/service').put({ body: changed }), 200);
  assert.strictEqual(put.explorationPercentage, 0.5);
  const after = expect(await rest.path('/configurations/service').get(), 200);
  assert.strictEqual(after.rewardWaitTime, 'PT3S');
  assert.strictEqual(after.rewardAggregation, 'sum');
  assert.ok(after.lastConfigurationEditDate, 'no lastConfigurationEditDate');
  expect(await rest.path('/configurations/service').put({ body: { ...after, explorationPercentage: 2 } }), 400, 'InvalidServiceConfiguration');
  expect(await rest.path('/configurations/service').put({ body: { ...after, learningMode: 'Apprentice', defaultReward: 0.5 } }),
    400, 'InvalidLearningModeServiceConfiguration');
  console.log(`configuration: exploration ${before.explorationPercentage} -> ${after.explorationPercentage}, reward wait ${before.rewardWaitTime} -> ${after.rewardWaitTime}`);

  // Policy: read, change, refuse a bad one, reset to the default.
  const policy = expect(await rest.path('/configurations/policy').get(), 200);
  assert.match(policy.arguments, /--cb_explore_adf/);
  const custom = { name: 'sdk policy', arguments: '--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.01 --cb_type mtr -q ::' };
  assert.deepStrictEqual(expect(await rest.path('/configurations/policy').put({ body: custom }), 200), custom);
  assert.deepStrictEqual(expect(await rest.path('/configurations/policy').get(), 200), custom);
  expect(await rest.path('/configurations/policy').put({ body: { name: 'bad', arguments: '--cb_adf' } }), 400, 'InvalidPolicyConfiguration');
  const reset = expect(await rest.path('/configurations/policy').delete(), 200);
  assert.strictEqual(reset.arguments, policy.arguments);
  console.log(`policy: "${custom.name}" set, then reset to "${reset.arguments}"`);

  // Rank (v1.0 SDK) with exploration 0.5: 4 actions give 0.625 and 0.125 x3 once a model serves.
  let served = false;
  for (let i = 0; i < 40 || !served; i++) {
    const r = await v10.rank({ contextFeatures: context(i), actions });
    assert.strictEqual(r.ranking[0].id, r.rewardActionId);
    await v10.events.reward(r.eventId, { value: r.rewardActionId === (i % 2 ? 'sports' : 'news') ? 1 : 0 });
    if (i >= 40) {
      const probs = r.ranking.map((a) => a.probability).sort((a, b) => b - a);
      served = Math.abs(probs[0] - 0.625) < 1e-6 && probs.slice(1).every((p) => Math.abs(p - 0.125) < 1e-6);
      if (!served) await sleep(200);
      assert.ok(i < 400, `no model with exploration 0.5 served after ${i} ranks: ${JSON.stringify(r.ranking)}`);
    }
  }
  console.log('rank: probabilities 0.625 / 0.125 x3 with exploration 0.5');

  // Inline explanation: off by default; on, the v1.0 SDK's rank result
  // carries inferenceExplanation (each action in ranking order, its top
  // features and their scores); off again, it is gone.
  assert.strictEqual(after.isInferenceExplainabilityEnabled, false);
  const rankUntil = async (done) => {
    for (let i = 0; i < 100; i++) {
      const r = await v10.rank({ contextFeatures: context(i), actions });
      if (done(r)) return r;
      await sleep(100);
    }
    assert.fail('the explanation setting was not applied');
  };
  await rankUntil((r) => r.inferenceExplanation === undefined);
  expect(await rest.path('/configurations/service').put({ body: { ...after, isInferenceExplainabilityEnabled: true } }), 200);
  const explained = await rankUntil((r) => r.inferenceExplanation !== undefined);
  assert.deepStrictEqual(explained.inferenceExplanation.map((x) => x.id), explained.ranking.map((a) => a.id));
  for (const x of explained.inferenceExplanation) {
    assert.ok(x.features.length === 10 && x.features.every((f) => typeof f.name === 'string' && typeof f.score === 'number'), JSON.stringify(x));
  }
  expect(await rest.path('/configurations/service').put({ body: { ...after, isInferenceExplainabilityEnabled: false } }), 200);
  await rankUntil((r) => r.inferenceExplanation === undefined);
  const top = explained.inferenceExplanation[0].features[0];
  console.log(`rank: inferenceExplanation on (${explained.rewardActionId}: ${top.name} ${top.score}), then off`);

  // Evaluations: create one over the events above, follow it to completion,
  // list it, delete it; refuse a bad one.
  const contract = {
    name: 'sdk evaluation', startTime: new Date(Date.now() - 3600e3).toISOString(), endTime: new Date(Date.now() + 3600e3).toISOString(),
    policies: [{ name: 'fast', arguments: '--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.1 --cb_type mtr -q ::' }],
  };
  const createdResp = await rest.path('/evaluations').post({ body: contract });
  const created = expect(createdResp, 201);
  assert.strictEqual(created.status, 'pending');
  assert.ok(createdResp.headers.location.endsWith(`/evaluations/${created.id}`), createdResp.headers.location);
  let evaluation;
  for (let i = 0; ; i++) {
    evaluation = expectAt(await rest.path('/evaluations/{evaluationId}', created.id).get(), 200);
    if (evaluation.status !== 'pending' && evaluation.status !== 'running') break;
    assert.ok(i < 600, `evaluation still ${evaluation.status}`);
    await sleep(100);
  }
  assert.strictEqual(evaluation.status, 'completed', JSON.stringify(evaluation));
  assert.deepStrictEqual(evaluation.policyResults.map((p) => p.policySource), ['Online', 'Baseline', 'Random', 'Custom']);
  const online = evaluation.policyResults[0].totalSummary;
  assert.ok(online.ipsEstimatorDenominator > 0 && online.averageReward >= 0, JSON.stringify(online));
  const listed = expect(await rest.path('/evaluations').get(), 200);
  assert.ok(listed.some((e) => e.id === created.id), JSON.stringify(listed));
  expect(await rest.path('/evaluations').post({ body: { ...contract, endTime: contract.startTime } }), 400, 'InvalidDateTimesInEvaluationContract');
  expectAt(await rest.path('/evaluations/{evaluationId}', created.id).delete(), 204);
  expectAt(await rest.path('/evaluations/{evaluationId}', created.id).get(), 404, 'EvaluationNotFound');
  console.log(`evaluation: ${online.ipsEstimatorDenominator} events, Online ${online.averageReward}, fast ${evaluation.policyResults[3].totalSummary.averageReward}; deleted`);

  // Model: properties, export, reset, import.
  const props = expect(await rest.path('/model/properties').get(), 200);
  assert.ok(Date.parse(props.creationTime) <= Date.parse(props.lastModifiedTime), JSON.stringify(props));
  const exported = await rest.path('/model').get().asNodeStream();
  assert.strictEqual(exported.status, '200');
  const chunks = [];
  for await (const c of exported.body) chunks.push(c);
  const model = Buffer.concat(chunks);
  assert.ok(model.length > 0, 'empty model file');
  expect(await rest.path('/model').delete(), 204);
  const fresh = expect(await rest.path('/model/properties').get(), 200);
  assert.ok(Date.parse(fresh.creationTime) >= Date.parse(props.lastModifiedTime), 'reset did not start a new model');
  const uniform = await v10.rank({ contextFeatures: context(0), actions });
  assert.ok(uniform.ranking.every((a) => Math.abs(a.probability - 0.25) < 1e-6), `after a reset: ${JSON.stringify(uniform.ranking)}`);
  expect(await rest.path('/model').put({ body: Buffer.from('not a model'), contentType: 'application/octet-stream' }), 400, 'InvalidModelImportFormat');
  expect(await rest.path('/model').put({ body: model, contentType: 'application/octet-stream' }), 204);
  let imported;
  for (let i = 0; i < 100; i++) {
    imported = await v10.rank({ contextFeatures: context(1), actions });
    if (imported.ranking.some((a) => Math.abs(a.probability - 0.625) < 1e-6)) break;
    await sleep(100);
  }
  assert.ok(imported.ranking.some((a) => Math.abs(a.probability - 0.625) < 1e-6), `after an import: ${JSON.stringify(imported.ranking)}`);
  console.log(`model: exported ${model.length} bytes, reset (uniform), imported (served again)`);

  // Logs: the stored events' dates, then delete them.
  const logs = expect(await rest.path('/logs/properties').get(), 200);
  assert.ok(Date.parse(logs.dateRange.from) <= Date.parse(logs.dateRange.to), JSON.stringify(logs));
  expect(await rest.path('/logs').delete(), 204);
  console.log(`logs: events from ${logs.dateRange.from} to ${logs.dateRange.to}, deleted`);

  await multiSlot();

  // Leave the loop as it was.
  expect(await rest.path('/configurations/service').put({ body: { ...before, lastConfigurationEditDate: undefined } }), 200);
  console.log('sdk: all Personalizer routes answered as the SDKs expect');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
