// Calls every kind of RPC of the gateway once from grpc-js and prints what came back as one JSON line:
// Recommend (unary), GetItemEmbeddings and RankCandidates (stage RPCs) and RecordEvents (client stream).
//
//   node smoke.js localhost:50050 '{"session": ["item-1", "item-2"], "user_id": "visitor-1"}'
//
// tests/clients/test_node_client.py runs it against a real stack and checks the answers.
'use strict';

const { connect, unary, recordEvents } = require('./recmesh');

async function main(address, { session, user_id: userId }) {
  const client = connect(address);
  try {
    const recommend = await unary(client, 'Recommend', { session_item_ids: session, k: 5 }, { requestId: 'node-recommend-1' });
    const embeddings = await unary(client, 'GetItemEmbeddings', { item_ids: [...session, 'no-such-item'] });
    const candidates = recommend.reply.items.map((item) => ({ item_id: item.item_id, score: item.score }));
    const ranked = await unary(client, 'RankCandidates', { session_item_ids: session, candidates, k: 3 });
    const events = session.map((item, i) => ({ user_id: userId, item_id: item, type: i ? 'EVENT_TYPE_CLICK' : 'EVENT_TYPE_VIEW' }));
    const recorded = await recordEvents(client, events);
    let invalid = null;
    try {
      await unary(client, 'Recommend', { session_item_ids: session, k: 100000 });
    } catch (error) {
      invalid = { code: error.code, details: error.details };
    }
    const fromEvents = await unary(client, 'Recommend', { user_id: userId, k: 5 });
    return {
      recommend: {
        request_id: recommend.requestId,
        model_version: recommend.reply.model_version,
        item_ids: recommend.reply.items.map((item) => item.item_id),
      },
      embeddings: {
        dim: embeddings.reply.dim,
        item_ids: embeddings.reply.item_ids,
        vector_bytes: embeddings.reply.vectors.length,
        unknown_item_ids: embeddings.reply.unknown_item_ids,
      },
      ranked: { item_ids: ranked.reply.items.map((item) => item.item_id), model_version: ranked.reply.model_version },
      record_events: { stored: recorded.reply.stored, unknown_item_ids: recorded.reply.unknown_item_ids },
      invalid_argument: invalid,
      recommend_from_events: { item_ids: fromEvents.reply.items.map((item) => item.item_id) },
    };
  } finally {
    client.close();
  }
}

const [address, argument] = process.argv.slice(2);
if (!address || !argument) {
  console.error("usage: node smoke.js HOST:PORT '{\"session\": [ITEM_ID, ...], \"user_id\": USER_ID}'");
  process.exit(2);
}
main(address, JSON.parse(argument)).then(
  (result) => console.log(JSON.stringify(result)),
  (error) => {
    console.error(`smoke: ${error.code !== undefined ? `gRPC status ${error.code}: ${error.details}` : error.stack}`);
    process.exit(1);
  },
);
