// The worker protocol of docs/libp2p-protocol.md, written from the document for the
// js-libp2p peer: tagged frames, the signed handshake, and the test batches of
// tests/interop/payloads.py (same construction, so both sides rebuild and compare).

import { createHash } from 'node:crypto'
import { decode, encode } from '@msgpack/msgpack'
import { generateKeyPairFromSeed, publicKeyFromRaw } from '@libp2p/crypto/keys'

export const HANDSHAKE = '/narwhal/worker/handshake/1.0.0'
export const BATCH = '/narwhal/worker/batch/1.0.0'
export const Kind = { REQUEST: 0, RESPONSE: 1, ERROR: 2, HANDSHAKE: 3, HANDSHAKE_OK: 4 }
const SIGNING_TAG = new TextEncoder().encode('narwhal-worker-handshake-v1')
const PROTOCOL_VERSION = 1
const Tag = { BATCH: 0, ACK: 1, HANDSHAKE: 4 }
const MAX_PAYLOAD = 8 * 1024 * 1024
const HEADER = 13 // u32 length | u8 kind | u64 request id

// -- frames -------------------------------------------------------------------------------
export function encodeFrame (kind, requestId, payload = new Uint8Array(0)) {
  const out = new Uint8Array(HEADER + payload.length)
  const view = new DataView(out.buffer)
  view.setUint32(0, 9 + payload.length)
  view.setUint8(4, kind)
  view.setBigUint64(5, BigInt(requestId))
  out.set(payload, HEADER)
  return out
}

/** Bytes in, whole frames out ({ kind, requestId: BigInt, payload }). */
export class FrameParser {
  constructor () {
    this.chunks = []
    this.length = 0
  }

  push (chunk) {
    this.chunks.push(chunk)
    this.length += chunk.length
  }

  next () {
    if (this.length < HEADER) return null
    const head = this.take(HEADER, false)
    const view = new DataView(head.buffer, head.byteOffset, HEADER)
    const length = view.getUint32(0)
    if (length < 9 || length - 9 > MAX_PAYLOAD) throw new Error(`bad frame length ${length}`)
    if (this.length < 4 + length) return null
    const frame = this.take(4 + length, true)
    return { kind: view.getUint8(4), requestId: view.getBigUint64(5), payload: frame.subarray(HEADER) }
  }

  take (n, consume) {
    if (this.chunks[0].length < n) {
      const joined = new Uint8Array(this.length)
      let at = 0
      for (const c of this.chunks) { joined.set(c, at); at += c.length }
      this.chunks = [joined]
    }
    const first = this.chunks[0]
    const out = first.subarray(0, n)
    if (consume) {
      this.length -= n
      if (first.length === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
    }
    return out
  }
}

/** Frames of one libp2p stream: `await frames.next()` is a frame, or null at its end. */
export class StreamFrames {
  constructor (stream) {
    this.source = stream[Symbol.asyncIterator]()
    this.parser = new FrameParser()
  }

  async next () {
    for (;;) {
      const frame = this.parser.next()
      if (frame !== null) return frame
      const { value, done } = await this.source.next()
      if (done) {
        if (this.parser.length > 0) throw new Error('stream ended inside a frame')
        return null
      }
      this.parser.push(value instanceof Uint8Array ? value : value.subarray())
    }
  }
}

/** Write with back-pressure: wait for 'drain' when the stream says its buffer is full. */
export async function send (stream, data) {
  if (!stream.send(data)) await stream.onDrain()
}

// -- the handshake ------------------------------------------------------------------------
function u16 (n) { const b = new Uint8Array(2); new DataView(b.buffer).setUint16(0, n); return b }
function u64 (n) { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(n)); return b }
function u32pair (a, b) { const out = new Uint8Array(8); const v = new DataView(out.buffer); v.setUint32(0, a); v.setUint32(4, b); return out }
function concat (...parts) { return Buffer.concat(parts) }

export function signingMessage (peerId, workerId, epoch) {
  return concat(SIGNING_TAG, u16(peerId.length), peerId, u64(workerId), u64(epoch))
}

