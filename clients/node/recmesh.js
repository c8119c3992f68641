// A grpc-js client of the recmesh gateway (recmesh.v1.RecommendationService), the protos loaded at run time by
// @grpc/proto-loader from protos/ (no generated code to keep in step).
//
//   const { connect, unary, recordEvents } = require('./recmesh');
//   const client = connect('localhost:50050');
//   const reply = await unary(client, 'Recommend', { session_item_ids: ['item-1'], k: 5 });
//   await recordEvents(client, [{ user_id: 'u1', item_id: 'item-2', type: 'EVENT_TYPE_CLICK' }]);
//
// Messages use the proto's field names (keepCase), enums as their names, int64 as strings, bytes as Buffers.
'use strict';

const crypto = require('crypto');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'protos');
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

function loadApi(protoRoot = PROTO_ROOT) {
  const definition = protoLoader.loadSync('recmesh/v1/recommendation_service.proto', {
    ...LOADER_OPTIONS,
    includeDirs: [protoRoot],
  });
  return grpc.loadPackageDefinition(definition).recmesh.v1;
}

function connect(address, credentials = grpc.credentials.createInsecure(), protoRoot = PROTO_ROOT) {
  const api = loadApi(protoRoot);
  return new api.RecommendationService(address, credentials);
}

// Metadata carrying the call's x-request-id (a fresh one unless given) and the call options with its deadline.
function callSetup({ timeoutMs = 2000, requestId = crypto.randomUUID().replace(/-/g, '') } = {}) {
  const metadata = new grpc.Metadata();
  metadata.set('x-request-id', requestId);
  return { metadata, options: { deadline: Date.now() + timeoutMs }, requestId };
}

// Resolves with { reply, requestId } where requestId is the x-request-id the gateway sent back (trailing
// metadata); rejects with the grpc-js error (error.code, error.details) if the call fails.
function unary(client, method, request, settings) {
  const { metadata, options } = callSetup(settings);
  return new Promise((resolve, reject) => {
    let reply;
    let failure;
    const call = client[method](request, metadata, options, (error, answer) => {
      failure = error;
      reply = answer;
    });
    call.on('status', (status) => {
      if (failure) reject(failure);
      else resolve({ reply, requestId: status.metadata.get('x-request-id')[0] });
    });
  });
}

// RecordEvents, the client stream: one RecordEventRequest per event, then the single answer.
function recordEvents(client, events, settings) {
  const { metadata, options } = callSetup(settings);
  return new Promise((resolve, reject) => {
    let reply;
    let failure;
    const call = client.RecordEvents(metadata, options, (error, answer) => {
      failure = error;
      reply = answer;
    });
    call.on('status', (status) => {
      if (failure) reject(failure);
      else resolve({ reply, requestId: status.metadata.get('x-request-id')[0] });
    });
    for (const event of events) call.write({ event });
    call.end();
  });
}

module.exports = { PROTO_ROOT, loadApi, connect, unary, recordEvents };
