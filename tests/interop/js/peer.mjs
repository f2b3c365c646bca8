// A committee worker on js-libp2p (TCP, @chainsafe/libp2p-noise or @libp2p/tls,
// @chainsafe/libp2p-yamux), run by tests/interop/test_interop.py. Same command line and
// output as tests/interop/stock_peer.py:
//
//   node peer.mjs '<json config>'
//
// config: seed (hex authority key), remote (the other authority's name), epoch,
// worker_id, dial (multiaddr, or null to wait to be dialed), send ([[index, size], ..]),
// expect (batches the other side sends), timeout (s), security (optional: 'noise', the
// default, or 'tls': the only connection encrypter the peer offers and accepts),
// half_close (optional: close our batch stream's write side after the last request,
// print CLOSED, read the answers), optimistic_select (optional: open our streams with
// js-libp2p's optimistic multistream-select, the first frame riding with the protocol
// proposal). Prints LISTEN <multiaddr>, ADMITTED <PeerId> <the connection's encryption
// protocol id>, RECEIVED <index> <size>, ACKED <index> <size>, PING <rtt ms> (a Yamux
// ping the other side answered), DONE; then exits 0 at the end of stdin. Any failure
// (an inbound connection it could not secure among them) prints FAIL <why> and exits 1.

import './node20.mjs' // first: what js-libp2p 3 needs of Node 22
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { tls } from '@libp2p/tls'
import { yamux } from '@chainsafe/libp2p-yamux'
import { multiaddr } from '@multiformats/multiaddr'
import {
  BATCH, HANDSHAKE, Kind, StreamFrames, ack, batch, checkHandshake, encodeFrame, label,
  makeHandshake, send
} from './wire.mjs'

const say = (...words) => process.stdout.write(words.join(' ') + '\n')

function fail (err) {
  say('FAIL', String(err?.stack ?? err).replace(/\n/g, ' | ').slice(0, 2000))
  process.exit(1)
}

const config = JSON.parse(process.argv[2])
const encrypters = { noise, tls }
const security = config.security ?? 'noise'
if (!(security in encrypters)) fail(new Error(`unknown security ${security}`))
// optimistic: send the protocol id and the first data at once, without waiting for "yes"
const select = { negotiateFully: !config.optimistic_select }
const timer = setTimeout(() => fail(new Error(`timed out after ${config.timeout} s`)), config.timeout * 1000)
process.on('unhandledRejection', fail)
process.on('uncaughtException', fail)

// js-libp2p only logs an inbound connection it could not secure, and the dialing side
// sees a closed connection: no test expects one, so it fails the peer, saying why (the
// stack on stderr).
const failingInbound = (encrypter) => (components) => {
  const inner = encrypter(components)
  const secureInbound = inner.secureInbound.bind(inner)
  inner.secureInbound = (...args) => secureInbound(...args).catch((err) => {
    process.stderr.write(`inbound ${inner.protocol} failed: ${err?.stack ?? err}\n`)
    fail(new Error(`inbound ${inner.protocol} failed: ${err?.name}: ${err?.message}`))
  })
  return inner
}

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [failingInbound(encrypters[security]())],
  streamMuxers: [yamux()]
})
const myPeerId = node.peerId.toMultihash().bytes
const myHandshake = await makeHandshake(Buffer.from(config.seed, 'hex'), myPeerId, config.worker_id, config.epoch)
const remoteIdOf = (connection) => connection.remotePeer.toMultihash().bytes
const check = (frame, connection) =>
  checkHandshake(frame, config.remote, remoteIdOf(connection), config.worker_id, config.epoch)

let admit
const admitted = new Promise((resolve) => { admit = resolve })
const received = new Set()
let allReceived
const everythingReceived = new Promise((resolve) => { allReceived = resolve })
if (config.expect === 0) allReceived()