/** The HANDSHAKE frame about ourselves: the authority key signs our PeerId. */
export async function makeHandshake (seed, peerId, workerId, epoch) {
  const key = await generateKeyPairFromSeed('Ed25519', seed)
  const signature = await key.sign(signingMessage(peerId, workerId, epoch))
  const message = encode([PROTOCOL_VERSION, Tag.HANDSHAKE, key.publicKey.raw, workerId, epoch, signature])
  return encodeFrame(Kind.HANDSHAKE, 0, concat(u16(peerId.length), peerId, message))
}

/** Throws unless `frame` is `remote`'s handshake, signed for the PeerId that the secure
 * channel (Noise or TLS) authenticated. */
export async function checkHandshake (frame, remote, authenticated, workerId, epoch) {
  if (frame === null) throw new Error('the handshake stream ended')
  if (frame.kind !== Kind.HANDSHAKE) throw new Error(`expected HANDSHAKE, got kind ${frame.kind}`)
  const p = frame.payload
  const n = new DataView(p.buffer, p.byteOffset, 2).getUint16(0)
  const claimed = p.subarray(2, 2 + n)
  const [version, tag, authority, wid, ep, signature] = decode(p.subarray(2 + n))
  if (version !== PROTOCOL_VERSION || tag !== Tag.HANDSHAKE) throw new Error('not a handshake message')
  if (Buffer.from(authority).toString('base64') !== remote) throw new Error('handshake from an unexpected authority')
  if (!Buffer.from(claimed).equals(Buffer.from(authenticated))) throw new Error('handshake signed for another PeerId')
  if (wid !== workerId || ep !== epoch) throw new Error(`handshake for worker ${wid}, epoch ${ep}`)
  const ok = await publicKeyFromRaw(authority).verify(signingMessage(authenticated, wid, ep), signature)
  if (!ok) throw new Error('bad handshake signature')
}

// -- test batches (tests/interop/payloads.py) ---------------------------------------------
const TX_LIMIT = 100_000
const binHeader = (n) => n < 1 << 8 ? 2 : n < 1 << 16 ? 3 : 5

function txLengths (size) {
  let remaining = size - 4
  const lengths = []
  while (remaining > TX_LIMIT + binHeader(TX_LIMIT)) {
    lengths.push(TX_LIMIT)
    remaining -= TX_LIMIT + binHeader(TX_LIMIT)
  }
  const last = [remaining - 2, remaining - 3, remaining - 5].find((n) => n + binHeader(n) === remaining)
  if (last === undefined || last < 8 || lengths.length >= 15) throw new Error(`no test batch of ${size} bytes`)
  return [...lengths, last]
}

export function batch (index, size) {
  const txs = txLengths(size).map((length, i) => {
    const head = i === 0 ? u32pair(index, size) : new Uint8Array(0)
    const rest = createHash('shake256', { outputLength: length - head.length }).update(`${index}/${size}/${i}`).digest()
    return new Uint8Array(concat(head, rest))
  })
  const data = encode([PROTOCOL_VERSION, Tag.BATCH, txs])
  if (data.length !== size) throw new Error(`batch ${index}: ${data.length} bytes, not ${size}`)
  return data
}

/** [index, size] of a test batch, checked byte for byte against a rebuilt one. */
export function label (data) {
  if (data.length < 16) throw new Error('not a test batch')
  // [1, 0, [tx0, ...]]: tx0's bytes start after 4 + its bin header bytes
  const start = 4 + (data[4] === 0xc4 ? 2 : data[4] === 0xc5 ? 3 : 5)
  const view = new DataView(data.buffer, data.byteOffset + start, 8)
  const index = view.getUint32(0)
  const size = view.getUint32(4)
  if (size !== data.length || !Buffer.from(batch(index, size)).equals(Buffer.from(data))) {
    throw new Error(`batch ${index} of ${data.length} bytes differs from the one sent`)
  }
  return [index, size]
}

/** What a worker answers to a stored batch: ACK with the batch digest (SHA-512, 32 bytes). */
export function ack (data) {
  const digest = createHash('sha512').update(data).digest().subarray(0, 32)
  return encode([PROTOCOL_VERSION, Tag.ACK, new Uint8Array(digest)])
}