// -- handshake: listener side (the other side dialed us) -----------------------------------
await node.handle(HANDSHAKE, async (stream, connection) => {
  try {
    const frames = new StreamFrames(stream)
    await check(await frames.next(), connection)
    await send(stream, myHandshake)
    const ok = await frames.next()
    if (ok === null || ok.kind !== Kind.HANDSHAKE_OK) throw new Error('expected HANDSHAKE_OK')
    stream.abort(new Error('handshake done')) // a reset, never a half-close
    admit(connection)
  } catch (err) { fail(err) }
})

// -- the other side's batches: check, ack with the digest ----------------------------------
await node.handle(BATCH, async (stream, connection) => {
  try {
    if (connection !== await admitted) throw new Error('a batch stream on an unadmitted connection')
    const frames = new StreamFrames(stream)
    for (let frame = await frames.next(); frame !== null; frame = await frames.next()) {
      if (frame.kind !== Kind.REQUEST) throw new Error(`expected REQUEST, got kind ${frame.kind}`)
      const [index, size] = label(frame.payload)
      if (received.has(index)) throw new Error(`batch ${index} received twice`)
      await send(stream, encodeFrame(Kind.RESPONSE, frame.requestId, ack(frame.payload)))
      received.add(index)
      say('RECEIVED', index, size)
      if (received.size === config.expect) allReceived()
    }
  } catch (err) { fail(err) }
})

const listen = node.getMultiaddrs().map(String).find((a) => a.includes('/tcp/'))
say('LISTEN', listen)

// -- handshake: dialer side ------------------------------------------------------------------
if (config.dial) {
  const connection = await node.dial(multiaddr(config.dial))
  const stream = await connection.newStream(HANDSHAKE, select)
  const frames = new StreamFrames(stream)
  await send(stream, myHandshake)
  await check(await frames.next(), connection)
  await send(stream, encodeFrame(Kind.HANDSHAKE_OK, 0))
  try { await frames.next() } catch {} // the listener ends the stream (a reset)
  stream.abort(new Error('handshake done'))
  admit(connection)
}

const connection = await admitted
say('ADMITTED', connection.remotePeer.toString(), connection.encryption)

// -- our batches: all written before any answer is awaited ---------------------------------
if (config.send.length > 0) {
  const outstanding = new Map(config.send.map(([index, size], i) => [BigInt(i + 1), [index, batch(index, size)]]))
  const stream = await connection.newStream(BATCH, select)
  const answers = (async () => {
    const frames = new StreamFrames(stream)
    while (outstanding.size > 0) {
      const frame = await frames.next()
      if (frame === null) throw new Error(`batch stream closed with ${outstanding.size} unanswered`)
      const sent = outstanding.get(frame.requestId)
      if (frame.kind !== Kind.RESPONSE || sent === undefined) {
        throw new Error(`unexpected answer: kind ${frame.kind}, request ${frame.requestId}`)
      }
      outstanding.delete(frame.requestId)
      const [index, data] = sent
      if (!Buffer.from(frame.payload).equals(Buffer.from(ack(data)))) {
        throw new Error(`batch ${index}: the answer is not the ack of its digest`)
      }
      say('ACKED', index, data.length)
    }
  })()
  for (const [requestId, [, data]] of [...outstanding]) {
    await send(stream, encodeFrame(Kind.REQUEST, requestId, data))
  }
  if (config.half_close) {
    await stream.close() // FIN: no more requests; the answers are still due
    await connection.muxer.ping() // the other side has read past our FIN
    say('CLOSED')
  }
  await answers
}

await everythingReceived
// A Yamux ping (js-yamux's keep-alive, public on its muxer): the other side must answer it.
if (typeof connection.muxer?.ping !== 'function') throw new Error('no Yamux ping on this connection')
say('PING', await connection.muxer.ping())
say('DONE')
clearTimeout(timer)
process.stdin.resume()
process.stdin.on('end', async () => {
  await node.stop()
  process.exit(0)
})
